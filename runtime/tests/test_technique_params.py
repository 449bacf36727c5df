"""Per-run technique params (issue 21, item 3): `--set TECHNIQUE.PARAM=VALUE` changes a technique's
param for one run, checked like the spec checks it (type, and the bounds and choices that
technique.yml gives and the generated Params records carry as field metadata); a bad one is one
line with exit 2 before anything is written. Also: a config survives best.pt's round trip
(ModelConfigBase.from_dict). On feed_ctr (dcn_v2, field_dropout) and app_install (dcn_v2, mmoe, ...)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from smt_runtime.cli import main
from smt_runtime.training import train


def test_set_changes_a_technique_param_for_one_run(feed_ctr: Any, packages: Any) -> None:
    config = feed_ctr.train.PARTS.config()
    changed = config.with_overrides(["dcn_v2.num_cross_layers=1", "field_dropout.rate=0.25", "dcn_v2.low_rank=4", "min_count=3"])
    assert (changed.dcn_v2.num_cross_layers, changed.dcn_v2.low_rank, changed.field_dropout.rate, changed.min_count) == (1, 4, 0.25, 3)
    assert config.dcn_v2.num_cross_layers == 2  # the spec's config is untouched
    app = packages["app_install"].train.PARTS.config().with_overrides(["mmoe.expert_layers=[32, 16]", "mmoe.num_experts=2"])
    assert (app.mmoe.expert_layers, app.mmoe.num_experts) == ((32, 16), 2)
    assert set(config.technique_params()) == {"dcn_v2", "field_dropout"}


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("dcn_v2.num_cross_layers=0", "dcn_v2.num_cross_layers must be an integer of at least 1"),
        ("dcn_v2.num_cross_layers=1.5", "dcn_v2.num_cross_layers must be an integer of at least 1"),
        ("field_dropout.rate=0.95", "field_dropout.rate must be a number in [0.0, 0.9]"),
        ("field_dropout.rate=true", "field_dropout.rate must be a number in [0.0, 0.9]"),
        ("field_dropout.ratee=0.2", "field_dropout has no param 'ratee'; its params: rate"),
        ("mmoe.num_experts=2", "'mmoe' is not a technique with params of feed_ctr; use TECHNIQUE.PARAM=VALUE with TECHNIQUE one of dcn_v2, field_dropout"),
        ("min_count=-1", "min_count must be an integer of at least 0"),
        ("unknown_dropout=1", "unknown_dropout must be a number in [0, 1)"),
    ],
)
def test_a_bad_technique_param_is_refused_in_one_line(feed_ctr: Any, capsys: Any, tmp_path: Path, assignment: str, message: str) -> None:
    run_dir = tmp_path / "run"
    code = main(feed_ctr.train.PARTS, ["train", "--set", assignment, "--run-dir", str(run_dir), "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("feed_ctr: error: --set ") and message in err, err
    assert not run_dir.exists()


def test_a_list_param_is_a_list_of_its_type(packages: Any) -> None:
    config = packages["app_install"].train.PARTS.config()
    for bad in ("mmoe.expert_layers=64", "mmoe.expert_layers=[64, 0.5]"):
        with pytest.raises(ValueError, match="must be a list, each item an integer"):
            config.with_overrides([bad])


def test_the_param_reaches_the_model(feed_ctr: Any, feed_config: Any) -> None:
    parts = feed_ctr.train.PARTS
    one_layer = feed_config.with_overrides(["dcn_v2.num_cross_layers=1"])
    assert len(parts.model(one_layer).interaction_arch.cross_layers) == 1
    losses = [train(parts, config, steps=3).fit.losses for config in (feed_config, feed_config.with_overrides(["field_dropout.rate=0.5"]))]
    assert losses[0][0] != losses[1][0]


def test_a_config_is_rebuilt_from_its_dict(packages: Any) -> None:
    for package in packages.values():
        config = package.train.PARTS.config()
        changed = replace(config, seed=7).with_overrides(["learning_rate=0.01", "dcn_v2.num_cross_layers=1"])
        assert type(config).from_dict(asdict(changed)) == changed
        with pytest.raises(ValueError, match="has no field 'retired'"):
            type(config).from_dict({**asdict(changed), "retired": 1})
