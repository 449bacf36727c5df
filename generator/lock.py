"""One writer at a time: commands that change ``generated/`` hold ``<root>/.smt/lock``.

`smt generate`, `new`, `adopt`, `drop`, `promote` (and `regenerate`, `demo`) wait for it up to
``SMT_LOCK_TIMEOUT`` seconds (default 60), then refuse with one line; read-only commands (`check`,
`diff`, `status`, ...) never wait for it. filelock's lock is released by the OS when its holder
dies, so a killed writer never leaves the repository locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .cache import state_dir
from .engine import SmtError

LOCK_FILE = Path(".smt") / "lock"
DEFAULT_TIMEOUT_S = 60.0


def lock_path(root: Path) -> Path:
    return root / LOCK_FILE


@contextmanager
def fleet_lock(root: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the repository's writer lock; raise SmtError when another command keeps it too long."""
    if timeout is None:
        timeout = float(os.environ.get("SMT_LOCK_TIMEOUT", DEFAULT_TIMEOUT_S))
    state_dir(root)
    path = lock_path(root)
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise SmtError(
            f"another smt command is changing generated/ (lock {path} held for {timeout:g}s); try again when it has finished"
        ) from None
    try:
        yield
    finally:
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
