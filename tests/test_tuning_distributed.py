"""Distributed smt tune: two worker processes on one study share its trials without duplicates,
on SQLite and on a real PostgreSQL server (skipped, saying why, when none can be started here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml

from support import HANG_TIMEOUT, REPO

SPACE = {"hyperparameters": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}, "budget": {"steps": 5, "models": "feed_ctr"}}


@pytest.fixture
def tune_repo(repo_copy: Path) -> Path:
    shutil.copy(REPO / "qualification.yml", repo_copy / "qualification.yml")
    (repo_copy / "tune.yml").write_text(yaml.safe_dump(SPACE))
    return repo_copy


def _workers(repo: Path, study: str, storage: str, each: int, count: int = 2) -> list[subprocess.CompletedProcess]:
    """Start ``count`` `smt tune` processes at once on one study; wait for all."""
    env = {k: v for k, v in os.environ.items() if k != "SMT_ROOT"}
    env.update(PYTHONPATH=str(repo))  # one torch thread per trial: smt's default (SMT_THREADS)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "generator", "tune", "--study", study, "--storage", storage, "--trials", str(each), "--jobs", "1", "--report", str(repo / f"report-{i}")],
            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(count)
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=HANG_TIMEOUT)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


def _assert_shared(storage: str, study: str, expected: int) -> None:
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(expected)), numbers  # each number once, total = sum of workers
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    params = [t.params["learning_rate"] for t in trials]
    assert len(set(params)) == expected  # no trial was evaluated twice


def test_two_workers_share_one_sqlite_study(tune_repo):
    storage = f"sqlite:///{tune_repo / 'shared.db'}"
    results = _workers(tune_repo, "shared", storage, each=2)
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    _assert_shared(storage, "shared", 4)


def _start_postgres(folder: Path) -> tuple[str, object]:
    """A PostgreSQL server: pgserver (pip) if installed, else the initdb/pg_ctl on PATH, run as an
    unprivileged user when we are root (postgres refuses root). Returns (URL, stop) or skips."""
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's postgresql+psycopg driver)
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]'): no PostgreSQL driver for SQLAlchemy")
    try:
        import pgserver

        server = pgserver.get_server(folder / "pg", cleanup_mode="stop")
        uri = server.get_uri()
        return uri.replace("postgresql://", "postgresql+psycopg://", 1), server.cleanup
    except ImportError:
        pass
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL distribution: neither pgserver (pip install pgserver) nor initdb/pg_ctl on PATH")
    data = folder / "pgdata"
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: PostgreSQL refuses to run as root")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        folder.chmod(0o777)
    port = 20000 + os.getpid() % 20000
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", "smt", "--auth=trust"], check=True, capture_output=True)
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", f"-p {port} -k {folder} -c listen_addresses=''", "-w", "start", "-l", str(folder / "log")], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)

    return f"postgresql+psycopg://smt@/postgres?host={folder}&port={port}", stop


def test_two_workers_share_one_postgresql_study(tune_repo):
    # Not under pytest's tmp_path: an unprivileged server user must reach it (pytest's is root-only).
    folder = Path(tempfile.mkdtemp(prefix="smt-pg-"))
    try:
        url, stop = _start_postgres(folder)
        try:
            results = _workers(tune_repo, "shared-pg", url, each=2)
            for result in results:
                assert result.returncode == 0, result.stderr[-2000:]
            _assert_shared(url, "shared-pg", 4)
        finally:
            stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
