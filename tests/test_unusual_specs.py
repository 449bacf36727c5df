"""Unusual but valid specs render with `smt new` and pass their own generated tests.

The example fleet is a handful of typical models; these specs sit at the edges of what the
spec allows (many objectives with rare labels, a single feature, very large cardinalities,
only multi-valued features, no dense features, many dense features, a loss technique over
rare objectives). Each is created with the real CLI in a copy of the repository, then its
generated tests (the runtime's model contract, smt_runtime.testing.ModelContract: shapes,
gradients, a short sharded run that learns, determinism, exact resume, export, capacity) run
in a subprocess with one torch thread, as a team would run them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from support import assert_model_tests_pass, make_repo_copy, run_smt

BUDGET = {"max_params": 50_000_000, "max_mflops_per_example": 50.0}


def sparse(name: str, cardinality: int, dim: int = 8, multi: bool = False) -> dict[str, Any]:
    return {"name": name, "cardinality": cardinality, "embedding_dim": dim, "multi_valued": multi}


def objectives(*pairs: tuple[str, float]) -> list[dict[str, Any]]:
    return [{"name": name, "weight": weight} for name, weight in pairs]


SPECS: dict[str, dict[str, Any]] = {
    # The case: five objectives, rare ones among them, and a 200,000-id feature.
    "rare_objectives": {
        "objectives": objectives(("click", 1.0), ("like", 0.5), ("comment", 0.3), ("share", 0.2), ("follow", 0.1)),
        "sparse_features": [sparse("user_id", 200_000, 16), sparse("item_id", 50_000, 16), sparse("topics", 300, 8, True)],
        "dense_features": [{"name": "item_age_hours"}],
        "hyperparameters": {"label_rates": [0.2, 0.04, 0.01, 0.004, 0.002]},
    },
    # Eight rare objectives under a loss technique that learns the objectives' weights.
    "rare_objectives_learned_weights": {
        "objectives": objectives(*[(f"event_{i}", 1.0) for i in range(8)]),
        "sparse_features": [sparse("user_id", 20_000), sparse("ad_id", 5_000), sparse("slot", 12)],
        "dense_features": [{"name": "bid"}],
        "techniques": [{"name": "uncertainty_weighting"}],
        "hyperparameters": {"label_rates": [0.1, 0.05, 0.02, 0.01, 0.005, 0.003, 0.002, 0.001]},
    },
    "single_feature": {
        "objectives": objectives(("click", 1.0)),
        "sparse_features": [sparse("ad_id", 1_000, 8)],
        "dense_features": [],
    },
    "huge_cardinalities": {
        "objectives": objectives(("click", 1.0), ("convert", 2.0)),
        "sparse_features": [sparse("user_id", 400_000, 8), sparse("query_hash", 250_000, 8), sparse("ad_id", 200_000, 8)],
        "dense_features": [{"name": "price"}],
    },
    "only_multi_valued": {
        "objectives": objectives(("click", 1.0), ("save", 0.5)),
        "sparse_features": [sparse("recent_items", 10_000, 16, True), sparse("interests", 500, 8, True)],
        "dense_features": [{"name": "session_length"}],
    },
    "no_dense": {
        "objectives": objectives(("click", 1.0), ("install", 0.5), ("purchase", 0.25)),
        "sparse_features": [sparse("user_id", 20_000), sparse("app_id", 2_000), sparse("genres", 50, 4, True)],
        "dense_features": [],
        "techniques": [{"name": "dcn_v2", "params": {"num_cross_layers": 2}}],
    },
    "many_dense": {
        "objectives": objectives(("click", 1.0)),
        "sparse_features": [sparse("ad_id", 5_000), sparse("country", 200)],
        "dense_features": [{"name": f"counter_{i}"} for i in range(48)],
    },
}


def full_spec(name: str) -> dict[str, Any]:
    spec = {"model_name": name, "description": f"Unusual valid spec: {name.replace('_', ' ')}."}
    spec.update({"techniques": [], "hyperparameters": {}, "serving": BUDGET})
    spec.update(SPECS[name])
    return spec


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository copy in which `smt new` created every spec of SPECS."""
    root = make_repo_copy(tmp_path_factory.mktemp("unusual"))
    for name in SPECS:
        spec_file = root / f"{name}.yml"
        spec_file.write_text(yaml.safe_dump(full_spec(name), sort_keys=False))
        done = run_smt(root, "new", name, "--data-file", str(spec_file))
        assert done.code == 0, done.out + done.err
    return root / "generated"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_generated_tests_pass(fleet: Path, name: str) -> None:
    assert (fleet / name / name / "model.py").is_file()
    assert_model_tests_pass(fleet / name)
