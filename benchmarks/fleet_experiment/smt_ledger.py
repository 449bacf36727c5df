"""Run the ``smt`` CLI of the current directory's checkout and note every trial it asks for.

    FLEET_LEDGER=ledger.jsonl python smt_ledger.py qualify dcn_v2 --on a,b ...

Budgets are counted in trials, and a command asks for some it finds in the shared cache (another
arm or an earlier run trained them); those count against the arm's budget all the same, so the
ledger notes every trial a command asks for, run or cached, one JSON line each (key, model, side,
seed, steps), appended under a lock (``--jobs`` trains in threads). Trials go through
``generator.trials.run_trials`` (qualify) or ``run_trial`` (tune), both wrapped here; nothing
else of the CLI changes, except that every trial trains with one torch thread (``SMT_THREADS=1``
where the generator reads it; where it splits the cores by ``--jobs`` instead, that split is
pinned to 1), so the cache is shared by the arms and by this harness's own trials.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading
from typing import Any

from generator import trials

_LOCK = threading.Lock()


def _note(items: Any) -> None:
    lines = [
        json.dumps({"key": t.key, "model": t.model, "side": t.variant, "seed": t.seed, "steps": t.steps})
        for t in items
    ]
    with _LOCK, open(os.environ["FLEET_LEDGER"], "a") as ledger:
        ledger.write("".join(line + "\n" for line in lines))


def _wrap(name: str, many: bool) -> None:
    original = getattr(trials, name, None)
    if original is None:
        return

    def wrapped(root: Any, item: Any, *args: Any, **kwargs: Any) -> Any:
        _note(list(item) if many else [item])
        return original(root, item, *args, **kwargs)

    setattr(trials, name, wrapped)


_wrap("run_trial", many=False)
_wrap("run_trials", many=True)
if hasattr(trials, "threads_per_trial"):  # the policy before SMT_THREADS: cores // jobs
    trials.threads_per_trial = lambda jobs: 1
sys.argv[0] = "smt"
runpy.run_module("generator", run_name="__main__", alter_sys=True)
