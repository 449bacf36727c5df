"""Bad specs: one line naming the model, the field and the problem; exit 2; nothing written."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from support import run_smt, snapshot

GOOD = {
    "model_name": "new_model",
    "description": "A test model.",
    "objectives": [{"name": "click", "weight": 1.0}],
    "sparse_features": [
        {"name": "user_id", "cardinality": 100, "embedding_dim": 8, "multi_valued": False},
        {"name": "item_id", "cardinality": 50, "embedding_dim": 8, "multi_valued": False},
    ],
    "dense_features": [{"name": "price"}],
    "serving": {"max_params": 100000, "max_mflops_per_example": 1.0},
    "techniques": [{"name": "dcn_v2", "params": {"num_cross_layers": 2}}],
}


def _set(path: str, value: object):
    def mutate(spec: dict) -> None:
        node = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()

CASES = {
    "unknown technique": (_set("techniques.0.name", "dcn_v3"), "techniques[0].name: unknown technique 'dcn_v3'"),
    "unknown param": (_set("techniques.0.params", {"layers": 2}), "techniques[0].params.layers: unknown param"),
    "mistyped param": (_set("techniques.0.params", {"num_cross_layers": "two"}), "techniques[0].params.num_cross_layers: expected int"),
    "duplicate feature": (_set("sparse_features.1.name", "user_id"), "sparse_features[1].name: duplicate feature name 'user_id'"),
    "duplicate across kinds": (_set("dense_features.0.name", "item_id"), "dense_features[0].name: duplicate feature name 'item_id'"),
    "not an identifier": (_set("sparse_features.0.name", "user-id"), "sparse_features[0].name: 'user-id' is not a Python identifier"),
    "keyword": (_set("objectives.0.name", "class"), "objectives[0].name: 'class' is a Python keyword"),
    "no objectives": (_set("objectives", []), "objectives: needs at least 1 item"),
    "cardinality below 1": (_set("sparse_features.0.cardinality", 0), "sparse_features[0].cardinality: Input should be greater than or equal to 1"),
    "unknown key": (_set("servng", {}), "servng: unknown key"),
    "missing key": (_set("serving", _DELETE), "serving: required key is missing"),
    "precondition": (_set("techniques", [{"name": "mmoe"}]), "technique 'mmoe' needs at least 2 objectives"),
    "too many objectives": (_set("objectives", [{"name": f"o{i}", "weight": 1.0} for i in range(9)]), "objectives: allows at most 8"),
    "label of no objective": (_set("data", {"labels": {"buy": "bought"}}), "data.labels.buy: 'buy' is not an objective"),
    "column of no feature": (_set("data", {"columns": {"age": "user_age"}}), "data.columns.age: 'age' is not a feature"),
    "column used twice": (_set("data", {"labels": {"click": "price"}}), "data: column 'price' is used twice"),
    "unknown id out of range": (_set("data", {"unknown_ids": {"item_id": 50}}), "data.unknown_ids.item_id: 50 is outside [0, 50)"),
    "bad monitor": (_set("hyperparameters", {"monitor": "accuracy"}), "hyperparameters.monitor: Input should be 'logloss' or 'auc'"),
    # "adam" was valid before runtime 0.6.0 (FBGEMM fuses Adagrad, row-wise Adagrad and SGD).
    "bad embedding optimizer": (
        _set("hyperparameters", {"embedding_optimizer": "adam"}),
        "hyperparameters.embedding_optimizer: Input should be 'adagrad', 'rowwise_adagrad', 'sgd' or 'dense'",
    ),
    "zero epochs": (_set("hyperparameters", {"epochs": 0}), "hyperparameters.epochs: Input should be greater than or equal to 1"),
    "synthetic unknown knob": (_set("synthetic", {"noise": 0.1}), "synthetic.noise: unknown key"),
    "cross of no feature": (_set("synthetic", {"crosses": [{"fields": ["user_id", "price"], "strength": 1.0}]}), "synthetic.crosses[0].fields: 'price' is not a sparse feature"),
    "cross of one field": (_set("synthetic", {"crosses": [{"fields": ["user_id"], "strength": 1.0}]}), "synthetic.crosses[0].fields: needs at least 2 item(s)"),
    "cross field twice": (_set("synthetic", {"crosses": [{"fields": ["user_id", "user_id"], "strength": 1.0}]}), "synthetic.crosses[0].fields: a field is listed twice"),
    "negative cross strength": (_set("synthetic", {"crosses": [{"fields": ["user_id", "item_id"], "strength": -1}]}), "synthetic.crosses[0].strength: Input should be greater than or equal to 0"),
    "correlation above 1": (_set("synthetic", {"objective_correlation": 1.5}), "synthetic.objective_correlation: Input should be less than or equal to 1"),
    "label noise of a half": (_set("synthetic", {"label_noise": 0.5}), "synthetic.label_noise: Input should be less than 0.5"),
    "label noise above the rate": (_set("synthetic", {"label_noise": 0.3}), "synthetic.label_noise: 0.3 is not below every label rate (lowest 0.25)"),
    "bag lengths reversed": (_set("synthetic", {"bag_lengths": [5, 2]}), "synthetic.bag_lengths: [5, 2] is not [min, max]"),
    "zero dense tail": (_set("synthetic", {"dense_tail": 0}), "synthetic.dense_tail: Input should be greater than 0"),
    "mistyped shift": (_set("synthetic", {"test_shift": "big"}), "synthetic.test_shift: Input should be a valid number"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_spec_for_new_model(repo_copy: Path, tmp_path: Path, case: str) -> None:
    mutate, expected = CASES[case]
    spec = copy.deepcopy(GOOD)
    mutate(spec)
    spec_file = tmp_path / "spec.yml"
    spec_file.write_text(yaml.safe_dump(spec))
    before = snapshot(repo_copy)

    result = run_smt(repo_copy, "new", "new_model", "--data-file", str(spec_file))

    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: new_model: "), result.err
    assert expected in lines[0]
    assert "Traceback" not in result.err
    assert snapshot(repo_copy) == before
    assert not (repo_copy / "generated" / "new_model").exists()


def test_good_spec_creates_model(repo_copy: Path, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yml"
    spec_file.write_text(yaml.safe_dump(GOOD))
    result = run_smt(repo_copy, "new", "new_model", "--data-file", str(spec_file))
    assert result.code == 0, result.err
    model_py = (repo_copy / "generated/new_model/new_model/model.py").read_text()
    assert "# SMT technique dcn_v2" in model_py
    assert run_smt(repo_copy, "check", "new_model").code == 0


def test_bad_spec_in_fleet_leaves_every_model_untouched(repo_copy: Path) -> None:
    # Break one model's spec and hand-edit another: generate must refuse before writing anything.
    spec_path = repo_copy / "generated/feed_ctr/.copier-answers.yml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["techniques"] = [{"name": "no_such_technique"}]
    spec_path.write_text(yaml.safe_dump(spec))
    edited = repo_copy / "generated/video_vtr/video_vtr/model.py"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    before = snapshot(repo_copy)

    result = run_smt(repo_copy, "generate")

    assert result.code == 2
    assert "error: feed_ctr: techniques[0].name: unknown technique 'no_such_technique'" in result.err
    assert snapshot(repo_copy) == before


def test_invalid_yaml_names_the_file(repo_copy: Path) -> None:
    spec_path = repo_copy / "generated/feed_ctr/.copier-answers.yml"
    spec_path.write_text("model_name: feed_ctr\nobjectives: [unclosed\n")
    result = run_smt(repo_copy, "check", "feed_ctr")
    assert result.code == 2
    assert ".copier-answers.yml:3: the spec is not valid YAML" in result.err and "fix the syntax" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_unknown_model_is_exit_2(repo_copy: Path) -> None:
    result = run_smt(repo_copy, "check", "no_such_model")
    assert result.code == 2 and "no_such_model: no such model" in result.err
