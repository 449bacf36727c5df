"""The command line: set up the fleet, run both arms at every budget, evaluate, report.

Stages, each saved to ``checkpoint.json`` in the work folder when it finishes (an interrupted run
started again with the same options skips finished stages; within a stage, finished trials come
from the trial cache):

1. ``teams``: arm (a)'s trajectories at the largest budget (every smaller budget is a prefix);
2. ``eval initial`` and ``eval a-b<b>``: the fleet as created, and arm (a)'s fleet at each budget;
3. ``template b<b>`` and ``eval b-b<b>``: arm (b) at each budget, and its final fleet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import evaluation, report, teams, template, worlds, workspace
from .catalogue import TUNE_SPACE
from .training import Pool

REPO = Path(__file__).resolve().parents[2]
EVAL_SEED0 = 1000  # evaluation seeds 1000, 1001, ...: never a development seed (0, 1, ...)


class Progress:
    """Progress lines on stderr (one per event, no terminal tricks) with trials done and an ETA."""

    def __init__(self, planned: int) -> None:
        self.planned, self.done, self.fresh, self.here = planned, 0, 0, 0
        self.started = time.perf_counter()

    def add(self, fresh: int, cached: int) -> None:
        """Trials asked for by this process: ``fresh`` trained, ``cached`` read from the cache."""
        self.done += fresh + cached
        self.here += fresh + cached
        self.fresh += fresh

    def skip(self, trials: int) -> None:
        """Trials of a stage an earlier run finished (its checkpoint): done, but no measure of speed."""
        self.done += trials

    def line(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        left = max(self.planned - self.done, 0)
        eta = f"ETA {_clock(elapsed / self.here * left)}" if self.here else "ETA unknown"
        print(f"[{_clock(elapsed)}] {text} | trials {self.done}/~{self.planned} ({self.fresh} trained), {eta}", file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/fleet_experiment.py",
        description="Independent teams (a) against the template (b) on a 40-model fleet, at several budgets (issue 22).",
    )
    parser.add_argument("--quick", action="store_true", help="The 8 quick models, budgets 1 and 4, 100 steps, 2 evaluation seeds (< 15 minutes on 2 idle cores).")
    parser.add_argument("--budgets", default=None, help="Trials per model, comma-separated (default 1,4,16; quick 1,4).")
    parser.add_argument("--steps", type=int, default=None, help="Training steps of every trial (default 300; quick 100).")
    parser.add_argument("--eval-seeds", type=int, default=None, help="New seeds of the final evaluation (default 3; quick 2).")
    parser.add_argument("--models", default=None, help="Only these models of fleet.yml (a,b) or the first N (a number): for development.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="Trials at a time, one torch thread each (default: the cores).")
    parser.add_argument("--out", type=Path, default=None, help="Results folder (default benchmarks/results/fleet_experiment[_quick]).")
    parser.add_argument("--work", type=Path, default=None, help="Workspaces and checkpoint (default .smt/fleet_experiment/<out name>).")
    parser.add_argument("--cache", type=Path, default=REPO / ".smt" / "trials", help="The trial cache shared by every run (default .smt/trials).")
    parser.add_argument("--fresh", action="store_true", help="Ignore the checkpoint of an earlier run (the trial cache is kept).")
    parser.add_argument("--write-fleet", action="store_true", help="Write fleet.yml from the seeded generator and exit.")
    args = parser.parse_args(argv)
    quick = args.quick
    try:
        args.budgets = sorted({int(b) for b in (args.budgets or ("1,4" if quick else "1,4,16")).split(",") if b.strip()})
    except ValueError:
        parser.error(f"--budgets {args.budgets!r}: give trials per model as whole numbers, e.g. 1,4,16")
    args.steps = args.steps or (100 if quick else 300)
    args.eval_seeds = args.eval_seeds or (2 if quick else 3)
    name = "fleet_experiment_quick" if quick else "fleet_experiment"
    args.out = args.out or REPO / "benchmarks" / "results" / name
    args.work = args.work or REPO / ".smt" / "fleet_experiment" / args.out.name
    if not args.budgets or min(args.budgets) < 1 or args.steps < 1 or args.eval_seeds < 1 or args.jobs < 1:
        parser.error("budgets, --steps, --eval-seeds and --jobs must be at least 1")
    return args


def choose_models(fleet: list[worlds.FleetModel], quick: bool, only: str | None) -> list[worlds.FleetModel]:
    chosen = [m for m in fleet if m.quick] if quick else list(fleet)
    if only:
        if only.isdigit():
            return chosen[: int(only)]
        names = {n.strip() for n in only.split(",") if n.strip()}
        unknown = names - {m.name for m in fleet}
        if unknown:
            raise SystemExit(f"--models: {', '.join(sorted(unknown))} not in {worlds.FLEET_FILE.name}")
        return [m for m in fleet if m.name in names]
    return chosen


def planned_trials(n: int, budgets: list[int], seeds: int) -> int:
    """About how many trials the run asks for: teams, central, evaluation (shared ones count once each time)."""
    return n * max(budgets) + n * sum(budgets) + seeds * n * (1 + 2 * len(budgets))


def settings_digest(args: argparse.Namespace, models: list[worlds.FleetModel]) -> str:
    data = {
        "models": [(m.name, m.spec) for m in models], "budgets": args.budgets, "steps": args.steps, "eval_seeds": args.eval_seeds,
        "code": _code_digest(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _code_digest() -> str:
    """What decides a stage's result: the generator, template, techniques, runtime, criterion and
    the harness's arms (report.py only formats, so a change there reuses the stages)."""
    digest = hashlib.sha256()
    for part in ("generator", "template_repo", "techniques", "runtime/smt_runtime", "benchmarks/fleet_experiment", "qualification.yml"):
        base = REPO / part
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
        for path in files:
            if path.name not in ("report.py", "__init__.py"):
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    import torch  # noqa: PLC0415

    return f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}"


class Checkpoint:
    """Finished stages of one run, by name, in ``work/checkpoint.json`` (written atomically)."""

    def __init__(self, path: Path, digest: str, fresh: bool) -> None:
        self.path, self.digest = path, digest
        data = json.loads(path.read_text()) if path.is_file() and not fresh else {}
        self.stages: dict[str, Any] = data.get("stages", {}) if data.get("digest") == digest else {}
        if data and not self.stages and not fresh:
            print(f"checkpoint {path}: from other settings or code; starting over (the trial cache stays)", file=sys.stderr)

    def save(self, stage: str, value: Any) -> Any:
        self.stages[stage] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".part")
        partial.write_text(json.dumps({"digest": self.digest, "stages": self.stages}, indent=1, default=str))
        os.replace(partial, self.path)
        return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_fleet:
        worlds.FLEET_FILE.write_text(worlds.fleet_text(worlds.draw_fleet()))
        print(f"wrote {worlds.FLEET_FILE.relative_to(REPO)}: {worlds.composition(worlds.draw_fleet())}")
        return 0
    commit = _commit(args.out)
    fleet = worlds.load_fleet()
    models = choose_models(fleet, args.quick, args.models)
    n = len(models)
    tags = {m.name: m.tags for m in models}
    started = time.perf_counter()
    load_before = os.getloadavg()
    progress = Progress(planned_trials(n, args.budgets, args.eval_seeds))
    checkpoint = Checkpoint(args.work / "checkpoint.json", settings_digest(args, models), args.fresh)
    seconds: dict[str, float] = checkpoint.stages.get("seconds", {})
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "commands.log"
    if not checkpoint.stages:
        log.write_text("")
    eval_seeds = [EVAL_SEED0 + i for i in range(args.eval_seeds)]
    criterion = {"split": "valid"}  # both arms choose on validation; the evaluation reads test
    tune_space = {"hyperparameters": TUNE_SPACE, "budget": {"steps": args.steps, "seeds": 1, "models": "representatives"}}
    progress.line(f"fleet: {n} models ({', '.join(f'{t} {c}' for t, c in worlds.composition(models).items() if c)}); budgets {args.budgets} trials per model; {args.steps} steps; {len(eval_seeds)} evaluation seeds; {args.jobs} job(s)")

    base = workspace.create(REPO, args.work / "fleet", log, {m.name: m.spec for m in models}, args.cache, criterion, tune_space)
    pool = Pool(base.root, args.jobs, seconds, progress.add)
    start_specs = {m: base.spec(m) for m in base.models()}

    # Arm (a): one trajectory per team at the largest budget; smaller budgets are its prefixes.
    if "teams" not in checkpoint.stages:
        stage_started = time.perf_counter()
        trajectories, rounds = teams.run_teams(base, max(args.budgets), args.steps, pool, args.work / "teams", worlds.FLEET_SEED, progress.line)
        checkpoint.save("teams", {
            "seconds": time.perf_counter() - stage_started,
            "round_seconds": rounds,
            "snapshots": {str(b): {name: t.snapshot(b) for name, t in trajectories.items()} for b in args.budgets},
        })
        checkpoint.save("seconds", seconds)
    else:
        progress.skip(n * max(args.budgets))
    snapshots = checkpoint.stages["teams"]["snapshots"]

    def evaluated(stage: str, root: Path, specs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if stage not in checkpoint.stages:
            progress.line(f"evaluating {stage}: {len(specs)} models x {len(eval_seeds)} seeds")
            result = evaluation.evaluate_fleet(root, specs, args.work / "eval" / stage.replace(" ", "-"), eval_seeds, args.steps, pool)
            checkpoint.save(stage, result)
            checkpoint.save("seconds", seconds)
        else:
            progress.skip(len(specs) * len(eval_seeds))
        return checkpoint.stages[stage]

    initial = evaluated("eval initial", base.root, start_specs)
    results: dict[str, Any] = {"budgets": {}}
    for b in args.budgets:
        specs_a = {name: snap["spec"] for name, snap in snapshots[str(b)].items()}
        eval_a = evaluated(f"eval a-b{b}", base.root, specs_a)
        stage = f"template b{b}"
        ws_b_root = args.work / f"b{b}"
        if stage not in checkpoint.stages or not ws_b_root.is_dir():
            stage_started = time.perf_counter()
            ws_b = workspace.clone(base, ws_b_root)
            plan = template.central_plan(b * n, n)
            progress.line(f"arm (b) at b={b}: {plan.budget} trials, {plan.reps} representatives, {plan.seeds} seed(s), {plan.cycles} cycles")
            seen = {"trials": 0}

            def note(text: str, ws: workspace.Workspace = ws_b, seen: dict[str, int] = seen) -> None:
                spent = len(ws.trials_asked())
                progress.add(spent - seen["trials"], 0)  # asked for by the arm's commands, trained or cached
                seen["trials"] = spent
                progress.line(text)

            central = template.Central(ws_b, plan, args.steps, args.jobs, args.out / f"b{b}", note)
            record = central.run()
            record["seconds"] = time.perf_counter() - stage_started
            record["specs"] = {m: ws_b.spec(m) for m in ws_b.models()}
            checkpoint.save(stage, record)
        else:
            progress.skip(checkpoint.stages[stage]["spent"])
        central_record = checkpoint.stages[stage]
        eval_b = evaluated(f"eval b-b{b}", ws_b_root, central_record["specs"])
        results["budgets"][str(b)] = report.budget_result(b, n, start_specs, snapshots[str(b)], checkpoint.stages["teams"], central_record, initial, eval_a, eval_b, tags)
        progress.line(f"b={b}: (b) vs (a) mean gain {results['budgets'][str(b)]['comparison']['summary']['mean_gain']:+.3%}")

    results["settings"] = {
        "models": n, "budgets": args.budgets, "steps": args.steps, "eval_seeds": eval_seeds, "jobs": args.jobs,
        "command": "python benchmarks/fleet_experiment.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(), "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": time.perf_counter() - started, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "trials_trained": progress.fresh, "trials_asked": progress.done,
        "composition": worlds.composition(models),
    }
    results["fleet"] = {m.name: list(m.tags) for m in models}
    report.write(args.out, results)
    progress.line(f"done: {args.out}/report.md, results.json, gain_vs_budget.png")
    return 0


def _commit(out: Path) -> str:
    """HEAD, and whether tracked files differ from it (the results folder, which a run rewrites, aside)."""
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    aside = [f":(exclude){out.resolve().relative_to(REPO)}"] if out.resolve().is_relative_to(REPO) else []
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *aside], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
