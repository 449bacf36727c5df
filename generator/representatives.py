"""Representative models: cluster the fleet by model descriptors and take each cluster's medoid.

Template iteration qualifies a change on a few models that stand for the whole fleet. Each model
becomes a vector of descriptors read from its spec (and from its data files when it has some),
standardized per descriptor; scikit-learn's KMeans (seeded, so the same fleet always gives the same
clusters) groups the vectors, and the member of each cluster closest to all the others (its medoid)
is that cluster's representative.

Formula (also in the README). For model m and descriptor j, x_mj is the raw value and
z_mj = (x_mj - mean_j) / std_j (population std; a descriptor equal on every model is dropped). The
technique set is one 0/1 column per technique used in the fleet, each multiplied by 1/sqrt(T)
after standardizing (T = number of such columns), so the whole set weighs about as much as one
descriptor. Distances are Euclidean in z. medoid(C) = argmin_{m in C} sum_{n in C} |z_m - z_n|.
coverage(R) = share of models whose distance to their cluster's representative is at most R,
R = 0.5 x the median distance between two models unless given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import SmtError
from .fleet import Fleet, ModelEntry

SEED = 0
DATA_DIR = "data"  # a model's own data files: generated/<model>/data/*.parquet


@dataclass(frozen=True)
class Descriptors:
    """One model's descriptor values, by name (raw, before standardizing)."""

    model: str
    values: dict[str, float]


@dataclass
class Cluster:
    """A group of similar models, its representative (medoid) and what sets it apart."""

    representative: str
    members: list[str]
    distinctive: list[tuple[str, float, float]] = field(default_factory=list)  # (descriptor, cluster mean, fleet mean)
    distances: dict[str, float] = field(default_factory=dict)  # member -> distance to the representative


@dataclass
class Representatives:
    """The clustering of a fleet: clusters, the chosen K and how it was chosen, and coverage."""

    k: int
    chosen_by: str
    clusters: list[Cluster]
    radius: float
    silhouettes: dict[int, float] = field(default_factory=dict)
    descriptors: list[Descriptors] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [cluster.representative for cluster in self.clusters]

    @property
    def coverage(self) -> float:
        """Share of the fleet within ``radius`` of its cluster's representative."""
        distances = [d for cluster in self.clusters for d in cluster.distances.values()]
        return sum(d <= self.radius + 1e-12 for d in distances) / len(distances) if distances else 0.0


def _data_statistics(directory: Path, objectives: list[str]) -> dict[str, float]:
    """Rows and mean positive rate of the model's own training data, when it has any."""
    path = directory / DATA_DIR / "train.parquet"
    if not path.is_file():
        return {}
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return {}
    table = pq.read_table(path, columns=[f"label_{name}" for name in objectives])
    rates = [float(sum(table.column(f"label_{name}").to_pylist())) / max(table.num_rows, 1) for name in objectives]
    return {"data_log10_rows": math.log10(max(table.num_rows, 1)), "data_mean_label_rate": sum(rates) / len(rates)}


def describe(entry: ModelEntry) -> Descriptors:
    """The descriptors of one model (see the module docstring)."""
    answers = entry.answers
    sparse = [f for f in answers.get("sparse_features") or [] if isinstance(f, dict)]
    objectives = [o.get("name") for o in answers.get("objectives") or [] if isinstance(o, dict)]
    serving = answers.get("serving") or {}
    log_cards = [math.log10(max(int(f.get("cardinality", 1)), 1)) for f in sparse] or [0.0]
    dims = [int(f.get("embedding_dim", 0)) for f in sparse] or [0]
    values: dict[str, float] = {
        "objectives": len(objectives),
        "sparse_features": len(sparse),
        "dense_features": len(answers.get("dense_features") or []),
        "multi_valued_features": sum(bool(f.get("multi_valued")) for f in sparse),
        "log10_cardinality_mean": sum(log_cards) / len(log_cards),
        "log10_cardinality_max": max(log_cards),
        "log10_cardinality_min": min(log_cards),
        "embedding_dim_mean": sum(dims) / len(dims),
        "embedding_width_total": sum(dims),
        "log10_max_params": math.log10(max(float(serving.get("max_params", 1)), 1.0)),
        "log10_max_mflops": math.log10(max(float(serving.get("max_mflops_per_example", 1e-3)), 1e-3)),
    }
    values.update(_data_statistics(entry.directory, [name for name in objectives if name]))
    for name in entry.spec.technique_names:
        values[f"technique:{name}"] = 1.0
    return Descriptors(entry.name, values)


def standardize(rows: list[Descriptors]) -> tuple[list[str], list[list[float]]]:
    """Columns kept and the standardized matrix (rows in the order given)."""
    names = sorted({name for row in rows for name in row.values})
    techniques = [name for name in names if name.startswith("technique:")]
    columns, matrix = [], [[] for _ in rows]
    for name in names:
        raw = [row.values.get(name, 0.0) for row in rows]
        mean = sum(raw) / len(raw)
        std = math.sqrt(sum((x - mean) ** 2 for x in raw) / len(raw))
        if std < 1e-12:
            continue
        weight = 1.0 / math.sqrt(len(techniques)) if name in techniques else 1.0
        columns.append(name)
        for out, x in zip(matrix, raw):
            out.append(weight * (x - mean) / std)
    return columns, matrix


def _distance(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _kmeans(matrix: list[list[float]], k: int) -> list[int]:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=10, random_state=SEED)
    return [int(label) for label in model.fit_predict(matrix)]


def _silhouette(matrix: list[list[float]], labels: list[int]) -> float:
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(matrix, labels, metric="euclidean"))


def choose(fleet: Fleet, k: int | str = "auto", radius: float | None = None, names: list[str] | None = None) -> Representatives:
    """Cluster the fleet (or the named models) into ``k`` groups (``"auto"``: best silhouette)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SmtError("representatives need scikit-learn: pip install -e '.[qualify]'") from None
    entries = fleet.models(names)
    if not entries:
        raise SmtError("no models in generated/; create one with `smt new`")
    rows = [describe(entry) for entry in entries]
    columns, matrix = standardize(rows)
    n = len(rows)
    silhouettes: dict[int, float] = {}
    if k == "auto":
        if n <= 2 or not columns:
            chosen, how = min(n, 1 if not columns else n), "auto (too few models or descriptors to compare)"
        else:
            for candidate in range(2, n):
                silhouettes[candidate] = _silhouette(matrix, _kmeans(matrix, candidate))
            chosen = max(silhouettes, key=lambda c: (round(silhouettes[c], 9), -c))
            how = f"auto: best silhouette {silhouettes[chosen]:.3f}"
    else:
        if not isinstance(k, int) or not 1 <= k <= n:
            raise SmtError(f"-k {k}: choose 1 to {n} clusters (the fleet has {n} models) or auto")
        chosen, how = k, "given"
    labels = _kmeans(matrix, chosen) if chosen > 1 and columns else [0] * n
    pairwise = sorted(_distance(matrix[i], matrix[j]) for i in range(n) for j in range(i + 1, n))
    if radius is None:
        radius = 0.5 * pairwise[len(pairwise) // 2] if pairwise else 0.0
    clusters = []
    for label in sorted(set(labels), key=lambda lab: min(rows[i].model for i in range(n) if labels[i] == lab)):
        members = [i for i in range(n) if labels[i] == label]
        medoid = min(members, key=lambda i: (sum(_distance(matrix[i], matrix[j]) for j in members), rows[i].model))
        distinctive = []
        for c, name in enumerate(columns):
            mean_z = sum(matrix[i][c] for i in members) / len(members)
            distinctive.append((abs(mean_z), name))
        top = [name for score, name in sorted(distinctive, key=lambda item: (-item[0], item[1]))[:3] if score > 0.5]
        clusters.append(
            Cluster(
                representative=rows[medoid].model,
                members=[rows[i].model for i in members],
                distinctive=[
                    (name, sum(rows[i].values.get(name, 0.0) for i in members) / len(members), sum(r.values.get(name, 0.0) for r in rows) / n)
                    for name in top
                ],
                distances={rows[i].model: _distance(matrix[i], matrix[medoid]) for i in members},
            )
        )
    return Representatives(chosen, how, clusters, radius, silhouettes, rows)


def format_text(result: Representatives) -> str:
    """Clusters, members, what sets each apart, and coverage, for people."""
    lines = [f"{len(result.clusters)} cluster(s), K {result.chosen_by}"]
    if result.silhouettes:
        lines.append("silhouette by K: " + ", ".join(f"{k}={s:.3f}" for k, s in sorted(result.silhouettes.items())))
    for number, cluster in enumerate(result.clusters, 1):
        lines.append("")
        lines.append(f"cluster {number}: representative {cluster.representative}")
        lines.append("  members: " + ", ".join(f"{m} ({cluster.distances[m]:.2f})" for m in cluster.members))
        if cluster.distinctive:
            apart = [f"{name} {mean:.3g} (fleet {fleet:.3g})" for name, mean, fleet in cluster.distinctive]
            lines.append("  sets it apart: " + "; ".join(apart))
        else:
            lines.append("  sets it apart: nothing beyond 0.5 standard deviations")
    total = sum(len(c.members) for c in result.clusters)
    lines.append("")
    lines.append(
        f"coverage: {result.coverage:.0%} of {total} model(s) within distance {result.radius:.2f} of their representative"
        " (standardized descriptor units; half the median distance between two models)"
    )
    lines.append("representatives: " + ",".join(result.names))
    return "\n".join(lines) + "\n"


def to_json(result: Representatives) -> dict[str, Any]:
    """The clustering as plain data (``--json``)."""
    return {
        "k": result.k,
        "chosen_by": result.chosen_by,
        "silhouettes": {str(k): v for k, v in sorted(result.silhouettes.items())},
        "radius": result.radius,
        "coverage": result.coverage,
        "representatives": result.names,
        "clusters": [
            {
                "representative": c.representative,
                "members": c.members,
                "distance_to_representative": c.distances,
                "distinctive": [{"descriptor": n, "cluster_mean": m, "fleet_mean": f} for n, m, f in c.distinctive],
            }
            for c in result.clusters
        ],
        "descriptors": {row.model: row.values for row in result.descriptors},
    }
