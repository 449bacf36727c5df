"""A run's result on disk (issue 21, item 2): best.pt holds the best weights after calibration,
`python -m <model> evaluate --checkpoint RUN [--test FILE]` re-scores them to metrics.json's
metrics exactly, `--export` and `export --checkpoint` export them, and bad input is one line with
exit 2. Through the command line (smt_runtime.cli.main), in this process, on feed_ctr and
app_install (conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from smt_runtime.checkpoint import BEST_FILE
from smt_runtime.cli import main
from smt_runtime.serve import load_exported, serving_inputs
from smt_runtime.testing import random_batch
from smt_runtime.training import restore_best_checkpoint

SMALL = ["--set", "train_examples=2048", "--set", "eval_examples=512", "--set", "batch_size=128"]
QUIET = ["--threads", "1", "--no-progress"]


def run(package: Any, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """main(argv) of package's command line: (exit code, stdout, stderr)."""
    code = main(package.train.PARTS, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_reproduces_the_test_metrics_of_metrics_json(package: Any, capsys: Any, tmp_path: Path) -> None:
    """A synthetic run that stops early: best.pt is the best validation's weights, calibrated,
    and evaluate gives metrics.json's test metrics to the last bit."""
    run_dir = tmp_path / "run"
    code, _, err = run(package, capsys, "train", *SMALL, *QUIET, "--epochs", "6", "--set", "embedding_learning_rate=2.0", "--run-dir", str(run_dir))
    assert code == 0, err
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["best_step"] < saved["steps"]  # the last validation's weights are not the best
    code, out, err = run(package, capsys, "evaluate", "--checkpoint", str(run_dir), "--json", "--threads", "1")
    assert code == 0, err
    assert json.loads(out) == saved["metrics"]["test"]


def test_evaluate_rescores_parquet_splits_and_export_writes_best_pt(feed_ctr: Any, capsys: Any, tmp_path: Path) -> None:
    """On files: evaluate --test gives metrics.json's test metrics, --test with the validation
    file its validation metrics (the calibrated best weights); --export and export --checkpoint
    write best.pt's model."""
    data, run_dir = tmp_path / "data", tmp_path / "run"
    assert run(feed_ctr, capsys, "write-data", str(data))[0] == 0
    files = [f"--{split}={data / f'{split}.parquet'}" for split in ("train", "valid", "test")]
    code, out, err = run(
        feed_ctr, capsys, "train", *files, *QUIET, "--set", "batch_size=512", "--epochs", "2",
        "--set", "dcn_v2.num_cross_layers=1", "--run-dir", str(run_dir), "--export", str(tmp_path / "trained.pt2"),
    )
    assert code == 0, err
    assert f"run directory: {run_dir} (metrics.json, {BEST_FILE}, checkpoint.pt)" in out
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["overrides"]["dcn_v2.num_cross_layers"] == "1" and saved["config"]["dcn_v2"]["num_cross_layers"] == 1
    for split in ("test", "valid"):
        code, out, err = run(feed_ctr, capsys, "evaluate", "--checkpoint", str(run_dir / BEST_FILE), f"--test={data / f'{split}.parquet'}", "--json")
        assert code == 0, err
        assert json.loads(out) == saved["metrics"][split]
    restored = restore_best_checkpoint(feed_ctr.train.PARTS, run_dir)
    assert restored.config.dcn_v2.num_cross_layers == 1 and len(restored.model.interaction_arch.cross_layers) == 1
    code, _, err = run(feed_ctr, capsys, "export", str(tmp_path / "again.pt2"), "--checkpoint", str(run_dir))
    assert code == 0, err
    batch = random_batch(restored.config, 40, seed=3)
    with torch.no_grad():
        expected = restored.model(batch.dense, batch.sparse)
    for name in ("trained.pt2", "again.pt2"):
        torch.testing.assert_close(load_exported(tmp_path / name)(*serving_inputs((batch.dense, batch.sparse))), expected)


def test_evaluate_refuses_bad_input_in_one_line(feed_ctr: Any, packages: Any, capsys: Any, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert run(packages["app_install"], capsys, "train", *SMALL, *QUIET, "--steps", "2", "--run-dir", str(other))[0] == 0
    corrupt = tmp_path / "corrupt" / BEST_FILE
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a checkpoint")
    cases = {
        tmp_path / "missing": "no best.pt at",
        other: "holds model app_install, not feed_ctr",
        corrupt: "not a readable best.pt",
    }
    for path, message in cases.items():
        code, out, err = run(feed_ctr, capsys, "evaluate", "--checkpoint", str(path))
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("feed_ctr: error: ") and message in err, err
    code, out, err = run(packages["app_install"], capsys, "evaluate", "--checkpoint", str(other), "--test", str(tmp_path / "none.parquet"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "no Parquet file at" in err, err
