"""A runtime change is a template release like any other: trials measure each side with its own
runtime, the trial cache is keyed by the runtime's code, and `smt diff --since` shows the runtime's
diff once for every model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from generator import trials
from generator.qualification.variants import runtime_at
from generator.render import render_model
from generator.sync import write_tree
from support import run_smt

MODEL = "notification_open"
MARKER = "# runtime probe: this line exists only in the working tree\n"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def committed_copy(repo_copy: Path) -> Path:
    git(repo_copy, "init", "-q", "-b", "main")
    git(repo_copy, "-c", "user.email=t@example.com", "-c", "user.name=t", "add", "-A")
    git(repo_copy, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "fleet")
    return repo_copy


def test_the_trial_cache_is_keyed_by_the_runtimes_code(repo_copy: Path) -> None:
    tree = {"pkg/__init__.py": "x = 1\n"}
    runtime = trials.runtime_source(repo_copy)
    assert runtime == repo_copy / "runtime"
    before = trials.trial_key(tree, (), 0, 3, runtime)
    assert trials.trial_key(tree, (), 0, 3, runtime) == before
    (runtime / "smt_runtime" / "hashing.py").write_text((runtime / "smt_runtime" / "hashing.py").read_text() + MARKER)
    assert trials.trial_key(tree, (), 0, 3, runtime) != before
    assert trials.trial_key(tree, (), 0, 3, None) != before


def test_a_trial_trains_with_its_sides_runtime(repo_copy: Path, tmp_path: Path) -> None:
    """The copy's runtime, first on the trial's PYTHONPATH, wins over the installed one: a key it
    adds to metrics.json reaches the trial's result."""
    training = repo_copy / "runtime" / "smt_runtime" / "training.py"
    text = training.read_text()
    anchor = '        return {\n            "model_name": config.model_name,\n'  # RunResult.summary: metrics.json
    assert text.count(anchor) == 1
    training.write_text(text.replace(anchor, anchor + '            "runtime_probe": "copy",\n'))
    answers = yaml.safe_load((repo_copy / "generated" / MODEL / ".copier-answers.yml").read_text())
    tree = render_model(repo_copy, answers, MODEL, repo_copy / "generated" / MODEL)
    folder = tmp_path / "trial" / MODEL
    write_tree(folder, tree, yaml.safe_dump(answers))
    runtime = trials.runtime_source(repo_copy)
    trial = trials.Trial(MODEL, "baseline", folder, 0, 2, trials.trial_key(tree, (), 0, 2, runtime), (), runtime)
    metrics = trials.run_trial(repo_copy, trial, threads=1)
    assert metrics["runtime_probe"] == "copy"
    assert json.loads(next((repo_copy / trials.CACHE_DIR).rglob("metrics.json")).read_text())["runtime_probe"] == "copy"


def test_qualify_against_a_ref_takes_that_refs_runtime(repo_copy: Path, tmp_path: Path) -> None:
    root = committed_copy(repo_copy)
    hashing = root / "runtime" / "smt_runtime" / "hashing.py"
    committed = hashing.read_text()
    hashing.write_text(committed + MARKER)
    extracted = runtime_at(root, "HEAD", tmp_path / "scratch")
    assert extracted is not None
    assert (extracted / "smt_runtime" / "hashing.py").read_text() == committed
    assert trials.runtime_digest(extracted) != trials.runtime_digest(trials.runtime_source(root))
    assert runtime_at(root, "HEAD", tmp_path / "other") is not None
    no_runtime = git(root, "hash-object", "-t", "tree", "/dev/null").strip()  # the empty tree
    assert runtime_at(root, no_runtime, tmp_path / "empty") is None


def test_diff_since_shows_a_runtime_change_once(repo_copy: Path) -> None:
    root = committed_copy(repo_copy)
    hashing = root / "runtime" / "smt_runtime" / "hashing.py"
    hashing.write_text(hashing.read_text() + MARKER)
    text = run_smt(root, "diff", "--since", "HEAD", timeout=1800)
    assert text.code == 0, text.err
    assert "runtime/smt_runtime/hashing.py" in text.out
    assert text.out.count("# runtime: every model") == 1
    assert text.out.count("+" + MARKER.strip()) == 1
    assert "0 model(s) affected" in text.out  # no model's own code changed
    markdown = run_smt(root, "diff", "--since", "HEAD", "--format", "markdown", timeout=1800)
    assert markdown.code == 0 and markdown.out.count("### Runtime") == 1
    report = json.loads(run_smt(root, "diff", "--since", "HEAD", "--format", "json", timeout=1800).out)
    assert MARKER.strip() in report["runtime_diff"]
