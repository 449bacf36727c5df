"""Crash-safe regeneration (issue 14): a model folder's swap can be interrupted at any step and
the next command finishes or undoes it; training runs are never deleted; writers take a lock."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from support import REPO
from generator import sync
from generator.cli import app
from generator.fleet import Fleet
from generator.sync import read_tree, recover_swaps, swap_folders, write_tree

OLD = {"m/model.py": "old = 1\n", "m/gone.py": "gone = 1\n", "README.md": "old\n"}
NEW = {"m/model.py": "new = 1\n", "m/added.py": "added = 1\n", "README.md": "new\n"}
CHECKPOINT = b"weights"


class Killed(BaseException):
    """The process dies here: nothing after this point runs, not even except-clauses for errors."""


@pytest.fixture
def model(tmp_path: Path) -> Path:
    directory = tmp_path / "generated" / "m"
    write_tree(directory, OLD, "model_name: m\n")
    (directory / "runs" / "run-1").mkdir(parents=True)
    (directory / "runs" / "run-1" / "checkpoint.pt").write_bytes(CHECKPOINT)
    (directory / ".smt").mkdir()
    (directory / ".smt" / "state").write_text("tool state\n")
    return directory


def _assert_whole(directory: Path) -> None:
    assert read_tree(directory) in (OLD, NEW), read_tree(directory)
    assert (directory / "runs" / "run-1" / "checkpoint.pt").read_bytes() == CHECKPOINT
    assert (directory / ".smt" / "state").read_text() == "tool state\n"
    assert (directory / ".copier-answers.yml").read_text() == "model_name: m\n"
    assert not any(path.exists() for path in swap_folders(directory))


def _fail_at(monkeypatch: pytest.MonkeyPatch, step: str, error: BaseException) -> None:
    """Make the ``step``-th filesystem operation of a swap raise ``error``."""
    real_rename, real_rmtree, real_write = Path.rename, shutil.rmtree, Path.write_text

    def rename(self: Path, target: Path) -> Path:
        name, goal = Path(self).name, Path(target).name
        if (step == "to backup" and goal.endswith(".smt-old")) or (step == "to place" and name.endswith(".smt-new")):
            raise error
        if step == "carry runs" and name == "runs":
            raise error
        if step == "carry state" and name == ".smt":
            raise error
        return real_rename(self, target)

    def rmtree(path: Path, *args: object, **kwargs: object) -> None:
        if step == "delete backup" and str(path).endswith(".smt-old"):
            raise error
        real_rmtree(path, *args, **kwargs)

    def write_text(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if step == "build staging" and ".smt-new" in str(self) and self.name == "added.py":
            raise error
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(Path, "write_text", write_text)


STEPS = ["build staging", "to backup", "to place", "carry runs", "carry state", "delete backup"]


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_any_step_is_recovered_by_the_next_command(model: Path, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_at(monkeypatch, step, Killed())
    with pytest.raises(Killed):
        write_tree(model, NEW)
    monkeypatch.undo()
    assert Fleet(model.parent.parent).names() in (["m"], []), "swap folders are never models"
    notices = recover_swaps(model.parent)
    assert len(notices) <= 1 and all(notice.startswith("m: ") for notice in notices)
    _assert_whole(model)
    write_tree(model, NEW)  # and the next regeneration works
    _assert_whole(model)
    assert read_tree(model) == NEW


@pytest.mark.parametrize("step", STEPS)
def test_an_os_error_at_any_step_leaves_the_folder_old_or_new(model: Path, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_at(monkeypatch, step, OSError(28, "No space left on device"))
    with pytest.raises(OSError):
        write_tree(model, NEW)
    monkeypatch.undo()
    recover_swaps(model.parent)
    _assert_whole(model)


def test_leftover_swap_folders_are_not_models(tmp_path: Path) -> None:
    generated = tmp_path / "generated"
    for name in ("real", ".real.smt-new", ".real.smt-old"):
        (generated / name).mkdir(parents=True)
        (generated / name / ".copier-answers.yml").write_text("model_name: real\n")
    assert Fleet(tmp_path).names() == ["real"]


@pytest.fixture
def two_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "smt"
    root.mkdir()
    for name in ("template_repo", "techniques"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "golden"))
    (root / "generator").symlink_to(REPO / "generator", target_is_directory=True)
    for model in ("app_install", "video_vtr"):
        shutil.copytree(REPO / "generated" / model, root / "generated" / model, ignore=shutil.ignore_patterns("__pycache__", "runs"))
        spec = root / "generated" / model / ".copier-answers.yml"
        spec.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), "description": "Changed."}, sort_keys=False))
    (root / "generated" / "video_vtr" / "runs").mkdir()
    (root / "generated" / "video_vtr" / "runs" / "checkpoint.pt").write_bytes(CHECKPOINT)
    monkeypatch.setenv("SMT_ROOT", str(root))
    return root


def test_a_fleet_wide_failure_names_the_model_exits_2_and_a_later_run_recovers(two_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    real_rename = Path.rename

    def rename(self: Path, target: Path) -> Path:
        if Path(target).name == ".video_vtr.smt-old":
            raise PermissionError(13, "Permission denied", str(self))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    result = runner.invoke(app, ["generate", "--jobs", "1"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "video_vtr" in errors[0] and "Permission denied" in errors[0]
    generated = two_models / "generated"
    assert "Changed." in (generated / "app_install" / "README.md").read_text()  # new
    assert "Changed." not in (generated / "video_vtr" / "README.md").read_text()  # old
    assert not any(path.name.startswith(".") for path in generated.iterdir())
    monkeypatch.undo()
    monkeypatch.setenv("SMT_ROOT", str(two_models))
    again = runner.invoke(app, ["generate", "--jobs", "1"])
    assert again.exit_code == 0, again.output
    assert runner.invoke(app, ["check", "--jobs", "1"]).exit_code == 0
    assert (generated / "video_vtr" / "runs" / "checkpoint.pt").read_bytes() == CHECKPOINT


def test_writers_wait_for_the_lock_and_then_refuse_with_one_line(two_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting writer says whom it waits for (command, pid, since when), and names it again when it gives up."""
    import os

    from generator.lock import fleet_lock

    monkeypatch.setenv("SMT_LOCK_TIMEOUT", "0.2")
    runner = CliRunner()
    with fleet_lock(two_models):
        result = runner.invoke(app, ["generate", "--jobs", "1"])
        assert result.exit_code == 2
        holder = f"(pid {os.getpid()}, since "
        waiting = [line for line in result.output.splitlines() if line.startswith("waiting up to 0.2s for `")]
        assert len(waiting) == 1 and holder in waiting[0] and waiting[0].endswith("which is changing generated/"), result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith("error: generated/ is being changed by `"), errors
        assert holder in errors[0] and errors[0].endswith("waited 0.2s (SMT_LOCK_TIMEOUT); try again when it has finished")
        reading = runner.invoke(app, ["status"])  # read-only commands do not take the lock
        assert reading.exit_code == 0, reading.output
    assert runner.invoke(app, ["generate", "--jobs", "1"]).exit_code == 0


class _KillAfter:
    """Counts every filesystem operation a swap or a recovery makes (rename, write, mkdir,
    copytree, rmtree) and kills the process at operation number ``at`` (None: never)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int | None) -> None:
        self.count = 0
        self.at = at
        for owner, name in ((Path, "rename"), (Path, "write_text"), (Path, "mkdir"), (shutil, "copytree"), (shutil, "rmtree")):
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))

    def _wrap(self, real):  # type: ignore[no-untyped-def]
        def operation(*args: object, **kwargs: object) -> object:
            if self.count == self.at:
                raise Killed()
            self.count += 1
            return real(*args, **kwargs)

        return operation


def _operations(monkeypatch: pytest.MonkeyPatch, action) -> int:  # type: ignore[no-untyped-def]
    with monkeypatch.context() as patch:
        counter = _KillAfter(patch, None)
        action()
    return counter.count


def test_a_kill_at_every_filesystem_operation_and_again_during_recovery_is_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exhaustive: the writer dies after each of its filesystem operations; then the recovery
    itself dies after each of its own; a last recovery leaves the old or the new folder, whole,
    with runs and tool state, and the next regeneration works."""

    def fresh(name: str) -> Path:
        directory = tmp_path / name / "generated" / "m"
        write_tree(directory, OLD, "model_name: m\n")
        (directory / "runs" / "run-1").mkdir(parents=True)
        (directory / "runs" / "run-1" / "checkpoint.pt").write_bytes(CHECKPOINT)
        (directory / ".smt").mkdir()
        (directory / ".smt" / "state").write_text("tool state\n")
        return directory

    probe = fresh("probe")
    writes = _operations(monkeypatch, lambda: write_tree(probe, NEW))
    assert writes >= 8, writes  # staging, files, two renames, carry-overs, backup removal
    cases = 0
    for first in range(writes):
        crashed = fresh(f"w{first}")
        with monkeypatch.context() as patch:
            _KillAfter(patch, first)
            with pytest.raises(Killed):
                write_tree(crashed, NEW)
        twin = fresh(f"w{first}-twin")  # the same crash, to count the recovery's own operations
        with monkeypatch.context() as patch:
            _KillAfter(patch, first)
            with pytest.raises(Killed):
                write_tree(twin, NEW)
        recoveries = _operations(monkeypatch, lambda: recover_swaps(twin.parent))
        for second in range(recoveries):
            again = fresh(f"w{first}-r{second}")
            with monkeypatch.context() as patch:
                _KillAfter(patch, first)
                with pytest.raises(Killed):
                    write_tree(again, NEW)
            with monkeypatch.context() as patch:
                _KillAfter(patch, second)
                with pytest.raises(Killed):
                    recover_swaps(again.parent)
            recover_swaps(again.parent)
            _assert_whole(again)
            cases += 1
        recover_swaps(crashed.parent)
        _assert_whole(crashed)
        write_tree(crashed, NEW)
        _assert_whole(crashed)
        assert read_tree(crashed) == NEW
        cases += 1
    assert cases > writes  # some recoveries were themselves interrupted
