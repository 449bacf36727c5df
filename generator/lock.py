"""One writer at a time: commands that change ``generated/`` hold ``<root>/.smt/lock``, and only while
they write.

`smt generate`, `new`, `adopt`, `drop`, `promote`, `tune --apply` (and `regenerate`, `demo`) wait
for it up to ``SMT_LOCK_TIMEOUT`` seconds (default 60), then refuse with one line; read-only commands
(`check`, `diff`, `status`, ...) never wait for it. filelock's lock is released by the OS when its
holder dies, so a killed writer never leaves the repository locked.

Long work (training a verification, a qualification) runs before the lock is taken: the command
first records its inputs (``snapshot_inputs``), and once it holds the lock ``check_inputs`` fails
cleanly, writing nothing, when another command or an edit changed them meanwhile. The holder
writes who it is (command, pid, start time) next to the lock, so a waiting command can say whom
it waits for.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .cache import hash_folder, state_dir
from .engine import SmtError
from .engine.paths import LOCAL_TECHNIQUES_DIR, TECHNIQUES_DIR, TEMPLATE_DIR
from .fleet import ANSWERS_FILE, GENERATED_DIR

LOCK_FILE = Path(".smt") / "lock"
HOLDER_FILE = Path(".smt") / "lock.holder"  # JSON: command, pid, since (epoch seconds)
DEFAULT_TIMEOUT_S = 60.0


def lock_path(root: Path) -> Path:
    return root / LOCK_FILE


def _command_line() -> str:
    args = [Path(sys.argv[0]).name if sys.argv else "smt", *sys.argv[1:]]
    if args[0] in ("__main__.py", "-m"):  # `python -m generator ...`
        args[0] = "smt"
    return " ".join(args)


def holder(root: Path) -> str:
    """Who holds the lock, in words ("`smt adopt ...` (pid 123, since 14:02:11, 75 s ago)"), or ""."""
    try:
        data = json.loads((root / HOLDER_FILE).read_text())
        since = float(data["since"])
        return (
            f"`{data['command']}` (pid {int(data['pid'])}, since {time.strftime('%H:%M:%S', time.localtime(since))},"
            f" {time.time() - since:.0f} s ago)"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ""


@contextmanager
def fleet_lock(root: Path, timeout: float | None = None, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the repository's writer lock; raise SmtError naming the holder when it keeps it too
    long. ``waiting`` is told once, in words, whom this command waits for."""
    if timeout is None:
        timeout = float(os.environ.get("SMT_LOCK_TIMEOUT", DEFAULT_TIMEOUT_S))
    state_dir(root)
    path = lock_path(root)
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = holder(root) or "another smt command"
        if waiting is not None:
            waiting(f"waiting up to {timeout:g}s for {who}, which is changing {GENERATED_DIR}/")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            who = holder(root) or "another smt command"
            raise SmtError(
                f"{GENERATED_DIR}/ is being changed by {who}; waited {timeout:g}s (SMT_LOCK_TIMEOUT); try again when it has finished"
            ) from None
    try:
        (root / HOLDER_FILE).write_text(json.dumps({"command": _command_line(), "pid": os.getpid(), "since": time.time()}))
        yield
    finally:
        (root / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()


@contextmanager
def lock_if_free(root: Path) -> Iterator[bool]:
    """The lock if nobody holds it (True), else nothing (False): for read-only commands that tidy up."""
    path = lock_path(root)
    try:
        state_dir(root)
        lock = FileLock(str(path), thread_local=False)
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def snapshot_inputs(root: Path, models: list[str]) -> dict[str, str]:
    """Digests of what a write computed from: the template, the techniques, the qualification
    records and the named models' specs (and their local techniques)."""
    parts = {TEMPLATE_DIR: root / TEMPLATE_DIR, TECHNIQUES_DIR: root / TECHNIQUES_DIR, "qualification/records": root / "qualification" / "records"}
    for model in models:
        parts[f"{GENERATED_DIR}/{model}/{ANSWERS_FILE}"] = root / GENERATED_DIR / model / ANSWERS_FILE
        parts[f"{GENERATED_DIR}/{model}/{LOCAL_TECHNIQUES_DIR}"] = root / GENERATED_DIR / model / LOCAL_TECHNIQUES_DIR
    out = {}
    for name, path in parts.items():
        if path.is_file():
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[name] = hash_folder(path).hexdigest()
    return out


def restrict(snapshot: dict[str, str], models: list[str]) -> dict[str, str]:
    """A snapshot of the shared inputs and only ``models``' own (taken of every model before a plan
    chose them, so nothing it read escapes; checked only where it writes)."""
    mine = {f"{GENERATED_DIR}/{model}/" for model in models}
    return {name: digest for name, digest in snapshot.items() if not name.startswith(f"{GENERATED_DIR}/") or any(name.startswith(p) for p in mine)}


def check_inputs(root: Path, before: dict[str, str], what: str) -> None:
    """Raise SmtError naming the first input that changed since ``before`` was taken."""
    now = snapshot_inputs(root, [name.split("/")[1] for name in before if name.endswith(ANSWERS_FILE)])
    moved = [name for name in before if now.get(name) != before[name]]
    if moved:
        raise SmtError(
            f"{moved[0]} changed while {what} ran (another command or an edit); nothing written; run the command again"
        )
