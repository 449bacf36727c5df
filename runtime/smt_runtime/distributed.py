"""Where training runs: the device, and the process group the model is sharded over.

One process (`python -m <package> train`) or N (`torchrun --nproc_per_node=N -m
<package> train`) run the same code: TorchRec's DistributedModelParallel shards the
embedding tables over the processes' group (sparse.py) and replicates everything else,
averaging its gradients after every backward pass. A single process joins a group of one
(an in-memory store, no network), so it runs the very same kernels. The backend is gloo
on CPU and nccl on CUDA.
"""

import gc
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    """This process's place in a training run.

    Attributes:
        rank: index of this process, 0 to world_size - 1.
        world_size: number of processes training together.
        device: where the model and its batches live.
        backend: "gloo" or "nccl" ("" for a Runtime that joined no group).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, checkpoints and writes metrics."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world_size): which share of every split this process reads."""
        return self.rank, self.world_size


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device called name: "cpu", "cuda", or "auto" (CUDA when present, else CPU).

    Raises:
        ValueError: name is unknown, or "cuda" on a machine without CUDA.
    """
    if name not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def start(device: str = "auto") -> Runtime:
    """The Runtime of this process; joins the process group (torchrun's WORLD_SIZE, RANK
    and LOCAL_RANK environment variables), or a group of one without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if world_size == 1:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend)
    elif dist.get_backend() != backend:
        raise ValueError(f"this process already joined a {dist.get_backend()} group; device {chosen} needs {backend}")
    return Runtime(dist.get_rank(), dist.get_world_size(), chosen, backend)


def stop(runtime: Runtime) -> None:
    """Leave the process group of a torchrun run (a group of one stays for the process's
    next run).

    Every rank waits for the others first (rank 0 may still be printing or exporting):
    a rank that tears its connections down while a peer still uses them makes gloo
    abort that peer.
    """
    if runtime.world_size > 1 and dist.is_initialized():
        gc.collect()  # free DistributedDataParallel wrappers (reference cycles) first
        device_ids = [runtime.device.index] if runtime.backend == "nccl" else None
        dist.barrier(device_ids=device_ids)
        dist.destroy_process_group()


def gather_rows(array: np.ndarray, runtime: Runtime) -> np.ndarray:
    """The rows of array from every rank, concatenated in rank order (array itself in
    a single process)."""
    if runtime.world_size == 1:
        return array
    parts: list[np.ndarray | None] = [None] * runtime.world_size
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def total(value: float, runtime: Runtime) -> float:
    """value summed over every rank."""
    if runtime.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def mean_over_ranks(values: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """values averaged elementwise over every rank (values itself in one process)."""
    if runtime.world_size == 1:
        return values
    averaged = values.detach().clone()
    dist.all_reduce(averaged)
    return averaged / runtime.world_size


def gather_values(value: int, runtime: Runtime) -> list[int]:
    """value of every rank, in rank order."""
    if runtime.world_size == 1:
        return [value]
    values: list[int | None] = [None] * runtime.world_size
    dist.all_gather_object(values, value)
    return [int(v) for v in values]  # type: ignore[arg-type]
