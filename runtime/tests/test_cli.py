"""The model packages' command line (smt_runtime.cli, `python -m <package>`): train with --set
overrides, its printed plan and validations, bad input as one line with status 2 and nothing
written, training on Parquet files from write-data, capacity, export, the default thread count
and a closed stdout. Run in this process through cli.main, except where a real process matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from smt_runtime.cli import default_threads, main
from smt_runtime.data import generate_synthetic, write_parquet
from smt_runtime.serve import capacity_report, load_exported, serving_inputs
from smt_runtime.sparse import EMBEDDING_OPTIMIZER_NAMES
from smt_runtime.testing import random_batch
from smt_runtime.training import build_model

# Small data (16 steps an epoch), one thread, no progress bar.
SMALL_ARGS = ["--set", "train_examples=2048", "--set", "eval_examples=512", "--set", "batch_size=128", "--threads", "1", "--no-progress"]
SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def parts(feed_ctr: Any) -> Any:
    return feed_ctr.train.PARTS


def run(parts: Any, *argv: str) -> int:
    """main's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(parts, list(argv))
    except SystemExit as exit:
        return int(exit.code or 0)


def validated_steps(out: str) -> list[str]:
    """The steps of the validation lines a run printed."""
    return [line.split(" step ")[1].split(":")[0] for line in out.splitlines() if "valid logloss" in line]


def test_set_overrides_hyperparameters_and_the_run_prints_its_plan_and_validations(parts: Any, tmp_path: Path, capsys: Any) -> None:
    run_dir = tmp_path / "run"
    assert run(parts, "train", *SMALL_ARGS, "--set", "epochs=2", "--set", "monitor=auc", "--set", "embedding_optimizer=sgd", f"--run-dir={run_dir}") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "feed_ctr: training at most 2 epoch(s), validating once per epoch, early stopping on auc; 1 thread(s)"
    config = parts.config()
    for feature in config.sparse_features:  # the plan: every table, whole on the one rank
        [row] = [line for line in lines if line.split()[:1] == [feature.name] and "table_wise" in line]
        assert row.split()[4:6] == ["table_wise", "fused"], row
    held = sum(4 * f.num_embeddings * f.embedding_dim for f in config.sparse_features)  # ids and unknown rows
    assert f"table bytes held, measured: rank 0 {held / 2**20:.2f} MB" in lines
    assert validated_steps(out) == ["16", "32"] and "valid AUC" in out
    assert "32 steps (2 epochs) of 128 examples x 1 process(es)" in out and "overall: within budget" in out
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert (saved["config"]["monitor"], saved["config"]["epochs"], saved["config"]["embedding_optimizer"]) == ("auc", 2, "sgd")
    assert saved["overrides"] == {"train_examples": "2048", "eval_examples": "512", "batch_size": "128", "epochs": "2", "monitor": "auc", "embedding_optimizer": "sgd"}
    assert (saved["threads"], saved["world_size"]) == (1, 1)
    assert (run_dir / "checkpoint.pt").is_file()


def test_set_accepts_every_embedding_optimizer_the_runtime_has(parts: Any) -> None:
    config = parts.config()
    for name in EMBEDDING_OPTIMIZER_NAMES:
        assert config.with_overrides([f"embedding_optimizer={name}"]).embedding_optimizer == name


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("nonsense=1", "unknown hyperparameter 'nonsense'"),
        ("learning_rate=-1", "learning_rate must be a number above 0"),
        ("monitor=accuracy", "monitor must be logloss or auc"),
        ("epochs=1.5", "epochs must be an integer"),
        ("embedding_optimizer=adam", "embedding_optimizer must be adagrad, rowwise_adagrad, sgd or dense"),
        ("label_rates=[0.1, 0.2]", "label_rates: give 1 rate(s), one per objective"),
        ("dropout", "unknown hyperparameter"),
    ],
)
def test_set_refuses_bad_keys_and_values_in_one_line(parts: Any, assignment: str, message: str, tmp_path: Path, capsys: Any) -> None:
    assert run(parts, "train", "--set", assignment, f"--run-dir={tmp_path / 'run'}") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("feed_ctr: error: ") and message in error
    assert not (tmp_path / "run").exists()


def write_broken(config: Any, path: Path) -> Path:
    """A Parquet file without the first sparse feature's column."""
    write_parquet(generate_synthetic(config, 50, seed=0).drop_columns([config.sparse_features[0].name]), path)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train={missing}", "--valid={missing}", "--test={missing}"], "no Parquet file at"),
        (["--train={broken}", "--valid={broken}", "--test={broken}"], "column 'user_id': missing"),
        (["--train={broken}"], "give all of --train, --valid and --test, or none of them"),
        (["--train={text}", "--valid={text}", "--test={text}"], "cannot open it as Parquet"),
        (["--train={broken}", "--valid={broken}", "--test={broken}", "--hash-raw-ids=nope"], "hash_raw_ids names ['nope'], not sparse features of feed_ctr"),
        (["--steps=0"], "--steps 0: give at least 1"),
        (["--epochs=0"], "--epochs 0: give at least 1"),
        (["--threads=0"], "--threads 0: give at least 1"),
        (["--seed=-1"], "--seed -1: give a seed in [0, 2**32)"),
        (["--resume"], "--resume needs the --run-dir of the run to continue"),
        (["--run-dir={text}"], "a file, not a directory"),
        (["--export={text}"], "already exists; remove it or choose another export path"),
        (["--export={tmp}/no/such/folder/model.pt2"], "does not exist; create it"),
        (["--max-rank-memory=1K"], "TorchRec's planner found no auto plan for 1 rank(s) within 1,024 bytes per rank"),
        (["--max-rank-memory=lots"], "'lots' is not a byte count (e.g. 1000, 512M, 2G)"),
        (["--sharding=diagonal"], "argument --sharding: invalid choice: 'diagonal'"),
    ],
)
def test_bad_input_is_one_line_with_status_2_and_writes_nothing(parts: Any, args: list[str], message: str, tmp_path: Path, capsys: Any) -> None:
    config = parts.config()
    text = tmp_path / "text.parquet"
    text.write_text("not parquet")
    paths = {"missing": tmp_path / "missing.parquet", "broken": write_broken(config, tmp_path / "broken.parquet"), "text": text, "tmp": tmp_path}
    argv = [arg.format(**paths) for arg in args]
    if not any(arg.startswith("--run-dir") for arg in argv) and "--resume" not in argv:
        argv.append(f"--run-dir={tmp_path / 'run'}")
    assert run(parts, "train", *SMALL_ARGS, *argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet", "text.parquet"]


def test_a_finished_or_foreign_run_directory_is_refused(parts: Any, packages: Any, tmp_path: Path, capsys: Any) -> None:
    run_dir = tmp_path / "run"
    assert run(parts, "train", *SMALL_ARGS, "--steps=2", f"--run-dir={run_dir}") == 0
    capsys.readouterr()
    assert run(parts, "train", *SMALL_ARGS, "--steps=2", f"--run-dir={run_dir}") == 2
    assert "already holds a run (checkpoint.pt); pass --resume to continue it" in capsys.readouterr().err
    other = packages["app_install"].train.PARTS
    assert run(other, "train", *SMALL_ARGS, "--steps=2", f"--run-dir={run_dir}", "--resume") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is a checkpoint of model feed_ctr, not app_install" in error


def test_write_data_then_train_on_the_parquet_files(parts: Any, tmp_path: Path, capsys: Any) -> None:
    data = tmp_path / "data"
    assert run(parts, "write-data", str(data), "--row-group-size=5000") == 0
    config = parts.config()
    sizes = [config.train_examples, config.eval_examples, config.eval_examples]
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {data / split}.parquet ({rows} examples) and its optimal metrics" for split, rows in zip(SPLITS, sizes)
    ]
    assert run(parts, "write-data", str(data)) == 2  # never overwrites
    assert "already exist(s); remove them or choose another directory" in capsys.readouterr().err
    splits = [f"--{split}={data / split}.parquet" for split in SPLITS]
    run_dir = tmp_path / "run"
    assert run(parts, "train", *SMALL_ARGS, "--steps=5", f"--run-dir={run_dir}", *splits) == 0
    out = capsys.readouterr().out
    assert f"valid ({config.eval_examples} examples):" in out and f"test ({config.eval_examples} examples):" in out
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["steps"] == 5 and saved["steps_per_epoch"] == config.train_examples // 128 + 1
    assert set(saved["optimal"]) == {"valid", "test"}  # read from write-data's JSON files
    assert saved["train_label_rates"]["click"] == pytest.approx(json.loads((data / "train.optimal.json").read_text())["objectives"]["click"]["base_rate"])


def test_capacity_prints_the_measured_cost_against_the_budget(parts: Any, capsys: Any) -> None:
    assert run(parts, "capacity") == 0
    out = capsys.readouterr().out
    config = parts.config()
    report = capacity_report(build_model(parts, config), config)
    embedding = sum(f.num_embeddings * f.embedding_dim for f in config.sparse_features)  # ids and unknown rows
    assert report["embedding_parameters"] == embedding and report["embedding_bytes"] == 4 * embedding
    assert report["within_budget"] == (report["params_within_budget"] and report["mflops_within_budget"])
    rows = {line[:18].strip(): line[18:].split() for line in out.splitlines()[1:-1]}
    assert rows["parameters"][:2] == [f"{report['parameters']:,}", f"{config.serving.max_params:,}"]
    assert rows["embedding bytes"] == [f"{4 * embedding:,}"]
    assert float(rows["MFLOPs / example"][0]) == pytest.approx(report["mflops_per_example"], abs=1e-4)
    assert out.splitlines()[-1] == f"overall: {'within budget' if report['within_budget'] else 'OVER BUDGET'}"


def test_export_writes_a_file_that_computes_the_model(parts: Any, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "model.pt2"
    assert run(parts, "export", str(path)) == 0
    assert capsys.readouterr().out == f"exported (torch.export) to {path}\n"
    config = parts.config()
    batch = random_batch(config, 33, seed=5)
    with torch.no_grad():
        expected = build_model(parts, config).eval()(batch.dense, batch.sparse)
        torch.testing.assert_close(load_exported(path)(*serving_inputs((batch.dense, batch.sparse))), expected, rtol=0, atol=1e-5)
    assert run(parts, "export", str(path)) == 2
    assert "already exists; remove it or choose another export path" in capsys.readouterr().err


def test_default_threads_share_the_cpus_between_local_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_threads() == cpus
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cpus))
    assert default_threads() == 1


def test_default_threads_follow_omp_num_threads_when_a_scheduler_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert default_threads() == len(os.sched_getaffinity(0))


def test_a_closed_stdout_ends_the_run_quietly(feed_ctr: Any, tmp_path: Path) -> None:
    """Like `python -m feed_ctr train | head -1`: no traceback, no BrokenPipeError."""
    package_root = Path(feed_ctr.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(package_root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "feed_ctr", "train", *SMALL_ARGS, "--epochs", "3", f"--run-dir={tmp_path}"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()
    _, stderr = process.communicate(timeout=1800)
    assert first.startswith(b"feed_ctr: training at most 3 epoch(s)"), (first, stderr.decode()[-2000:])
    assert process.returncode in (0, 141), (process.returncode, stderr.decode()[-2000:])
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr
