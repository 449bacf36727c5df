"""The paper's comparison on a fleet: per-model independent tuning (a) against SMT (b), both run for
real with the `smt` CLI in scratch copies of this repository.

    python benchmarks/fleet_experiment.py [--quick] [--synthetic 20] [--trials N] [--steps S]
                                          [--seeds K] [--techniques a,b] [--out DIR]

The fleet: the example models of generated/ plus ``--synthetic`` models drawn from a seeded
generator of varied worlds (number and cardinality of sparse features, multi-valued fields,
dense features, one to three objectives with their weights and label rates, serving budgets),
each created with ``smt new``.

(a) per-model: ``smt tune --per-model --on all --trials N --apply``: every model tuned on its own
    study, the same total budget N split across models, winners written into each spec.
(b) SMT: ``smt tune --on representatives --trials N --apply`` (template defaults, one release),
    then for each candidate technique ``smt qualify T --on representatives`` and, when it passes,
    ``smt promote T`` (one release each).

Evaluation: every model of both arms as finally generated is trained with the same seeds and steps
(the qualification trial path); per model the test logloss and NE of (b) against (a), MFLOPs per
example; on average the relative logloss change, the share of models improved, the worst regression
and the MFLOPs change. Engineering cost: CLI commands run per arm and hand-written spec lines per
model (lines of the specs that differ from the start). Technique-model pairs adopted per release.
The paper's goal (mean CE gain >= 0.63 % at MFLOPs within +-2 %, no model worse than 0.2 %) is
printed next to what was measured, met or not. Results go to DIR/results.json and DIR/report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generator import trials  # noqa: E402
from generator.fleet import Fleet  # noqa: E402
from generator.impact import measure_folders  # noqa: E402

COPIED = ("generator", "template_repo", "techniques", "generated")
GOAL_GAIN, GOAL_MFLOPS, GOAL_WORST = 0.0063, 0.02, 0.002


def synthetic_spec(rng: random.Random, index: int) -> dict:
    """One model of a varied world: shapes, objectives and label rates drawn from ``rng``."""
    n_sparse = rng.randint(2, 7)
    sparse = [
        {
            "name": f"f{j}",
            "cardinality": rng.choice([50, 200, 1000, 5000, 20000]),
            "embedding_dim": rng.choice([4, 8, 16]),
            "multi_valued": rng.random() < 0.2,
        }
        for j in range(n_sparse)
    ]
    n_obj = rng.choice([1, 1, 2, 3])
    objectives = [{"name": f"event{j}", "weight": round(rng.choice([1.0, 1.0, 2.0, 0.5]), 2)} for j in range(n_obj)]
    rates = [round(rng.uniform(0.02, 0.4), 4) for _ in range(n_obj)]
    return {
        "description": f"Synthetic fleet model {index}: {n_sparse} sparse fields, {n_obj} objective(s).",
        "objectives": objectives,
        "sparse_features": sparse,
        "dense_features": [{"name": f"d{j}"} for j in range(rng.randint(0, 4))],
        "serving": {"max_params": 2_000_000, "max_mflops_per_example": round(rng.uniform(0.3, 3.0), 2)},
        "techniques": [],
        "hyperparameters": {"label_rates": rates},
    }


class Workspace:
    """A scratch copy of the repository where one arm runs, counting its `smt` commands."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log, self.commands = root, log, 0

    def smt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        self.commands += 1
        env = {k: v for k, v in os.environ.items() if k != "SMT_ROOT"}
        env["PYTHONPATH"] = str(self.root)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "generator", *args], cwd=self.root, env=env, capture_output=True, text=True)
        with self.log.open("a") as out:
            out.write(f"$ smt {' '.join(args)}  # rc {proc.returncode}, {time.perf_counter() - started:.0f}s\n{proc.stdout}{proc.stderr[-3000:]}\n")
        print(f"  smt {' '.join(args)[:100]} -> rc {proc.returncode} ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
        if check and proc.returncode not in (0, 1):
            raise SystemExit(f"smt {' '.join(args)} failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        return proc


def make_workspace(base: Path, name: str, specs: dict[str, dict], tune_yml: str, log: Path, examples: list[str]) -> Workspace:
    root = base / name
    root.mkdir(parents=True)
    for item in COPIED:
        shutil.copytree(REPO / item, root / item, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "runs"))
    for model in Fleet(root).names():
        if model not in examples:
            shutil.rmtree(root / "generated" / model)
    shutil.copy(REPO / "qualification.yml", root / "qualification.yml")
    (root / "tune.yml").write_text(tune_yml)
    cache = REPO / ".smt" / "trials"  # git-ignored; finished trainings are shared across arms and runs
    cache.mkdir(parents=True, exist_ok=True)  # (keys hash code, data, seed and steps)
    (root / ".smt").mkdir(exist_ok=True)
    os.symlink(cache, root / ".smt" / "trials")
    ws = Workspace(root, log)
    for model, spec in specs.items():
        path = base / f"{model}.yml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        ws.smt("new", model, "--data-file", str(path))
    return ws


def spec_lines(root: Path) -> dict[str, set[str]]:
    return {e.name: set((e.directory / ".copier-answers.yml").read_text().splitlines()) for e in Fleet(root).models()}


def evaluate(ws: Workspace, seeds: int, steps: int) -> dict[str, dict]:
    """Train every model of the workspace as generated now; test logloss/NE (objective-weighted) and MFLOPs."""
    fleet = Fleet(ws.root)
    entries = fleet.models()
    capacity = measure_folders([e.directory for e in entries], "measuring the fleet", trials.runtime_source(ws.root))
    plan = []
    for e in entries:
        tree = {str(p.relative_to(e.directory)): p.read_text() for p in sorted(e.directory.rglob("*.py")) if "__pycache__" not in p.parts}
        data = trials.data_files(e.directory)
        for seed in range(seeds):
            runtime = trials.runtime_source(ws.root)
            key = trials.trial_key(tree, data, seed, steps, runtime)
            plan.append((e, trials.Trial(e.name, "final", e.directory, seed, steps, key, data, runtime)))
    results = trials.run_trials(ws.root, [t for _, t in plan], jobs=1)
    out = {}
    for e in entries:
        weights = {o["name"]: float(o.get("weight", 1.0)) for o in e.answers["objectives"]}
        total = sum(weights.values())
        runs = [results[t.key] for owner, t in plan if owner is e]
        if any(isinstance(r, Exception) for r in runs):
            out[e.name] = {"error": str(next(r for r in runs if isinstance(r, Exception)))}
            continue
        ll = sum(sum(w / total * r["metrics"]["test"][o]["logloss"] for o, w in weights.items()) for r in runs) / len(runs)
        ne = sum(sum(w / total * r["metrics"]["test"][o]["ne"] for o, w in weights.items()) for r in runs) / len(runs)
        out[e.name] = {"logloss": ll, "ne": ne, "mflops": float(capacity[str(e.directory)]["mflops"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 example + 2 synthetic models, 4 trials, 40 steps, 1 seed (<= 15 minutes on 2 idle cores).")
    parser.add_argument("--synthetic", type=int, default=20)
    parser.add_argument("--trials", type=int, default=0, help="Total tuning trials per arm (default: one per model; quick: 4).")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--techniques", default="grad_clip:max_norm=5.0,dense_log_norm,field_dropout")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fleet_experiment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", default="all", help="Example models of generated/ to include: all or a,b (quick: feed_ctr,notification_open).")
    args = parser.parse_args()
    if args.quick:
        args.synthetic, args.steps, args.seeds = min(args.synthetic, 2), min(args.steps, 40), 1
        args.examples = "feed_ctr,notification_open" if args.examples == "all" else args.examples
        args.techniques = args.techniques.split(",")[0] if "," in args.techniques else args.techniques
    techniques = []
    for item in args.techniques.split(";" if ";" in args.techniques else ","):
        if item and "=" in item and techniques and ":" in techniques[-1] and ":" not in item:
            techniques[-1] += "," + item
        elif item:
            techniques.append(item)
    rng = random.Random(args.seed)
    specs = {f"synth_{i:02d}": synthetic_spec(rng, i) for i in range(args.synthetic)}
    examples = Fleet(REPO).names() if args.examples == "all" else [m.strip() for m in args.examples.split(",") if m.strip()]
    n_models = len(examples) + len(specs)
    budget = args.trials or (4 if args.quick else n_models)
    tune_yml = yaml.safe_dump({
        "hyperparameters": {
            "learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
            "embedding_learning_rate": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.2},
        },
        "budget": {"steps": args.steps, "seeds": 1, "models": "representatives"},
    }, sort_keys=False)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "commands.log"
    log.write_text("")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smt-fleet-") as tmp:
        base = Path(tmp)
        print(f"fleet: {n_models} models ({len(specs)} synthetic); tuning budget {budget} trials per arm", file=sys.stderr)
        a = make_workspace(base, "a", specs, tune_yml, log, examples)
        shutil.copytree(a.root, base / "b", symlinks=True)  # the same fleet, created once
        b = Workspace(base / "b", log)
        start_a, start_b = spec_lines(a.root), spec_lines(b.root)
        a.commands = b.commands = 0  # creating the fleet is common to both arms
        print("arm (a): per-model tuning", file=sys.stderr)
        a.smt("tune", "--study", "a", "--per-model", "--on", "all", "--trials", str(budget), "--apply", "--report", str(args.out / "a"))
        print("arm (b): template tuning on representatives, then qualify and promote", file=sys.stderr)
        releases = []
        tuned = b.smt("tune", "--study", "b", "--on", "representatives", "--trials", str(budget), "--apply", "--report", str(args.out / "b"), check=False)
        releases.append({"release": "tuned defaults", "applied": tuned.returncode == 0, "pairs": 0})
        for technique in techniques:
            q = b.smt("qualify", technique, "--on", "representatives", "--seeds", "1", "--steps", str(args.steps))
            if q.returncode == 0:
                p = b.smt("promote", technique, check=False)
                pairs = sum(1 for line in p.stdout.splitlines() if ": adopted " in line)
                releases.append({"release": f"promote {technique}", "applied": p.returncode == 0, "pairs": pairs})
            else:
                releases.append({"release": f"promote {technique}", "applied": False, "pairs": 0, "why": "did not qualify"})
        hand = {}
        for name, ws, start in (("a", a, start_a), ("b", b, start_b)):
            now = spec_lines(ws.root)
            hand[name] = sum(len(now[m] - start[m]) for m in now) / max(len(now), 1)
        print("evaluating both arms", file=sys.stderr)
        res_a, res_b = evaluate(a, args.seeds, args.steps), evaluate(b, args.seeds, args.steps)
    rows = []
    for model in sorted(res_a):
        ra, rb = res_a[model], res_b.get(model, {"error": "missing"})
        if "error" in ra or "error" in rb:
            rows.append({"model": model, "error": ra.get("error") or rb.get("error")})
            continue
        rows.append({
            "model": model,
            "logloss_a": ra["logloss"], "logloss_b": rb["logloss"], "rel_logloss": (rb["logloss"] - ra["logloss"]) / ra["logloss"],
            "ne_a": ra["ne"], "ne_b": rb["ne"], "d_ne": rb["ne"] - ra["ne"],
            "mflops_a": ra["mflops"], "mflops_b": rb["mflops"], "rel_mflops": (rb["mflops"] - ra["mflops"]) / ra["mflops"] if ra["mflops"] else 0.0,
        })
    ok = [r for r in rows if "error" not in r]
    mean = lambda key: sum(r[key] for r in ok) / len(ok) if ok else float("nan")  # noqa: E731
    summary = {
        "models": len(rows), "synthetic": len(specs), "trials_per_arm": budget, "steps": args.steps, "seeds": args.seeds,
        "mean_gain": -mean("rel_logloss"), "mean_d_ne": mean("d_ne"), "mean_rel_mflops": mean("rel_mflops"),
        "share_improved": sum(r["rel_logloss"] < 0 for r in ok) / len(ok) if ok else float("nan"),
        "worst_regression": max((r["rel_logloss"] for r in ok), default=float("nan")),
        "commands": {"a": a.commands, "b": b.commands}, "hand_written_spec_lines_per_model": hand,
        "releases": releases, "seconds": time.perf_counter() - started, "errors": [r for r in rows if "error" in r],
    }
    summary["goal_met"] = bool(ok) and summary["mean_gain"] >= GOAL_GAIN and abs(summary["mean_rel_mflops"]) <= GOAL_MFLOPS and summary["worst_regression"] <= GOAL_WORST
    (args.out / "results.json").write_text(json.dumps({"summary": summary, "models": rows}, indent=2) + "\n")
    lines = [
        "# Fleet experiment: SMT (b) against per-model tuning (a)", "",
        f"{summary['models']} models ({len(specs)} synthetic), {budget} tuning trials per arm, {args.steps} steps, {args.seeds} seed(s), {summary['seconds']:.0f} s.", "",
        "| model | logloss (a) | logloss (b) | rel. change | NE (a) | NE (b) | MFLOPs (a) | MFLOPs (b) |", "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error'][:80]} | | | | | | |")
        else:
            lines.append(f"| {r['model']} | {r['logloss_a']:.4f} | {r['logloss_b']:.4f} | {r['rel_logloss']:+.2%} | {r['ne_a']:.4f} | {r['ne_b']:.4f} | {r['mflops_a']:.4f} | {r['mflops_b']:.4f} |")
    lines += [
        "",
        f"- mean CE (logloss) gain of (b) over (a): {summary['mean_gain']:+.3%} (goal >= {GOAL_GAIN:.2%}); mean NE change {summary['mean_d_ne']:+.4f}",
        f"- share of models improved: {summary['share_improved']:.0%}; worst regression {summary['worst_regression']:+.3%} (goal <= {GOAL_WORST:.1%})",
        f"- MFLOPs change: {summary['mean_rel_mflops']:+.2%} (goal within +-{GOAL_MFLOPS:.0%})",
        f"- goal met: {'yes' if summary['goal_met'] else 'no'}",
        f"- engineering cost: commands run (a) {a.commands}, (b) {b.commands}; spec lines changed per model, which a fleet without `smt tune --apply` writes by hand: (a) {hand['a']:.1f}, (b) {hand['b']:.1f}",
        "- releases of (b): " + "; ".join(f"{r['release']}: {'applied' if r['applied'] else 'not applied'}, {r['pairs']} technique-model pair(s)" for r in releases),
    ]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
