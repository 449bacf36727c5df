"""Unknown ids: which lookups read a feature's unknown row, so that the row learns.

Every sparse feature has an unknown row (config.SparseFeature.unknown_row): the spec's declared
unknown id, or a row the runtime reserves past the data's ids (id = cardinality). A lookup
reads it when its id

- was seen fewer than config.min_count times in the training split (a training run counts the
  ids once, Examples.id_counts, and stores the result in the model: UnknownIds.known),
- lies outside [0, cardinality) (a server meeting an id newer than the tables), or
- in training, is drawn among a random share config.unknown_dropout of the lookups.

The first rule is what makes the row learn: ids seen once or twice in training read it in
training too, so at validation and serving an id never seen reads a row trained on rare ids
instead of its own row, left at its random initial value (FuxiCTR's min_categr_count does the
same, mapping rare ids to its OOV index). The mask lives in the model as a buffer, so the
exported model maps rare and unseen ids itself: a server sends raw in-range ids, or any id.

Shapes: F = number of sparse features, V = number of ids of a batch (every feature's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from .config import ModelConfigBase
from .metrics import format_by_split


class UnknownIds(nn.Module):
    """Maps every lookup that must read its feature's unknown row to that row (see the module
    docstring), before the tables look the ids up.

    known holds one flag per id of every feature (features one after another): whether the id
    keeps its own row. It starts all true (a fresh model: every in-range id is its own) and a
    training run sets it from the train split's counts (set_known_ids); it is saved with the
    model's weights and exported with it.

    Called with features, a KeyedJaggedTensor with one key per sparse feature (config order),
    every key with the same number of bags, it returns a KeyedJaggedTensor of the same keys and
    bag lengths holding the V ids to look up.

    Args:
        config: the model's ModelConfig; reads config.sparse_features and
            config.unknown_dropout.
    """

    def __init__(self, config: ModelConfigBase) -> None:
        super().__init__()
        features = config.sparse_features
        cardinalities = [feature.cardinality for feature in features]
        self.dropout = float(getattr(config, "unknown_dropout", 0.0))
        self.register_buffer("known", torch.ones(sum(cardinalities), dtype=torch.bool))
        # Constants of the spec, rebuilt with the model: not saved with its weights.
        first = np.concatenate([[0], np.cumsum(cardinalities)[:-1]]).astype(np.int64)
        self.register_buffer("first_ids", torch.from_numpy(first), persistent=False)
        self.register_buffer("cardinalities", torch.tensor(cardinalities, dtype=torch.int64), persistent=False)
        unknown = [feature.unknown_row for feature in features]
        self.register_buffer("unknown_rows", torch.tensor(unknown, dtype=torch.int64), persistent=False)

    def forward(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        values, lengths = features.values(), features.lengths()
        per_key = lengths.view(self.cardinalities.numel(), -1).sum(1)
        feature = torch.repeat_interleave(
            torch.arange(per_key.numel(), device=values.device), per_key, output_size=values.numel()
        )
        inside = (values >= 0) & (values < self.cardinalities[feature])
        keep = inside & self.known[torch.where(inside, values, 0) + self.first_ids[feature]]
        if self.training and self.dropout > 0:
            keep = keep & (torch.rand(values.shape, device=values.device) >= self.dropout)
        mapped = torch.where(keep, values, self.unknown_rows[feature])
        return KeyedJaggedTensor(keys=features.keys(), values=mapped, lengths=lengths)


def unknown_modules(model: nn.Module) -> Iterator[UnknownIds]:
    """Every UnknownIds of model (one in the template's EmbeddingTables)."""
    for module in model.modules():
        if isinstance(module, UnknownIds):
            yield module


def known_ids(counts: dict[str, np.ndarray], config: ModelConfigBase) -> dict[str, np.ndarray]:
    """feature -> bool per id in [0, cardinality): whether the train split's counts
    (Examples.id_counts) hold the id at least config.min_count times (0: every id is known;
    1: every id seen in training, so unseen ids read the unknown row but no training lookup
    does, and the row stays as initialised)."""
    return {
        feature.name: counts[feature.name][: feature.cardinality] >= config.min_count
        for feature in config.sparse_features
    }


@torch.no_grad()
def set_known_ids(model: nn.Module, known: dict[str, np.ndarray], config: ModelConfigBase) -> None:
    """Store known (known_ids) in every UnknownIds of model."""
    flags = torch.from_numpy(np.concatenate([known[feature.name] for feature in config.sparse_features]))
    for module in unknown_modules(model):
        module.known.copy_(flags.to(module.known.device))


def unknown_shares(
    counts: dict[str, np.ndarray], known: dict[str, np.ndarray], config: ModelConfigBase
) -> dict[str, float]:
    """feature -> share of a split's lookups (its id counts, Examples.id_counts) that read the
    unknown row: ids that are not known, and a declared unknown id itself (which nulls
    read); NaN for a split without ids of the feature. Lookups unknown_dropout draws in
    training are not counted."""
    shares = {}
    for feature in config.sparse_features:
        feature_counts = counts[feature.name]
        hits = ~known[feature.name]
        if feature.unknown_id is not None:
            hits = hits.copy()
            hits[feature.unknown_id] = True
        total = int(feature_counts.sum())
        shares[feature.name] = float(feature_counts[hits].sum() / total) if total else float("nan")
    return shares


def unknown_summary(
    counts: dict[str, dict[str, np.ndarray]], known: dict[str, np.ndarray], config: ModelConfigBase
) -> dict[str, Any]:
    """What metrics.json records under "unknown_ids": min_count, unknown_dropout, the ids per
    feature that read the unknown row for being rare in training (rare_ids), and per split
    the share of lookups that read it (share: split -> feature -> share)."""
    return {
        "min_count": config.min_count,
        "unknown_dropout": config.unknown_dropout,
        "rare_ids": {
            feature.name: int((~known[feature.name] & (counts["train"][feature.name][: feature.cardinality] > 0)).sum())
            for feature in config.sparse_features
        },
        "share": {split: unknown_shares(split_counts, known, config) for split, split_counts in counts.items()},
    }


def format_unknown_shares(shares: dict[str, dict[str, float]]) -> str:
    """The shares of unknown_summary as a table: one row per feature, one column per split."""
    return format_by_split("unknown row share", shares, ">9.1%")
