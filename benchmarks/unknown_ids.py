"""Measure the default of min_count (issue 21, item 1): ids seen fewer than min_count times in
training read their feature's unknown row, so that row learns what an unseen id predicts.

Three measurements, one torch thread (the first two train every candidate min_count):

1. the example fleet: every model of generated/ with its spec's synthetic data and training
   protocol (train_examples, epochs, early stopping), where validation and test ids come from
   the training distribution: min_count costs what rare ids' own rows knew. Printed: the test
   logloss (the objectives' weighted sum) of every model, and the mean change from min_count 0.
2. a cold start: the same models and protocol, but validation and test are rows whose ids of
   the single-valued feature with most ids (the users) never occur in training
   (smt_runtime.synthetic.cold_start_tables), in the default world and in one whose rare ids
   predict lower rates (synthetic popularity_effect 1.0, as new and long-tail ids do in real
   logs). Printed: the cold test logloss per model and the mean change from min_count 0.

3. the contract test's cold start (--worlds contract, or 'contract E' for popularity_effect E):
   each model's test_unseen_ids_read_a_learned_row at seeds --seeds (8,192 training rows,
   4,096 validation rows whose users are all unseen, popularity_effect 1.5, calibration off),
   the last --min-counts candidate against 0. Printed: the validation logloss margin per model and seed, and its smallest, median and
   largest value.

    .venv/bin/python benchmarks/unknown_ids.py                      # every model, seeds 0 and 1
    .venv/bin/python benchmarks/unknown_ids.py --models feed_ctr --seeds 0 --min-counts 0,2
    .venv/bin/python benchmarks/unknown_ids.py --worlds contract --seeds 0,1,2,3,4 --min-counts 3

docs/training.md ("Unseen ids") records a run and the default it chose.
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
from smt_runtime.testing import COLD_START_POPULARITY_EFFECT  # noqa: E402

EVAL_EXAMPLES = 5000  # rows of each cold validation and test split


def test_logloss(parts: Any, config: Any, data: Any = None) -> float:
    """The objectives' weighted test logloss of one training run of config."""
    from smt_runtime.metrics import weighted_logloss  # noqa: PLC0415
    from smt_runtime.training import train  # noqa: PLC0415

    result = train(parts, config, data=data)
    return weighted_logloss(result.metrics["test"], config)


def cold_data(config: Any) -> Any:
    """The cold-start splits of config's world (None when its users are too few)."""
    from smt_runtime.data import Examples  # noqa: PLC0415
    from smt_runtime.synthetic import cold_start_tables  # noqa: PLC0415
    from smt_runtime.training import RunData  # noqa: PLC0415

    tables = cold_start_tables(config, config.train_examples, EVAL_EXAMPLES, config.seed)
    if tables is None:
        return None
    train, valid, test, _ = tables
    return RunData(*(Examples.from_table(table, config) for table in (train, valid, test)))


def measure(models: list[str], seeds: list[int], min_counts: list[int], world: str) -> dict[str, dict[int, float]]:
    """model -> min_count -> test logloss averaged over seeds, in world "fleet", "cold" or
    "cold, popularity 1.0"."""
    table: dict[str, dict[int, float]] = {}
    for name in models:
        parts = import_model(REPO / "generated" / name).train.PARTS
        values: dict[int, list[float]] = {count: [] for count in min_counts}
        for seed in seeds:
            base = replace(parts.config(), seed=seed)
            if world.startswith("cold, popularity"):
                effect = float(world.rsplit(" ", 1)[1])
                base = replace(base, synthetic=replace(base.synthetic, popularity_effect=effect))
            data = cold_data(base) if world.startswith("cold") else None
            if world.startswith("cold") and data is None:
                break
            for count in min_counts:
                started = time.perf_counter()
                values[count].append(test_logloss(parts, replace(base, min_count=count), data))
                print(f"  {world}: {name} seed {seed} min_count {count}: {values[count][-1]:.5f} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        if all(values.values()):
            table[name] = {count: statistics.mean(losses) for count, losses in values.items()}
    return table


def contract_margins(models: list[str], seeds: list[int], min_count: int, effect: float) -> list[float]:
    """Validation logloss without min_count minus with it, in the setting of the models'
    contract test (smt_runtime.testing.ModelContract.test_unseen_ids_read_a_learned_row) with
    popularity_effect effect."""
    from smt_runtime.data import Examples  # noqa: PLC0415
    from smt_runtime.synthetic import cold_start_tables  # noqa: PLC0415
    from smt_runtime.training import RunData, train, validation_scores  # noqa: PLC0415

    margins = []
    print(f"\ncontract cold start (popularity_effect {effect:g}): validation logloss, min_count 0 minus min_count {min_count}")
    for name in models:
        parts = import_model(REPO / "generated" / name).train.PARTS
        row = []
        for seed in seeds:
            spec = parts.config()
            config = replace(
                spec, seed=seed, train_examples=8192, eval_examples=4096, batch_size=256, epochs=4, calibrate=False,
                min_count=min_count, synthetic=replace(spec.synthetic, popularity_effect=effect),
            )
            tables = cold_start_tables(config, config.train_examples, config.eval_examples, seed)
            if tables is None:
                continue
            data = RunData(*(Examples.from_table(table, config) for table in tables[:3]))
            losses = [
                validation_scores(train(parts, replace(config, min_count=count), data=data).metrics["valid"], config)["valid_loss"]
                for count in (0, min_count)
            ]
            row.append(losses[0] - losses[1])
        margins += row
        print(f"{name:<20}" + "".join(f"{margin:>+10.4f}" for margin in row), flush=True)
    if margins:
        print(f"smallest {min(margins):+.4f}, median {statistics.median(margins):+.4f}, largest {max(margins):+.4f} over {len(margins)} runs")
    return margins


def print_table(world: str, table: dict[str, dict[int, float]], min_counts: list[int]) -> None:
    print(f"\n{world}: test logloss (weighted over objectives), mean over seeds")
    print(f"{'model':<20}" + "".join(f"{f'min_count {count}':>14}" for count in min_counts))
    for name, values in table.items():
        print(f"{name:<20}" + "".join(f"{values[count]:>14.5f}" for count in min_counts))
    base = min_counts[0]
    deltas = [statistics.mean(values[count] - values[base] for values in table.values()) for count in min_counts]
    print(f"{f'mean change vs {base}':<20}" + "".join(f"{delta:>+14.5f}" for delta in deltas))
    wins = [sum(values[count] < values[base] for values in table.values()) for count in min_counts]
    print(f"{'models better':<20}" + "".join(f"{f'{win}/{len(table)}':>14}" for win in wins))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="", help="comma-separated models (default: every model of generated/)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--min-counts", default="0,1,2,3,5", help="comma-separated candidates; the first is the baseline")
    parser.add_argument("--worlds", default="fleet;cold;cold, popularity 1.0", help="which measurements, ';'-separated: fleet, cold, 'cold, popularity E', contract, 'contract E'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = args.models.split(",") if args.models else sorted(p.name for p in (REPO / "generated").iterdir() if p.is_dir())
    seeds = [int(seed) for seed in args.seeds.split(",")]
    min_counts = [int(count) for count in args.min_counts.split(",")]
    started = time.perf_counter()
    for world in (world.strip() for world in args.worlds.split(";")):
        if world.startswith("contract"):
            effect = float(world.split()[1]) if " " in world else COLD_START_POPULARITY_EFFECT
            contract_margins(models, seeds, min_counts[-1], effect)
        else:
            print_table(world, measure(models, seeds, min_counts, world), min_counts)
    print(f"\n{len(models)} model(s), seeds {args.seeds}, {time.perf_counter() - started:.0f} s, torch {torch.__version__}, 1 thread")


if __name__ == "__main__":
    main()
