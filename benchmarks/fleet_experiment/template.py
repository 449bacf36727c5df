"""Arm (b): the template. A central team spends the fleet's budget on template releases.

Each release cycle, with the ``smt`` commands of the template-iteration loop:

1. ``smt representatives -k R --json``: R representatives (medoids of the spec-descriptor clusters);
2. ``smt qualify T:params --on REPS --seeds S --steps N`` of every catalogued technique that the
   template does not hold yet and that applies to a representative: first those never qualified
   (the techniques applying to most of the fleet first), then the others by their latest gain,
   with the technique's next param set when it had failed;
3. ``smt promote`` of what passed, the largest gain first: each promotion is a new template version,
   so every further passer is qualified again on top of it first (``smt promote`` only accepts a
   passing record of the current version) and promoted if it still passes;
4. ``smt tune --apply`` of the template defaults (learning rates, dropout) on the representatives
   with what is left of the cycle's budget; a winner that beats the current defaults within every
   constraint is a new template version. (``--jobs J`` runs J tuning trials at a time, so TPE's
   suggestions, seeded, still differ from run to run.)

Budget: the trials the arm's commands ask for, counted once per key from the ledger, run or found
in the shared cache. Before each command its cost is bounded from above (R x S candidate trials,
plus R x S baselines not yet trained at this template version); a command that would overrun the
cycle's share is not run (said in the record). Each cycle gets the budget left divided by the
cycles left, so every cycle gets a share; qualifications and promotions leave a fifth of it (at
least two tuning trials; none when the share holds fewer than six) to tuning. The arm promotes only what its own qualification recorded
as passing, so the verification gate of ``smt promote`` never needs ``--force``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from generator.engine import SmtError
from generator.render import check_spec

from . import catalogue
from .workspace import CommandFailed, Workspace

ROUND = 13  # trials of one qualification round per representative and seed: a baseline and 12 techniques
CYCLE = 20  # ... and of a whole cycle, with re-qualifications after promotions and a few tuning trials


@dataclass(frozen=True)
class Plan:
    """How the central team spends ``budget`` trials: representatives, paired seeds, release cycles."""

    budget: int
    reps: int
    seeds: int
    cycles: int


def central_plan(budget: int, n_models: int) -> Plan:
    """Representatives x seeds so that two cycles of about CYCLE trials per (representative, seed)
    fit the budget: two seeds once eight (representative, seed) pairs fit, at most six
    representatives; at least two cycles, more when the budget holds more."""
    pairs = max(1, budget // (2 * CYCLE))
    seeds = 2 if pairs >= 8 else 1
    reps = max(2, min(6, pairs // seeds, n_models))
    cycles = max(2, min(4, budget // (CYCLE * reps * seeds)))
    return Plan(budget, min(reps, n_models), seeds, cycles)


def template_version(ws: Workspace) -> str:
    return (ws.root / "template_repo" / "VERSION").read_text().strip()


def applies(ws: Workspace, model: str, technique: str, params: dict[str, Any]) -> str:
    """"" when ``model`` can take ``technique`` now, else why not (a precondition, a conflict)."""
    spec = ws.spec(model)
    if any(use["name"] == technique for use in spec.get("techniques") or []):
        return "already uses it"
    uses = [*(spec.get("techniques") or []), {"name": technique, "params": params} if params else {"name": technique}]
    try:
        check_spec(ws.root, {**spec, "techniques": uses}, model, ws.root / "generated" / model)
    except SmtError as error:
        return str(error).removeprefix(f"{model}: ")
    return ""


class Central:
    """The central team's state: what it spent, trained, promoted and measured."""

    def __init__(self, ws: Workspace, plan: Plan, steps: int, jobs: int, reports: Path, note: Any) -> None:
        self.ws, self.plan, self.steps, self.jobs, self.reports, self.note = ws, plan, steps, jobs, reports, note
        self.trained: set[tuple[str, str]] = set()  # (template version, model) with baselines trained
        self.promoted: list[str] = []
        self.gains: dict[str, float] = {}  # technique -> mean gain at its latest qualification
        self.failed: set[str] = set()  # techniques whose latest qualification failed
        self.techniques = sorted(p.parent.name for p in (ws.root / "techniques").glob("*/technique.yml"))
        self._reach: dict[str, int] | None = None  # models of the fleet each technique applies to (at the start)
        self.qualified: set[tuple[str, str]] = set()  # (change, template version) already qualified

    @property
    def spent(self) -> int:
        return len(self.ws.trials_asked())

    def _jobs(self) -> list[str]:
        return ["--jobs", str(self.jobs)] + (["--threads", "1"] if self.ws.supports("qualify", "--threads") else [])

    def cost(self, models: list[str]) -> int:
        version = template_version(self.ws)
        return sum(self.plan.seeds * (1 + ((version, m) not in self.trained)) for m in models)

    def params_for(self, technique: str, cycle: int) -> dict[str, Any]:
        menu = catalogue.TECHNIQUE_PARAMS.get(technique, [{}])
        tries = cycle if technique in self.failed else 0
        return menu[min(tries, len(menu) - 1)]

    def order(self) -> list[str]:
        """Techniques never qualified first, those applying to most of the fleet first; then the
        qualified ones by their latest gain, largest first."""
        if self._reach is None:
            fleet = self.ws.models()
            self._reach = {t: sum(not applies(self.ws, m, t, {}) for m in fleet) for t in self.techniques}
        reach = self._reach
        fresh = sorted((t for t in self.techniques if t not in self.gains), key=lambda t: (-reach[t], t))
        return fresh + sorted((t for t in self.gains), key=lambda t: (-self.gains[t], t))

    def qualify(self, technique: str, params: dict[str, Any], reps: list[str]) -> dict[str, Any]:
        """``smt qualify`` on the representatives it applies to; its verdict and trials."""
        label = catalogue.change_label(technique, params)
        version = template_version(self.ws)
        before = self.spent
        models = [r for r in reps if not applies(self.ws, r, technique, params)]
        proc = self.ws.smt(
            "qualify", label, "--on", ",".join(models), "--seeds", str(self.plan.seeds), "--steps", str(self.steps), *self._jobs(),
            ok=(0, 1, 2),
        )
        if proc.returncode in (0, 1):  # it trained (exit 2: refused before any trial)
            self.trained |= {(version, m) for m in models}
        self.qualified.add((label, version))
        if proc.returncode in (0, 1) and self.spent == before:
            # A new (change, version) always asks for new candidate trials: the ledger missed them.
            raise RuntimeError(f"smt qualify {label}: the trial ledger noted no trial; generator.trials changed under smt_ledger.py")
        report = _report(self.ws.root, proc.stdout)
        record = {
            "change": label, "template": version, "on": models, "exit": proc.returncode,
            "passed": proc.returncode == 0, "mean_gain": report.get("mean_gain"), "reasons": report.get("reasons", []),
            "trials": self.spent - before,
        }
        if proc.returncode == 2:
            record["reasons"] = [_last_line(proc)]
        if record["mean_gain"] is not None:
            self.gains[technique] = float(record["mean_gain"])
        (self.failed.discard if record["passed"] else self.failed.add)(technique)
        verdict = "PASS" if record["passed"] else "FAIL" if proc.returncode == 1 else "error"
        gain = f", mean gain {record['mean_gain']:+.3%}" if record["mean_gain"] is not None else ""
        self.note(f"arm (b): qualify {label} on {len(models)} representative(s): {verdict}{gain} ({record['trials']} trial(s))")
        return record

    def promote(self, label: str) -> dict[str, Any]:
        old = template_version(self.ws)
        proc = self.ws.smt("promote", label, ok=(0, 1, 2))
        pairs = [line.split(":")[0] for line in proc.stdout.splitlines() if ": adopted " in line]
        record = {"change": label, "exit": proc.returncode, "from": old, "to": template_version(self.ws), "pairs": len(pairs), "models": pairs}
        if proc.returncode != 0:
            record["why"] = _last_line(proc)
        self.note(f"arm (b): promote {label}: " + (f"template {old} -> {record['to']}, {len(pairs)} technique-model pair(s)" if proc.returncode == 0 else f"refused: {record['why']}"))
        return record

    def tune(self, cycle: int, reps: list[str], room: int) -> dict[str, Any] | None:
        """``smt tune --apply`` on the representatives with as many trials as ``room`` holds."""
        per_trial = len(reps) * self.plan.seeds
        baseline = self.cost(reps) - per_trial
        n_trials = (room - baseline) // per_trial
        if n_trials < 1:
            self.note(f"arm (b): cycle {cycle + 1}: no budget left to tune ({room} trial(s) left, {baseline + per_trial} needed)")
            return None
        version = template_version(self.ws)
        before = self.spent
        report = self.reports / f"tune-cycle-{cycle + 1}"
        jobs = ["--jobs", str(self.jobs)] + (["--threads", "1"] if self.ws.supports("tune", "--threads") else [])
        proc = self.ws.smt(
            "tune", "--study", f"cycle-{cycle + 1}", "--trials", str(n_trials), "--on", ",".join(reps),
            "--steps", str(self.steps), "--seeds", str(self.plan.seeds), "--sampler-seed", "0",
            "--report", str(report), "--apply", *jobs, ok=(0, 1, 2),
        )
        if self.spent > before:  # it trained (the baselines first); exit 2 is also a refused --apply
            self.trained |= {(version, m) for m in reps}
        best = {}
        if (report / "report.json").is_file():
            best = json.loads((report / "report.json").read_text()).get("best") or {}
        record = {
            "trials_asked": n_trials, "trials": self.spent - before, "exit": proc.returncode, "applied": proc.returncode == 0,
            "from": version, "to": template_version(self.ws), "best_value": best.get("value"), "best_params": best.get("params"),
        }
        if proc.returncode != 0:
            record["why"] = _last_line(proc)
        value = f"{record['best_value']:+.3%}" if isinstance(record["best_value"], (int, float)) else "none"
        self.note(f"arm (b): tune {n_trials} trial(s) on {len(reps)} representative(s): best mean change {value}, " + ("applied" if record["applied"] else f"not applied: {record.get('why', '')}"))
        return record

    def run(self) -> dict[str, Any]:
        """Every release cycle; what each qualified, promoted and tuned, and the trials it spent."""
        cycles = []
        for c in range(self.plan.cycles):
            start = self.spent
            left = self.plan.budget - start
            share = left if c == self.plan.cycles - 1 else left // (self.plan.cycles - c)
            reps = self.representatives()
            per_tune_trial = len(reps) * self.plan.seeds
            tuning = max(2 * per_tune_trial, share // 5) if share >= 6 * per_tune_trial else 0
            qualifying = share - tuning  # what qualifications and promotions may spend; tuning gets the rest
            cycle: dict[str, Any] = {"cycle": c + 1, "budget": share, "representatives": reps, "qualified": [], "skipped": [], "promoted": []}
            passers: list[tuple[str, dict[str, Any], str]] = []  # technique, params, template version qualified at
            for technique in self.order():
                if technique in self.promoted:
                    continue
                params = self.params_for(technique, c)
                if (catalogue.change_label(technique, params), template_version(self.ws)) in self.qualified:
                    continue  # the same change on the same template: the same trials, the same verdict
                on = [r for r in reps if not applies(self.ws, r, technique, params)]
                if not on:
                    why = applies(self.ws, reps[0], technique, params)
                    cycle["skipped"].append({"change": catalogue.change_label(technique, params), "why": f"applies to no representative ({reps[0]}: {why})"})
                    continue
                if self.spent - start + self.cost(on) > qualifying:
                    cycle["skipped"].append({"change": catalogue.change_label(technique, params), "why": "the cycle's budget is spent"})
                    continue
                record = self.qualify(technique, params, reps)
                cycle["qualified"].append(record)
                if record["passed"]:
                    passers.append((technique, params, record["template"]))
            passers.sort(key=lambda p: -self.gains.get(p[0], 0.0))
            for technique, params, version in passers:
                label = catalogue.change_label(technique, params)
                if version != template_version(self.ws):  # a promotion since: qualify again on top of it
                    on = [r for r in reps if not applies(self.ws, r, technique, params)]
                    if not on:
                        cycle["skipped"].append({"change": label, "why": "no representative can take it on top of the new template"})
                        continue
                    if self.spent - start + self.cost(on) > qualifying:
                        cycle["skipped"].append({"change": label, "why": "no budget to qualify it again on top of the new template"})
                        continue
                    record = self.qualify(technique, params, reps)
                    cycle["qualified"].append(record)
                    if not record["passed"]:
                        continue
                promotion = self.promote(label)
                cycle["promoted"].append(promotion)
                if promotion["exit"] == 0:
                    self.promoted.append(technique)
            cycle["tune"] = self.tune(c, reps, share - (self.spent - start))
            cycle["trials"] = self.spent - start
            cycle["template"] = template_version(self.ws)
            cycles.append(cycle)
            self.note(f"arm (b): cycle {c + 1} done: {cycle['trials']} of {share} trial(s), template {cycle['template']}, promoted {[p['change'] for p in cycle['promoted'] if p['exit'] == 0] or 'nothing'}")
        return {"plan": asdict(self.plan), "cycles": cycles, "spent": self.spent, "commands": list(self.ws.commands)}

    def representatives(self) -> list[str]:
        proc = self.ws.smt("representatives", "-k", str(self.plan.reps), "--json")
        return list(json.loads(proc.stdout)["representatives"])


def _last_line(proc: Any) -> str:
    """The last line a command printed (its error, for a refusal), at most 300 characters."""
    lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return lines[-1][:300] if lines else f"exit {proc.returncode}, no output"


def _report(root: Path, stdout: str) -> dict[str, Any]:
    """The qualification's report.json (its folder is named on the ``report:`` line of the output)."""
    for line in stdout.splitlines():
        if line.startswith("report: "):
            folder = Path(line.removeprefix("report: ").split("/report.md")[0])
            path = (folder if folder.is_absolute() else root / folder) / "report.json"
            if path.is_file():
                return json.loads(path.read_text())
    return {}


__all__ = ["Central", "CommandFailed", "Plan", "central_plan"]
