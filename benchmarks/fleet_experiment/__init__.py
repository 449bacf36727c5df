"""The fleet experiment (issue 22): independent teams against the template, across budgets.

The entry point and the design, with the expectations written before the first full run, are in
``benchmarks/fleet_experiment.py``. Modules, in the order a run uses them:

- ``worlds``: the seeded fleet generator and ``fleet.yml``, the fleet it wrote (committed);
- ``catalogue``: the technique params and hyperparameter moves both arms draw from;
- ``workspace``: scratch copies of the repository and the ``smt`` commands run in them, with the
  ledger of the trials each command asked for (``smt_ledger.py`` runs the CLI with that ledger);
- ``training``: one trial (``python -m MODEL train``) through the generator's cached trial path;
- ``teams``: arm (a), each model's team on its own budget;
- ``template``: arm (b), the central team's template releases;
- ``evaluation``: both arms' final models on new seeds, and the arithmetic of the comparison;
- ``report``: report.md, results.json and the plot;
- ``run``: the command line, checkpoints and progress.
"""
