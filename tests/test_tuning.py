"""smt tune: the objective and constraints on fixed per-model numbers, the per-model budget split,
resuming a study, pruning a hopeless trial, technique params of the space, --apply refusing an
infeasible winner and writing a feasible one, and a tiny end-to-end run. Real Optuna storages (SQLite files), no mocks; trainings only where named."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from generator import trials
from generator.engine import SmtError
from generator.fleet import Fleet
from generator.qualification import Criterion
from generator.tuning import objective
from generator.tuning import study as study_module
from generator.tuning.apply import CONFIG_TEMPLATE, template_defaults, with_template_defaults
from generator.tuning.space import HYPERPARAMETERS, Setting, parse_space, with_defaults
from generator.tuning.study import open_study
from support import HANG_TIMEOUT, REPO, run_smt

CRITERION = Criterion(max_regression=0.005)


def _score(model: str, change: float, mflops: float = 0.5, budget: float = 1.0, se: float = 0.0) -> objective.ModelScore:
    return objective.ModelScore(model, change, se, 0.4, mflops, budget)


def test_value_is_the_mean_relative_change_and_feasible_within_bounds():
    """Two models at -1 % and -0.2 %, within budget: value -0.6 %, every constraint <= 0."""
    scores = [_score("a", -0.01), _score("b", -0.002)]
    assert objective.value(scores) == pytest.approx(-0.006)
    assert all(c <= 0 for c in objective.constraints(scores, CRITERION))
    assert objective.violations(scores, CRITERION) == []


def test_one_model_beyond_the_regression_bound_is_infeasible_whatever_the_mean():
    """-3 % and +1 %: a fine mean, but b is 1 % worse than its baseline (bound 0.5 %)."""
    scores = [_score("a", -0.03), _score("b", 0.01)]
    assert objective.value(scores) < 0
    cons = objective.constraints(scores, CRITERION)
    assert cons[2] == pytest.approx(0.005) and cons[0] < 0
    assert objective.violations(scores, CRITERION) == ["b: logloss worse by +1.00%, beyond the 0.50% bound"]


def test_a_standard_error_never_excuses_a_regression():
    """+0.8 % with a 0.2 % se: beyond the 0.5 % bound, so infeasible (the old noise allowance,
    mean - 2 se = 0.4 %, let it through); +0.4 % with the same se is feasible."""
    assert objective.constraints([_score("a", 0.008, se=0.002)], CRITERION)[0] == pytest.approx(0.003)
    assert objective.violations([_score("a", 0.008, se=0.002)], CRITERION) == ["a: logloss worse by +0.80%, beyond the 0.50% bound"]
    assert objective.constraints([_score("a", 0.004, se=0.002)], CRITERION)[0] <= 0


def test_a_model_over_its_mflops_budget_is_infeasible():
    scores = [_score("a", -0.02, mflops=1.2, budget=1.0)]
    assert objective.constraints(scores, CRITERION)[1] == pytest.approx(0.2)
    assert objective.violations(scores, CRITERION) == ["a: 1.2000 MFLOPs per example over the serving budget 1"]


def test_a_failed_model_never_wins():
    scores = [_score("a", -0.05), objective.ModelScore("b", math.nan, error="training failed: nan loss")]
    assert objective.value(scores) == math.inf
    assert max(objective.constraints(scores, CRITERION)) == objective.INFEASIBLE


def test_per_model_budget_split():
    """10 trials over 3 models: 4, 3, 3 in name order; the total is kept; each model gets one at least."""
    assert objective.split_budget(10, ["c", "a", "b"]) == {"a": 4, "b": 3, "c": 3}
    assert sum(objective.split_budget(17, list("abcde")).values()) == 17
    assert objective.split_budget(2, ["a", "b", "c"]) == {"a": 1, "b": 1, "c": 1}


def test_defaults_never_override_a_spec_and_scale_the_template_widths():
    """A tuned default applies unless the spec sets the hyperparameter; width_scale scales the
    template's widths as read from config.py.jinja."""
    template = template_defaults(REPO)
    assert template["learning_rate"] == 0.003 and template["over_arch_layers"] == [128, 64]
    spec = {"sparse_features": [{"embedding_dim": 8}, {"embedding_dim": 16}], "hyperparameters": {"learning_rate": 0.01}}
    setting = Setting({"learning_rate": 0.002, "dropout": 0.1, "width_scale": 0.5, "embedding_dim_policy": "min"})
    hyper = with_defaults(spec, setting, template)["hyperparameters"]
    assert hyper == {"dropout": 0.1, "dense_arch_layers": [32], "over_arch_layers": [64, 32], "tower_layers": [16], "embedding_dim": 8, "learning_rate": 0.01}


def test_template_defaults_are_rewritten_in_their_one_place():
    text = (REPO / "template_repo/template/{{ model_name }}/config.py.jinja").read_text()
    new = with_template_defaults(text, {"learning_rate": 0.005, "over_arch_layers": [96, 48], "embedding_dim_policy": "min"})
    assert 'hp.get("learning_rate", 0.005)' in new and 'hp.get("over_arch_layers", [96, 48])' in new
    assert 'map(attribute="embedding_dim") | min)' in new
    assert len(new.splitlines()) == len(text.splitlines())


def test_a_bad_space_names_the_field():
    with pytest.raises(SmtError, match=r"tune.yml: hyperparameters.momentum: not a tunable template default"):
        parse_space({"hyperparameters": {"momentum": {"low": 0, "high": 1}}})
    with pytest.raises(SmtError, match=r"learning_rate: need low <= high"):
        parse_space({"hyperparameters": {"learning_rate": {"low": 0.1, "high": 0.01}}})


def _fixed_objective(per_model: dict[float, list[objective.ModelScore]]):
    """An objective that records fixed per-model results (by the suggested x) as smt tune does."""

    def run(trial):
        x = trial.suggest_categorical("learning_rate", sorted(per_model))
        scores = per_model[x]
        objective.record(trial, scores, CRITERION)
        return objective.value(scores)

    return run


def test_resuming_a_study_adds_trials(tmp_path):
    """The same name and storage continue the study: 3 + 2 trials, numbered 0..4, constraints kept."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    fixed = _fixed_objective({0.001: [_score("a", -0.01)], 0.003: [_score("a", 0.02)]})
    open_study("resume", url, seed=0).optimize(fixed, n_trials=3)
    again = open_study("resume", url, seed=1)
    again.optimize(fixed, n_trials=2)
    numbers = [t.number for t in again.get_trials()]
    assert numbers == [0, 1, 2, 3, 4]
    assert all(objective.CONSTRAINTS_ATTR in t.user_attrs for t in again.get_trials())
    assert [t.number for t in again.get_trials() if t.params["learning_rate"] == 0.003][0] != again.best_trial.number


@pytest.fixture
def tune_repo(repo_copy: Path) -> Path:
    shutil.copy(REPO / "qualification.yml", repo_copy / "qualification.yml")
    (repo_copy / "tune.yml").write_text(yaml.safe_dump({"hyperparameters": {"learning_rate": {"type": "categorical", "choices": [0.001, 0.003]}}, "budget": {"steps": 5, "models": "feed_ctr"}}))
    return repo_copy


def _study_in(repo: Path, name: str, per_model: dict[float, list[objective.ModelScore]], trials: int, db: str = "") -> None:
    """A study of fixed results in the repo's default storage (.smt/studies/<db or name>.db)."""
    folder = repo / ".smt" / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    study = open_study(name, f"sqlite:///{folder / ((db or name) + '.db')}", seed=0)
    for x in per_model:
        study.enqueue_trial({"learning_rate": x})
    study.optimize(_fixed_objective(per_model), n_trials=trials)


def test_apply_refuses_a_study_whose_best_trial_violates_a_constraint(tune_repo):
    """The lowest value comes from a trial where one model regresses 2 %: exit 2, one line, nothing written."""
    _study_in(tune_repo, "bad", {0.001: [_score("feed_ctr", -0.03), _score("x", 0.02)], 0.003: [_score("feed_ctr", -0.001), _score("x", -0.001)]}, 2)
    before = (tune_repo / "template_repo/VERSION").read_text()
    result = run_smt(tune_repo, "tune", "--study", "bad", "--trials", "0", "--apply")
    assert result.code == 2, result.err
    assert result.err.strip().splitlines()[-1] == (
        "error: study bad: trial #0 violates a constraint (x: logloss worse by +2.00%, beyond the 0.50% bound);"
        " not applied (choose a feasible one with --trial N)"
    )
    assert (tune_repo / "template_repo/VERSION").read_text() == before
    assert not (tune_repo / "CHANGELOG.md").exists()


def test_apply_writes_the_winning_default_as_a_new_template_version(tune_repo):
    """A feasible winner: the template's default learning rate changes in config.py.jinja, VERSION
    bumps, generated models follow, and CHANGELOG.md cites the study; smt check stays clean."""
    _study_in(tune_repo, "good", {0.001: [_score("feed_ctr", -0.01)], 0.003: [_score("feed_ctr", 0.0)]}, 2)
    before = (tune_repo / "template_repo/VERSION").read_text().strip()
    result = run_smt(tune_repo, "tune", "--study", "good", "--trials", "0", "--apply")
    assert result.code == 0, result.err
    config = (tune_repo / "template_repo/template/{{ model_name }}/config.py.jinja").read_text()
    assert 'hp.get("learning_rate", 0.001)' in config
    assert (tune_repo / "template_repo/VERSION").read_text().strip() != before
    assert "learning_rate: float = 0.001" in (tune_repo / "generated/feed_ctr/feed_ctr/config.py").read_text()
    assert "Study `good` trial #0" in (tune_repo / "CHANGELOG.md").read_text()
    assert run_smt(tune_repo, "check").code == 0


def test_tune_end_to_end_one_model_two_trials(tune_repo):
    """Real rendering and training (feed_ctr, 5 steps, 1 seed), two trials, then a resume adding
    one. Threads follow smt's one policy (--threads, $SMT_THREADS, else 1), not OMP_NUM_THREADS;
    a line per finished trial with an ETA, as output here is not a terminal."""
    result = run_smt(tune_repo, "tune", "--study", "e2e", "--trials", "2", "--sampler-seed", "0", "--jobs", "1", timeout=HANG_TIMEOUT, env={"OMP_NUM_THREADS": "2"})
    assert result.code == 0, result.err
    assert "study e2e: 2 complete" in result.out
    assert "tune: 2 trial(s) on feed_ctr (1 at a time, 1 torch thread(s) each)" in result.err
    assert [line.split(";")[1].split(",")[0].strip() for line in result.err.splitlines() if line.startswith("tune: trial #")] == ["1/2 done", "2/2 done"]
    assert all(", ETA " in line for line in result.err.splitlines() if line.startswith("tune: trial #"))
    entries = {path.name for path in (tune_repo / ".smt" / "trials").glob("*/threads-*")}
    assert entries == {"threads-1"}
    report = json.loads((tune_repo / "tuning/reports/e2e/report.json").read_text())
    assert report["best"]["models"][0]["model"] == "feed_ctr"
    assert math.isfinite(report["best"]["value"])
    assert (tune_repo / "tuning/reports/e2e/history.png").stat().st_size > 0
    assert (tune_repo / ".smt/studies/e2e.db").is_file()
    again = run_smt(tune_repo, "tune", "--study", "e2e", "--trials", "1", timeout=HANG_TIMEOUT)
    assert again.code == 0, again.err
    assert "3 complete" in again.out


def test_apply_of_a_tuned_technique_passes_the_qualification_gate(tune_repo):
    """A winner that adopts field_dropout at a tuned rate: refused (exit 1, one line naming the
    record, nothing written) without a passing record of that change; --force --reason applies it
    and the release notes carry the reason."""
    space = {"technique": {"name": "field_dropout", "params": {"rate": {"type": "categorical", "choices": [0.15]}}}, "budget": {"steps": 5, "models": "feed_ctr"}}
    (tune_repo / "tune.yml").write_text(yaml.safe_dump(space))
    folder = tune_repo / ".smt" / "studies"
    folder.mkdir(parents=True)
    study = open_study("tech", f"sqlite:///{folder / 'tech.db'}", seed=0)

    def fixed(trial):
        trial.suggest_categorical("field_dropout.rate", [0.15])
        objective.record(trial, [_score("feed_ctr", -0.01)], CRITERION)
        return -0.01

    study.optimize(fixed, n_trials=1)
    before = (tune_repo / "template_repo/VERSION").read_text()
    refused = run_smt(tune_repo, "tune", "--study", "tech", "--trials", "0", "--apply")
    assert refused.code == 1, refused.err
    assert refused.err.strip().splitlines()[-1].startswith("error: field_dropout:rate=0.15: no passing qualification record for field_dropout ")
    assert (tune_repo / "template_repo/VERSION").read_text() == before and not (tune_repo / "CHANGELOG.md").exists()
    forced = run_smt(tune_repo, "tune", "--study", "tech", "--trials", "0", "--apply", "--force", "--reason", "rate tuned on the representatives")
    assert forced.code == 0, forced.err
    assert "(`--force`): rate tuned on the representatives" in (tune_repo / "CHANGELOG.md").read_text()
    assert "rate: 0.15" in (tune_repo / "generated/video_vtr/.copier-answers.yml").read_text()


def test_per_model_apply_writes_each_winner_into_its_own_spec(tune_repo):
    """--per-model: each model's study (NAME.<model>) keeps its own winner, written into that
    spec's hyperparameters; a model with no feasible improving trial, and the template, stay as they were."""
    _study_in(tune_repo, "pm.feed_ctr", {0.001: [_score("feed_ctr", -0.01)], 0.003: [_score("feed_ctr", 0.0)]}, 2, db="pm")
    _study_in(tune_repo, "pm.app_install", {0.001: [_score("app_install", 0.001)], 0.003: [_score("app_install", -0.004)]}, 2, db="pm")
    _study_in(tune_repo, "pm.marketplace", {0.001: [_score("marketplace", 0.02)], 0.003: [_score("marketplace", 0.001)]}, 2, db="pm")
    market = (tune_repo / "generated/marketplace/.copier-answers.yml").read_text()
    template = (tune_repo / "template_repo/template/{{ model_name }}/config.py.jinja").read_text()
    result = run_smt(tune_repo, "tune", "--study", "pm", "--per-model", "--on", "app_install,feed_ctr,marketplace", "--trials", "0", "--apply")
    assert result.code == 0, result.err
    feed = yaml.safe_load((tune_repo / "generated/feed_ctr/.copier-answers.yml").read_text())
    app = yaml.safe_load((tune_repo / "generated/app_install/.copier-answers.yml").read_text())
    assert feed["hyperparameters"]["learning_rate"] == 0.001 and app["hyperparameters"]["learning_rate"] == 0.003
    assert "apply: marketplace: no feasible trial beats its current config; spec kept" in result.out
    assert (tune_repo / "generated/marketplace/.copier-answers.yml").read_text() == market  # one infeasible, one worse
    assert (tune_repo / "template_repo/template/{{ model_name }}/config.py.jinja").read_text() == template
    assert run_smt(tune_repo, "check").code == 0



def _run_in_order(per_model: dict[str, float], measured: list[str]):
    """An objective that measures models a, b, c through smt tune's own loop (measure_in_order)."""

    def run(trial):
        def measure(name):
            measured.append(name)
            return _score(name, per_model[name])

        return objective.value(study_module.measure_in_order(trial, sorted(per_model), measure, CRITERION, progress=False))

    return run


def test_a_trial_is_scored_on_the_validation_split_never_on_test(repo_copy, tmp_path):
    """Cached runs whose validation and test splits disagree (-10 % and +10 %): the tuner's score
    follows validation, so a study never picks its winner on the split that later measures it."""
    fleet = Fleet(repo_copy)
    evaluator = study_module.Evaluator(fleet, [fleet.model("notification_open")], CRITERION, steps=3, seeds=1, scratch=tmp_path / "scratch", progress=False)
    evaluator.prepare()
    baseline = evaluator.baselines["notification_open"]
    candidate = dict(baseline.tree)
    candidate[next(iter(candidate))] += "\n# the candidate\n"
    for tree, valid, test in ((baseline.tree, 0.50, 0.50), (candidate, 0.45, 0.55)):
        key = trials.trial_key(tree, (), 0, 3, evaluator.runtime)  # the cache key covers the runtime trials import
        folder = repo_copy / ".smt" / "trials" / key / f"threads-{evaluator.threads}"
        folder.mkdir(parents=True)
        split = lambda logloss: {"open": {"logloss": logloss, "ne": 0.9, "auc": 0.7, "calibration": 1.0}}  # noqa: E731
        (folder / "metrics.json").write_text(json.dumps({"seed": 0, "metrics": {"valid": split(valid), "test": split(test)}}))
        rows = {f"{name}_{kind}": np.zeros((8, 1)) for name in ("valid", "test") for kind in ("logits", "labels")}
        np.savez(folder / "predictions.npz", objectives=np.array(["open"]), **rows)  # a cached entry keeps its predictions
    score = evaluator.measure_model("notification_open", candidate, tmp_path / "unused", baseline.mflops)
    assert score.error == "" and score.change == pytest.approx(-0.10)


def test_a_hopeless_trial_is_pruned_after_its_first_model(tmp_path):
    """Two trials at -1 % on every model, then one whose first model is +5 %: the median pruner
    stops it before b and c train; what it measured stays on the trial. A good trial runs to the end."""
    study = open_study("prune", f"sqlite:///{tmp_path / 'p.db'}", seed=0)
    measured: list[str] = []
    study.optimize(_run_in_order({"a": -0.01, "b": -0.01, "c": -0.01}, measured), n_trials=2)
    assert measured == ["a", "b", "c"] * 2

    measured.clear()
    study.optimize(_run_in_order({"a": 0.05, "b": -0.01, "c": -0.01}, measured), n_trials=1)
    hopeless = study.trials[-1]
    assert measured == ["a"]
    assert hopeless.state == optuna.trial.TrialState.PRUNED
    assert [s["model"] for s in hopeless.user_attrs[objective.MODELS_ATTR]] == ["a"]

    measured.clear()
    study.optimize(_run_in_order({"a": -0.02, "b": -0.02, "c": -0.02}, measured), n_trials=1)
    assert measured == ["a", "b", "c"]
    assert study.best_trial.number == 3 and study.best_value == pytest.approx(-0.02)


def test_technique_params_in_the_space_reach_every_model_the_technique_applies_to(tmp_path):
    """tune.yml's technique section: a trial's field_dropout rate is set on feed_ctr (which uses it)
    and adopted, at that rate, by another eligible model (as smt promote would); the spec keys a
    trial does not tune are left alone."""
    space = parse_space({"technique": {"name": "field_dropout", "params": {"rate": {"type": "float", "low": 0.0, "high": 0.2}}}})
    assert [name for name, _ in space.dimensions()] == ["field_dropout.rate"]
    chooser = optuna.create_study()
    chooser.enqueue_trial({"field_dropout.rate": 0.15})
    trial = chooser.ask()
    setting = study_module.suggest(trial, space)
    assert setting.technique == "field_dropout" and setting.technique_params == {"rate": 0.15}

    fleet = Fleet(REPO)
    entries = fleet.models(["feed_ctr", "video_vtr"])
    evaluator = study_module.Evaluator(fleet, entries, CRITERION, steps=5, seeds=1, scratch=tmp_path)
    evaluator.template = template_defaults(REPO)
    rendered = evaluator.candidates(setting, 0)
    for name in ("feed_ctr", "video_vtr"):
        answers, tree, _ = rendered[name]
        uses = {use["name"]: use.get("params", {}) for use in answers["techniques"]}
        assert uses["field_dropout"] == {"rate": 0.15}, name
        config = tree[f"{name}/config.py"]
        assert "rate: float = 0.15" in config, name
    before = {use["name"] for use in entries[1].answers["techniques"]}
    assert {use["name"] for use in rendered["video_vtr"][0]["techniques"]} == before | {"field_dropout"}


@pytest.mark.parametrize("name", sorted(HYPERPARAMETERS))
def test_every_tunable_default_has_one_place_that_apply_can_rewrite(name):
    """The fleet experiment's `smt tune --apply` once failed on embedding_learning_rate, whose
    default was an expression rather than hp.get(NAME, DEFAULT)."""
    text = (REPO / CONFIG_TEMPLATE).read_text()
    value = HYPERPARAMETERS[name](7)
    rewritten = with_template_defaults(text, {name: value})
    assert f'hp.get("{name}", {value!r})' in rewritten
    assert name in template_defaults(REPO)
