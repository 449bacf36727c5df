"""The uncertainty of a model's relative logloss change: a paired bootstrap over test examples and seeds.

Each trial leaves ``predictions.npz`` (the split's logits and labels, rows X T). For seed s the
baseline and the candidate were evaluated on the same examples in the same order, so a resample
draws the examples' weights once and uses them for both sides (paired: what differs between the two
models, not which examples happened to be drawn, makes the interval). One bootstrap replicate:

1. with several seeds, draw S seeds with replacement (training noise);
2. for each drawn seed, resample its examples, the same way for both sides (test noise): each
   example gets a Poisson(1) count (the Poisson bootstrap: for splits of thousands of examples
   indistinguishable from drawing n with replacement, and one matrix product per batch of
   replicates instead of a gather);
3. per objective o: rel_o = (count-weighted sum of candidate losses - that of baseline losses) /
   that of baseline losses, averaged over the drawn seeds; the model's change is
   sum_o w_o rel_o / sum_o w_o.

The interval is the central ``level`` share of the replicates (percentiles), ``se`` their standard
deviation. The generator is seeded, so the same trials always give the same interval. When the
two sides' labels differ (a template change that changes the data itself), rows are not the same
examples: each side is resampled on its own (unpaired), and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESAMPLES = 1000
SEED = 0
# Example weights drawn per interval (replicates x seeds x rows) above which fewer replicates are
# drawn, so a test split of millions of rows still takes seconds; never fewer than MIN_RESAMPLES.
MAX_DRAWS = 100_000_000
MIN_RESAMPLES = 200
BATCH_VALUES = 4_000_000  # replicate weights drawn at once (memory: 8 bytes each)


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval of a relative change: [low, high] at ``level``, and the replicates' sd."""

    low: float
    high: float
    se: float
    level: float
    resamples: int
    paired: bool = True


@dataclass(frozen=True)
class SidePredictions:
    """One trial's per-example losses on one split: rows X T, objective names, labels."""

    objectives: tuple[str, ...]
    losses: np.ndarray
    labels: np.ndarray


def load_losses(path: Path, split: str) -> SidePredictions:
    """Per-example binary cross-entropy of every objective from a trial's predictions.npz."""
    with np.load(path) as data:
        logits = data[f"{split}_logits"].astype(np.float64)
        labels = data[f"{split}_labels"].astype(np.float64)
        objectives = tuple(str(name) for name in data["objectives"])
    # -log sigmoid written to stay finite, as the model's metrics.logloss computes it
    return SidePredictions(objectives, np.logaddexp(0.0, logits) - labels * logits, labels)


def _replicate_sums(losses: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` Poisson-bootstrap resamples of the rows: each objective's count-weighted loss sum
    (draws X T) and each resample's total count (draws)."""
    rows = losses.shape[0]
    sums, counts = np.empty((draws, losses.shape[1])), np.empty(draws)
    batch = max(1, BATCH_VALUES // max(rows, 1))
    for start in range(0, draws, batch):
        stop = min(start + batch, draws)
        weights = rng.poisson(1.0, size=(stop - start, rows)).astype(np.float64)
        sums[start:stop] = weights @ losses
        counts[start:stop] = weights.sum(axis=1)
    return sums, counts


def _seed_changes(base: SidePredictions, cand: SidePredictions, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """``draws`` replicates of one seed's per-objective relative change, draws X T; and whether paired."""
    paired = base.labels.shape == cand.labels.shape and np.array_equal(base.labels, cand.labels)
    if paired:
        # One set of weights for both sides: resample the stacked [baseline | candidate] columns.
        sums, _ = _replicate_sums(np.concatenate([base.losses, cand.losses], axis=1), draws, rng)
        width = base.losses.shape[1]
        base_sums, cand_sums = sums[:, :width], sums[:, width:]
    else:  # different examples: mean losses of independent resamples
        base_sums, base_counts = _replicate_sums(base.losses, draws, rng)
        cand_sums, cand_counts = _replicate_sums(cand.losses, draws, rng)
        base_sums, cand_sums = base_sums / base_counts[:, None], cand_sums / cand_counts[:, None]
    return (cand_sums - base_sums) / base_sums, paired


def _columns(side: SidePredictions, names: list[str]) -> SidePredictions:
    """The objectives ``names`` of one side, in that order."""
    index = [side.objectives.index(name) for name in names]
    return SidePredictions(tuple(names), side.losses[:, index], side.labels[:, index])


def paired_bootstrap(
    baseline: list[SidePredictions],
    candidate: list[SidePredictions],
    weights: dict[str, float],
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[Interval, dict[str, Interval]]:
    """The model's interval and each objective's, from paired trials (same seeds, same order)."""
    seeds = len(baseline)
    names = list(weights)
    rows = max(side.losses.shape[0] for side in baseline + candidate)
    resamples = max(MIN_RESAMPLES, min(resamples, MAX_DRAWS // max(1, rows * seeds)))
    rng = np.random.default_rng(seed)
    per_seed, paired = [], True
    for base, cand in zip(baseline, candidate):
        changes, same = _seed_changes(_columns(base, names), _columns(cand, names), resamples, rng)
        per_seed.append(changes)
        paired = paired and same
    stacked = np.stack(per_seed)  # seed X replicate X T
    # Replicate b averages S seeds drawn with replacement; position j takes replicate perm_j[b] of
    # its seed, so a seed drawn twice in one replicate brings two independent example resamples.
    drawn = rng.integers(0, seeds, size=(resamples, seeds))
    rows_of = np.stack([rng.permutation(resamples) for _ in range(seeds)], axis=1)  # replicate X position
    objective_changes = stacked[drawn, rows_of].mean(axis=1)  # replicate X T
    total = sum(weights.values()) or 1.0
    model_changes = objective_changes @ np.array([weights[name] / total for name in names])

    def interval(values: np.ndarray) -> Interval:
        tail = (1.0 - level) / 2 * 100
        low, high = np.percentile(values, [tail, 100 - tail])
        return Interval(float(low), float(high), float(values.std(ddof=1)), level, resamples, paired)

    return interval(model_changes), {name: interval(objective_changes[:, index]) for index, name in enumerate(names)}
