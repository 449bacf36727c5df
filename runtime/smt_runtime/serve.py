"""Serving: export the model for inference and measure its serving cost against the budget.

Shapes: B = batch size, N = number of dense features, T = number of objectives.
"""

import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from torchrec import KeyedJaggedTensor, KeyedTensor

from .batch import table_to_batches
from .config import ModelConfigBase
from .parts import ModelParts
from .sparse import collections
from .synthetic import generate_synthetic

ModelInputs = tuple[torch.Tensor, KeyedJaggedTensor]
ServingInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

EXAMPLE_BATCH_SIZE = 64
EXPORT_TOLERANCE = 1e-5  # largest |reloaded - eager| logit difference accepted
CAPACITY_TABLE_ROWS = 8  # rows per table of spec_capacity_report's FLOP-measuring stand-in


def example_inputs(
    config: ModelConfigBase, batch_size: int = EXAMPLE_BATCH_SIZE, seed: int = 0
) -> ModelInputs:
    """Model inputs (dense B X N, the KeyedJaggedTensor of ids) of a synthetic batch.

    Multi-valued features carry as many ids as the synthetic data
    (config.synthetic.bag_lengths; 1 to 5 by default), which sets the pooling share of
    the measured FLOPs.
    """
    table = generate_synthetic(config, batch_size, seed)
    batch = next(table_to_batches(table, batch_size))
    return batch.dense, batch.sparse


class StackedTables(nn.Module):
    """An EmbeddingBagCollection whose tables all have one width, for serving: the tables
    stacked into one weight, so a batch's lookups are one embedding_bag call instead of one
    per table plus TorchRec's per-key splitting, which at serving batch sizes cost more than
    the lookups. Same call and result as the collection: KeyedJaggedTensor in, KeyedTensor
    (B X F * width, keys in order) out, each bag summed or averaged like its table.

    Args:
        collection: a trained, unsharded EmbeddingBagCollection of one width (its weights
            are copied).
    """

    def __init__(self, collection: nn.Module) -> None:
        super().__init__()
        configs = collection.embedding_bag_configs()
        self.keys = [name for config in configs for name in config.feature_names]
        self.width = configs[0].embedding_dim
        means = [config.pooling.name == "MEAN" for config in configs for _ in config.feature_names]
        self.any_mean = any(means)
        weights = [collection.embedding_bags[config.name].weight.detach() for config in configs for _ in config.feature_names]
        starts = [0]
        for weight in weights[:-1]:
            starts.append(starts[-1] + weight.shape[0])
        self.register_buffer("weight", torch.cat(weights).clone())
        self.register_buffer("first_rows", torch.tensor(starts, dtype=torch.int64))
        self.register_buffer("mean_mask", torch.tensor(means).view(-1, 1, 1))

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        values, lengths = features.values(), features.lengths()
        count = len(self.keys)
        per_key = lengths.view(count, -1)
        rows = values + torch.repeat_interleave(self.first_rows, per_key.sum(1), output_size=values.numel())
        bags = nn.functional.embedding_bag(rows, self.weight, torch.cumsum(lengths, 0) - lengths, mode="sum")
        pooled = bags.view(count, -1, self.width)
        if self.any_mean:
            counts = per_key.clamp(min=1).unsqueeze(-1).to(pooled.dtype)
            pooled = torch.where(self.mean_mask, pooled / counts, pooled)
        return KeyedTensor(
            keys=self.keys,
            length_per_key=[self.width] * count,
            values=pooled.permute(1, 0, 2).reshape(per_key.shape[1], count * self.width),
        )


def serving_model(model: nn.Module) -> nn.Module:
    """model (trained, unsharded) for serving, in eval mode: every EmbeddingBagCollection whose
    tables share one width becomes StackedTables (the same function, faster at serving batch
    sizes; mixed widths keep TorchRec's collection). Changes model in place."""
    for name, collection in list(collections(model)):
        if len({config.embedding_dim for config in collection.embedding_bag_configs()}) != 1:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, StackedTables(collection))
    return model.eval()


class ServingModel(nn.Module):
    """A trained model behind plain tensors, the form export writes: the ids arrive as
    TorchRec's KeyedJaggedTensor parts (config.sparse_features' order), so a server
    needs no TorchRec objects to call it.

    Called with dense (B X N), values (1-D int64: every example's ids of the first
    feature, then the second's...) and lengths (1-D int64 of length F * B: each example's
    id count per feature), it returns the logits, B X T.
    """

    def __init__(self, model: nn.Module, config: ModelConfigBase) -> None:
        super().__init__()
        self.model = model
        self.keys = [feature.name for feature in config.sparse_features]

    def forward(self, dense: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(dense, KeyedJaggedTensor(keys=self.keys, values=values, lengths=lengths))


def serving_inputs(inputs: ModelInputs) -> ServingInputs:
    """ModelInputs as ServingModel's plain tensors."""
    dense, sparse = inputs
    return dense, sparse.values(), sparse.lengths()


@dataclass(frozen=True)
class ExportResult:
    """Where and how the model was exported, and how closely the file matches it.

    Attributes:
        path: the written file.
        format: "torch.export" (an ExportedProgram) or "torchscript" (the fallback).
        max_abs_diff: largest logit difference between the reloaded file and the
            eager model, on a batch of another size than the export example.
        fallback_reason: why torch.export failed, when format is "torchscript".
    """

    path: Path
    format: str
    max_abs_diff: float
    fallback_reason: str = ""


def _dynamic_shapes() -> tuple[Any, ...]:
    """Let the batch size and the number of ids vary at serving time."""
    auto = torch.export.Dim.AUTO
    return ({0: auto}, {0: auto}, {0: auto})


def load_exported(path: str | Path) -> Callable[..., torch.Tensor]:
    """Load a file written by export_model; call it like ServingModel."""
    with zipfile.ZipFile(path) as archive:
        # torch.export archives carry an archive_format record; TorchScript ones do not.
        is_program = any(n.endswith("/archive_format") for n in archive.namelist())
    if is_program:
        return torch.export.load(path).module()
    return torch.jit.load(str(path))


def check_export_path(path: str | Path) -> Path:
    """path, if an export can be written there: refused (ValueError, one line) when it
    already exists or its directory is missing or not writable, before any work."""
    path = Path(path)
    folder = path.parent
    if path.exists() or path.is_symlink():
        raise ValueError(f"{path} already exists; remove it or choose another export path")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a directory; choose another export path")
    if not folder.exists():
        raise ValueError(
            f"{folder} does not exist; create it (mkdir -p {folder}) or choose another" " export path"
        )
    problem = unwritable(folder)
    if problem:
        raise ValueError(f"{folder} is not writable ({problem}); choose another export path")
    return path


def unwritable(folder: Path) -> str:
    """Why no file can be created in the existing folder ("" when one can): creates and
    removes a probe file, the one test that also holds for root and read-only mounts."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    return ""


def export_model(model: nn.Module, config: ModelConfigBase, path: str | Path) -> ExportResult:
    """Export an unsharded model, as ServingModel, to path and check that the reloaded
    file computes the same logits.

    Uses torch.export with a dynamic batch size; if export fails (e.g. on Python
    control flow a technique added), falls back to torch.jit.trace.

    The file is written next to path under a hidden name and renamed to path once it
    checks out, so a failed export leaves nothing behind.

    Raises:
        ValueError: path exists, or its folder is missing or cannot be written (one line).
        RuntimeError: the reloaded model's logits differ from the eager model's.
    """
    path = check_export_path(path)
    serving = ServingModel(model, config).eval()
    inputs = serving_inputs(example_inputs(config, seed=config.seed))
    export_format, fallback_reason = "torch.export", ""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # renamed once checked
    try:
        try:
            program = torch.export.export(serving, inputs, dynamic_shapes=_dynamic_shapes(), strict=False)
            torch.export.save(program, partial)
        except OSError:
            raise
        except Exception as error:  # export raises many error types; any of them means "fall back"
            export_format, fallback_reason = (
                "torchscript",
                f"{type(error).__name__}: {error}",
            )
            torch.jit.save(torch.jit.trace(serving, inputs, strict=False), str(partial))
        check_inputs = serving_inputs(example_inputs(config, EXAMPLE_BATCH_SIZE // 2 + 1, config.seed + 1))
        with torch.no_grad():
            expected = serving(*check_inputs)
            actual = load_exported(partial)(*check_inputs)
        max_abs_diff = (actual - expected).abs().max().item()
        if not max_abs_diff <= EXPORT_TOLERANCE:
            raise RuntimeError(f"exported model at {path} differs from the eager model by {max_abs_diff:.3g}")
        os.replace(partial, path)
    except OSError as error:
        raise ValueError(
            f"{path}: cannot write the export ({error.strerror or error}); free space or"
            " choose another path"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(path, export_format, max_abs_diff, fallback_reason)


class _PoolingAndElementwiseFlops(TorchDispatchMode):
    """Counts the FLOPs FlopCounterMode leaves out: one add per pooled embedding
    value and one FLOP per output element of elementwise ops."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: tuple[type, ...],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket is torch.ops.aten._embedding_bag:
            weight, indices = args[0], args[1]
            self.flops += indices.numel() * weight.shape[1]
        elif torch.Tag.pointwise in func.tags and isinstance(out, torch.Tensor):
            self.flops += out.numel()
        return out


def forward_flops(model: nn.Module, inputs: ModelInputs) -> int:
    """FLOPs of one forward pass on inputs: matmuls (2 per multiply-add, counted by
    torch's FlopCounterMode), embedding-bag pooling and elementwise ops."""
    model.eval()
    matmuls, rest = FlopCounterMode(display=False), _PoolingAndElementwiseFlops()
    with torch.no_grad(), matmuls, rest:
        model(*inputs)
    return matmuls.get_total_flops() + rest.flops


def capacity_report(model: nn.Module, config: ModelConfigBase) -> dict[str, Any]:
    """Serving cost of model, measured, against the spec's budget (config.serving).

    MFLOPs per example are measured on a synthetic batch of EXAMPLE_BATCH_SIZE
    examples (forward_flops), not estimated from the architecture.

    Returns:
        parameters, embedding_parameters, embedding_bytes, dense_parameters,
        mflops_per_example, max_params, max_mflops_per_example,
        params_within_budget, mflops_within_budget, within_budget, and
        params_budget_used, mflops_budget_used (cost / budget; above 1 is over).
    """
    inputs = example_inputs(config, seed=config.seed)
    mflops = forward_flops(model, inputs) / inputs[0].shape[0] / 1e6
    return _budget_report(_parameter_counts(model), mflops, config)


def spec_capacity_report(parts: ModelParts, config: ModelConfigBase) -> dict[str, Any]:
    """capacity_report computed from the spec, without allocating the embedding tables.

    Builds a stand-in whose tables have at most CAPACITY_TABLE_ROWS rows: its dense
    parameters and MFLOPs per example are the model's (a lookup costs the same whatever
    the table's size), and each sparse feature's table is counted at its spec size,
    num_embeddings (the cardinality, plus a reserved unknown row) X embedding_dim. A spec with tables larger than memory is measured as
    cheaply as a small one.
    """
    features = tuple(
        replace(
            feature,
            cardinality=min(feature.cardinality, CAPACITY_TABLE_ROWS),
            unknown_id=(
                feature.unknown_id
                if feature.unknown_id is not None and feature.unknown_id < CAPACITY_TABLE_ROWS
                else None
            ),
        )
        for feature in config.sparse_features
    )
    stand_in = replace(config, sparse_features=features)
    torch.manual_seed(config.seed)
    model = parts.model(stand_in)
    rows = {feature.name: feature.num_embeddings for feature in config.sparse_features}
    inputs = example_inputs(stand_in, seed=config.seed)
    mflops = forward_flops(model, inputs) / inputs[0].shape[0] / 1e6
    return _budget_report(_parameter_counts(model, rows), mflops, config)


def _tables(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(table name, nn.EmbeddingBag) of every table of model's collections."""
    return [
        (name, bag) for _, collection in collections(model) for name, bag in collection.embedding_bags.items()
    ]


def _parameter_counts(model: nn.Module, rows: dict[str, int] | None = None) -> dict[str, int]:
    """Parameter counts of an unsharded model; rows: table name -> the rows to count it with."""
    rows = rows or {}
    tables = _tables(model)
    built = sum(table.weight.numel() for _, table in tables)
    sizes = [rows.get(name, table.weight.shape[0]) * table.weight.shape[1] for name, table in tables]
    embedding_parameters = sum(sizes)
    parameters = sum(p.numel() for p in model.parameters()) - built + embedding_parameters
    return {
        "parameters": parameters,
        "embedding_parameters": embedding_parameters,
        "embedding_bytes": sum(size * table.weight.element_size() for size, (_, table) in zip(sizes, tables)),
        "dense_parameters": parameters - embedding_parameters,
    }


def _budget_report(counts: dict[str, int], mflops: float, config: ModelConfigBase) -> dict[str, Any]:
    budget = config.serving
    parameters = counts["parameters"]
    params_ok = parameters <= budget.max_params
    mflops_ok = mflops <= budget.max_mflops_per_example
    return {
        **counts,
        "mflops_per_example": mflops,
        "max_params": budget.max_params,
        "max_mflops_per_example": budget.max_mflops_per_example,
        "params_within_budget": params_ok,
        "mflops_within_budget": mflops_ok,
        "within_budget": params_ok and mflops_ok,
        "params_budget_used": parameters / budget.max_params,
        "mflops_budget_used": mflops / budget.max_mflops_per_example,
    }


def format_capacity_report(report: dict[str, Any]) -> str:
    """The capacity report as a small table with the budget and its use next to each cost."""

    def verdict(ok: bool) -> str:
        return "within budget" if ok else "OVER BUDGET"

    rows = [
        (
            "parameters",
            f"{report['parameters']:,}",
            f"{report['max_params']:,}",
            f"{report['parameters'] / report['max_params']:.1%}",
            verdict(report["params_within_budget"]),
        ),
        ("  embedding", f"{report['embedding_parameters']:,}", "", "", ""),
        ("  dense", f"{report['dense_parameters']:,}", "", "", ""),
        ("embedding bytes", f"{report['embedding_bytes']:,}", "", "", ""),
        (
            "MFLOPs / example",
            f"{report['mflops_per_example']:.4f}",
            f"{report['max_mflops_per_example']:g}",
            f"{report['mflops_per_example'] / report['max_mflops_per_example']:.1%}",
            verdict(report["mflops_within_budget"]),
        ),
    ]
    lines = [f"{'capacity':<18}{'cost':>14}{'budget':>14}{'used':>9}  verdict"]
    lines += [
        f"{name:<18}{cost:>14}{limit:>14}{used:>9}  {ok}".rstrip() for name, cost, limit, used, ok in rows
    ]
    lines.append(f"overall: {verdict(report['within_budget'])}")
    return "\n".join(lines)
