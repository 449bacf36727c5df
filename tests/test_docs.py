"""The documentation: README stays short, the MkDocs site builds with no broken link, the CLI
reference lists every command, and every code block the site marks as runnable runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, make_repo_copy

DOCS = REPO / "docs"
README_LINES = 150
# The README's two commands, exactly (issue 24: the main job and the tests).
README_COMMANDS = (
    "bash .ci/install && .venv/bin/smt demo",
    "bash .ci/run",
)
# A fenced block whose info string carries title="runnable": Material shows the title above it.
RUNNABLE = re.compile(r'^```(\w+) title="runnable"\n(.*?)^```$', re.S | re.M)
EXTRA_COPIED = ("qualification", "qualification.yml", "tune.yml", "CHANGELOG.md")
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "SMT docs", "GIT_AUTHOR_EMAIL": "d@example.com", "GIT_COMMITTER_NAME": "SMT docs", "GIT_COMMITTER_EMAIL": "d@example.com"}
TIMEOUT = 1800  # guards a hang only


def runnable_blocks() -> list[tuple[str, int, str]]:
    """(page, index on the page, bash text) of every runnable block under docs/."""
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        for index, match in enumerate(RUNNABLE.finditer(page.read_text())):
            assert match.group(1) == "bash", f"{page}: runnable blocks are bash"
            blocks.append((page.relative_to(DOCS).as_posix(), index, match.group(2)))
    return blocks


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    """README.md is at most 150 lines and shows the main job and the test command exactly."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    block = re.search(r"^## Quickstart\n.*?^```bash\n(.*?)^```", text, re.S | re.M)
    assert block is not None and block.group(1).splitlines() == list(README_COMMANDS)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mkdocs build --strict` of this checkout into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_site_builds_strict(site: Path) -> None:
    """Every page of the nav was built (strict: no broken link or anchor, no missing include)."""
    for page in ("index.html", "getting-started/index.html", "techniques/index.html", "flows/dashboard/index.html", "runtime/index.html", "results/index.html", "reference/api/index.html"):
        assert (site / page).is_file(), page
    techniques = (site / "techniques" / "index.html").read_text()
    assert "Worked example: dcn_v2" in techniques  # techniques/README.md is included, not copied


def test_a_broken_anchor_fails_the_build(tmp_path: Path) -> None:
    """The strict build's link check is real: a page linking to a missing anchor fails it."""
    copy = tmp_path / "docs-copy"
    copy.mkdir()
    for name in ("mkdocs.yml", "docs", "techniques", "benchmarks"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("*.py", "results", "__pycache__") if name != "docs" else None)
        else:
            shutil.copy2(source, copy / name)
    page = copy / "docs" / "runtime.md"
    page.write_text(page.read_text() + "\nSee [the spec's missing part](spec.md#no-such-section).\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=copy, capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode != 0 and "no-such-section" in proc.stderr


def test_cli_reference_lists_every_command(site: Path) -> None:
    """The generated CLI reference has a section, usage and options for every smt command."""
    import typer

    from generator.cli import app

    top = typer.main.get_command(app)
    page = (site / "reference" / "cli" / "index.html").read_text()
    context = top.make_context("smt", [], resilient_parsing=True)
    for name in top.list_commands(context):
        assert f"Usage: smt {name} [OPTIONS]" in page, name
    assert "--no-capacity" in page and "--where" in page


def test_runnable_blocks_are_marked_on_the_site(site: Path) -> None:
    """Each runnable block is shown under the title "runnable" (what readers see)."""
    blocks = runnable_blocks()
    assert len(blocks) >= 5
    for page in {page for page, _, _ in blocks}:
        html = (site / page.removesuffix(".md").removesuffix("index") / "index.html").read_text()
        count = sum(1 for p, _, _ in blocks if p == page)
        assert html.count('<span class="filename">runnable</span>') == count, page


@pytest.mark.parametrize(("page", "index", "script"), runnable_blocks(), ids=lambda value: str(value).split("\n")[0][:40])
def test_runnable_block_runs(page: str, index: int, script: str, tmp_path: Path) -> None:
    """The block runs as shown (bash -e, `smt` the copy's CLI) in a fresh committed repository copy."""
    root = make_repo_copy(tmp_path)
    for name in EXTRA_COPIED:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / name)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "SMT_ROOT"}, **GIT_IDENTITY}
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "smt").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m generator "$@"\n')
    (shim / "smt").chmod(0o755)
    env.update(PATH=f"{shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(root))
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{page} block {index} failed ({proc.returncode}):\n{script}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
