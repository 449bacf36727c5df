"""Every technique on every example model it applies to: black-stable, idempotent, builds, trains a step
of the runtime's training loop.

The fleet's own technique combinations are covered by test_fleet_models.py; here each technique is
applied alone to each model whose spec admits it, which is what `smt adopt` would produce.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from smt_runtime import training
from smt_runtime.parts import ModelParts
from smt_runtime.sparse import table_parameter_names, unsharded_state_dict

from generator.engine import SmtError, load_sources
from generator.engine.layout import format_python
from generator.engine.pipeline import apply_technique
from generator.render import check_spec, render_model
from generator.sync import write_tree
from generator.testing import import_model, random_batch, strip_header
from support import HANG_TIMEOUT, REPO, run_smt

SOURCES = load_sources(REPO)
MODELS = sorted(path.parent.name for path in (REPO / "generated").glob("*/.copier-answers.yml"))


def _spec_with_only(model: str, technique: str) -> dict:
    spec = yaml.safe_load((REPO / "generated" / model / ".copier-answers.yml").read_text())
    return {**spec, "techniques": [{"name": technique}]}


def _eligible(technique: str) -> list[str]:
    models = []
    for model in MODELS:
        try:
            check_spec(REPO, _spec_with_only(model, technique), model)
        except SmtError:
            continue
        models.append(model)
    return models


@pytest.mark.parametrize("name", sorted(SOURCES.library))
def test_technique_on_every_eligible_model(name: str, tmp_path: Path) -> None:
    technique = SOURCES.library[name]
    params = {param.name: param.default for param in technique.params}
    models = _eligible(name)
    assert models, f"{name} applies to no example model"
    touched = {*technique.targets, "config.py"}  # config.py carries the technique's params
    for model in models:
        spec = _spec_with_only(model, name)
        tree = render_model(REPO, spec, model)
        for relative, text in tree.items():
            target = relative.split("/", 1)[1] if relative.startswith(f"{model}/") else relative
            if not relative.endswith(".py") or target not in touched:
                continue  # files the technique leaves alone are the template's, checked by the fleet's tests
            body = strip_header(text)
            assert format_python(body) == body, f"{name} on {model}: {relative} is not black-stable"
            again = apply_technique(technique, params, target, body, SOURCES.extension_points.get(target, {}))
            if again is not None:
                assert format_python(again) == body, f"{name} on {model}: applying twice changes {relative}"

        write_tree(tmp_path / name / model, tree, yaml.safe_dump(spec))
        pkg = import_model(tmp_path / name / model)
        config = replace(pkg.config.ModelConfig(), train_examples=128, eval_examples=128, batch_size=128)
        _trains_one_step(pkg.train.PARTS, config, f"{name} on {model}")


def _trains_one_step(parts: ModelParts, config: Any, what: str) -> None:
    """The model gives a logit per objective, and one step of the runtime's training (tables
    sharded, their optimizer fused into backward) reaches every parameter: the hook sees a
    gradient on every parameter outside the tables, and the tables are updated."""
    initial = training.build_model(parts, config)  # the weights the run starts from
    batch = random_batch(config, config.batch_size)
    assert tuple(initial(batch.dense, batch.sparse).shape) == (config.batch_size, config.num_objectives), what
    without_gradient: list[str] = []

    def after_backward(model: torch.nn.Module, config_arg: Any) -> None:
        tables = table_parameter_names(model)
        without_gradient.extend(n for n, p in model.named_parameters() if n not in tables and p.grad is None)
        parts.after_backward(model, config_arg)

    result = training.train(replace(parts, after_backward=after_backward), config, steps=1)
    assert result.fit.steps == 1 and math.isfinite(result.fit.losses[0]), f"{what}: {result.fit.losses}"
    assert without_gradient == [], f"{what}: no gradient for {without_gradient}"
    trained, start = unsharded_state_dict(result.model), initial.state_dict()
    tables = table_parameter_names(initial)
    assert tables and all(not torch.equal(trained[key], start[key]) for key in tables), f"{what}: a table did not learn"


def test_impact_report_measures_parameter_and_mflop_deltas() -> None:
    result = run_smt(REPO, "techniques", "show", "dcn_v2", "--impact", timeout=HANG_TIMEOUT)
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.split("impact of dcn_v2")[1].splitlines()[2:] if line.strip()]
    measured = {row[0]: row for row in rows if "skipped:" not in row}
    skipped = {row[0] for row in rows if "skipped:" in row}
    assert measured.keys() | skipped == set(MODELS)
    assert {"app_install", "feed_ctr"} <= measured.keys()
    for line in result.out.splitlines():
        if "skipped:" in line:
            assert "both replace extension point InteractionArch" in line  # models with another interaction technique
    for row in measured.values():
        params_without, params_with = (int(value.replace(",", "")) for value in row[1:3])
        assert params_with > params_without  # cross layers add weights
        assert float(row[5]) > float(row[4])  # and MFLOPs
