"""Every technique on every example model it applies to: black-stable, idempotent, builds, trains a step.

The fleet's own technique combinations are covered by test_fleet_models.py; here each technique is
applied alone to each model whose spec admits it, which is what `smt adopt` would produce.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator.engine import SmtError, load_sources
from generator.engine.layout import format_python
from generator.engine.pipeline import apply_technique
from generator.render import check_spec, render_model
from generator.sync import write_tree
from generator.testing import import_model, strip_header
from support import REPO, run_smt

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
        config = pkg.config.ModelConfig()
        net = pkg.train.build_model(config)
        loss_fn = pkg.train.MultiTaskLoss(config)
        optimizer = pkg.train.build_optimizer(net, loss_fn, config)
        batch = next(pkg.data.table_to_batches(pkg.data.generate_synthetic(config, 128, seed=1), 128))
        logits = net(batch.dense, batch.sparse_values, batch.sparse_offsets)
        assert tuple(logits.shape) == (128, len(config.objectives))
        loss, _ = loss_fn(logits, batch.labels)
        loss.backward()
        assert all(p.grad is not None for p in net.parameters()), f"{name} on {model}: a parameter got no gradient"
        optimizer.step()


def test_impact_report_measures_parameter_and_mflop_deltas() -> None:
    result = run_smt(REPO, "techniques", "show", "dcn_v2", "--impact", timeout=600)
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
