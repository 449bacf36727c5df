"""Training commands: ``smt train MODEL`` and ``smt demo``."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated, Optional

import typer

from ..engine import SmtError
from ..fleet import ModelEntry
from ._app import app, handle_errors
from ._workspace import open_fleet
from .fleet import generate

DEFAULT_DEMO_MODEL = "feed_ctr"


def _run_model(entry: ModelEntry, *args: str) -> int:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        raise SmtError("training needs PyTorch: pip install -e '.[torch]' (torch==2.13.0, the CPU build)") from None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(entry.directory), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.call([sys.executable, "-m", entry.name, *args], env=env)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A model in generated/.")],
    steps: Annotated[Optional[int], typer.Option(min=1, help="Cap on the training steps (default: the model's epochs, early stopping may end sooner).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the model's seed.")] = None,
) -> None:
    """Train a generated model; print validation and test logloss, NE, AUC, calibration and capacity.

    Runs `python -m MODEL train`; further options go to it unchanged, e.g. `--train/--valid/--test
    PARQUET`, `--epochs N`, `--set KEY=VALUE`, `--threads N`, `--run-dir DIR`, `--resume`,
    `--device`, `--export PATH` (see `python -m MODEL train --help`). Checkpoints and metrics.json go to runs/ in the current directory by default.
    """
    raise typer.Exit(_train_model(model, steps, seed, ctx.args if ctx is not None else []))


def _train_model(model: str, steps: int | None, seed: int | None, args: list[str]) -> int:
    """Run `python -m MODEL train` with these options; its exit code."""
    entry = open_fleet().model(model)
    extra = ["--seed", str(seed)] if seed is not None else []
    if steps is not None:
        extra += ["--steps", str(steps)]
    return _run_model(entry, "train", *extra, *args)


@app.command()
@handle_errors
def demo(
    model: Annotated[str, typer.Option(help="Example model to train.")] = DEFAULT_DEMO_MODEL,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Cap on the training steps (default: the model's epochs and early stopping).")] = None,
) -> None:
    """The main job on the embedded example fleet: regenerate it, then train one model until early
    stopping (at most its epochs) and report."""
    typer.echo("== smt generate: regenerating the example fleet ==")
    generate(None, None, False)
    # One thread: the demo must stay quick on a small shared machine, where torch's threads
    # per core (the training default there) run many times slower (see README, Training).
    typer.echo(f"\n== smt train {model}{f' --steps {steps}' if steps else ''} --threads 1 ==")
    raise typer.Exit(_train_model(model, steps, None, ["--threads", "1"]))
