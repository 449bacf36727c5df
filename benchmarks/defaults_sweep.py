"""Measure optimizer and regularization defaults across the example fleet.

Trains every model of generated/ with every candidate setting below (the default training
protocol: at most `--epochs` epochs, early stopping, one torch thread), on each model's
synthetic data, for each seed, and prints one table: the test NE (mean over objectives) of
every model, its mean over models, the mean AUC and calibration, and the mean epochs run.
Candidates differ only in the hyperparameters they name; everything else is the model's spec.

    .venv/bin/python benchmarks/defaults_sweep.py                # all models, seed 0
    .venv/bin/python benchmarks/defaults_sweep.py --seeds 0 --models feed_ctr,marketplace

The README ("Training" -> "Defaults") records a run of it and the defaults it chose.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generator.testing import import_model  # noqa: E402
from smt_runtime.training import RunData  # noqa: E402

# name -> hyperparameters changed from the model's spec.
CANDIDATES: dict[str, dict[str, Any]] = {
    # Template 0.6.0's start (uniform rows) against FuxiCTR's normal(1e-4) and its regularizers.
    "uniform init": {"embedding_init_std": None},
    "init 1e-4": {"embedding_init_std": 1e-4},
    "init 1e-4 + batch_norm + emb L2 0.05": {"embedding_init_std": 1e-4, "batch_norm": True, "embedding_regularizer": 0.05},
    "adagrad 0.05": {"embedding_optimizer": "adagrad", "embedding_learning_rate": 0.05},
    "adagrad 0.2": {"embedding_optimizer": "adagrad", "embedding_learning_rate": 0.2},
    "adagrad 1.0": {"embedding_optimizer": "adagrad", "embedding_learning_rate": 1.0},
    "rowwise_adagrad 0.2": {"embedding_optimizer": "rowwise_adagrad", "embedding_learning_rate": 0.2},
    "sparse adam 0.001": {"embedding_optimizer": "adam", "embedding_learning_rate": 0.001},
    "sparse adam 0.001 + emb L2 0.01": {
        "embedding_optimizer": "adam",
        "embedding_learning_rate": 0.001,
        "embedding_regularizer": 0.01,
    },
    "adagrad 0.05 + batch_norm": {
        "embedding_optimizer": "adagrad",
        "embedding_learning_rate": 0.05,
        "batch_norm": True,
    },
    "adagrad 0.05 + net L2 1e-4": {
        "embedding_optimizer": "adagrad",
        "embedding_learning_rate": 0.05,
        "net_regularizer": 1e-4,
    },
    "adagrad 0.2 + emb L2 0.01": {
        "embedding_optimizer": "adagrad",
        "embedding_learning_rate": 0.2,
        "embedding_regularizer": 0.01,
    },
}


def run(model: str, seed: int, epochs: int, candidates: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """candidate -> ne, auc, calibration (means over objectives), epochs and seconds of one seed."""
    pkg = import_model(REPO / "generated" / model)
    config = replace(pkg.config.ModelConfig(), seed=seed, epochs=epochs)
    data = RunData.synthetic(config)
    results = {}
    for name, changes in candidates.items():
        started = time.perf_counter()
        result = pkg.train.train(replace(config, **changes), data=data)
        test = result.metrics["test"].values()
        results[name] = {
            "ne": statistics.fmean(values["ne"] for values in test),
            "auc": statistics.fmean(values["auc"] for values in test),
            "calibration": statistics.fmean(values["calibration"] for values in test),
            "epochs": result.fit.epochs,
            "seconds": time.perf_counter() - started,
        }
        print(f"  {model} seed {seed} {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[name].items()), file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated models (default: every model in generated/)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=10, help="most epochs per run")
    parser.add_argument("--candidates", help="comma-separated candidate names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = args.models.split(",") if args.models else sorted(
        path.parent.name for path in (REPO / "generated").glob("*/.copier-answers.yml")
    )
    seeds = [int(seed) for seed in args.seeds.split(",")]
    candidates = CANDIDATES if not args.candidates else {name: CANDIDATES[name] for name in args.candidates.split(",")}
    # (candidate, model) -> list over seeds of the run's numbers.
    table: dict[tuple[str, str], list[dict[str, float]]] = {}
    for model in models:
        for seed in seeds:
            for name, numbers in run(model, seed, args.epochs, candidates).items():
                table.setdefault((name, model), []).append(numbers)

    def mean(name: str, model: str, key: str) -> float:
        return statistics.fmean(numbers[key] for numbers in table[(name, model)])

    short = [model[:12] for model in models]
    width = max(len(name) for name in candidates)
    print(f"test NE (mean over objectives and seeds {args.seeds}; lower is better), one thread, at most {args.epochs} epochs")
    print(f"{'candidate':<{width}}  " + "  ".join(f"{s:>12}" for s in short) + "  mean NE  mean AUC  calib  epochs")
    for name in candidates:
        nes = [mean(name, model, "ne") for model in models]
        auc = statistics.fmean(mean(name, model, "auc") for model in models)
        calibration = statistics.fmean(mean(name, model, "calibration") for model in models)
        epochs = statistics.fmean(mean(name, model, "epochs") for model in models)
        print(
            f"{name:<{width}}  " + "  ".join(f"{ne:>12.4f}" for ne in nes)
            + f"  {statistics.fmean(nes):>7.4f}  {auc:>8.4f}  {calibration:>5.3f}  {epochs:>6.1f}"
        )
    print(f"command: python benchmarks/defaults_sweep.py --seeds {args.seeds} --epochs {args.epochs}"
          + (f" --models {args.models}" if args.models else ""))


if __name__ == "__main__":
    main()
