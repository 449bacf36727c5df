"""Fleet-scale benchmark (issue 12): how smt's regeneration and drift check scale with fleet size.

For each size it builds a synthetic fleet of valid specs in a temporary copy of the repository
(template, techniques, hooks; objectives, features and technique sets drawn from the example fleet's
so they compose) and times, each as a fresh `smt` process:

  cold        smt generate with an empty cache (every model rendered and written)
  noop        smt check, nothing changed: the first check after the cold generate (it hashes every
              file, written less than two seconds before its first recording: see cache.py)
  noop again  smt check once more: a pre-commit hook's steady state
  hand edit   smt check after a hand edit of one generated file (exit 1)
  spec        smt check after a spec change of one model (exit 1)
  technique   smt check after a change to the technique used by the share of models nearest 20 %
  template    smt check after a change to one template file (every model)
  hook        the smt-check pre-commit hook's own entry (read from .pre-commit-hooks.yaml) for a
              commit that changes one spec and its regenerated files (exit 0)

plus peak memory (largest single process, from wait4; pool workers are separate processes), a
per-stage breakdown of a cold in-process render of up to 100 models (render = Jinja, patch =
libcst techniques, format = black, write = the folder swap), and `copier copy` of one model for the
per-model ratio. Usage:

    .venv/bin/python benchmarks/fleet_scale.py --sizes 10,100,1000 [--jobs N] [--keep]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMT = str(BIN / "smt")
COPIER = str(BIN / "copier")
COPIED = ("template_repo", "techniques", ".pre-commit-hooks.yaml", "pyproject.toml")
TARGETS = {  # seconds on the 2-core machine of issue 12, for the largest size
    "cold": 60.0,
    "noop": 2.0,
    "noop again": 2.0,
    "spec": 3.0,
    "hook": 3.0,
}


@dataclass
class Timing:
    seconds: float
    rss_mb: float
    code: int
    tail: str


def run(command: list[str], root: Path) -> Timing:
    """Run one command as a fresh process; wall time, peak RSS of its largest process, exit code."""
    env = {**os.environ, "SMT_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Timing(seconds, usage.ru_maxrss / 1024, process.returncode, output.strip().splitlines()[-1] if output.strip() else "")


def example_specs() -> list[dict]:
    specs = []
    for path in sorted((REPO / "generated").glob("*/.copier-answers.yml")):
        if not path.parent.name.startswith("."):
            specs.append(yaml.safe_load(path.read_text()))
    return specs


def _hyperparameters(features_from: dict, objectives_from: dict) -> dict:
    """The feature donor's hyperparameters, but label rates (one per objective) from the objectives' donor."""
    hyper = {k: v for k, v in (features_from.get("hyperparameters") or {}).items() if k != "label_rates"}
    rates = (objectives_from.get("hyperparameters") or {}).get("label_rates")
    return {**hyper, "label_rates": rates} if rates else hyper


def synthetic_specs(count: int) -> list[dict]:
    """``count`` valid specs mixing the examples' objectives, features and technique sets."""
    sys.path.insert(0, str(REPO))
    from generator import engine  # noqa: PLC0415

    examples = example_specs()
    specs = []
    for index in range(count):
        a = examples[index % len(examples)]
        b = examples[(index // len(examples)) % len(examples)]
        c = examples[(index // len(examples) ** 2 + index) % len(examples)]
        name = f"{a['model_name']}_{index:04d}"
        scale = 1 + index % 5
        spec = {
            "model_name": name,
            "description": f"Synthetic model {index} ({a['model_name']} objectives, {b['model_name']} features).",
            "objectives": a["objectives"],
            "sparse_features": [{**feature, "cardinality": int(feature["cardinality"]) * scale} for feature in b["sparse_features"]],
            "dense_features": b.get("dense_features") or [],
            "serving": {"max_params": 50_000_000, "max_mflops_per_example": 50.0},
            "hyperparameters": {"seed": index % 7, **_hyperparameters(b, a)},
        }
        for candidate in (c, a, b):
            techniques = [dict(use) for use in candidate.get("techniques") or []]
            for use in techniques:
                if use["name"] == "dcn_v2":
                    use["params"] = {**(use.get("params") or {}), "num_cross_layers": 1 + index % 3}
            try:
                engine.plan_for(REPO, {**spec, "techniques": techniques})
            except engine.SmtError:
                continue
            spec["techniques"] = techniques
            break
        else:
            spec["techniques"] = []
        specs.append(spec)
    return specs


def build_fleet(root: Path, specs: list[dict]) -> None:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "golden", "test_*.py"))
        else:
            shutil.copy2(source, root / name)
    # The template's extension loads the engine of its own checkout: the same folder as the smt
    # being measured, so that it is one engine (one memo, one cache) as in a real checkout.
    (root / "generator").symlink_to(REPO / "generator", target_is_directory=True)
    for spec in specs:
        folder = root / "generated" / spec["model_name"]
        folder.mkdir(parents=True)
        header = f"# The spec of model {spec['model_name']} (its Copier answers). Edit it, then run `smt generate`.\n"
        (folder / ".copier-answers.yml").write_text(header + yaml.safe_dump(spec, sort_keys=False))


def _append(path: Path, text: str) -> str:
    original = path.read_text()
    path.write_text(original + text)
    return original


def technique_near_20_percent(specs: list[dict]) -> tuple[str, int]:
    users: dict[str, int] = {}
    for spec in specs:
        for use in spec["techniques"]:
            users[use["name"]] = users.get(use["name"], 0) + 1
    name = min(users, key=lambda n: abs(users[n] - 0.2 * len(specs)))
    return name, users[name]


def hook_entry() -> list[str]:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    entry = next(hook["entry"] for hook in hooks if hook["id"] == "smt-check").split()
    return [str(BIN / entry[0]), *entry[1:]]


STAGE_SCRIPT = r"""
import sys, time, json
from pathlib import Path
root = Path(sys.argv[1]); limit = int(sys.argv[2])
from generator import engine, sync, render
from generator.engine import pipeline, layout
from generator.fleet import Fleet
totals = {"patch": 0.0, "format": 0.0, "write": 0.0}
def timed(module, name, stage):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[stage] += time.perf_counter() - started
    setattr(module, name, wrapper)
timed(pipeline, "apply_technique", "patch"); timed(pipeline, "add_technique_params", "patch")
timed(pipeline, "format_python", "format")
entries = Fleet(root).models()[:limit]
started = time.perf_counter()
trees = [render.render_model(root, e.answers, e.name, e.directory) for e in entries]
rendering = time.perf_counter() - started
started = time.perf_counter()
for entry, tree in zip(entries, trees):
    sync.write_tree(root / "stage-out" / entry.name, tree, "spec\n")
totals["write"] = time.perf_counter() - started
totals["render"] = rendering - totals["patch"] - totals["format"]
totals["models"] = len(entries)
print(json.dumps(totals))
"""


def stages(root: Path, limit: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SMT_NO_CACHE": "1"}
    out = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, str(root), str(limit)], env=env, capture_output=True, text=True, check=True)
    shutil.rmtree(root / "stage-out", ignore_errors=True)
    import json  # noqa: PLC0415

    return json.loads(out.stdout.strip().splitlines()[-1])


def copier_copy(root: Path, spec: dict) -> float:
    spec_file = root / "one-spec.yml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    destination = root / "copier-out"
    timing = run([COPIER, "copy", "--trust", "--defaults", "--quiet", "--data-file", str(spec_file), str(root / "template_repo"), str(destination)], root)
    if timing.code:
        raise SystemExit(f"copier copy failed: {timing.tail}")
    shutil.rmtree(destination)
    return timing.seconds


def bench_size(size: int, jobs: list[str], keep: bool) -> dict:
    specs = synthetic_specs(size)
    root = Path(tempfile.mkdtemp(prefix=f"smt-fleet-{size}-"))
    build_fleet(root, specs)
    result: dict = {"size": size}
    rows = {}
    rows["cold"] = run([SMT, "generate", *jobs], root)
    if rows["cold"].code:
        raise SystemExit(f"smt generate failed in {root}: {rows['cold'].tail}")
    rows["noop"] = run([SMT, "check", *jobs], root)
    rows["noop again"] = run([SMT, "check", *jobs], root)
    first = specs[0]["model_name"]
    edited = root / "generated" / first / first / "model.py"
    original = _append(edited, "# a hand edit\n")
    rows["hand edit"] = run([SMT, "check", *jobs], root)
    edited.write_text(original)
    spec_path = root / "generated" / specs[-1]["model_name"] / ".copier-answers.yml"
    original = _append(spec_path, "")
    spec_path.write_text(original.replace("seed: ", "seed: 1", 1) if "seed: " in original else original)
    rows["spec"] = run([SMT, "check", *jobs], root)
    run([SMT, "generate", specs[-1]["model_name"], "--no-cache", *jobs], root)  # as if regenerated in another clone
    rows["hook"] = run([*hook_entry(), *jobs], root)
    technique, users = technique_near_20_percent(specs)
    metadata = root / "techniques" / technique / "technique.yml"
    original = metadata.read_text()
    # a new version: the header of every file it patches names it, so each user's output changes
    metadata.write_text(re.sub(r"^version: *(\S+)", lambda m: "version: " + ".".join([*m.group(1).split(".")[:2], str(int(m.group(1).split(".")[2]) + 1)]), original, count=1, flags=re.M))
    rows["technique"] = run([SMT, "check", *jobs], root)
    metadata.write_text(original)
    result["technique"] = f"{technique} ({users} models)"
    template_file = root / "template_repo" / "template" / "{{ model_name }}" / "metrics.py.jinja"
    original = template_file.read_text()
    lines = original.splitlines(keepends=True)
    template_file.write_text("".join([lines[0], "# a template edit\n", *lines[1:]]))
    rows["template"] = run([SMT, "check", *jobs], root)
    template_file.write_text(original)
    result["rows"] = rows
    result["stages"] = stages(root, min(size, 100))
    result["copier"] = copier_copy(root, specs[0])
    if keep:
        print(f"kept {root}", file=sys.stderr)
    else:
        shutil.rmtree(root)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated fleet sizes")
    parser.add_argument("--jobs", type=int, default=None, help="passed to smt as --jobs (default: smt's, one per CPU)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary fleets")
    args = parser.parse_args()
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    sizes = [int(size) for size in args.sizes.split(",")]
    results = []
    for size in sizes:
        print(f"fleet of {size} ...", file=sys.stderr, flush=True)
        results.append(bench_size(size, jobs, args.keep))
    scenarios = ["cold", "noop", "noop again", "hand edit", "spec", "technique", "template", "hook"]
    print(f"\nsmt fleet scale ({'--jobs ' + str(args.jobs) if args.jobs else 'default jobs'}); seconds (exit code), each a fresh process")
    print(f"{'scenario':<12}" + "".join(f"{str(r['size']) + ' models':>18}" for r in results))
    for scenario in scenarios:
        cells = "".join(f"{r['rows'][scenario].seconds:>13.2f} ({r['rows'][scenario].code})" for r in results)
        print(f"{scenario:<12}{cells}")
    print(f"{'peak MB':<12}" + "".join(f"{max(t.rss_mb for t in r['rows'].values()):>18.0f}" for r in results))
    for r in results:
        s = r["stages"]
        per_model = r["rows"]["cold"].seconds / r["size"]
        print(
            f"\n{r['size']} models: technique change = {r['technique']}; cold per model {per_model * 1000:.0f} ms, "
            f"copier copy of one model {r['copier']:.2f} s, ratio {r['copier'] / per_model:.1f}x"
        )
        print(
            f"  stages of a cold in-process render of {s['models']} model(s), one process: render (Jinja) {s['render']:.2f} s, "
            f"patch (libcst) {s['patch']:.2f} s, format (black) {s['format']:.2f} s, write {s['write']:.2f} s"
        )
    if results:
        largest = results[-1]
        print(f"\ntargets at {largest['size']} models:")
        for scenario, limit in TARGETS.items():
            seconds = largest["rows"][scenario].seconds
            print(f"  {scenario:<11} {seconds:7.2f} s (target <= {limit:g} s): {'PASS' if seconds <= limit else 'FAIL'}")
        peak = max(t.rss_mb for t in largest["rows"].values())
        print(f"  peak RSS   {peak:7.0f} MB (target <= 2048 MB): {'PASS' if peak <= 2048 else 'FAIL'}")
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs; Python {platform.python_version()}")
    print(f"command: python benchmarks/fleet_scale.py --sizes {args.sizes}" + (f" --jobs {args.jobs}" if args.jobs else ""))


if __name__ == "__main__":
    main()
