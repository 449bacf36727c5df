"""Label shift is visible (issue 21, item 4): a run records every split's label rates, and a rate
that moves beyond LABEL_SHIFT_THRESHOLD (and beyond sampling noise) between train and
validation or validation and test is a warning line naming the objective and the splits
(smt_runtime.label_shift), printed and kept in metrics.json. On feed_ctr (conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smt_runtime.cli import main
from smt_runtime.label_shift import LABEL_SHIFT_THRESHOLD, label_shifts

ROWS = {"train": 40_000, "valid": 10_000, "test": 10_000}


def test_a_shift_beyond_the_threshold_is_reported_with_its_splits() -> None:
    rates = {"train": {"click": 0.207, "like": 0.05}, "valid": {"click": 0.216, "like": 0.05}, "test": {"click": 0.248, "like": 0.051}}
    (shift,) = label_shifts(rates, ROWS)
    assert (shift.objective, shift.splits, shift.rates) == ("click", ("valid", "test"), (0.216, 0.248))
    assert shift.relative == pytest.approx(0.032 / 0.216)
    assert shift.message.startswith("warning: objective click: label rate 0.216 (valid) -> 0.248 (test), +14.8%, beyond 10%")
    assert "test calibration near 0.87" in shift.message
    train_shift = label_shifts({"train": {"click": 0.2}, "valid": {"click": 0.17}}, ROWS)
    assert [(s.splits, round(s.relative, 3)) for s in train_shift] == [(("train", "valid"), -0.15)]


def test_noise_and_small_shifts_are_not_reported() -> None:
    """Below the threshold, or within sampling noise (a rare objective on a small split)."""
    assert label_shifts({"train": {"click": 0.2}, "valid": {"click": 0.2 * (1 + LABEL_SHIFT_THRESHOLD * 0.9)}}, ROWS) == []
    small = {"train": 40_000, "valid": 500}
    assert label_shifts({"train": {"rare": 0.02}, "valid": {"rare": 0.026}}, small) == []


def test_a_run_prints_and_records_every_split_rate_and_warns_of_a_shifted_test_split(feed_ctr: Any, capsys: Any, tmp_path: Path) -> None:
    """write-data's files, with a fifth of the test split's negatives turned positive: the run
    prints the three rates, one warning line on stderr naming click and valid -> test, and
    keeps both in metrics.json; the unchanged splits raise no warning."""
    data, run_dir = tmp_path / "data", tmp_path / "run"
    assert main(feed_ctr.train.PARTS, ["write-data", str(data)]) == 0
    test_file = data / "test.parquet"
    table = pq.read_table(test_file)
    labels = table.column("label_click").to_numpy().copy()
    negatives = np.flatnonzero(labels == 0)
    labels[negatives[: len(negatives) // 5]] = 1
    pq.write_table(table.set_column(table.column_names.index("label_click"), "label_click", pa.array(labels)), test_file)
    capsys.readouterr()
    files = [f"--{split}={data / f'{split}.parquet'}" for split in ("train", "valid", "test")]
    code = main(feed_ctr.train.PARTS, ["train", *files, "--steps", "10", "--threads", "1", "--no-progress", "--run-dir", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    saved = json.loads((run_dir / "metrics.json").read_text())
    rates = saved["label_rates"]
    assert set(rates) == {"train", "valid", "test"} and rates["test"]["click"] == pytest.approx(labels.mean())
    assert rates["train"] == saved["train_label_rates"]
    rate_lines = [line for line in out.splitlines() if line.startswith("click ")]
    assert [float(value) for value in rate_lines[-1].split()[1:]] == pytest.approx([rates[s]["click"] for s in ("train", "valid", "test")], abs=1e-4)
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and warnings[0].startswith("feed_ctr: warning: objective click: label rate")
    assert "(valid) -> " in warnings[0] and "(test)" in warnings[0]
    (recorded,) = saved["label_shifts"]
    assert recorded["objective"] == "click" and recorded["splits"] == ["valid", "test"]
    assert recorded["message"] in warnings[0]
