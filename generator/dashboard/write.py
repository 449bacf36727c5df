"""Write the dashboard: one self-contained ``index.html`` (CSS, JavaScript and data inline; nothing
loaded from the network) and the plots it shows, under ``plots/``.

The output folder is replaced as a whole: the new site is built in a hidden folder next to it and
renamed into place, so a failure leaves the old folder (or nothing) behind. Only an empty folder,
a missing one or a previous dashboard (an ``index.html`` carrying ``GENERATOR_MARK``) is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from ..engine import SmtError
from .collect import Dashboard

INDEX = "index.html"
GENERATOR_MARK = '<meta name="generator" content="smt dashboard">'
_ASSETS = ("page.html", "page.css", "page.js")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def is_dashboard(folder: Path) -> bool:
    """Whether ``folder`` holds a dashboard smt wrote (its index.html carries the generator mark)."""
    index = folder / INDEX
    try:
        with index.open(encoding="utf-8", errors="replace") as handle:
            return GENERATOR_MARK in handle.read(4096)
    except OSError:
        return False


def _existing_ancestor(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path(path.anchor or ".")


def check_output(out: Path) -> None:
    """Refuse an output path that smt must not write: a file, a folder that is not empty and not a
    previous dashboard, or a place that cannot be written. Raises SmtError (one line)."""
    if out.exists() and not out.is_dir():
        raise SmtError(f"{out}: is a file, not a folder; give a folder for the dashboard (it gets {INDEX} and plots/)")
    if out.is_dir() and any(out.iterdir()) and not is_dashboard(out):
        raise SmtError(f"{out}: folder is not empty and holds no previous dashboard ({INDEX} by `smt dashboard`); give an empty or new folder")
    ancestor = _existing_ancestor(out.parent)
    if not ancestor.is_dir():
        raise SmtError(f"{out}: {ancestor} is a file, so the folder cannot be created there; give another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SmtError(f"{out}: cannot write to {ancestor} (permission denied); give a folder you can write")


def render_page(data: dict) -> str:
    """index.html: the page template with CSS, JavaScript and the data (as JSON) inline."""
    # "<" escaped as \u003c (valid JSON in strings, where it can only appear): no text in the data
    # can close the script element or open a comment inside it.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    page = _asset("page.html")
    for placeholder, text in (("/*SMT_CSS*/", _asset("page.css")), ("/*SMT_JS*/", _asset("page.js")), ("__SMT_DATA__", payload)):
        before, marker, after = page.partition(placeholder)
        if not marker:
            raise RuntimeError(f"the dashboard page template lacks {placeholder}")
        page = before + text + after
    return page


def write_dashboard(out: Path, dashboard: Dashboard) -> list[Path]:
    """Write the dashboard to ``out`` (replacing a previous one); the files written, index.html first.

    Raises:
        SmtError: ``out`` is not a place for the dashboard (``check_output``), or writing failed
            (then nothing was changed).
    """
    check_output(out)
    out = out.absolute()
    page = render_page(dashboard.data)
    staging = out.parent / f".{out.name}.smt-dashboard-new"
    backup = out.parent / f".{out.name}.smt-dashboard-old"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for leftover in (staging, backup):
            if leftover.exists():
                shutil.rmtree(leftover)
        staging.mkdir()
        written = [INDEX]
        (staging / INDEX).write_text(page, encoding="utf-8")
        for relative, source in sorted(dashboard.files.items()):
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            written.append(relative)
        if out.exists():
            out.rename(backup)
        staging.rename(out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if backup.exists() and not out.exists():
            backup.rename(out)
        raise SmtError(f"{out}: cannot write the dashboard ({exc.strerror or exc}); nothing was changed; fix the cause and run it again") from None
    shutil.rmtree(backup, ignore_errors=True)
    return [out / relative for relative in written]
