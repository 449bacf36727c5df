"""The paper's comparison, standardization against per-model optimization, across budgets (issue 22).

    python benchmarks/fleet_experiment.py --quick            # 8 models, budgets 1 and 4: < 15 min on 2 idle cores
    python benchmarks/fleet_experiment.py --jobs 2           # the full run: 40 models, budgets 1, 4 and 16
    python benchmarks/fleet_experiment.py --write-fleet      # rewrite fleet.yml from the seeded generator

The paper (arXiv 2603.24963) does not claim that tuning a template beats tuning each model. It
claims that a central team iterating one template over releases, each technique qualified once and
propagated everywhere, beats independent teams that each spend their own budget on their own model
and drift. This script models both, for real, with the ``smt`` CLI and ordinary trainings.

The fleet (benchmarks/fleet_experiment/fleet.yml, written by worlds.py's seeded generator and
committed before any result): 40 models, 8 additive worlds where no technique should help and 32
structured ones (feature crosses of order 2 to 4 in all of them, heavy-tailed dense counters in 12,
two or three objectives in 16, half correlated and half not, label noise in 10, a shifted test
split in 10); serving budgets 0.2 to 1.5 MFLOPs per example. ``--quick`` uses the 8 models marked
quick (2 additive, 6 covering every structure).

A trial is one training of one model at one seed for N steps (``python -m MODEL train``, 300 steps
by default, about four epochs: early stopping usually ends it first). Both arms develop on seeds
0, 1, ... and choose on the validation split; every final model of both arms is then trained on
new seeds (1000, 1001, 1002) and read on the test split. A seed draws a new world of the model's
structure and new examples, so a choice that fitted the noise of seed 0 does not carry over.

Arm (a), independent teams (teams.py). Each model's team has b trials: it trains its model as it
is, then changes its spec by hand one change at a time (a catalogued technique with params, a
hyperparameter, or dropping a technique), retrains on seed 0, keeps the change when the validation
logloss is lower, reverts it otherwise. b = 1 is a team that only measures its model. Run at
b = 1, 4 and 16: one trajectory of 16 trials per team, whose first b trials are the team at b.

Arm (b), the template (template.py). A central team has b x 40 trials and spends them over at
least two release cycles, each: ``smt representatives -k R``; ``smt qualify`` of every catalogued
technique (all 12, with params from the same catalogue as the teams') on the representatives;
``smt promote`` of what passed (largest gain first, each next one qualified again on top of the
new version); ``smt tune --apply`` of the template defaults (learning rates, dropout) with the
rest of the cycle's share (qualifications leave it at least a fifth). Techniques never qualified
go first, those applying to most of the fleet first. R and S follow the budget (template.central_plan): b = 1: 2
representatives, 1 seed; b = 4: 4, 1; b = 16: 6, 2.

Budget accounting. Arm (a): the trials of its teams, b per model (a change over the serving budget
is seen with ``python -m MODEL capacity`` before training and costs no trial). Arm (b): every
trial its qualify and tune commands ask for, counted once per (code, seed, steps) key from a ledger
(smt_ledger.py wraps the CLI's trial path), whether trained or found in the shared cache, baselines
included; it never exceeds b x 40. The evaluation trials belong to neither arm. Engineering cost:
commands per model (a team: train; per change ``smt generate``, capacity, train; a final revert
when the last change was rejected; (b): every ``smt`` command the central team ran, divided by the
models), spec lines written by hand (a team's edits; (b) writes specs and template by machine:
promote, tune --apply), and wall time of each arm in this run.

Expectations, written before the first full run (commit of fleet.yml):

- b = 1: arm (a) is the initial fleet (no team can try anything). Arm (b) has 40 trials: one
  qualification round on 2 representatives with 1 seed (a single seed measures a 1 % gain with about
  0.5 % noise), so it promotes the one or two techniques whose gain shows even on two models, most
  likely an interaction arch (dcn_v2 or fibinet: 30 of 40 worlds hold crosses), or nothing.
  Expected gain of (b) over (a): +0.3 to +0.8 % if something is promoted, 0 if not; share improved
  about 60 %; worst regression above 0.2 % (additive worlds and models unlike the representatives
  pay for a technique that does not help them); MFLOPs up by 20 % or more when an interaction arch
  is promoted (the paper's capacity-neutral goal is then missed).
- b = 4: teams keep about one change each out of three tried, half of them noise that does not
  carry to new seeds: arm (a) gains +0.2 to +0.5 % over the initial fleet. Arm (b) (160 trials,
  4 representatives) qualifies all 12 techniques and tunes the defaults: +0.5 to +1.0 % over the
  initial fleet; gain of (b) over (a) +0.2 to +0.5 %, worst regression above 0.2 %.
- b = 16: teams find model-specific changes (MMoE or PLE for uncorrelated objectives, dense_log_norm
  for heavy tails) but also accept noise 15 times each: arm (a) +0.5 to +1.0 % over the initial
  fleet, with several models worse than where they started. Arm (b) (640 trials, 6 representatives,
  2 seeds) qualifies with less noise but only what helps most models: gain of (b) over (a) about
  0 (between -0.3 and +0.3 %); this is where standardization stops winning on quality.
- The paper's +0.63 % with no model worse than 0.2 %: missed at every budget (a fleet-wide
  technique always costs some model more than 0.2 %), the mean reached at b = 1 or 4 at best.
- Engineering: (a) costs 3b - 2 commands and about 3 lines per change per model; (b) about 30 to
  60 commands for the whole fleet (under 2 per model) and no hand-written line: more than 92 %
  fewer commands per model from b = 4 on. Technique-model pairs: (b) about 30 per promotion, (a)
  about one per three models at b = 4: 6.3x or more at b <= 4, less at b = 16.

Outputs in --out (default benchmarks/results/fleet_experiment): results.json, report.md (one table
per budget, the releases of (b), gain by kind of world), gain_vs_budget.png, commands.log. Work
folders and the checkpoint live in .smt/fleet_experiment/ (git-ignored), trials in .smt/trials/:
an interrupted run started again with the same options continues where it stopped. Progress lines
(with trials done and an ETA) go to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_experiment.run import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
