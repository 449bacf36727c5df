"""smt tune: search template-level defaults (hyperparameters, technique params) with Optuna.

``space`` reads ``tune.yml``; ``objective`` turns per-model measurements into a trial's value and
constraints (pure, testable on fixed numbers); ``study`` renders, trains and drives Optuna;
``apply`` writes a study's winner as the template's defaults (a new template version).
"""
