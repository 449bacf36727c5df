"""Checkpoints of a training run, sharded like the model: what ``--resume`` continues from.

A checkpoint is two parts in the run directory:

    checkpoint-<step>/  the tensors, written by every rank with torch.distributed.checkpoint:
                        the model (each rank its table shards, dense weights once), the loss
                        and the fused embedding optimizer's state
    checkpoint.pt       the run's state, written by rank 0 once the tensors are on disk:
                        which checkpoint-<step>/ belongs to it, the dense optimizers and
                        schedule, every rank's random state, the data position, the
                        validation history and early stopping's state

checkpoint.pt is replaced atomically and names its folder, so a run killed at any moment
leaves a consistent checkpoint (older folders are removed after the replace). The best
weights live in ``best-<step>/`` (same format), written when a validation improves.

At the end of a run, rank 0 writes the run's result: ``best.pt``, the best weights after
calibration with every table gathered whole (what metrics.json's metrics describe, what
``--export`` exports and ``evaluate`` re-scores), and the config they were trained with
(training.best_checkpoint). checkpoint.pt stays what ``--resume`` continues from.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
BEST_FORMAT = "smt-best-1"  # what best.pt's "format" entry says; another value is refused
BEST_KEYS = {"format", "model_name", "config", "sharding", "state"}  # what read_best needs
STATE_KEYS = {
    "model_name",
    "world_size",
    "tensors",
    "best_tensors",
    "optimizer",
    "learning_rates",
    "scheduler",
    "rng",
    "result",
    "epoch",
    "position",
    "stopping",
}  # what save_state writes
_FOLDER = re.compile(r"^(checkpoint|best)-\d+$")


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def write_tensors(folder: Path, state: dict[str, Any]) -> None:
    """Write state (tensors, sharded or not) into folder with torch.distributed.checkpoint,
    every rank its own shards; folder is replaced (every rank must call this)."""
    if _is_main():
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
    _barrier()
    dcp.save(state, checkpoint_id=str(folder))
    _barrier()


def read_tensors(folder: Path, state: dict[str, Any]) -> None:
    """Load folder (write_tensors) into state's tensors in place, each rank its shards."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing; the checkpoint is incomplete, start afresh in another --run-dir")
    dcp.load(state, checkpoint_id=str(folder))


def module_tensors(model: nn.Module, loss_fn: nn.Module, fused: Any | None) -> dict[str, Any]:
    """The sharded part of a run's state: model, loss and fused optimizer."""
    state = {"model": model.state_dict(), "loss": loss_fn.state_dict()}
    if fused is not None:
        state["fused"] = fused.state_dict()
    return state


def restore_module_tensors(model: nn.Module, loss_fn: nn.Module, fused: Any | None, state: dict[str, Any]) -> None:
    """Put a state read by read_tensors back (the model's shards are loaded in place; the
    dense tensors and the loss by load_state_dict)."""
    model.load_state_dict(state["model"])
    loss_fn.load_state_dict(state["loss"])
    if fused is not None:
        fused.load_state_dict(state["fused"])


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write checkpoint.pt (rank 0) atomically, then remove checkpoint and best folders it
    no longer names."""
    if not _is_main():
        return
    path = run_dir / CHECKPOINT_FILE
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    keep = {state["tensors"], state["best_tensors"]}
    for folder in run_dir.iterdir():
        if _FOLDER.match(folder.name) and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def save_best(run_dir: Path, best: dict[str, Any]) -> Path:
    """Write best.pt (training.best_checkpoint) into run_dir atomically; its path."""
    path = run_dir / BEST_FILE
    partial = path.with_suffix(".partial")
    torch.save(best, partial)
    os.replace(partial, path)
    return path


def read_best(path: Path, model_name: str) -> dict[str, Any]:
    """best.pt at path, or in the run directory path, checked to be this model's.

    Raises:
        FileNotFoundError: no best.pt there.
        ValueError: in one line, for an unreadable or foreign file or another model's.
    """
    if path.is_dir():
        path = path / BEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {BEST_FILE} at {path}; give a run directory of a finished run (train --run-dir) or its {BEST_FILE}"
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated, random bytes, not a torch file: all unreadable
        raise ValueError(f"{path}: not a readable {BEST_FILE} ({first_line(error)}); train again") from None
    if not isinstance(saved, dict) or not BEST_KEYS <= set(saved) or saved["format"] != BEST_FORMAT:
        raise ValueError(f"{path}: not a {BEST_FILE} written by this runtime; give the {BEST_FILE} of a training run")
    if saved["model_name"] != model_name:
        raise ValueError(f"{path} holds model {saved['model_name']}, not {model_name}; use python -m {saved['model_name']}")
    return saved


def read_state(path: Path, model_name: str, world_size: int) -> dict[str, Any]:
    """checkpoint.pt at path, checked to be this model's and this run's.

    Raises:
        FileNotFoundError: there is no file at path.
        ValueError: in one line, for a truncated, random or foreign file, a checkpoint of
            another model, or one written by another number of processes.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}; run without resume")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated, random bytes, not a torch file: all unreadable
        raise ValueError(
            f"{path}: not a readable checkpoint ({first_line(error)}); delete it to start"
            " afresh, or resume from another --run-dir"
        ) from None
    missing = sorted(STATE_KEYS - set(saved)) if isinstance(saved, dict) else ["all"]
    if missing:
        raise ValueError(
            f"{path}: not a checkpoint written by this runtime (missing {', '.join(missing)});"
            " resume from a --run-dir that this model's training wrote"
        )
    if saved["model_name"] != model_name:
        raise ValueError(
            f"{path} is a checkpoint of model {saved['model_name']}, not {model_name};"
            f" resume from a --run-dir of {model_name}"
        )
    if saved["world_size"] != world_size:
        raise ValueError(
            f"{path} was written by {saved['world_size']} process(es), this run has {world_size};"
            f" resume with --nproc_per_node={saved['world_size']}"
        )
    return saved


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"
