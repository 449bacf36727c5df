"""The experiment's fleet: a seeded generator of model specs whose synthetic worlds differ in
structure, and ``fleet.yml``, the fleet it wrote, committed before any result.

Every model is an ordinary spec (objectives, features, serving budget) plus a ``synthetic:`` section
that fixes what its data hides. Quotas, not coin flips, decide how many models get each kind of
structure, so the fleet's composition is what this docstring says whatever the seed:

- 20 % **additive** worlds, where no technique should help: one objective, no dense features, no
  feature cross (``crosses: []``), no noise, no shift; the template's MLP over embeddings already
  models a sum of per-id effects;
- 80 % **structured** worlds, each with one to three feature crosses; the first cross has order 2
  (3/8 of them), 3 (3/8) or 4 (2/8), further crosses order 2 to 4, strengths 0.8 to 2.0 (logit
  standard deviation); among them, by quota:
  - 3/8 heavy-tailed dense counters (``dense_tail`` 2 to 3, two to five dense features),
  - 1/2 multi-task (two or three objectives): half with correlated objectives
    (``objective_correlation`` 0.8 to 1.0), half uncorrelated (0 to 0.2),
  - 3/10 label noise (2 to 6 % of labels flipped, always below the rarest label rate),
  - 3/10 a shifted test split (``test_shift`` 0.3 to 1.0).

Tags name each model's structure (``additive``, ``cross-2`` ... ``cross-4``, ``heavy-tail``,
``multi-task-correlated``, ``multi-task-uncorrelated``, ``label-noise``, ``test-shift``); they are
the experiment's knowledge, never shown to either arm (representatives cluster on the spec's
descriptors, which do not include the ``synthetic:`` section). ``quick: true`` marks the models of
``--quick``: the first two additive models and the structured models that together cover every tag
(greedy, in name order).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FLEET_FILE = Path(__file__).resolve().parent / "fleet.yml"
FLEET_SEED = 2603  # the paper's arXiv number, 2603.24963
FLEET_SIZE = 40
QUICK_SIZE = 8
ADDITIVE_SHARE = 0.2
CARDINALITIES = (50, 200, 1000, 5000, 20000)
EMBEDDING_DIMS = (8, 16)
EVENTS = ("click", "conversion", "install", "like", "share")
TAGS = (
    "additive", "cross-2", "cross-3", "cross-4", "heavy-tail", "multi-task-correlated",
    "multi-task-uncorrelated", "label-noise", "test-shift",
)


@dataclass(frozen=True)
class FleetModel:
    """One model of the experiment's fleet: its spec, its world's tags, whether --quick uses it."""

    name: str
    tags: tuple[str, ...]
    quick: bool
    spec: dict[str, Any]


def _quota(rng: random.Random, population: list[int], share: float) -> set[int]:
    """round(share * len(population)) members of population, drawn by rng."""
    return set(rng.sample(population, round(share * len(population))))


def _spec(rng: random.Random, index: int, structure: dict[str, Any]) -> dict[str, Any]:
    """One model's spec for the given structure (its first cross order, flags, number of objectives)."""
    orders = [structure["first_order"]] + [rng.choice((2, 3, 4)) for _ in range(rng.randint(0, 2))] if structure["first_order"] else []
    n_sparse = rng.randint(max(3, max(orders, default=3)), 8)
    sparse = [
        {
            "name": f"s{j}",
            "cardinality": rng.choice(CARDINALITIES),
            "embedding_dim": rng.choice(EMBEDDING_DIMS),
            "multi_valued": rng.random() < 0.25,
        }
        for j in range(n_sparse)
    ]
    if structure["additive"]:
        n_dense = 0
    elif structure["heavy_tail"]:
        n_dense = rng.randint(2, 5)
    else:
        n_dense = rng.randint(0, 4)
    n_obj = rng.choice((2, 3)) if structure["multi_task"] else 1
    objectives = [{"name": EVENTS[j], "weight": 1.0 if j == 0 else rng.choice((0.5, 1.0, 2.0))} for j in range(n_obj)]
    rates = [round(rng.uniform(0.1, 0.3), 3)]
    for _ in range(n_obj - 1):  # later events are rarer (click, then conversion, ...)
        rates.append(round(max(0.02, rates[-1] * rng.uniform(0.15, 0.6)), 3))
    world: dict[str, Any] = {
        "crosses": [
            {"fields": [f["name"] for f in rng.sample(sparse, order)], "strength": round(rng.uniform(0.8, 2.0), 2)}
            for order in orders
        ],
        "dense_cross": round(rng.uniform(0.3, 1.2), 2) if n_dense >= 2 else 0.0,
        "dense_tail": round(rng.uniform(2.0, 3.0), 2) if structure["heavy_tail"] else round(rng.uniform(0.6, 1.2), 2),
    }
    if structure["multi_task"]:
        low, high = (0.8, 1.0) if structure["correlated"] else (0.0, 0.2)
        world["objective_correlation"] = round(rng.uniform(low, high), 2)
    if structure["label_noise"]:
        world["label_noise"] = round(min(rng.uniform(0.02, 0.06), 0.5 * min(rates)), 3)
    if structure["test_shift"]:
        world["test_shift"] = round(rng.uniform(0.3, 1.0), 2)
    embedding = sum(f["cardinality"] * f["embedding_dim"] for f in sparse)
    return {
        "model_name": f"fleet_{index:02d}",
        "description": f"Fleet model {index:02d}: {n_sparse} sparse and {n_dense} dense features, {n_obj} objective(s).",
        "objectives": objectives,
        "sparse_features": sparse,
        "dense_features": [{"name": f"d{j}"} for j in range(n_dense)],
        "serving": {
            "max_params": int(math.ceil((embedding + 1_000_000) / 100_000) * 100_000),
            "max_mflops_per_example": round(math.exp(rng.uniform(math.log(0.2), math.log(1.5))), 2),
        },
        "techniques": [],
        "hyperparameters": {"label_rates": rates},
        "synthetic": world,
    }


def _tags(structure: dict[str, Any], spec: dict[str, Any]) -> tuple[str, ...]:
    if structure["additive"]:
        return ("additive",)
    orders = sorted({len(cross["fields"]) for cross in spec["synthetic"]["crosses"]})
    tags = [f"cross-{order}" for order in orders]
    if structure["heavy_tail"]:
        tags.append("heavy-tail")
    if structure["multi_task"]:
        tags.append("multi-task-correlated" if structure["correlated"] else "multi-task-uncorrelated")
    tags += [flag.replace("_", "-") for flag in ("label_noise", "test_shift") if structure[flag]]
    return tuple(tags)


def _quick_names(models: list[tuple[str, tuple[str, ...]]], size: int) -> set[str]:
    """The first two additive models, then structured ones adding the most uncovered tags (name order breaks ties)."""
    additive = [name for name, tags in models if tags == ("additive",)][:2]
    chosen, covered = list(additive), {"additive"}
    structured = [(name, set(tags)) for name, tags in models if tags != ("additive",)]
    while len(chosen) < size and structured:
        name, tags = max(structured, key=lambda item: (len(item[1] - covered), -int(item[0].split("_")[1])))
        chosen.append(name)
        covered |= tags
        structured = [item for item in structured if item[0] != name]
    return set(chosen)


def draw_fleet(seed: int = FLEET_SEED, size: int = FLEET_SIZE, quick: int = QUICK_SIZE) -> list[FleetModel]:
    """The fleet of ``size`` models drawn from ``seed`` (the same arguments give the same fleet)."""
    if size < 5:
        raise ValueError(f"a fleet of {size} models cannot hold every kind of world; give at least 5")
    rng = random.Random(seed)
    indices = list(range(size))
    additive = set(rng.sample(indices, max(1, round(ADDITIVE_SHARE * size))))
    structured = [i for i in indices if i not in additive]
    n = len(structured)
    shuffled = rng.sample(structured, n)
    n2, n3 = round(3 / 8 * n), round(3 / 8 * n)
    first_order = {i: 2 if k < n2 else 3 if k < n2 + n3 else 4 for k, i in enumerate(shuffled)}
    heavy = _quota(rng, structured, 3 / 8)
    multi = sorted(_quota(rng, structured, 1 / 2))
    correlated = set(rng.sample(multi, len(multi) // 2))
    noise = _quota(rng, structured, 3 / 10)
    shift = _quota(rng, structured, 3 / 10)
    drawn = []
    for i in indices:
        structure = {
            "additive": i in additive,
            "first_order": first_order.get(i, 0),
            "heavy_tail": i in heavy,
            "multi_task": i in multi,
            "correlated": i in correlated,
            "label_noise": i in noise,
            "test_shift": i in shift,
        }
        spec = _spec(random.Random(f"{seed}/{i}"), i, structure)  # each model its own stream: quotas never shift another's spec
        drawn.append((spec["model_name"], _tags(structure, spec), spec))
    quick_names = _quick_names([(name, tags) for name, tags, _ in drawn], min(quick, size))
    return [FleetModel(name, tags, name in quick_names, spec) for name, tags, spec in drawn]


HEADER = """\
# The fleet of benchmarks/fleet_experiment.py (issue 22), written by its seeded generator
# (benchmarks/fleet_experiment/worlds.py) and committed before any result of the experiment:
#   python benchmarks/fleet_experiment.py --write-fleet
# Each entry: the model's spec (what `smt new` gets), the tags of its synthetic world (known to the
# experiment, never to either arm) and whether --quick uses it.
"""


def fleet_text(models: list[FleetModel], seed: int = FLEET_SEED) -> str:
    """fleet.yml's text for ``models`` drawn from ``seed``."""
    body = {
        "seed": seed,
        "models": [{"name": m.name, "tags": list(m.tags), "quick": m.quick, "spec": m.spec} for m in models],
    }
    return HEADER + yaml.safe_dump(body, sort_keys=False, width=120)


def load_fleet(path: Path = FLEET_FILE) -> list[FleetModel]:
    """The fleet written in ``path`` (fleet.yml)."""
    data = yaml.safe_load(path.read_text())
    return [FleetModel(m["name"], tuple(m["tags"]), bool(m["quick"]), m["spec"]) for m in data["models"]]


def composition(models: list[FleetModel]) -> dict[str, int]:
    """Models per tag, in TAGS order."""
    return {tag: sum(tag in m.tags for m in models) for tag in TAGS}
