"""The verification gate's second half: a candidate model's own generated tests must still pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The two-process torchrun test and the CUDA test check the runtime, not the technique; skipping
# them keeps the gate short.
DESELECT = "not two_processes and not cuda"


def run_model_tests(folder: Path, model: str, threads: int = 1) -> tuple[bool, str]:
    """Run ``tests/test_<model>.py`` of a rendered model folder; (passed, last line of pytest's output)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(folder)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", DESELECT, f"tests/test_{model}.py"],
        cwd=folder, env=env, capture_output=True, text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("FAILED")]
    return proc.returncode == 0, (failed[0] if failed else lines[-1] if lines else proc.stderr.strip()[-200:])
