"""Command line of every model package: `python -m <package> COMMAND` (the package's
__main__.py calls main with its ModelParts).

Commands:
    train       train, validate, stop early, report validation and test metrics and
                capacity; writes checkpoints and metrics.json to the run directory.
                Synthetic data unless --train/--valid/--test name Parquet files.
                Under `torchrun --nproc_per_node=N -m <package> train ...` the
                embedding tables are sharded over the N processes (--sharding,
                --max-rank-memory; sparse.py) and each trains on its part of every
                global batch.
    write-data  write synthetic train/valid/test Parquet files (and their optimal
                metrics) to a directory, to try the Parquet path
                One line per validation goes to stdout; --set KEY=VALUE changes a
                hyperparameter for one run; --threads sets torch's threads.
    evaluate    re-score a finished run's best.pt on a test split (--test FILE, else the
                synthetic one): the test metrics of its metrics.json, exactly
    capacity    print the serving capacity report
    export      export a run's best.pt (--checkpoint), or a freshly built model, and
                check the reloaded file

Bad input (a missing or corrupt file, data that does not match the spec, a checkpoint
of another model, an output path that exists or cannot be written, a count below 1)
prints one line and exits with status 2, before anything is written. Under torchrun every
process meets the same bad input (same arguments, files and plan) and rank 0 prints the line.
"""

import argparse
import copy
import json
import os
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .checkpoint import BEST_FILE, CHECKPOINT_FILE
from .config import ModelConfigBase
from .data import Examples, SchemaError, write_synthetic
from .label_shift import format_label_rates
from .metrics import format_metrics
from .serve import (
    capacity_report,
    check_export_path,
    export_model,
    serving_model,
    format_capacity_report,
    spec_capacity_report,
    unwritable,
)
from .parts import ModelParts
from .sparse import STRATEGIES, Sharding, format_placements, local_table_bytes
from .training import (
    RunData,
    build_model,
    evaluate_checkpoint,
    restore_best_checkpoint,
    train,
)
from .unknown_ids import format_unknown_shares

SPLITS = ("train", "valid", "test")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (argparse's own adds the usage text)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n" if _prints_errors() else None)


def _prints_errors(error: BaseException | None = None) -> bool:
    """Whether this process prints a bad-input error: under torchrun every rank meets the same
    one, and rank 0 alone prints it (one line, not one per process); an OSError may be this
    machine's own (a full disk), so every rank prints that."""
    return os.environ.get("RANK", "0") == "0" or isinstance(error, OSError)


def _parser(config: ModelConfigBase) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m {config.model_name}", description=config.description or None)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train and report validation and test metrics and capacity")
    run.add_argument(
        "--epochs",
        type=int,
        help=f"most epochs; early stopping usually ends sooner (default {config.epochs})",
    )
    run.add_argument("--steps", type=int, help="cap on the optimizer steps (default: none)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyperparameter, or a technique's param as TECHNIQUE.PARAM=VALUE, for"
        " this run (repeatable; recorded in metrics.json)",
    )
    run.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: CPUs of this process / processes on this host)",
    )
    run.add_argument("--seed", type=int, default=config.seed, help="seed of data, weights, order")
    for split in SPLITS:
        run.add_argument(
            f"--{split}",
            type=Path,
            metavar="PARQUET",
            help=f"{split} split (give all three or none: synthetic data)",
        )
    _hash_option(run)
    run.add_argument(
        "--run-dir",
        type=Path,
        help="where checkpoint.pt and metrics.json go (default runs/<model>-<time>)",
    )
    run.add_argument("--resume", action="store_true", help="continue from --run-dir's checkpoint")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    run.add_argument(
        "--sharding",
        default="auto",
        choices=STRATEGIES,
        help="where the embedding tables go across processes (default auto: TorchRec's planner decides)",
    )
    run.add_argument(
        "--max-rank-memory",
        type=_bytes,
        metavar="BYTES",
        help="table storage one process may hold, e.g. 512M or 2G (default: the machine's)",
    )
    run.add_argument("--export", type=Path, metavar="PATH", help="export the model (best.pt's weights)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    data = commands.add_parser("write-data", help="write synthetic Parquet splits")
    data.add_argument("directory", type=Path)
    data.add_argument("--row-group-size", type=int, default=4096, help="rows per Parquet row group")
    score = commands.add_parser("evaluate", help="re-score a run's best.pt on a test split")
    score.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        metavar="PATH",
        help=f"a run directory or its {BEST_FILE}",
    )
    score.add_argument("--test", type=Path, metavar="PARQUET", help="test split (default: the run's synthetic one)")
    _hash_option(score, "(default: as the run hashed them)")
    score.add_argument("--json", action="store_true", help="print the metrics as JSON")
    score.add_argument("--threads", type=int, help="torch intra-op threads")
    score.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    commands.add_parser("capacity", help="print the serving capacity report")
    export = commands.add_parser("export", help="export a run's best.pt, or an untrained model, to PATH")
    export.add_argument("path", type=Path)
    export.add_argument(
        "--checkpoint",
        type=Path,
        metavar="RUN",
        help=f"a run directory or its {BEST_FILE} (default: an untrained model)",
    )
    return parser


def _hash_option(parser: argparse.ArgumentParser, default: str = "") -> None:
    parser.add_argument(
        "--hash-raw-ids",
        default=None,
        metavar="FEATURES",
        help=f"comma-separated sparse features whose raw ids to hash, or 'all' {default}".rstrip(),
    )


def _hashed(text: str | None) -> bool | list[str]:
    """--hash-raw-ids as Examples.from_parquet takes it."""
    names = text.split(",") if text else []
    return True if names == ["all"] else names


def _bytes(text: str) -> int:
    """A byte count such as 1000, 512K, 64M or 2G (powers of 1024)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    number, unit = text.rstrip("KMGTkmgt"), text[len(text.rstrip("KMGTkmgt")) :].upper()
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count (e.g. 1000, 512M, 2G)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of bytes")
    return int(value)


def _run_data(args: argparse.Namespace, config: ModelConfigBase) -> RunData:
    paths = [getattr(args, split) for split in SPLITS]
    if not any(paths):
        return RunData.synthetic(config)
    if not all(paths):
        raise ValueError("give all of --train, --valid and --test, or none of them")
    return RunData(*(Examples.from_parquet(p, config, hash_raw_ids=_hashed(args.hash_raw_ids)) for p in paths))


def default_threads() -> int:
    """OMP_NUM_THREADS when the caller set it (a scheduler running several trainings at once),
    else the CPUs this process may run on, shared by the training processes of this host
    (torchrun's LOCAL_WORLD_SIZE): oversubscribed cores make training many times slower.
    """
    requested = os.environ.get("OMP_NUM_THREADS", "")
    if requested.isdigit() and int(requested) > 0:
        return int(requested)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cpus or 1) // max(1, processes))


def _report(config: ModelConfigBase, monitor: str) -> Callable[[dict[str, Any]], None]:
    """Print one line per validation on stdout (flushed, so it shows in logs at once)."""

    def report(entry: dict[str, Any]) -> None:
        rates = "/".join(f"{rate:.3g}" for rate in entry["lr"])
        print(
            f"{config.model_name}: epoch {entry['epoch']:g} step {entry['step']}:"
            f" train loss {entry['train_loss']:.5f}, valid logloss {entry['valid_loss']:.5f},"
            f" valid AUC {entry['valid_auc']:.5f}, lr {rates}"
            f"{' (best ' + monitor + ')' if entry['best'] else ''}",
            flush=True,
        )

    return report


def _train(args: argparse.Namespace, parts: ModelParts, config: ModelConfigBase) -> None:
    if args.resume and args.run_dir is None:
        raise ValueError("--resume needs the --run-dir of the run to continue")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: give at least 1")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: give at least 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps}: give at least 1")
    _check_seed(args.seed)
    run_dir = args.run_dir or Path("runs") / (f"{config.model_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    _check_run_dir(run_dir, args.resume)
    if args.export:
        check_export_path(args.export)
    overrides = dict(item.partition("=")[::2] for item in args.set)
    config = config.with_overrides(args.set)
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    sharding = Sharding(args.sharding, args.max_rank_memory)
    torch.set_num_threads(args.threads or default_threads())
    runtime = distributed.start(args.device)
    try:
        data = _run_data(args, config)
        if runtime.is_main:
            print(
                f"{config.model_name}: training at most {config.epochs} epoch(s)"
                f"{f' or {args.steps} steps' if args.steps else ''}, validating"
                f" {f'every {config.eval_every} steps' if config.eval_every else 'once per epoch'},"
                f" early stopping on {config.monitor}; {torch.get_num_threads()} thread(s)",
                flush=True,
            )
        result = train(
            parts,
            config,
            args.steps,
            data=data,
            run_dir=run_dir,
            resume=args.resume,
            progress=not args.no_progress and sys.stderr.isatty(),
            runtime=runtime,
            sharding=sharding,
            report=_report(config, config.monitor),
            overrides=overrides,
            on_prepared=lambda prepared: _show_plan(prepared, runtime),
        )
        if not runtime.is_main:
            return
        fit = result.fit
        stop = "stopped early" if fit.stopped_early else "ran every planned step"
        print(
            f"{config.model_name}: {fit.steps} steps ({fit.epochs:g} epochs) of"
            f" {config.batch_size} examples x {runtime.world_size} process(es) on"
            f" {runtime.device}, seed {config.seed}, {fit.seconds:.1f} s of training"
            f" ({fit.examples_per_second:,.0f} examples/s); {stop}; best validation at"
            f" step {fit.best_step}"
        )
        for split in ("valid", "test"):
            print(f"\n{split} ({getattr(data, split).num_rows} examples):")
            print(format_metrics(result.metrics[split]))
        print()
        print(format_label_rates(result.split_label_rates))
        for shift in result.label_shifts:
            print(f"{config.model_name}: {shift.message}", file=sys.stderr, flush=True)
        unknown = result.unknown_ids
        print(
            f"\nunknown rows (min_count {unknown['min_count']}, unknown_dropout"
            f" {unknown['unknown_dropout']:g}): share of lookups"
        )
        print(format_unknown_shares(unknown["share"]))
        print(f"\nrun directory: {run_dir} (metrics.json, {BEST_FILE}, {CHECKPOINT_FILE})")
        serving = restore_best_checkpoint(parts, run_dir).model  # what best.pt holds
        if args.export:
            exported = export_model(serving_model(copy.deepcopy(serving)), config, args.export)
            print(f"exported ({exported.format}) to {exported.path}")
        print()
        print(format_capacity_report(capacity_report(serving, config)))
    finally:
        distributed.stop(runtime)


def _evaluate(args: argparse.Namespace, parts: ModelParts) -> None:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: give at least 1")
    restored = restore_best_checkpoint(parts, args.checkpoint)
    config = restored.config
    hashed = restored.saved.get("hash_raw_ids", False) if args.hash_raw_ids is None else _hashed(args.hash_raw_ids)
    torch.set_num_threads(args.threads or default_threads())
    runtime = distributed.start(args.device)
    try:
        if args.test is None:
            test = RunData.synthetic_split(config, "test")
        else:
            test = Examples.from_parquet(args.test, config, hash_raw_ids=hashed)
        metrics = evaluate_checkpoint(parts, restored, test, runtime)
        if not runtime.is_main:
            return
        if args.json:
            print(json.dumps(metrics, indent=2))
        else:
            source = args.test or "the run's synthetic test split"
            print(f"{config.model_name}: best.pt of step {restored.saved['best_step']} on {source} ({test.num_rows} examples):")
            print(format_metrics(metrics))
    finally:
        distributed.stop(runtime)


def _export(args: argparse.Namespace, parts: ModelParts, config: ModelConfigBase) -> None:
    check_export_path(args.path)
    if args.checkpoint is None:
        model = build_model(parts, config)
    else:
        restored = restore_best_checkpoint(parts, args.checkpoint)
        model, config = serving_model(restored.model), restored.config
    exported = export_model(model, config, args.path)
    print(f"exported ({exported.format}) to {exported.path}")


def _show_plan(prepared: Any, runtime: distributed.Runtime) -> None:
    """Print where the tables went and the bytes of tables each rank holds, measured
    (every rank measures its own; rank 0 prints)."""
    held = distributed.gather_values(local_table_bytes(prepared.model), runtime)
    if not runtime.is_main:
        return
    print(format_placements(prepared.tables, runtime.world_size))
    print(
        "table bytes held, measured: "
        + ", ".join(f"rank {rank} {value / 2**20:.2f} MB" for rank, value in enumerate(held)),
        flush=True,
    )


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:
        raise ValueError(f"--seed {seed}: give a seed in [0, 2**32)")


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a run directory that cannot hold this run, before anything is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {run_dir}: a file, not a directory; choose another")
    if not resume and (run_dir / CHECKPOINT_FILE).exists():
        raise ValueError(
            f"--run-dir {run_dir} already holds a run ({CHECKPOINT_FILE}); pass --resume to"
            " continue it, or choose another --run-dir"
        )
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    problem = unwritable(existing) if existing.is_dir() else "a file is in the way"
    if problem:
        raise ValueError(f"--run-dir {run_dir}: cannot write in {existing} ({problem}); choose another")


def _write_data(args: argparse.Namespace, config: ModelConfigBase) -> None:
    if args.row_group_size < 1:
        raise ValueError(f"--row-group-size {args.row_group_size}: give at least 1")
    paths = [args.directory / f"{split}.parquet" for split in SPLITS]
    existing = next((p for p in (args.directory, *args.directory.parents) if p.exists()), Path("."))
    problem = unwritable(existing) if existing.is_dir() else "a file is in the way"
    if problem:
        raise ValueError(
            f"{args.directory}: cannot write in {existing} ({problem}); choose another" " directory"
        )
    present = [str(path) for path in paths if path.exists()]
    if present:
        raise ValueError(f"{', '.join(present)} already exist(s); remove them or choose another directory")
    args.directory.mkdir(parents=True, exist_ok=True)
    sizes = [config.train_examples, config.eval_examples, config.eval_examples]
    for offset, (split, path, rows) in enumerate(zip(SPLITS, paths, sizes)):
        write_synthetic(
            config,
            path,
            rows,
            config.seed + offset,
            args.row_group_size,
            shifted=split == "test",
        )
        print(f"wrote {path} ({rows} examples) and its optimal metrics")


def main(parts: ModelParts, argv: list[str] | None = None) -> int:
    """Parse argv (default: sys.argv), run the command on the model of parts, return the
    exit code."""
    config = parts.config()
    args = _parser(config).parse_args(argv)
    try:
        return _run(args, parts, config)
    except BrokenPipeError:
        # stdout was closed early (e.g. `... | head -1`): stop quietly, and keep Python
        # from failing again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _run(args: argparse.Namespace, parts: ModelParts, config: ModelConfigBase) -> int:
    """Run the parsed command; bad input returns 2 after one line on stderr."""
    try:
        if args.command == "train":
            _train(args, parts, replace(config, seed=args.seed))
        elif args.command == "write-data":
            _write_data(args, config)
        elif args.command == "evaluate":
            _evaluate(args, parts)
        elif args.command == "export":
            _export(args, parts, config)
        else:
            print(format_capacity_report(spec_capacity_report(parts, config)))
    except BrokenPipeError:
        raise  # a closed stdout: main ends quietly
    except (SchemaError, ValueError, OSError) as error:
        message = " ".join(str(error).split())
        if isinstance(error, OSError) and error.errno is not None:
            # the OS's own error (permission, disk full, a folder in the way)
            where = f"{error.filename}: " if error.filename else ""
            message = f"{where}{error.strerror or message}; check the path, its permissions and" " free space"
        if _prints_errors(error):
            print(f"{config.model_name}: error: {message}", file=sys.stderr)
        return 2
    return 0

