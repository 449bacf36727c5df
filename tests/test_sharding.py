"""Sharding over processes (issue 20 item 3), end to end with real torchrun: two CPU processes over
gloo, one thread each.

A test model whose embedding tables outgrow one process's memory budget (--max-rank-memory) trains
under `torchrun --nproc_per_node=2` with row-wise sharding; each rank holds half of every table,
measured and printed; the per-step losses are those of one process holding every table with the
global batch; a sharding that cannot fit the budget fails in one line; a run killed after a
checkpoint resumes to the very result of a straight run; and its export is the whole trained model.

Each torchrun launch costs 10-20 s (TorchRec's import alone is 2.5 s a process), so the straight
sharded run is made once per session and shared by the tests that read it (with pytest-xdist,
across workers too, under a file lock).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from filelock import FileLock

from generator.testing import build_model, import_model

# Tables of 200,000 x 16 and 50,000 x 16 floats (15.3 MiB with the small bag table) and no
# randomness in training (no dropout, field dropout or batch norm: none is in the template's
# defaults or among these techniques), so one process and two compute the same function. Row-wise
# Adagrad keeps one accumulator per row, so the tables' weights are nearly all a rank must hold.
SPEC: dict[str, Any] = {
    "model_name": "sharded_ctr",
    "description": "Test model whose tables outgrow one process's memory budget.",
    "objectives": [{"name": "click", "weight": 1.0}],
    "sparse_features": [
        {"name": "user_id", "cardinality": 200_000, "embedding_dim": 16, "multi_valued": False},
        {"name": "ad_id", "cardinality": 50_000, "embedding_dim": 16, "multi_valued": False},
        {"name": "interests", "cardinality": 1_000, "embedding_dim": 8, "multi_valued": True},
    ],
    "dense_features": [{"name": "age_days"}, {"name": "ad_ctr_7d"}],
    "serving": {"max_params": 10_000_000, "max_mflops_per_example": 1.0},
    "techniques": [],
    # One epoch of 3,840 examples in global batches of 2 x 64: 30 steps, validated every 10.
    # Learning rates stay put (no plateau reduction, no early stopping) so that the comparison of
    # one process with two cannot hinge on a tie between two validations' scores.
    "hyperparameters": {
        "embedding_optimizer": "rowwise_adagrad",
        "batch_size": 64,
        "train_examples": 3840,
        "eval_examples": 1024,
        "epochs": 1,
        "eval_every": 10,
        "lr_plateau_factor": 1.0,
        "early_stopping_patience": 100,
    },
}
PROCESSES = 2
STEPS = 30
# Every table holds its ids and one unknown row (the runtime reserves it: smt_runtime.unknown_ids).
TABLE_BYTES = 4 * sum((f["cardinality"] + 1) * f["embedding_dim"] for f in SPEC["sparse_features"])  # 16,032,160
# TorchRec's planner counts each shard with its optimizer state and a reserve: row_wise needs
# 9.0 MiB a rank here, table_wise (the 12.2 MiB user_id table whole on one rank) 13.8 MiB
# (measured by bisection). 11 MiB lies between, below the tables' 15.3 MiB and above half of it.
BUDGET = "11M"
BUDGET_BYTES = 11 * 2**20
TIMEOUT = 1800  # a guard against a hang, not a speed target
# One process and two differ only in float32 summation order (the loss's mean over the global
# batch, the all-reduce of dense gradients, row-wise Adagrad's accumulators). Measured over the
# 30 steps: at most 1.4e-7 relative (2.0e-7 in another synthetic world). A real fault is far above 1e-5: without the gradient's
# division by the number of ranks, TorchRec's row-wise losses moved 3e-4 relative within 8 steps
# (the TorchRec spike), and a table row on the wrong rank moves them at once.
LOSS_RTOL = 1e-5
# The export is the trained model in another form: its metrics are metrics.json's up to float32
# rounding of the logits (measured: at most 5e-8 relative), and its logits the one-process model's
# up to the training's own divergence (measured: at most 3.3e-6 of logits spanning -6 to 2); a
# missing or misplaced half of a table moves them by tenths.
EXPORT_RTOL = 1e-6
LOGIT_ATOL = 1e-4
ROW_WISE = ["--sharding", "row_wise", "--max-rank-memory", BUDGET]


def common_args(run_dir: Path) -> list[str]:
    return ["--threads", "1", "--device", "cpu", "--no-progress", f"--run-dir={run_dir}"]


def torchrun(package_dir: Path, target: list[str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node=2 TARGET ARGS` with the model package importable."""
    path = os.pathsep.join(filter(None, [str(package_dir), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={PROCESSES}"]
    return subprocess.run([*command, *target, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"


def rank_bytes(table: dict[str, Any], rank: int) -> int:
    """Bytes of float32 weights of a metrics.json table placement on rank."""
    return sum(4 * rows * columns for owner, rows, columns in table["shards"] if owner == rank)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{SPEC['model_name']}: error:")]


@dataclass
class ShardedRun:
    """The straight two-process row-wise run every test compares against."""

    package_dir: Path  # the folder holding the rendered package (what PYTHONPATH needs)
    run_dir: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "metrics.json").read_text())

    @property
    def losses(self) -> list[float]:
        """Every step's training loss (checkpoint.pt keeps the run's losses)."""
        return torch.load(self.run_dir / "checkpoint.pt", weights_only=False)["result"]["losses"]


def _render_and_run(folder: Path) -> ShardedRun:
    """Render SPEC into folder and make the straight sharded run there, once: a later call (another
    xdist worker) finds both and reads them."""
    package_dir = folder / SPEC["model_name"]
    run_dir = folder / "straight"
    record = folder / "straight.json"
    if not package_dir.is_dir():
        build_model(SPEC, folder)
    if not record.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        export = ["--export", str(run_dir / "model.pt2")]
        done = torchrun(package_dir, ["-m", SPEC["model_name"], "train"], [*ROW_WISE, *common_args(run_dir), *export])
        record.write_text(json.dumps({"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}))
    saved = json.loads(record.read_text())
    return ShardedRun(package_dir, run_dir, saved["returncode"], saved["stdout"], saved["stderr"])


@pytest.fixture(scope="session")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> ShardedRun:
    """The rendered test model and its straight run; made once even under pytest-xdist (the
    workers' temporary folders share a parent for the session)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        run = _render_and_run(tmp_path_factory.mktemp("sharding"))
    else:
        shared = tmp_path_factory.getbasetemp().parent / "sharding"
        shared.mkdir(exist_ok=True)
        with FileLock(str(shared) + ".lock"):
            run = _render_and_run(shared)
    assert run.returncode == 0, f"the straight sharded run failed: exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


@pytest.fixture(scope="module")
def package(sharded: ShardedRun) -> Any:
    """The test model's package, imported into this process."""
    return import_model(sharded.package_dir)


@pytest.fixture(scope="module")
def single(package: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One process holding every table whole (no budget), on global batches of 2 x 64."""
    from smt_runtime.training import train  # noqa: PLC0415 - TorchRec imports only for these tests

    parts = package.train.PARTS
    config = parts.config()
    return train(parts, replace(config, batch_size=PROCESSES * config.batch_size), run_dir=tmp_path_factory.mktemp("single"))


def test_row_wise_sharding_puts_half_of_every_table_on_each_rank(sharded: ShardedRun) -> None:
    """Under the budget, row_wise splits every table's rows between the two ranks; the plan and the
    bytes each rank holds, measured on its tensors, are printed and recorded in metrics.json."""
    saved = sharded.metrics
    assert (saved["world_size"], saved["steps"]) == (PROCESSES, STEPS)
    tables = saved["sharding"]["tables"]
    assert [table["table"] for table in tables] == [f["name"] for f in SPEC["sparse_features"]]
    for table in tables:
        assert (table["sharding_type"], table["compute_kernel"]) == ("row_wise", "fused"), table
        rows = {rank: rows for rank, rows, columns in table["shards"]}
        assert sorted(rows) == [0, 1] and sum(rows.values()) == table["rows"], table
        assert abs(rows[0] - rows[1]) <= 1, table  # half each
        assert all(columns == table["dim"] for _, _, columns in table["shards"]), table
    measured = saved["sharding"]["rank_table_bytes"]
    # What each rank holds, measured on its tensors, is what the plan gave it.
    assert measured == [sum(rank_bytes(table, rank) for table in tables) for rank in range(PROCESSES)]
    assert sum(measured) == TABLE_BYTES
    assert all(abs(held - TABLE_BYTES / 2) <= 4 * 16 * len(SPEC["sparse_features"]) for held in measured)  # a row per table of half
    assert max(measured) < BUDGET_BYTES < TABLE_BYTES  # the tables fit only when split

    lines = sharded.stdout.splitlines()
    for table in tables:
        [row] = [line for line in lines if line.split()[:1] == [table["table"]] and "row_wise" in line]  # the plan's row
        cells = row.split()
        assert "row_wise" in cells and cells[-2:] == [f"{rank_bytes(table, rank) / 2**20:.2f}" for rank in range(PROCESSES)], row
    megabytes = ", ".join(f"rank {rank} {held / 2**20:.2f} MB" for rank, held in enumerate(measured))
    assert f"table bytes held, measured: {megabytes}" in lines
    assert f"{STEPS} steps (1 epochs) of 64 examples x {PROCESSES} process(es)" in sharded.stdout


def test_a_sharding_that_cannot_fit_the_budget_fails_in_one_line(sharded: ShardedRun, tmp_path: Path) -> None:
    """table_wise must put the 12.2 MiB user_id table whole on one rank: over the budget. Every
    rank stops with status 2 (none waits for the others' plan) and one line names the planner, the
    strategy, the budget and what to do; nothing is written."""
    run_dir = tmp_path / "run"
    args = ["--sharding", "table_wise", "--max-rank-memory", BUDGET, *common_args(run_dir)]
    done = torchrun(sharded.package_dir, ["-m", SPEC["model_name"], "train"], args)
    assert done.returncode != 0, explain(done)
    [line] = error_lines(done.stderr)
    assert "TorchRec's planner found no table_wise plan for 2 rank(s)" in line, line
    assert f"within {BUDGET_BYTES:,} bytes per rank" in line and "raise --max-rank-memory" in line, line
    # torchrun reports each worker's exit status; the first to fail is the root cause.
    root_cause = done.stderr.split("Root Cause", 1)[-1]
    assert re.search(r"exitcode\s*:\s*2\b", root_cause), explain(done)
    assert set(re.findall(r"exitcode\s*:\s*(-?\d+)", done.stderr)) <= {"2", "-15"}, explain(done)  # -15: stopped by torchrun
    assert not run_dir.exists()


def test_two_processes_train_like_one_process_on_the_global_batch(sharded: ShardedRun, single: Any) -> None:
    """Two processes with batch 64 each and row-wise tables compute, step by step, the losses of
    one process with batch 128 holding every table whole."""
    assert {table.sharding_type for table in single.tables} == {"table_wise"}
    assert all(owner == 0 for table in single.tables for owner, _, _ in table.shards)
    two = np.array(sharded.losses)
    one = np.array(single.fit.losses)
    assert len(two) == len(one) == STEPS
    np.testing.assert_allclose(two, one, rtol=LOSS_RTOL)
    history = sharded.metrics["validation"]
    assert [entry["step"] for entry in history] == [entry["step"] for entry in single.fit.history] == [10, 20, 30]
    for sharded_entry, single_entry in zip(history, single.fit.history):
        assert sharded_entry["valid_loss"] == pytest.approx(single_entry["valid_loss"], rel=LOSS_RTOL)
    for split in ("valid", "test"):
        for name, values in sharded.metrics["metrics"][split].items():
            for metric, value in values.items():
                assert value == pytest.approx(single.metrics[split][name][metric], rel=LOSS_RTOL), (split, metric)


CRASHING_MAIN = '''
"""The model's command line, killed (SIGKILL, like a preempted job) at a given training step on
every rank: python crash.py PACKAGE STEP ARGS..."""
import importlib, os, signal, sys
from dataclasses import replace

from smt_runtime.cli import main

package = importlib.import_module(sys.argv[1])
crash_at, steps = int(sys.argv[2]), []


def after_backward(model, config):
    steps.append(1)
    if len(steps) == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)
    package.train.PARTS.after_backward(model, config)


raise SystemExit(main(replace(package.train.PARTS, after_backward=after_backward), sys.argv[3:]))
'''


def test_a_sharded_run_killed_after_a_checkpoint_resumes_to_the_straight_result(sharded: ShardedRun, tmp_path: Path) -> None:
    """Both ranks are killed at step 14, after the checkpoint of step 10; `--resume` under
    torchrun continues from it to the straight run's losses, validations and metrics exactly."""
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_MAIN)
    run_dir = tmp_path / "run"
    args = [*ROW_WISE, *common_args(run_dir)]
    killed = torchrun(sharded.package_dir, [str(script), SPEC["model_name"], "14", "train"], args)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, explain(killed)
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert saved["tensors"] == "checkpoint-10" and not (run_dir / "metrics.json").exists()

    resumed = torchrun(sharded.package_dir, ["-m", SPEC["model_name"], "train"], [*args, "--resume"])
    assert resumed.returncode == 0, explain(resumed)
    validated = [line for line in resumed.stdout.splitlines() if "valid logloss" in line]
    assert [line.split(" step ")[1].split(":")[0] for line in validated] == ["20", "30"]
    after, straight = json.loads((run_dir / "metrics.json").read_text()), sharded.metrics
    assert ShardedRun(sharded.package_dir, run_dir, 0, "", "").losses == sharded.losses
    for key in ("validation", "metrics", "steps", "best_step", "train_label_rates", "sharding"):
        assert after[key] == straight[key], key
    assert after["train_label_rates"] is not None
    assert after["segment_train_seconds"] < after["train_seconds"]  # the killed segment's time counts


def test_the_export_of_a_sharded_run_is_the_whole_trained_model(sharded: ShardedRun, single: Any, package: Any) -> None:
    """--export gathers every table's shards into one unsharded file: reloaded, it scores the
    validation and test splits exactly as the sharded model did at the end of training, and
    predicts what the one-process model predicts."""
    from smt_runtime.metrics import objective_metrics  # noqa: PLC0415
    from smt_runtime.serve import load_exported  # noqa: PLC0415
    from smt_runtime.training import RunData  # noqa: PLC0415

    assert f"exported (torch.export) to {sharded.run_dir / 'model.pt2'}" in sharded.stdout
    served = load_exported(sharded.run_dir / "model.pt2")
    config = package.train.PARTS.config()
    data = RunData.synthetic(config)
    single.model.eval()
    for split in ("valid", "test"):
        exported, reference, labels = [], [], []
        for batch in getattr(data, split).batches(config, 256):
            with torch.no_grad():
                exported.append(served(batch.dense, batch.sparse.values(), batch.sparse.lengths()))
                reference.append(single.model(batch.dense, batch.sparse))
            labels.append(batch.labels)
        logits = torch.cat(exported).double().numpy()
        metrics = objective_metrics(logits, torch.cat(labels).double().numpy(), config)
        for name, values in sharded.metrics["metrics"][split].items():
            for metric, value in values.items():
                assert metrics[name][metric] == pytest.approx(value, rel=EXPORT_RTOL), (split, metric)
        np.testing.assert_allclose(logits, torch.cat(reference).double().numpy(), rtol=0, atol=LOGIT_ATOL)
