"""What both arms may try: every catalogued technique with its params, and the hyperparameter moves.

Both arms draw from the same menu, so neither wins by knowing a setting the other could not try.
A technique's first param set is the central team's choice in its first release cycle, the next in
later cycles (a technique that failed is tried again with other params); a team draws any of them.
``{}`` is the technique's own defaults. Params hold scalars and one-element lists only: a
``smt qualify T:k=v,...`` label splits on commas.
"""

from __future__ import annotations

import random
from typing import Any

TECHNIQUE_PARAMS: dict[str, list[dict[str, Any]]] = {
    "autoint": [{}, {"num_layers": 1, "attention_dim": 8}],
    "dcn_v2": [{"num_cross_layers": 2}, {"num_cross_layers": 3, "low_rank": 16}],
    "dense_log_norm": [{}],
    "fibinet": [{}, {"bilinear_type": "field_all", "reduction_ratio": 2}],
    "field_dropout": [{"rate": 0.1}, {"rate": 0.05}],
    "finalmlp": [{}, {"fusion_dim": 8, "num_heads": 2}],
    "grad_clip": [{"max_norm": 1.0}, {"max_norm": 0.3}],
    "lr_warmup_cosine": [{}, {"warmup_fraction": 0.1, "min_lr_ratio": 0.0}],
    "mmoe": [{}, {"num_experts": 2, "expert_dim": 32}],
    "ple": [{}, {"num_levels": 1}],
    "residual_mlp": [{}],
    "uncertainty_weighting": [{}],
}

# Template defaults a team reads when its spec sets none (config.py.jinja; the runtime's Adagrad
# rate for the embedding tables when embedding_learning_rate is None).
TEMPLATE_DEFAULTS = {"learning_rate": 0.003, "embedding_learning_rate": 0.05, "dropout": 0.0, "weight_decay": 0.0}
# A team's hyperparameter moves: multiply a rate, or set dropout / weight decay to another level.
RATE_FACTORS = (0.5, 2.0)
LEVELS = {"dropout": (0.0, 0.1, 0.2), "weight_decay": (0.0, 1e-5, 1e-4)}
# The central team's `smt tune` space: template defaults every model gets (capacity-neutral knobs only).
TUNE_SPACE = {
    "learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
    "embedding_learning_rate": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
}


def change_label(technique: str, params: dict[str, Any]) -> str:
    """``T`` or ``T:k=v,...`` (keys sorted), as ``smt qualify`` labels a change and ``smt promote`` finds it."""
    if not params:
        return technique
    return technique + ":" + ",".join(f"{key}={params[key]}" for key in sorted(params))


def hyperparameter_move(rng: random.Random, current: dict[str, Any]) -> tuple[str, Any]:
    """One hyperparameter change a team tries: (name, new value), from ``current`` spec overrides."""
    name = rng.choice(("learning_rate", "embedding_learning_rate", "dropout", "weight_decay"))
    value = current.get(name, TEMPLATE_DEFAULTS[name])
    if name in LEVELS:
        return name, rng.choice([level for level in LEVELS[name] if level != value])
    return name, float(f"{value * rng.choice(RATE_FACTORS):.3g}")
