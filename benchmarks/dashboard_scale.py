"""Dashboard scale benchmark (issue 24, item 3): `smt dashboard` on a 1,000-model fleet, and how fast
its page loads in headless Chromium.

Builds a synthetic fleet with fleet_scale.py's builder (valid specs mixing the example fleet's
objectives, features and technique sets) in a temporary copy of the repository, with the
repository's qualification reports and CHANGELOG, then times, each as a fresh `smt` process:

  generate    smt generate (cold cache), so that the dashboard's sync state comes from the cache
  history     (unless --no-git) a git history of two template releases: the fleet committed with
              VERSION at an older version and a tenth of the models without their first technique,
              then the fleet as generated (so the newer release adopted those pairs)
  dashboard   smt dashboard OUT (sync state, capacity unless --no-capacity, reports, writing)

and loads OUT/index.html from disk in headless Chromium (the system's /usr/bin/chromium through
Playwright) --loads times, reporting the time from navigation start to the matrix rendered (the
page's own performance.now() when its first render finishes) plus the time a text filter, a
technique filter and a sort take to re-render the matrix. Target: the page loads in under 2 s.

    .venv/bin/python benchmarks/dashboard_scale.py [--models 1000] [--loads 5] [--no-capacity] [--keep]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet_scale import REPO, SMT, build_fleet, synthetic_specs  # noqa: E402

from generator.dashboard.browser import open_dashboard  # noqa: E402

TARGET_LOAD_SECONDS = 2.0
EVIDENCE = ("qualification", "qualification.yml", "CHANGELOG.md")

# Each interaction: the input to change, the value, then the time the synchronous re-render took.
INTERACT = """([selector, value]) => {
  const element = document.querySelector(selector);
  const started = performance.now();
  element.value = value;
  element.dispatchEvent(new Event("input"));
  return [performance.now() - started, document.querySelectorAll("#matrix tbody tr").length];
}"""
SORT = """() => {
  const started = performance.now();
  document.querySelector("#matrix thead th[data-key='params']").click();
  return [performance.now() - started, document.querySelectorAll("#matrix tbody tr").length];
}"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_history(root: Path) -> int:
    """Two release commits (see the docstring); the number of pairs the second adopted."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@example.com"}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)

    version = root / "template_repo" / "VERSION"
    current = version.read_text()
    specs = sorted((root / "generated").glob("*/.copier-answers.yml"))
    originals = {path: path.read_text() for path in specs[::10]}
    adopted = 0
    for path, text in originals.items():
        spec = yaml.safe_load(text)
        if spec.get("techniques"):
            spec["techniques"] = spec["techniques"][1:]
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            adopted += 1
    version.write_text("0.0.1\n")
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "release 0.0.1")
    version.write_text(current)
    for path, text in originals.items():
        path.write_text(text)
    git("add", "-A")
    git("commit", "-qm", "release: a tenth of the fleet adopts a technique")
    return adopted


def timed(command: list[str], root: Path) -> tuple[float, str]:
    env = {**os.environ, "SMT_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout.strip().splitlines()[-1]


def measure_page(index: Path, loads: int) -> dict:
    """Load times (navigation start -> matrix rendered) over ``loads`` loads, and interaction times."""
    with open_dashboard(index) as session:
        page = session.page
        rendered = [page.evaluate("window.smtRenderedAt")]
        for _ in range(loads - 1):
            page.reload()
            page.wait_for_selector("body[data-rendered]")
            rendered.append(page.evaluate("window.smtRenderedAt"))
        rows = page.locator("#matrix tbody tr").count()
        text_ms, text_rows = page.evaluate(INTERACT, ["#filter-text", "feed_ctr"])
        technique = page.evaluate("document.querySelector('#filter-technique').options[2].value")
        page.evaluate(INTERACT, ["#filter-text", ""])
        technique_ms, technique_rows = page.evaluate(INTERACT, ["#filter-technique", technique])
        page.evaluate(INTERACT, ["#filter-technique", ""])
        sort_ms, sort_rows = page.evaluate(SORT)
        errors = list(session.errors)
    return {
        "loads_ms": rendered,
        "rows": rows,
        "text": (text_ms, text_rows),
        "technique": (technique, technique_ms, technique_rows),
        "sort": (sort_ms, sort_rows),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=5, help="page loads to time (fresh navigation each)")
    parser.add_argument("--no-capacity", action="store_true", help="skip the capacity measurement (PyTorch)")
    parser.add_argument("--no-git", action="store_true", help="no git history (the page then has no releases)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary fleet and dashboard")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix=f"smt-dashboard-{args.models}-"))
    try:
        build_fleet(root, synthetic_specs(args.models))
        for name in EVIDENCE:
            source = REPO / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / name)
        generate_s, generate_line = timed([SMT, "generate", "--jobs", "2"], root)
        started = time.perf_counter()
        adopted = 0 if args.no_git else git_history(root)
        history_s = time.perf_counter() - started
        out = root / "site"
        command = [SMT, "dashboard", str(out), *(["--no-capacity"] if args.no_capacity else [])]
        dashboard_s, dashboard_line = timed(command, root)
        index = out / "index.html"
        size_mb = index.stat().st_size / 1e6
        page = measure_page(index, args.loads)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    loads = page["loads_ms"]
    print(f"smt dashboard on a {args.models}-model synthetic fleet ({'capacity measured' if not args.no_capacity else 'no capacity'})")
    print(f"  smt generate (cold, 2 jobs)     {generate_s:8.1f} s   {generate_line}")
    if not args.no_git:
        print(f"  git history (2 releases)        {history_s:8.1f} s   the newer release adopted {adopted} technique-model pairs")
    print(f"  smt dashboard                   {dashboard_s:8.1f} s   {dashboard_line}")
    print(f"  index.html                      {size_mb:8.2f} MB (data, CSS and JavaScript inline)")
    print(f"  matrix rows rendered            {page['rows']:8d}")
    print(f"  page load, navigation start -> matrix rendered, {len(loads)} loads: median {statistics.median(loads):.0f} ms, max {max(loads):.0f} ms "
          f"({', '.join(f'{value:.0f}' for value in loads)})")
    text_ms, text_rows = page["text"]
    technique, technique_ms, technique_rows = page["technique"]
    sort_ms, sort_rows = page["sort"]
    print(f"  text filter 'feed_ctr'          {text_ms:8.1f} ms  ({text_rows} rows)")
    print(f"  {'technique filter ' + repr(technique):<32}{technique_ms:8.1f} ms  ({technique_rows} rows)")
    print(f"  sort by params / budget         {sort_ms:8.1f} ms  ({sort_rows} rows)")
    print(f"  console errors                  {len(page['errors'])}")
    verdict = "met" if max(loads) < 1000 * TARGET_LOAD_SECONDS else "NOT met"
    print(f"page load under {TARGET_LOAD_SECONDS:g} s (slowest of {len(loads)}): {verdict}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {platform.platform()}, {cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()}")
    print(f"command: python benchmarks/dashboard_scale.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
