"""The fleet experiment's harness (benchmarks/fleet_experiment/): its fleet, its budget accounting
and its arithmetic. No training here except one 1-step qualification through the trial ledger;
where an arm would train, a fake pool or a fake CLI answers."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from fleet_experiment import evaluation, report, teams, template, training, worlds, workspace  # noqa: E402
from fleet_experiment.catalogue import TECHNIQUE_PARAMS, change_label  # noqa: E402

from generator.engine import validate_spec  # noqa: E402


# --- the fleet ---------------------------------------------------------------------------------


def test_the_committed_fleet_is_what_the_seeded_generator_writes():
    """fleet.yml was written by worlds.py at its seed, and the generator gives it again byte for byte."""
    assert worlds.fleet_text(worlds.draw_fleet()) == worlds.FLEET_FILE.read_text()
    assert worlds.draw_fleet() == worlds.draw_fleet()


def test_the_fleet_holds_every_kind_of_world_by_quota():
    fleet = worlds.load_fleet()
    assert len(fleet) >= 40
    for model in fleet:
        validate_spec(model.spec, model.name)  # raises on a spec smt would refuse
    composition = worlds.composition(fleet)
    assert composition["additive"] == 8
    assert (composition["heavy-tail"], composition["label-noise"], composition["test-shift"]) == (12, 10, 10)
    assert composition["multi-task-correlated"] == composition["multi-task-uncorrelated"] == 8
    for model in fleet:
        world, objectives = model.spec["synthetic"], len(model.spec["objectives"])
        if model.tags == ("additive",):
            assert world["crosses"] == [] and objectives == 1 and not model.spec["dense_features"]
            continue
        orders = [len(cross["fields"]) for cross in world["crosses"]]
        assert orders and all(2 <= order <= 4 for order in orders), model.name
        assert ("multi-task-correlated" in model.tags or "multi-task-uncorrelated" in model.tags) == (objectives > 1)
        if "heavy-tail" in model.tags:
            assert world["dense_tail"] >= 2.0 and len(model.spec["dense_features"]) >= 2
        if "multi-task-uncorrelated" in model.tags:
            assert world["objective_correlation"] <= 0.2
    quick = [m for m in fleet if m.quick]
    assert len(quick) == 8 and all(count > 0 for count in worlds.composition(quick).values())


def test_another_seed_draws_another_fleet_with_the_same_quotas():
    other = worlds.draw_fleet(seed=7)
    assert [m.spec for m in other] != [m.spec for m in worlds.load_fleet()]
    assert worlds.composition(other)["additive"] == 8
    assert sum("heavy-tail" in m.tags for m in other) == 12


def test_every_catalogued_technique_has_params_the_qualify_label_can_carry():
    """The menu covers the 12 techniques, and its labels survive `smt qualify T:k=v,...` parsing."""
    from generator.qualification.variants import parse_change

    assert sorted(TECHNIQUE_PARAMS) == sorted(p.parent.name for p in (REPO / "techniques").glob("*/technique.yml"))
    for technique, menu in TECHNIQUE_PARAMS.items():
        for params in menu:
            change = parse_change(change_label(technique, params), None)
            assert (change.technique, change.params) == (technique, params)
            assert change.label == change_label(technique, params)


# --- budget accounting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "models", "expected"),
    [(40, 40, (2, 1, 2)), (160, 40, (4, 1, 2)), (640, 40, (6, 2, 2)), (8, 8, (2, 1, 2)), (32, 8, (2, 1, 2)), (4000, 40, (6, 2, 4))],
)
def test_the_central_plan_follows_the_budget(budget, models, expected):
    plan = template.central_plan(budget, models)
    assert (plan.reps, plan.seeds, plan.cycles) == expected and plan.budget == budget


def test_the_ledger_counts_each_trial_once(tmp_path):
    ws = workspace.Workspace(tmp_path, tmp_path / "log")
    lines = [{"key": k, "model": "m", "side": "baseline", "seed": 0, "steps": 1} for k in ("a", "b", "a", "c", "b")]
    ws.ledger.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert sorted(ws.trials_asked()) == ["a", "b", "c"]


def _fleet_root(tmp_path: Path, names: list[str]) -> workspace.Workspace:
    """A workspace with the template, the techniques and the named fleet models' specs (no code:
    the central team's applicability checks and the fake CLI below need nothing more)."""
    root = tmp_path / "ws"
    for item in ("generator", "template_repo", "techniques"):
        shutil.copytree(REPO / item, root / item, ignore=workspace.IGNORE)
    for model in worlds.load_fleet():
        if model.name in names:
            workspace.write_spec(root, model.name, model.spec)
    return workspace.Workspace(root, tmp_path / "commands.log")


class FakeCli:
    """Answers the central team's smt commands as the real CLI would, without training: a
    qualification asks for a baseline and a candidate trial per model and seed (keys as the real
    cache would make them: equal code and seed, equal key), passes when its technique is in
    ``passing``, and a promotion bumps the template version."""

    def __init__(self, ws: workspace.Workspace, passing: dict[str, float]) -> None:
        self.ws, self.passing, self.calls = ws, passing, []

    def _ask(self, *parts: Any) -> None:
        key = hashlib.sha256(repr(parts).encode()).hexdigest()[:32]
        with self.ws.ledger.open("a") as ledger:
            ledger.write(json.dumps({"key": key, "model": parts[1], "side": parts[0], "seed": parts[-1], "steps": 1}) + "\n")

    def __call__(self, *args: str, ok: tuple[int, ...] = (0,), count: bool = True) -> Any:
        self.calls.append(args)
        self.ws.commands.append({"command": " ".join(args), "rc": 0, "seconds": 0})
        version = template.template_version(self.ws)
        options = dict(zip(args[1::2], args[2::2])) if args[0] != "qualify" else dict(zip(args[2::2], args[3::2]))
        if args[0] == "representatives":
            return SimpleNamespace(returncode=0, stdout=json.dumps({"representatives": self.ws.models()[: int(args[2])]}), stderr="")
        if args[0] == "qualify":
            technique = args[1].split(":")[0]
            for model in options["--on"].split(","):
                for seed in range(int(options["--seeds"])):
                    self._ask("baseline", model, version, seed)
                    self._ask("candidate", model, version, args[1], seed)
            folder = self.ws.root / "reports" / f"{args[1]}-{version}"
            folder.mkdir(parents=True, exist_ok=True)
            gain = self.passing.get(technique, -0.001)
            (folder / "report.json").write_text(json.dumps({"mean_gain": gain, "reasons": []}))
            return SimpleNamespace(returncode=0 if technique in self.passing else 1, stdout=f"report: {folder}/report.md, report.json\n", stderr="")
        if args[0] == "promote":
            major, minor, _ = version.split(".")
            (self.ws.root / "template_repo" / "VERSION").write_text(f"{major}.{int(minor) + 1}.0\n")
            return SimpleNamespace(returncode=0, stdout="".join(f"{m}: adopted {args[1]}\n" for m in self.ws.models()), stderr="")
        if args[0] == "tune":
            models = options["--on"].split(",")
            for model in models:
                for seed in range(int(options["--seeds"])):
                    self._ask("baseline", model, version, seed)
            for number in range(int(options["--trials"])):
                for model in models:
                    for seed in range(int(options["--seeds"])):
                        self._ask("candidate", model, version, f"tune-{number}", seed)
            return SimpleNamespace(returncode=2, stdout="", stderr="error: does not beat the current defaults\n")
        raise AssertionError(f"unexpected command {args}")


@pytest.mark.parametrize(("budget", "reps", "seeds"), [(8, 0, 0), (24, 0, 0), (60, 0, 0), (200, 3, 2)])
def test_the_central_team_never_spends_more_than_its_budget(tmp_path, budget, reps, seeds):
    names = ["fleet_02", "fleet_03", "fleet_05", "fleet_10"]
    ws = _fleet_root(tmp_path, names)
    fake = FakeCli(ws, passing={"dcn_v2": 0.01, "residual_mlp": 0.004})
    ws.smt = fake  # type: ignore[method-assign]
    ws.supports = lambda command, option: False  # type: ignore[method-assign]
    plan = template.Plan(budget, reps, seeds, 2) if reps else template.central_plan(budget, len(names))
    record = template.Central(ws, plan, 1, 1, tmp_path / "reports", lambda text: None).run()
    assert 0 < record["spent"] <= budget
    assert len(record["cycles"]) == plan.cycles >= 2
    assert sum(c["trials"] for c in record["cycles"]) == record["spent"]
    for cycle in record["cycles"]:
        assert cycle["trials"] <= cycle["budget"]
    qualified = [q["change"].split(":")[0] for c in record["cycles"] for q in c["qualified"]]
    if seeds == 2:
        assert all(q["trials"] % 2 == 0 for c in record["cycles"] for q in c["qualified"])  # both paired seeds, every time
    if budget >= 60:  # room for every technique the representatives can take, and for promotions
        assert {"dcn_v2", "residual_mlp", "grad_clip", "mmoe"} <= set(qualified)
        promoted = [p["change"].split(":")[0] for c in record["cycles"] for p in c["promoted"]]
        assert promoted[:2] == ["dcn_v2", "residual_mlp"]  # the larger gain first
        # residual_mlp passed at the first version; promoting dcn_v2 made a new one, so it was qualified again
        assert qualified.count("residual_mlp") == 2
        assert template.template_version(ws) == "0.8.0"
        tuned = [c["tune"] for c in record["cycles"] if c["tune"]]
        per_trial = plan.reps * plan.seeds  # one candidate per representative and seed; the baselines once
        assert tuned and all(t["trials"] <= (t["trials_asked"] + 1) * per_trial for t in tuned)


def test_a_qualification_the_budget_cannot_hold_is_not_run(tmp_path):
    """With 3 trials, one cycle share holds no qualification of two representatives (4 trials)."""
    ws = _fleet_root(tmp_path, ["fleet_02", "fleet_03"])
    fake = FakeCli(ws, passing={})
    ws.smt = fake  # type: ignore[method-assign]
    ws.supports = lambda command, option: False  # type: ignore[method-assign]
    record = template.Central(ws, template.Plan(3, 2, 1, 2), 1, 1, tmp_path / "reports", lambda text: None).run()
    first = record["cycles"][0]
    assert first["qualified"] == [] and first["budget"] == 1
    assert all(s["why"] == "the cycle's budget is spent" for s in first["skipped"])
    assert record["spent"] <= 3


def test_a_qualification_the_ledger_did_not_see_stops_the_run(tmp_path):
    """A new change asks for new trials; a ledger that noted none (the CLI's trial path moved away
    from what smt_ledger.py wraps) would let the arm overspend, so the run stops."""
    ws = _fleet_root(tmp_path, ["fleet_02", "fleet_03"])
    fake = FakeCli(ws, passing={})
    fake._ask = lambda *parts: None  # type: ignore[method-assign]
    ws.smt = fake  # type: ignore[method-assign]
    ws.supports = lambda command, option: False  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="ledger noted no trial"):
        template.Central(ws, template.Plan(40, 2, 1, 2), 1, 1, tmp_path / "reports", lambda text: None).run()


# --- arm (a): teams ----------------------------------------------------------------------------


class FakePool:
    """A trial pool that trains nothing: validation logloss is a fixed function of the trial's key."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def run(self, items: list[Any]) -> dict[str, Any]:
        out = {}
        for t in items:
            self.asked.append(t.key)
            value = 0.4 + random.Random(t.key).random() * 0.01
            out[t.key] = {"metrics": {split: {o: {"logloss": value} for o in ("click", "conversion", "install")} for split in ("valid", "test")}}
        return out


def test_a_team_with_a_smaller_budget_is_the_start_of_the_same_trajectory(tmp_path, monkeypatch):
    """Budget b's team is the first b trials of the largest budget's; kept changes lower the
    validation logloss; commands and hand-written lines follow the stated accounting."""
    ws = _fleet_root(tmp_path, ["fleet_02", "fleet_05"])
    monkeypatch.setattr(training, "measure_folders", lambda folders, *a, **k: {str(f): {"mflops": 0.01, "parameters": 1} for f in folders})
    long_run, _ = teams.run_teams(ws, 4, 1, FakePool(), tmp_path / "long", 2603, lambda text: None)
    short_run, _ = teams.run_teams(ws, 2, 1, FakePool(), tmp_path / "short", 2603, lambda text: None)
    for name in ("fleet_02", "fleet_05"):
        long_team, short_team = long_run[name], short_run[name]
        assert [s.change for s in short_team.steps] == [s.change for s in long_team.steps[:2]]
        assert short_team.snapshot(2)["spec"] == long_team.snapshot(2)["spec"]
        assert long_team.snapshot(1)["spec"] == long_team.start and long_team.snapshot(1)["commands"] == 1
        best = long_team.steps[0].valid
        for step in long_team.steps[1:]:
            assert step.accepted == (step.valid < best)
            best = min(best, step.valid)
        snap = long_team.snapshot(4)
        revert = 0 if long_team.steps[3].accepted else 2
        assert snap["commands"] == 1 + 3 * 3 + revert + 2 * len(long_team.refused)
        assert snap["spec_lines"] == sum(s.lines for s in long_team.steps) and snap["spec_lines"] > 0
        assert snap["kept"] == [s.change for s in long_team.steps[1:] if s.accepted]


def test_a_change_over_the_serving_budget_is_redrawn_and_costs_no_trial(tmp_path, monkeypatch):
    ws = _fleet_root(tmp_path, ["fleet_03"])
    monkeypatch.setattr(training, "measure_folders", lambda folders, *a, **k: {str(f): {"mflops": 100.0, "parameters": 1} for f in folders})
    pool = FakePool()
    run, _ = teams.run_teams(ws, 2, 1, pool, tmp_path / "t", 2603, lambda text: None)
    team = run["fleet_03"]
    assert len(pool.asked) == 1  # the baseline only: every change was over budget
    assert team.steps[1].change == "no change it could take" and team.snapshot(2)["spec"] == team.start
    assert team.refused == [2] * 5


def test_lines_written_counts_the_lines_a_person_types():
    before = {"model_name": "m", "techniques": [], "hyperparameters": {"label_rates": [0.1]}}
    added = teams._with_technique(before, "dcn_v2", {"num_cross_layers": 2})
    assert teams.lines_written(before, added) == 4  # techniques:, - name:, params:, num_cross_layers:
    assert teams.lines_written(before, teams._with_hyperparameter(before, "dropout", 0.1)) == 1
    assert teams.lines_written(added, before) == 1  # techniques: []


# --- evaluation and report ---------------------------------------------------------------------


def _fleet_eval(values: dict[str, list[float]], mflops: dict[str, float], techniques: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {m: {"logloss": v, "mflops": mflops[m], "parameters": 1, "techniques": (techniques or {}).get(m, [])} for m, v in values.items()}


def test_the_comparison_is_paired_by_seed_and_averaged_over_models():
    a = _fleet_eval({"x": [1.0, 2.0], "y": [0.5, 0.5], "z": [0.4, math.nan]}, {"x": 1.0, "y": 2.0, "z": 1.0})
    b = _fleet_eval({"x": [0.99, 1.96], "y": [0.505, 0.505], "z": [0.4, 0.3]}, {"x": 1.1, "y": 2.0, "z": 1.0})
    out = evaluation.compare(a, b)
    rows = {r["model"]: r for r in out["rows"]}
    assert rows["x"]["change"] == pytest.approx(-0.015) and rows["x"]["se"] == pytest.approx(0.005)
    assert rows["y"]["change"] == pytest.approx(0.01) and rows["y"]["se"] == 0.0
    assert rows["z"]["seeds"] == 1 and rows["z"]["change"] == pytest.approx(0.0)  # the failed seed is left out
    s = out["summary"]
    assert s["mean_gain"] == pytest.approx((0.015 - 0.01 - 0.0) / 3)
    assert s["mean_gain_se"] == pytest.approx(math.sqrt(((-0.015 + 0.005 / 3) ** 2 + (0.01 + 0.005 / 3) ** 2 + (0.005 / 3) ** 2) / 2 / 3))
    assert s["share_improved"] == pytest.approx(1 / 3) and s["worst_regression"] == pytest.approx(0.01) and s["worst_model"] == "y"
    assert s["mean_mflops_change"] == pytest.approx(0.1 / 3) and s["total_mflops_change"] == pytest.approx(0.1 / 4)
    assert s["goal"] == {"mean_gain": False, "worst_regression": False, "mflops": False} and not s["goal_met"]
    assert (s["over_budget_a"], s["over_budget_b"]) == (0, 0)
    b["x"]["over_budget"] = True
    assert evaluation.compare(a, b)["summary"]["over_budget_b"] == 1
    tags = evaluation.by_tag(out["rows"], {"x": ("cross-2",), "y": ("additive",), "z": ("cross-2", "test-shift")})
    assert tags["cross-2"]["models"] == 2 and tags["cross-2"]["mean_gain"] == pytest.approx(0.0075)
    assert tags["additive"]["share_improved"] == 0.0


def test_the_paper_goal_is_met_only_when_all_three_hold():
    a = _fleet_eval({"x": [1.0], "y": [1.0]}, {"x": 1.0, "y": 1.0})
    b = _fleet_eval({"x": [0.99], "y": [0.996]}, {"x": 1.01, "y": 1.0})
    assert evaluation.compare(a, b)["summary"]["goal_met"]  # +0.7 % on average, both better, MFLOPs +0.5 %
    b["x"]["logloss"], b["y"]["logloss"] = [0.98], [1.003]  # +0.85 % on average, but one model 0.3 % worse
    summary = evaluation.compare(a, b)["summary"]
    assert summary["goal"] == {"mean_gain": True, "worst_regression": False, "mflops": True} and not summary["goal_met"]


def test_pairs_adopted_counts_new_technique_model_pairs():
    start = {"x": {"techniques": []}, "y": {"techniques": [{"name": "mmoe"}]}}
    end = {"x": {"techniques": [{"name": "dcn_v2"}, {"name": "grad_clip"}]}, "y": {"techniques": [{"name": "dcn_v2"}]}}
    assert evaluation.pairs_adopted(start, end) == 3


def test_the_report_states_each_budget_and_draws_the_plot(tmp_path):
    start = {"x": {"techniques": []}, "y": {"techniques": []}}
    initial = _fleet_eval({"x": [1.0, 1.0], "y": [0.5, 0.5]}, {"x": 1.0, "y": 1.0})
    eval_a = _fleet_eval({"x": [0.99, 0.99], "y": [0.5, 0.5]}, {"x": 1.0, "y": 1.0}, {"x": ["mmoe"]})
    eval_b = _fleet_eval({"x": [0.98, 0.98], "y": [0.501, 0.501]}, {"x": 1.2, "y": 1.2}, {"x": ["dcn_v2"], "y": ["dcn_v2"]})
    snapshots = {
        "x": {"spec": {"techniques": [{"name": "mmoe"}]}, "trials": 4, "kept": ["add mmoe"], "tried": ["add mmoe"] * 3, "commands": 12, "spec_lines": 9},
        "y": {"spec": {"techniques": []}, "trials": 4, "kept": [], "tried": ["set dropout=0.1"] * 3, "commands": 12, "spec_lines": 3},
    }
    cycle = {"cycle": 1, "budget": 8, "trials": 8, "template": "0.7.0", "representatives": ["x"], "skipped": [], "tune": None,
             "qualified": [{"change": "dcn_v2", "passed": True, "exit": 0, "mean_gain": 0.01}],
             "promoted": [{"change": "dcn_v2", "exit": 0, "from": "0.6.0", "to": "0.7.0", "pairs": 2}]}
    central = {"cycles": [cycle, {**cycle, "cycle": 2, "qualified": [], "promoted": []}], "spent": 8, "commands": [{}] * 5, "seconds": 10.0,
               "plan": {"budget": 8, "reps": 1, "seeds": 1, "cycles": 2}, "specs": {"x": {"techniques": [{"name": "dcn_v2"}]}, "y": {"techniques": [{"name": "dcn_v2"}]}}}
    result = report.budget_result(4, 2, start, snapshots, {"round_seconds": [1.0, 2.0, 3.0, 4.0]}, central, initial, eval_a, eval_b, {"x": ("cross-2",), "y": ("additive",)})
    assert result["adoption"] == {"pairs_a": 1, "pairs_b": 2, "cycles": 2, "pairs_per_cycle_a": 0.5, "pairs_per_cycle_b": 1.0, "ratio": 2.0}
    assert result["engineering"]["a"] == {"commands_per_model": 12.0, "spec_lines_per_model": 6.0, "seconds_per_model": 5.0}
    assert result["engineering"]["b"]["commands_per_model"] == 2.5
    results = {
        "budgets": {"4": result},
        "fleet": {"x": ["cross-2"], "y": ["additive"]},
        "settings": {"models": 2, "budgets": [4], "steps": 1, "eval_seeds": [1000, 1001], "jobs": 1, "seconds": 60.0, "trials_trained": 3,
                     "trials_asked": 5, "command": "python benchmarks/fleet_experiment.py", "machine": "test", "date": "today", "commit": "abc",
                     "load_average_before": [0.1, 0.2, 0.3], "load_average_after": [0.1, 0.2, 0.3], "composition": {"cross-2": 1, "additive": 1}},
    }
    report.write(tmp_path, results)
    text = (tmp_path / "report.md").read_text()
    gain = -((0.98 / 0.99 - 1) + (0.501 / 0.5 - 1)) / 2
    assert f"{gain:+.3%}" in text and "dcn_v2 (template 0.6.0 -> 0.7.0, 2 pairs)" in text
    assert "| 4 | 8 / 8 (of 8) |" in text and "**missed**" in text and "2.0x (paper: 6.3x)" in text
    assert (tmp_path / "gain_vs_budget.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["budgets"]["4"]["b"] == 4


# --- the ledger on the real CLI ------------------------------------------------------------------


def test_the_ledger_notes_every_trial_a_real_qualification_asks_for(tmp_path):
    """One model, one seed, one step: a baseline and a candidate trial, noted once each; asked
    again (all cached now), they are noted again, so the budget counts them whether cached or not."""
    fleet = {m.name: m.spec for m in worlds.load_fleet() if m.name == "fleet_02"}
    ws = workspace.create(REPO, tmp_path / "ws", tmp_path / "commands.log", fleet, tmp_path / "cache", {"split": "valid"}, {"hyperparameters": {}})
    args = ("qualify", "grad_clip:max_norm=1.0", "--on", "fleet_02", "--seeds", "1", "--steps", "1", "--no-record")
    first = ws.smt(*args, ok=(0, 1))
    asked = ws.trials_asked()
    assert sorted(e["side"] for e in asked.values()) == ["baseline", "candidate"], first.stderr
    assert all((tmp_path / "cache" / key / "threads-1").is_dir() for key in asked)  # one torch thread each
    ws.smt(*args, ok=(0, 1))
    lines = [json.loads(line) for line in ws.ledger.read_text().splitlines()]
    assert len({line["key"] for line in lines}) == 2 and len(lines) >= 4
    assert yaml.safe_load((ws.root / "qualification.yml").read_text())["criterion"]["split"] == "valid"
