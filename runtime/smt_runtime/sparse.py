"""The sparse path on TorchRec: a model's embedding tables as one EmbeddingBagCollection, their
optimizer fused into the backward pass, and their sharding across processes by
DistributedModelParallel (DMP) with TorchRec's planner.

A training run wraps the model (with its loss) in DMP, in one process as under torchrun, so
both run the same kernels: FBGEMM's table-batched embedding bags with the embedding optimizer
applied inside backward (TorchRec's "fused" compute kernel). The sharding strategy decides
where each table lives:

    table_wise     each table whole on one rank
    row_wise       every rank holds a slice of the rows of every table
    column_wise    every rank holds a slice of the columns
    data_parallel  every rank holds every table (replicated, dense gradients averaged)
    auto           the planner's choice per table, under the per-rank memory budget

FBGEMM's CPU kernels need an embedding width divisible by 4 and support Adagrad, row-wise
Adagrad and SGD; a table they cannot hold (width 10, say), and every table when the embedding
optimizer is "dense" (the dense optimizer trains the tables, as in FuxiCTR), is data_parallel,
and an ordinary optimizer of the same kind trains it. The plan says which table went where and
why.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from .config import ModelConfigBase

# TorchRec, FBGEMM and torch.distributed warn about their own internals on every run (the planner's
# topology and storage heuristics, deprecated modules, ShardedTensor's future): nothing a model's
# owner can act on, and pages of it would bury the run's own lines. Errors still show.
for _noisy in ("torchrec", "torch.fx._symbolic_trace", "torch.distributed.checkpoint"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)
for _module in (r"torchrec\..*", r"fbgemm_gpu\..*", r"torch\.distributed\..*", r"smt_runtime\..*"):
    warnings.filterwarnings("ignore", category=FutureWarning, module=_module)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=_module)

STRATEGIES = ("auto", "table_wise", "row_wise", "column_wise", "data_parallel")
FUSED_STRATEGIES = ("table_wise", "row_wise", "column_wise")
# Embedding optimizers: torch optimizer class and its fixed arguments. TorchRec turns each into
# FBGEMM's fused kernel (EXACT_ADAGRAD, EXACT_ROWWISE_ADAGRAD, EXACT_SGD) for sharded tables;
# a data_parallel table gets the class itself. "dense": the dense optimizer trains the tables.
EMBEDDING_OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, float]]] = {
    "adagrad": (torch.optim.Adagrad, {"eps": 1e-10}),
    "rowwise_adagrad": (RowWiseAdagrad, {"eps": 1e-10}),
    "sgd": (torch.optim.SGD, {}),
}
DENSE_EMBEDDING_OPTIMIZER = "dense"
EMBEDDING_OPTIMIZER_NAMES = (*EMBEDDING_OPTIMIZERS, DENSE_EMBEDDING_OPTIMIZER)
# Learning rate of each embedding optimizer when config.embedding_learning_rate is None
# (Adagrad's 0.05: benchmarks/defaults_sweep.py on the example fleet).
EMBEDDING_LEARNING_RATES = {"adagrad": 0.05, "rowwise_adagrad": 0.05, "sgd": 0.05}
FUSED_WIDTH_MULTIPLE = 4  # FBGEMM's CPU kernels hold tables whose width is a multiple of 4
INIT_BLOCK_ROWS = 4096  # rows drawn from one seeded generator by init_tables


class EmbeddingBagSharder(EmbeddingBagCollectionSharder):
    """TorchRec's sharder of EmbeddingBagCollections, with row_wise offered on CPU too:
    the stock one offers it for CUDA only, though FBGEMM's CPU kernels run row-wise shards
    (one process's losses match two row-wise processes': tests/test_sharding.py)."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = super().sharding_types(compute_device_type)
        return types + ["row_wise"] if "row_wise" not in types else types


def table_configs(config: ModelConfigBase) -> list[EmbeddingBagConfig]:
    """One TorchRec table per sparse feature, named after it: sum pooling for a
    single-valued feature (its one id's row), mean pooling for a multi-valued one; a
    feature without a declared unknown id has one row more, its unknown row
    (SparseFeature.num_embeddings)."""
    return [
        EmbeddingBagConfig(
            name=feature.name,
            embedding_dim=feature.embedding_dim,
            num_embeddings=feature.num_embeddings,
            feature_names=[feature.name],
            pooling=PoolingType.MEAN if feature.multi_valued else PoolingType.SUM,
        )
        for feature in config.sparse_features
    ]


def table_modules(module: nn.Module) -> list[nn.Module]:
    """The modules that hold module's collections (the model's EmbeddingTables), whose output
    is the pooled embedding of every feature."""
    holders = []
    for name, _ in collections(module):
        parent = name.rpartition(".")[0]
        holders.append(module.get_submodule(parent) if parent else module)
    return holders


def collections(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, module) of every EmbeddingBagCollection in module, sharded or not."""
    for name, child in module.named_modules():
        if isinstance(child, EmbeddingBagCollection) or type(child).__name__ == "ShardedEmbeddingBagCollection":
            yield name, child


def table_parameter_names(module: nn.Module) -> set[str]:
    """The qualified parameter names of every embedding table in module."""
    names = set()
    for prefix, collection in collections(module):
        for name, _ in collection.named_parameters():
            names.add(f"{prefix}.{name}" if prefix else name)
    return names


@dataclass(frozen=True)
class EmbeddingOptimizer:
    """How the embedding tables are trained (config.embedding_optimizer).

    Attributes:
        name: one of EMBEDDING_OPTIMIZER_NAMES: a key of EMBEDDING_OPTIMIZERS, or "dense"
            (the dense optimizer trains the tables).
        learning_rate: step size of the tables (None: EMBEDDING_LEARNING_RATES[name]).

    The embedding regularizer is not the optimizer's: FBGEMM's CPU kernels ignore weight decay,
    so training.regularization adds it to the loss, for every optimizer.
    """

    name: str
    learning_rate: float | None = None

    def __post_init__(self) -> None:
        if self.name not in EMBEDDING_OPTIMIZER_NAMES:
            raise ValueError(
                f"embedding optimizer {self.name!r}: use one of {', '.join(EMBEDDING_OPTIMIZER_NAMES)}"
            )

    @property
    def fused(self) -> bool:
        return self.name != DENSE_EMBEDDING_OPTIMIZER

    def arguments(self) -> dict[str, float]:
        _, fixed = EMBEDDING_OPTIMIZERS[self.name]
        rate = EMBEDDING_LEARNING_RATES[self.name] if self.learning_rate is None else self.learning_rate
        return {"lr": rate, **fixed}

    def build(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """An ordinary optimizer of this kind over parameters (data_parallel tables)."""
        optimizer_class, _ = EMBEDDING_OPTIMIZERS[self.name]
        return optimizer_class(parameters, **self.arguments())


def apply_embedding_optimizer(module: nn.Module, optimizer: EmbeddingOptimizer) -> None:
    """Attach the embedding optimizer to every table of module, to run inside backward
    (TorchRec's apply_optimizer_in_backward); DMP fuses it into the tables' kernel. Does
    nothing for "dense"."""
    if not optimizer.fused:
        return
    optimizer_class, _ = EMBEDDING_OPTIMIZERS[optimizer.name]
    for _, collection in collections(module):
        apply_optimizer_in_backward(optimizer_class, collection.parameters(), optimizer.arguments())


@dataclass(frozen=True)
class Sharding:
    """How a run places its tables (the command line's --sharding and --max-rank-memory).

    Attributes:
        strategy: one of STRATEGIES.
        max_rank_memory: bytes of table storage one rank may hold (None: the machine's);
            the planner refuses a plan that does not fit.
    """

    strategy: str = "auto"
    max_rank_memory: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--sharding {self.strategy}: use one of {', '.join(STRATEGIES)}")
        if self.max_rank_memory is not None and self.max_rank_memory < 1:
            raise ValueError(f"--max-rank-memory {self.max_rank_memory}: give a positive number of bytes")


def table_strategies(
    config: ModelConfigBase, sharding: Sharding, optimizer: EmbeddingOptimizer, world_size: int
) -> dict[str, list[str]]:
    """Table name -> the sharding types the planner may choose for it (see the module
    docstring); in one process "auto" is table_wise, every table whole on the one rank."""
    allowed = {}
    for feature in config.sparse_features:
        if sharding.strategy == "data_parallel" or not optimizer.fused:
            types = ["data_parallel"]
        elif feature.embedding_dim % FUSED_WIDTH_MULTIPLE:
            types = ["data_parallel"]
        elif sharding.strategy == "auto":
            types = ["table_wise"] if world_size == 1 else [*FUSED_STRATEGIES, "data_parallel"]
        else:
            types = [sharding.strategy]
        allowed[feature.name] = types
    return allowed


def why_replicated(config: ModelConfigBase, sharding: Sharding, optimizer: EmbeddingOptimizer) -> dict[str, str]:
    """Table name -> why it is data_parallel though the strategy asked otherwise."""
    reasons = {}
    if sharding.strategy == "data_parallel":
        return reasons
    for feature in config.sparse_features:
        if not optimizer.fused:
            reasons[feature.name] = "the dense optimizer trains the tables"
        elif feature.embedding_dim % FUSED_WIDTH_MULTIPLE:
            reasons[feature.name] = (
                f"width {feature.embedding_dim} is not a multiple of {FUSED_WIDTH_MULTIPLE} (FBGEMM's CPU kernels)"
            )
    return reasons


def plan_sharding(
    module: nn.Module,
    config: ModelConfigBase,
    sharding: Sharding,
    optimizer: EmbeddingOptimizer,
    world_size: int,
    device: torch.device,
) -> ShardingPlan:
    """TorchRec's planner's plan for module's tables over world_size ranks: rank 0 plans and
    every rank gets its plan.

    Raises:
        ValueError: on every rank, in one line, when no plan fits the sharding options.
    """
    kernels = {"data_parallel": "dense"}
    constraints = {
        name: ParameterConstraints(
            sharding_types=types, compute_kernels=sorted({kernels.get(kind, "fused") for kind in types})
        )
        for name, types in table_strategies(config, sharding, optimizer, world_size).items()
    }
    caps: dict[str, Any] = {}
    if sharding.max_rank_memory is not None:
        caps["hbm_cap" if device.type == "cuda" else "ddr_cap"] = sharding.max_rank_memory
    topology = Topology(world_size=world_size, local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world_size)), compute_device=device.type, **caps)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    # Rank 0 plans and hands every rank the plan or its failure (TorchRec's collective_plan
    # broadcasts only a plan: when rank 0's planning failed, the other ranks waited for it forever).
    outcome: list[ShardingPlan | str | None] = [None]
    if dist.get_rank() == 0:
        try:
            outcome = [planner.plan(module, [EmbeddingBagSharder()])]
        except Exception as error:  # the planner's errors (no plan fits the budget) span pages
            outcome = [f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"]
    if world_size > 1:
        dist.broadcast_object_list(outcome, src=0)
    if isinstance(outcome[0], str):
        raise ValueError(
            f"TorchRec's planner found no {sharding.strategy} plan for {world_size} rank(s)"
            f"{'' if sharding.max_rank_memory is None else f' within {sharding.max_rank_memory:,} bytes per rank'}"
            f" ({outcome[0]}); raise --max-rank-memory, add processes or choose another --sharding"
        )
    return outcome[0]


def shard(module: nn.Module, plan: ShardingPlan, device: torch.device, world_size: int) -> DistributedModelParallel:
    """module with its tables sharded by plan and, with several ranks, its other parameters
    replicated (DistributedDataParallel) by TorchRec's DistributedModelParallel; module itself
    is changed in place (its collections become sharded ones). In a group of one there is
    nothing to replicate: DistributedDataParallel's bucketing and all-reduce of every gradient
    cost about 1.4 ms a step (benchmarks/peer_dcnv2.py --profile), so it is left out."""
    return DistributedModelParallel(
        module=module,
        device=device,
        plan=plan,
        sharders=[EmbeddingBagSharder()],
        init_data_parallel=world_size > 1,
    )


@dataclass(frozen=True)
class TablePlacement:
    """Where one table went: its sharding type, and the rows X columns each rank holds."""

    table: str
    rows: int
    dim: int
    sharding_type: str
    compute_kernel: str
    shards: tuple[tuple[int, int, int], ...]  # (rank, rows, columns) per shard
    note: str = ""

    def rank_bytes(self, rank: int, element_bytes: int = 4) -> int:
        return sum(rows * columns * element_bytes for owner, rows, columns in self.shards if owner == rank)


def placements(plan: ShardingPlan, config: ModelConfigBase, notes: dict[str, str], world_size: int) -> list[TablePlacement]:
    """The plan, one TablePlacement per table (config order)."""
    by_table: dict[str, Any] = {}
    for module_plan in plan.plan.values():
        by_table.update(module_plan)  # type: ignore[arg-type]
    out = []
    for feature in config.sparse_features:
        parameter = by_table[feature.name]
        if parameter.sharding_type == "data_parallel":
            shards = tuple((rank, feature.num_embeddings, feature.embedding_dim) for rank in range(world_size))
        else:
            shards = tuple(
                (shard_metadata.placement.rank(), *shard_metadata.shard_sizes)
                for shard_metadata in parameter.sharding_spec.shards
            )
        out.append(
            TablePlacement(
                feature.name,
                feature.num_embeddings,
                feature.embedding_dim,
                parameter.sharding_type,
                parameter.compute_kernel,
                shards,
                notes.get(feature.name, ""),
            )
        )
    return out


def format_placements(tables: list[TablePlacement], world_size: int) -> str:
    """The plan as a table: one row per table, the bytes each rank holds, and notes."""
    ranks = range(world_size)
    header = ["table", "rows x dim", "sharding", "kernel", *(f"rank {rank} MB" for rank in ranks)]
    rows = [
        [
            table.table,
            f"{table.rows:,} x {table.dim}",
            table.sharding_type,
            table.compute_kernel,
            *(f"{table.rank_bytes(rank) / 2**20:.2f}" for rank in ranks),
        ]
        for table in tables
    ]
    totals = [sum(table.rank_bytes(rank) for table in tables) / 2**20 for rank in ranks]
    rows.append(["all tables", "", "", "", *(f"{total:.2f}" for total in totals)])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines += [f"note: {table.table} is data_parallel: {table.note}" for table in tables if table.note]
    return "\n".join(lines)


def _initial_rows(
    seed: int, table_index: int, start: int, stop: int, dim: int, bound: float, std: float | None = None
) -> torch.Tensor:
    """Rows start..stop of table table_index's initial weights: uniform in [-bound, bound],
    or normal with standard deviation std when given. Drawn in blocks of INIT_BLOCK_ROWS rows,
    each from its own seeded generator, so a row's values do not depend on which rows a shard
    holds."""
    blocks = []
    first_block, last_block = start // INIT_BLOCK_ROWS, (stop - 1) // INIT_BLOCK_ROWS
    for block in range(first_block, last_block + 1):
        generator = torch.Generator().manual_seed(((seed * 1_000_003 + table_index) * 1_000_003 + block) % 2**63)
        if std is None:
            blocks.append(torch.rand(INIT_BLOCK_ROWS, dim, generator=generator, dtype=torch.float32))
        else:
            blocks.append(torch.randn(INIT_BLOCK_ROWS, dim, generator=generator, dtype=torch.float32))
    rows = torch.cat(blocks)[start - first_block * INIT_BLOCK_ROWS : stop - first_block * INIT_BLOCK_ROWS]
    return rows.mul_(2 * bound).sub_(bound) if std is None else rows.mul_(std)


@torch.no_grad()
def init_tables(module: nn.Module, config: ModelConfigBase, seed: int) -> None:
    """Set every table's rows normal with standard deviation config.embedding_init_std, or,
    when that is None, uniform in [-1/sqrt(cardinality), 1/sqrt(cardinality)] (TorchRec's
    default range); the same values whether the table is whole or sharded, so one process
    and N processes start from the same model (a reserved unknown row, past the cardinality,
    is drawn like the others)."""
    index = {feature.name: i for i, feature in enumerate(config.sparse_features)}
    std = getattr(config, "embedding_init_std", None)  # packages rendered before it have none
    for prefix, collection in collections(module):
        for name, tensor in collection.state_dict().items():
            table = name.split(".")[-2]  # embedding_bags.<table>.weight
            feature = config.sparse_features[index[table]]
            bound = 1.0 / math.sqrt(feature.cardinality)
            if isinstance(tensor, ShardedTensor):  # a ShardedTensor: this rank's pieces
                for piece in tensor.local_shards():
                    row, column = piece.metadata.shard_offsets
                    rows, columns = piece.metadata.shard_sizes
                    values = _initial_rows(seed, index[table], row, row + rows, feature.embedding_dim, bound, std)
                    piece.tensor.copy_(values[:, column : column + columns])
            else:
                tensor.copy_(_initial_rows(seed, index[table], 0, feature.num_embeddings, feature.embedding_dim, bound, std))


def local_table_bytes(module: nn.Module) -> int:
    """Bytes of embedding-table weights this process holds: its shards of sharded tables,
    whole replicated ones (measured on the tensors, not read off the plan)."""
    held = 0
    for _, collection in collections(module):
        for tensor in collection.state_dict().values():
            pieces = [piece.tensor for piece in tensor.local_shards()] if isinstance(tensor, ShardedTensor) else [tensor]
            held += sum(piece.numel() * piece.element_size() for piece in pieces)
    return held


def unsharded_state_dict(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """module's state dict with every sharded table gathered whole, on rank 0 (None on the
    other ranks); every rank must call it."""
    state = module.state_dict()
    rank = dist.get_rank() if dist.is_initialized() else 0
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if isinstance(value, ShardedTensor):
            full = torch.empty(value.size(), dtype=value.dtype) if rank == 0 else None
            value.gather(dst=0, out=full)
            if rank == 0:
                out[name] = full
        else:
            out[name] = value.detach().cpu()
    return out if rank == 0 else None
