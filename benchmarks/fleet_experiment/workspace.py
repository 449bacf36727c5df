"""Scratch copies of the repository where an arm works, and the ``smt`` commands it runs there.

A workspace holds what a working copy needs (tests/support.py ``make_repo_copy``): the generator,
the runtime, the template, the techniques, ``qualification.yml`` and ``tune.yml``, and
``generated/`` with the experiment's fleet instead of the example models. Its ``.smt/trials`` is a
link to one trial cache shared by every workspace and run (keys hash the rendered code, the
runtime, the data, the seed and the steps, so a shared entry is the same training). The
repository's own ``generated/`` is never touched.

Each workspace keeps its own ledger (``ledger.jsonl``: every trial its commands asked for) and the
list of commands it ran, with exit status and seconds, appended to the experiment's commands.log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

COPIED = ("generator", "runtime", "template_repo", "techniques")
IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc", "runs", "*.egg-info")
LEDGER_SCRIPT = Path(__file__).resolve().parent / "smt_ledger.py"
SPEC_HEADER = "# The spec of model {name} (its Copier answers). Edit it, then run `smt generate`.\n"


class CommandFailed(RuntimeError):
    """An ``smt`` command exited with a status the caller did not expect."""


@dataclass
class Workspace:
    """A scratch copy of the repository: its root, its ledger and the commands run in it."""

    root: Path
    log: Path
    commands: list[dict[str, Any]] = field(default_factory=list)
    _help: dict[str, str] = field(default_factory=dict)

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    def trials_asked(self) -> dict[str, dict[str, Any]]:
        """Every trial the workspace's commands asked for, by key (one entry per key)."""
        if not self.ledger.is_file():
            return {}
        out: dict[str, dict[str, Any]] = {}
        for line in self.ledger.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                out.setdefault(entry["key"], entry)
        return out

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "SMT_ROOT"}
        env.update(PYTHONPATH=str(self.root), FLEET_LEDGER=str(self.ledger), SMT_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        return env

    def smt(self, *args: str, ok: tuple[int, ...] = (0,), count: bool = True) -> subprocess.CompletedProcess:
        """Run ``smt ARGS`` here (through the ledger); raise CommandFailed on another exit status."""
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(LEDGER_SCRIPT), *args], cwd=self.root, env=self.env(), capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        line = "smt " + " ".join(args)
        if count:
            self.commands.append({"command": line, "rc": proc.returncode, "seconds": round(seconds, 1)})
        with self.log.open("a") as out:
            out.write(f"$ {line}   # in {self.root.name}: exit {proc.returncode}, {seconds:.0f} s\n{proc.stdout}{proc.stderr[-4000:]}\n")
        if proc.returncode not in ok:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise CommandFailed(f"{line}: exit {proc.returncode}: {last[0]}")
        return proc

    def supports(self, command: str, option: str) -> bool:
        """Whether ``smt COMMAND --help`` lists ``option`` (the CLI of this checkout; asked once)."""
        if command not in self._help:
            self._help[command] = self.smt(command, "--help", count=False).stdout
        return option in self._help[command]

    def spec(self, model: str) -> dict[str, Any]:
        return yaml.safe_load((self.root / "generated" / model / ".copier-answers.yml").read_text())

    def spec_text(self, model: str) -> str:
        return (self.root / "generated" / model / ".copier-answers.yml").read_text()

    def models(self) -> list[str]:
        return sorted(p.parent.name for p in (self.root / "generated").glob("*/.copier-answers.yml"))


def write_spec(root: Path, name: str, spec: dict[str, Any]) -> None:
    """generated/NAME/.copier-answers.yml as smt writes a spec."""
    folder = root / "generated" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".copier-answers.yml").write_text(SPEC_HEADER.format(name=name) + yaml.safe_dump(spec, sort_keys=False))


def create(
    repo: Path, root: Path, log: Path, specs: dict[str, dict[str, Any]], cache: Path, criterion: dict[str, Any], tune_space: dict[str, Any]
) -> Workspace:
    """A fresh workspace at ``root`` holding the fleet ``specs``, generated with ``smt generate``.

    ``criterion`` overrides fields of qualification.yml's ``criterion:`` (other fields, and any the
    checkout adds, are kept); ``tune_space`` is written as tune.yml."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for item in COPIED:
        shutil.copytree(repo / item, root / item, ignore=IGNORE)
    qualification = yaml.safe_load((repo / "qualification.yml").read_text())
    qualification.setdefault("criterion", {}).update(criterion)
    (root / "qualification.yml").write_text(yaml.safe_dump(qualification, sort_keys=False))
    (root / "tune.yml").write_text(yaml.safe_dump(tune_space, sort_keys=False))
    (root / ".smt").mkdir()
    cache.mkdir(parents=True, exist_ok=True)
    os.symlink(cache.resolve(), root / ".smt" / "trials")
    for name, spec in specs.items():
        write_spec(root, name, spec)
    ws = Workspace(root, log)
    ws.smt("generate", count=False)  # creating the fleet is common to both arms, not an arm's work
    return ws


def clone(source: Workspace, root: Path) -> Workspace:
    """A copy of ``source`` at ``root`` (the same fleet, template and cache link; an empty ledger)."""
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(source.root, root, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "ledger.jsonl"))
    return Workspace(root, source.log)
