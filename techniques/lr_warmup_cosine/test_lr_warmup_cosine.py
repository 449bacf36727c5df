"""Tests of the lr_warmup_cosine technique: golden patch, and the learning-rate curve."""

import math
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from smt_runtime import training

from generator.testing import assert_golden, build_model, probe_spec

HERE = Path(__file__).parent
LR = 0.01


def spec(**params: Any) -> dict[str, Any]:
    """The probe model at learning rate LR with lr_warmup_cosine applied with `params`."""
    return probe_spec("lr_warmup_cosine", params, hyperparameters={"learning_rate": LR})


def schedule_lrs(pkg: ModuleType, total_steps: int, steps: int | None = None) -> list[float]:
    """The learning rate of each of `steps` optimizer steps under the technique's schedule."""
    config = pkg.config.ModelConfig()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    scheduler = pkg.train.build_lr_schedule(optimizer, config, total_steps)
    lrs = []
    for _ in range(total_steps if steps is None else steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_golden_and_idempotent() -> None:
    assert_golden(HERE)


def test_curve_with_warmup_steps(tmp_path: Path) -> None:
    pkg = build_model(spec(warmup_steps=2, min_lr_ratio=0.1), tmp_path)
    lrs = schedule_lrs(pkg, total_steps=10, steps=13)
    # S = 10, W = 2: warmup (k + 1) / W, then the cosine over k - W in 0..7, then the floor.
    cosine = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * j / 7)) for j in range(8)]
    expected = [0.5, 1.0, *cosine, 0.1, 0.1, 0.1]
    assert lrs == pytest.approx([LR * factor for factor in expected])
    assert lrs[2] == pytest.approx(LR)  # the first step after warmup runs at the full rate
    assert lrs[9] == pytest.approx(0.1 * LR)  # the last step of the run at min_lr_ratio x lr
    assert lrs[5] == pytest.approx(LR * (0.1 + 0.45 * (1 + math.cos(3 * math.pi / 7))))


def test_curve_with_warmup_fraction_defaults(tmp_path: Path) -> None:
    pkg = build_model(spec(), tmp_path)
    params = pkg.config.ModelConfig().lr_warmup_cosine
    assert (params.warmup_fraction, params.warmup_steps, params.min_lr_ratio) == (0.05, 0, 0.1)
    lrs = schedule_lrs(pkg, total_steps=200)
    # W = round(0.05 * 200) = 10 warmup steps rising linearly to the full rate.
    assert lrs[:10] == pytest.approx([LR * (k + 1) / 10 for k in range(10)])
    assert lrs[10] == pytest.approx(LR)
    # Cosine midpoint: halfway through the decay the rate is (1 + m) / 2.
    decay = 200 - 1 - 10
    assert lrs[10 + decay // 2] == pytest.approx(
        LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (decay // 2) / decay)))
    )
    assert all(later <= earlier for earlier, later in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1 * LR)


def test_no_warmup_and_zero_floor(tmp_path: Path) -> None:
    pkg = build_model(spec(warmup_fraction=0.0, min_lr_ratio=0.0), tmp_path)
    lrs = schedule_lrs(pkg, total_steps=5)
    expected = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert lrs == pytest.approx([LR * factor for factor in expected], abs=1e-12)
    assert lrs[0] == pytest.approx(LR) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_warmup_longer_than_the_run_is_all_warmup(tmp_path: Path) -> None:
    pkg = build_model(spec(warmup_steps=50), tmp_path)
    lrs = schedule_lrs(pkg, total_steps=4)
    assert lrs == pytest.approx([LR * (k + 1) / 4 for k in range(4)])


def test_train_sizes_the_schedule_by_its_steps_and_steps_it_with_the_optimizer(tmp_path: Path) -> None:
    pkg = build_model(spec(warmup_steps=3, min_lr_ratio=0.2), tmp_path)
    config = replace(
        pkg.config.ModelConfig(), train_examples=512, eval_examples=256, batch_size=64, lr_plateau_factor=1.0
    )
    # The runtime builds the dense optimizer's schedule for the run's own number of steps.
    calls: list[int] = []

    def spy(optimizer: torch.optim.Optimizer, config: Any, total_steps: int) -> Any:
        calls.append(total_steps)
        return pkg.train.build_lr_schedule(optimizer, config, total_steps)

    used: list[float] = []

    def watch(prepared: training.Prepared) -> None:
        hook = lambda optimizer, args, kwargs: used.append(optimizer.param_groups[0]["lr"])  # noqa: E731
        prepared.optimizer.dense.register_step_pre_hook(hook)

    training.train(replace(pkg.train.PARTS, build_lr_schedule=spy), config, steps=12, on_prepared=watch)
    assert calls == [12]
    assert used == pytest.approx(schedule_lrs(pkg, total_steps=12))  # one schedule step per optimizer step
    assert used[0] == pytest.approx(LR / 3) and used[-1] == pytest.approx(0.2 * LR)


def test_the_curve_spans_the_planned_epochs_and_continues_on_resume(tmp_path: Path) -> None:
    """A default run (no step cap) is sized by epochs x steps per epoch; a resume goes on from
    the checkpoint's step on the new plan instead of restarting the warmup."""
    pkg = build_model(spec(warmup_steps=3, min_lr_ratio=0.2), tmp_path / "pkg")
    config = replace(
        pkg.config.ModelConfig(),
        train_examples=512,
        eval_examples=256,
        batch_size=64,
        epochs=2,
        early_stopping_patience=100,
        lr_plateau_factor=1.0,
    )
    train = pkg.train
    data = training.RunData.synthetic(config)
    first = train.train(config, data=data, run_dir=tmp_path / "run")
    assert first.fit.planned_steps == 16  # 2 epochs of 512 / 64 steps
    # Each validation records the rate of the next step: after step 8 of 16, then of 24.
    assert first.fit.history[0]["lr"][0] == pytest.approx(LR * train.warmup_cosine_factor(8, 16, 3, 0.2))
    resumed = train.train(replace(config, epochs=3), data=data, run_dir=tmp_path / "run", resume=True)
    assert resumed.fit.planned_steps == 24 and resumed.fit.steps == 24
    assert resumed.fit.history[-1]["lr"][0] == pytest.approx(LR * train.warmup_cosine_factor(24, 24, 3, 0.2))
