"""Arm (a): independent teams. Each model's team spends its own budget on its own model.

A team works the way a ranking team does without a template process: it trains its model as it is
(trial 1), then edits its spec by hand, one change at a time, retrains, and keeps the change when
the validation logloss (objective-weighted, development seed 0) is lower than its best so far;
otherwise it reverts. A change is drawn by the team's own seeded random stream:

- 55 %: add a catalogued technique it does not use, with one of the catalogue's param sets (a
  technique that replaces the same extension point as one it uses takes that one's place);
- 35 %: a hyperparameter (learning rate or embedding learning rate x0.5 or x2, dropout 0/0.1/0.2,
  weight decay 0/1e-5/1e-4);
- 10 %: drop a technique it uses (else a hyperparameter).

A change its model cannot take (a precondition, e.g. MMoE on one objective) is redrawn; so is one
over the serving budget (or one that does not build), which the team sees with ``python -m MODEL
capacity`` before training (a command, not a trial). Decisions depend only on earlier results, so
the first b trials of a team with budget 16 are exactly the trials of the same team with budget b:
one trajectory per model serves every budget, and the state after b trials is that team's result
at budget b.

Engineering cost per model: commands (train; then per change: ``smt generate``, capacity, train;
a final revert to the best spec, ``git checkout`` + ``smt generate``, when the last change was
rejected) and spec lines written by hand (the ``+`` lines of each change's diff against the spec it
started from; reverts cost nothing).
"""

from __future__ import annotations

import difflib
import math
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from generator.engine import SmtError
from generator.render import check_spec

from . import catalogue, training
from .training import capacity
from .workspace import Workspace

ADD, HYPER = 0.55, 0.35  # the rest: drop a technique
MAX_DRAWS = 20
_CONFLICT = re.compile(r"techniques '(\w+)' and '(\w+)' both replace")


@dataclass
class Step:
    """One trial of a team: the change it tried, the lines it typed, the validation logloss, kept or not."""

    trial: int
    change: str
    lines: int
    valid: float = math.nan
    accepted: bool = False


@dataclass
class Team:
    """One model's team: its spec now, its best validation logloss and what it tried."""

    model: str
    start: dict[str, Any]
    best: dict[str, Any]
    rng: random.Random
    best_valid: float = math.nan
    steps: list[Step] = field(default_factory=list)
    history: dict[int, dict[str, Any]] = field(default_factory=dict)  # trial number -> the spec kept after it
    refused: list[int] = field(default_factory=list)  # trial number before which a draw was over budget
    refused_lines: dict[int, int] = field(default_factory=dict)  # lines typed for those draws, by trial

    def snapshot(self, budget: int) -> dict[str, Any]:
        """The team's result after ``budget`` trials: its spec, changes kept, commands and lines."""
        steps = self.steps[:budget]
        commands = 1 + 3 * len(steps[1:])  # train; then per change: smt generate, capacity, train
        if len(steps) > 1 and not steps[-1].accepted:
            commands += 2  # git checkout of the best spec, smt generate
        refused = [t for t in self.refused if t <= budget]
        commands += 2 * len(refused)  # smt generate, capacity: over budget, reverted
        return {
            "model": self.model,
            "spec": self.history[max(t for t in self.history if t <= budget)],
            "trials": len(steps),
            "kept": [s.change for s in steps[1:] if s.accepted],
            "tried": [s.change for s in steps[1:]],
            "commands": commands,
            "spec_lines": sum(s.lines for s in steps) + sum(self.refused_lines.get(t, 0) for t in refused),
            "valid": [s.valid for s in steps],
        }


def spec_text(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


def lines_written(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Lines a person types to turn spec ``before`` into ``after`` (the diff's added lines)."""
    diff = difflib.unified_diff(spec_text(before).splitlines(), spec_text(after).splitlines(), lineterm="", n=0)
    return sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))


def _with_technique(spec: dict[str, Any], name: str, params: dict[str, Any]) -> dict[str, Any]:
    uses = [dict(u) for u in spec.get("techniques") or [] if u["name"] != name]
    uses.append({"name": name, "params": dict(params)} if params else {"name": name})
    return {**spec, "techniques": uses}


def _without_technique(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {**spec, "techniques": [dict(u) for u in spec.get("techniques") or [] if u["name"] != name]}


def _with_hyperparameter(spec: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    return {**spec, "hyperparameters": {**(spec.get("hyperparameters") or {}), name: value}}


def propose(root: Path, team: Team, techniques: list[str]) -> tuple[str, dict[str, Any]] | None:
    """The team's next change that its model can take: (description, spec), or None after MAX_DRAWS."""
    spec, rng = team.best, team.rng
    for _ in range(MAX_DRAWS):
        used = [u["name"] for u in spec.get("techniques") or []]
        roll = rng.random()
        if roll < ADD:
            name = rng.choice([t for t in techniques if t not in used] or techniques)
            params = rng.choice(catalogue.TECHNIQUE_PARAMS.get(name, [{}]))
            change, candidate = f"add {catalogue.change_label(name, params)}", _with_technique(spec, name, params)
        elif roll < ADD + HYPER or not used:
            name, value = catalogue.hyperparameter_move(rng, spec.get("hyperparameters") or {})
            change, candidate = f"set {name}={value}", _with_hyperparameter(spec, name, value)
        else:
            name = rng.choice(used)
            change, candidate = f"drop {name}", _without_technique(spec, name)
        for _attempt in range(2):
            try:
                check_spec(root, candidate, team.model, root / "generated" / team.model)
                return change, candidate
            except SmtError as error:
                conflict = _CONFLICT.search(str(error))
                if not conflict or not change.startswith("add "):
                    break
                other = conflict.group(1) if conflict.group(2) == change.split()[1].split(":")[0] else conflict.group(2)
                candidate = _without_technique(candidate, other)
                change += f" (replacing {other})"
    return None


def run_teams(
    ws: Workspace, budget: int, steps: int, pool: training.Pool, scratch: Path, fleet_seed: int, note: Any = print
) -> tuple[dict[str, Team], list[float]]:
    """Every team's trajectory of ``budget`` trials, round by round (all teams' trial k at once),
    and the seconds each round took."""
    root = ws.root
    techniques = sorted(p.parent.name for p in (root / "techniques").glob("*/technique.yml"))
    teams = {
        name: Team(name, ws.spec(name), ws.spec(name), random.Random(f"team/{fleet_seed}/{name}"))
        for name in ws.models()
    }
    for team in teams.values():
        team.history[0] = team.start
    rounds: list[float] = []
    for k in range(1, budget + 1):
        round_started = time.perf_counter()
        if k == 1:
            chosen = {name: ("baseline", team.start) for name, team in teams.items()}
        else:
            chosen = _changes_within_budget(root, teams, techniques, k, scratch)
        rendered = {name: training.render(root, name, spec, scratch / f"t{k}" / name) for name, (_, spec) in chosen.items()}
        results = pool.run([training.trial(r, 0, steps, "team") for r in rendered.values()])
        for name, team in teams.items():
            if name not in chosen:
                team.steps.append(Step(k, "no change it could take", 0))
                team.history[k] = team.best
                continue
            change, spec = chosen[name]
            valid = training.weighted_logloss(results[rendered[name].tree_key(0, steps)], training.objective_weights(spec), "valid")
            better = k == 1 or (math.isfinite(valid) and (not math.isfinite(team.best_valid) or valid < team.best_valid))
            team.steps.append(Step(k, change, 0 if k == 1 else lines_written(team.best, spec), valid, better and k > 1))
            if better:
                team.best, team.best_valid = spec, valid
            team.history[k] = team.best
        kept = sum(1 for t in teams.values() if t.steps[-1].accepted)
        rounds.append(round(time.perf_counter() - round_started, 1))
        note(f"arm (a): round {k}/{budget} done: {len(chosen)} trial(s), {kept} change(s) kept")
    return teams, rounds


def _changes_within_budget(root: Path, teams: dict[str, Team], techniques: list[str], k: int, scratch: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each team's change for trial k, redrawn while over its serving budget (capacity measured for
    all teams at once: one PyTorch process per redraw round)."""
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    pending = list(teams)
    for attempt in range(5):
        proposals = {}
        for name in pending:
            proposal = propose(root, teams[name], techniques)
            if proposal is not None:
                proposals[name] = proposal
        if not proposals:
            break
        folders = {name: training.render(root, name, spec, scratch / f"t{k}-draw{attempt}" / name) for name, (_, spec) in proposals.items()}
        runtime = next(iter(folders.values())).runtime
        measured = capacity([r.folder for r in folders.values()], f"capacity of the teams' changes {k}", runtime)
        pending = []
        for name, (change, spec) in proposals.items():
            serving = spec.get("serving") or {}
            built = measured[str(folders[name].folder)]
            over = built is None or built["mflops"] > float(serving.get("max_mflops_per_example", math.inf)) or built["parameters"] > int(serving.get("max_params", sys.maxsize))
            if over:
                teams[name].refused.append(k)
                teams[name].refused_lines[k] = teams[name].refused_lines.get(k, 0) + lines_written(teams[name].best, spec)
                pending.append(name)
            else:
                chosen[name] = (change, spec)
        if not pending:
            break
    return chosen
