"""`smt dashboard OUT`: the fleet's static site, built with the real CLI on a copy of the example
fleet that has a git history of two template releases, one unreleased adoption, a training run
and a tuning study; then opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import REPO, make_repo_copy, run_smt

from generator.dashboard.browser import chromium_path, open_dashboard
from generator.dashboard.releases import release_history
from generator.dashboard.write import GENERATOR_MARK

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "SMT tests", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "SMT tests", "GIT_COMMITTER_EMAIL": "t@example.com"}
EXAMPLE_MODELS = sorted(path.parent.name for path in (REPO / "generated").glob("*/.copier-answers.yml"))
LIBRARY = sorted(path.parent.name for path in (REPO / "techniques").glob("*/technique.yml"))
TIMEOUT = 1800  # guards a hang only


def git(root: Path, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **GIT_IDENTITY}
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout


def edit_spec(root: Path, model: str, change) -> None:
    path = root / "generated" / model / ".copier-answers.yml"
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    answers = yaml.safe_load(path.read_text())
    change(answers)
    path.write_text(header + yaml.safe_dump(answers, sort_keys=False))


def write_tuning_report(root: Path) -> None:
    """A study of three trials through smt's own report writer (summarize + write_report)."""
    import optuna

    from generator.qualification.criterion import load_criterion
    from generator.tuning import objective, report

    criterion = load_criterion(root)
    study = optuna.create_study(study_name="lr-test", direction="minimize")
    study.set_user_attr("models", ["feed_ctr"])
    distribution = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for rate, change in ((0.003, 0.004), (0.001, -0.003), (0.0005, 0.02)):
        scores = [objective.ModelScore("feed_ctr", change, 0.001, 0.07, 0.07, 1.0)]
        study.add_trial(optuna.trial.create_trial(
            params={"learning_rate": rate},
            distributions={"learning_rate": distribution},
            value=objective.value(scores),
            user_attrs={objective.MODELS_ATTR: [s.__dict__ for s in scores], objective.CONSTRAINTS_ATTR: objective.constraints(scores, criterion)},
        ))
    summary = report.summarize(study, "in-memory", criterion)
    report.write_report(summary, study, root / report.REPORTS_DIR / "lr-test", "smt tune --study lr-test --trials 3")


@pytest.fixture(scope="module")
def fleet_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository copy with history: release 0.4.0 without feed_ctr's dcn_v2, release 0.5.0 (the
    committed tree) adopting it, then an uncommitted grad_clip adoption by notification_open (its
    spec edited, its code not regenerated: out of sync); plus a run and a tuning study."""
    root = make_repo_copy(tmp_path_factory.mktemp("dashboard"))
    for name in ("qualification", "qualification.yml", "CHANGELOG.md"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / name)
    version = (root / "template_repo" / "VERSION").read_text()
    spec_path = root / "generated" / "feed_ctr" / ".copier-answers.yml"
    spec = spec_path.read_text()
    git(root, "init", "-q", "-b", "main")
    (root / "template_repo" / "VERSION").write_text("0.4.0\n")
    edit_spec(root, "feed_ctr", lambda a: a.update(techniques=[u for u in a["techniques"] if u["name"] != "dcn_v2"]))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "release 0.4.0")
    (root / "template_repo" / "VERSION").write_text(version)
    spec_path.write_text(spec)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "release 0.5.0: feed_ctr adopts dcn_v2")
    edit_spec(root, "notification_open", lambda a: a["techniques"].append({"name": "grad_clip"}))
    model = root / "generated" / "notification_open"
    train = subprocess.run(
        [sys.executable, "-m", "notification_open", "train", "--steps", "3", "--threads", "1", "--no-progress", "--run-dir", "runs/short"],
        cwd=model, env={**os.environ, "PYTHONPATH": str(model)}, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert train.returncode == 0, train.stderr
    write_tuning_report(root)
    return root


@pytest.fixture(scope="module")
def dashboard(fleet_repo: Path) -> tuple[Path, dict, str]:
    out = fleet_repo / "site"
    result = run_smt(fleet_repo, "dashboard", str(out), timeout=TIMEOUT)
    assert result.code == 0, result.err
    html = (out / "index.html").read_text()
    payload = re.search(r'<script type="application/json" id="smt-data">(.*?)</script>', html, re.S)
    assert payload is not None
    return out, json.loads(payload.group(1)), result.out


def test_one_self_contained_page(dashboard: tuple[Path, dict, str]) -> None:
    """index.html carries its CSS, JavaScript and data inline and loads nothing; the summary line
    names what was written."""
    out, data, stdout = dashboard
    html = (out / "index.html").read_text()
    assert GENERATOR_MARK in html
    assert not re.search(r"<(script|img|link|iframe)[^>]*\s(src|href)=\"?(https?:)?//", html)
    assert "<link" not in html and "<script src" not in html
    assert f"dashboard: wrote {out / 'index.html'}" in stdout
    assert f"{len(EXAMPLE_MODELS)} models, {len(LIBRARY)} techniques, 2 release(s)" in stdout
    assert sorted(model["name"] for model in data["models"]) == EXAMPLE_MODELS
    assert [technique["name"] for technique in data["techniques"]] == LIBRARY


def test_matrix_has_versions_sync_capacity_and_runs(dashboard: tuple[Path, dict, str]) -> None:
    """Each model: technique versions from its generated headers, sync state as `smt check` sees it,
    capacity against its spec's budget, and its latest run's metrics."""
    _, data, _ = dashboard
    models = {model["name"]: model for model in data["models"]}
    library = {technique["name"]: technique["version"] for technique in data["techniques"]}
    assert models["feed_ctr"]["techniques"]["dcn_v2"]["version"] == library["dcn_v2"]
    assert models["notification_open"]["differing_files"] > 0
    assert models["notification_open"]["techniques"]["grad_clip"]["version"] is None  # in the spec, not yet generated
    assert all(models[name]["differing_files"] == 0 for name in EXAMPLE_MODELS if name != "notification_open")
    assert data["capacity"]["measured"]
    feed = models["feed_ctr"]["capacity"]
    assert 0 < feed["parameters"] <= feed["max_params"] == 1_000_000 and feed["within"]
    run = models["notification_open"]["run"]
    assert run["run"] == "generated/notification_open/runs/short" and run["steps"] == 3
    assert 0 < run["metrics"]["test"]["open"]["ne"] < 2
    assert all(models[name]["run"] is None for name in EXAMPLE_MODELS if name != "notification_open")


def test_releases_from_version_history(dashboard: tuple[Path, dict, str]) -> None:
    """The newest release adopted exactly the pair added between the two VERSION commits; the working
    tree's spec edit is unreleased; CHANGELOG notes are attached."""
    _, data, _ = dashboard
    history = data["releases"]
    assert [release["version"] for release in history["releases"]] == [(REPO / "template_repo" / "VERSION").read_text().strip(), "0.4.0"]
    newest, first = history["releases"]
    assert newest["adopted"] == [["feed_ctr", "dcn_v2"]] and newest["dropped"] == []
    assert first["pairs"] == newest["pairs"] - 1 == len(first["adopted"])
    heading = re.search(rf"^## {re.escape(newest['version'])} \((\S+)\)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert heading and newest["changelog_date"] == heading.group(1)
    assert newest["notes"].splitlines()[0] in (REPO / "CHANGELOG.md").read_text()
    assert history["unreleased"]["adopted"] == [["notification_open", "grad_clip"]]


def test_every_qualification_with_deltas_and_plot(dashboard: tuple[Path, dict, str]) -> None:
    """One entry per qualification report, dated by its record, with per-model deltas from the report."""
    out, data, _ = dashboard
    reports = sorted(path.parent.name for path in (REPO / "qualification" / "reports").glob("*/report.json"))
    assert sorted(item["id"] for item in data["qualifications"]) == reports
    item = next(q for q in data["qualifications"] if q["id"] == "dcn_v2-1.0.2-template-0.3.0")
    report = json.loads((REPO / "qualification" / "reports" / item["id"] / "report.json").read_text())
    assert item["passed"] and item["date"] == "2026-12-01" and item["dated_by"] == "record"
    assert [(m["model"], m["delta"]) for m in item["models"]] == [(r["model"], r["rel_logloss"]["mean"]) for r in report["results"]]
    assert (out / item["plot"]).read_bytes() == (REPO / "qualification" / "reports" / item["id"] / "deltas.png").read_bytes()
    failed = next(q for q in data["qualifications"] if q["id"] == "dense_log_norm-1.0.0-template-0.4.0")
    assert not failed["passed"] and [m["verdict"] for m in failed["models"] if m["model"] == "video_vtr"] == ["FAIL"]


def test_tuning_study_with_history(dashboard: tuple[Path, dict, str]) -> None:
    """The study's trials come from its report, the best feasible trial and the plot with them."""
    out, data, _ = dashboard
    (study,) = data["tuning"]
    assert study["study"] == "lr-test" and [t["number"] for t in study["trials"]] == [0, 1, 2]
    assert study["best"]["number"] == 1 and study["best"]["value"] == pytest.approx(-0.003)
    assert [t["feasible"] for t in study["trials"]] == [True, True, False]
    assert (out / study["plot"]).stat().st_size > 1000


def test_bad_output_is_one_line_and_writes_nothing(fleet_repo: Path, tmp_path: Path) -> None:
    """A file, a foreign non-empty folder or a path under a file: exit 2, one line, nothing written."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me\n")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_text("meow")
    for out, expected in ((a_file, "is a file"), (foreign, "not empty"), (a_file / "site", "cannot be created")):
        result = run_smt(fleet_repo, "dashboard", str(out), timeout=TIMEOUT)
        assert result.code == 2, result
        assert len(result.err.strip().splitlines()) == 1 and expected in result.err
    assert a_file.read_text() == "keep me\n" and sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]


def test_a_previous_dashboard_is_replaced(fleet_repo: Path, dashboard: tuple[Path, dict, str]) -> None:
    """Writing again over the same folder replaces it (no leftovers of the old one)."""
    out, _, _ = dashboard
    stray = out / "plots" / "stray.png"
    stray.write_bytes(b"old")
    result = run_smt(fleet_repo, "dashboard", str(out), "--no-capacity", timeout=TIMEOUT)
    assert result.code == 0, result.err
    assert not stray.exists() and "capacity not measured" in result.out
    assert not list(out.parent.glob(f".{out.name}.smt-dashboard-*"))


def test_release_history_outside_git(tmp_path: Path) -> None:
    """Without git history the page says why there are no releases, and counts today's pairs."""
    history = release_history(tmp_path, {("m", "dcn_v2")}, "1.0.0")
    assert history["releases"] == [] and "not a git repository" in history["note"]
    assert history["unreleased"]["adopted"] == [("m", "dcn_v2")]


def _require_browser() -> None:
    """Skip only where Chromium or Playwright truly cannot be had; in CI (.ci/run installs both) fail."""
    missing = []
    if chromium_path() is None:
        missing.append("Chromium (/usr/bin/chromium: apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("Playwright (pip install -e '.[test]')")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs them")
        pytest.skip(message)


def test_in_a_real_browser(dashboard: tuple[Path, dict, str], tmp_path: Path) -> None:
    """Headless Chromium shows every model and technique of the example fleet in the matrix, the
    technique and text filters narrow it, nothing is requested from the network, and no console
    error occurs; a screenshot is saved."""
    _require_browser()
    out, data, _ = dashboard
    with open_dashboard(out / "index.html") as session:
        page = session.page
        rows = page.locator("#matrix tbody tr")
        assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.model)")) == EXAMPLE_MODELS
        headers = page.locator("#matrix thead th").all_inner_texts()
        assert set(LIBRARY) <= {text.strip() for text in headers}
        users = sorted(model["name"] for model in data["models"] if "dcn_v2" in model["techniques"])
        page.select_option("#filter-technique", "dcn_v2")
        assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.model)")) == users == ["app_install", "feed_ctr"]
        assert page.inner_text("#shown") == f"2 of {len(EXAMPLE_MODELS)} models shown"
        page.select_option("#filter-technique", "")
        page.fill("#filter-text", "video")
        assert rows.evaluate_all("rows => rows.map(r => r.dataset.model)") == ["video_vtr"]
        page.fill("#filter-text", "")
        page.select_option("#filter-sync", "no")
        assert rows.evaluate_all("rows => rows.map(r => r.dataset.model)") == ["notification_open"]
        page.select_option("#filter-sync", "")
        page.click("#matrix thead th[data-key='name']")  # sort descending
        assert rows.first.get_attribute("data-model") == EXAMPLE_MODELS[-1]
        page.click("#matrix tbody tr[data-model='notification_open']")
        assert "runs/short" in page.inner_text("#model-detail")
        page.click("#qualifications details summary >> nth=0")
        plot = page.locator("#qualifications details[open] img.plot")
        plot.scroll_into_view_if_needed()
        page.wait_for_function("document.querySelector('#qualifications details[open] img.plot').complete")
        assert plot.evaluate("img => img.naturalWidth") > 100
        screenshot = tmp_path / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert session.errors == [] and session.remote_requests == []
    assert screenshot.stat().st_size > 10_000
    print(f"dashboard screenshot: {screenshot}")


def test_a_record_without_its_report_is_still_listed(tmp_path: Path) -> None:
    """A verdict whose report folder is gone is shown from the record alone, unmeasured."""
    from generator.dashboard.evidence import qualifications

    records = tmp_path / "qualification" / "records"
    records.mkdir(parents=True)
    record = json.loads((REPO / "qualification" / "records" / "dcn_v2.json").read_text())
    (records / "dcn_v2.json").write_text(json.dumps(record))
    items, plots = qualifications(tmp_path)
    assert plots == {} and len(items) == sum(len(runs) for runs in record.values())
    item = next(q for q in items if q["id"] == "qualification/reports/dcn_v2-1.0.2-template-0.3.0")
    assert item["passed"] and item["dated_by"] == "record (report folder missing)" and item["seeds"] == 2
    assert [(m["model"], m["delta"], m["params_delta"], m["verdict"]) for m in item["models"]] == [("marketplace", None, None, ""), ("video_vtr", None, None, "")]
