"""The runtime's training protocol (smt_runtime.training): epochs, validation once per epoch or
every eval_every steps, early stopping on the monitored score with the best weights restored,
learning-rate reduction on plateau, schedules sized by the planned run, metrics.json across a
resume, calibration, the output bias's and the dense statistics' start, the regularizers, batch
norm, and the refusals of resume. On real generated packages (conftest.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import islice
from typing import Any

import numpy as np
import pytest
import torch

from smt_runtime.data import Examples
from smt_runtime.distributed import start
from smt_runtime.metrics import predict, weighted_logloss
from smt_runtime.sparse import table_parameter_names, unsharded_state_dict
from smt_runtime.training import (
    RunData,
    build_model,
    evaluate,
    init_output_bias,
    prepare,
    regularization,
    train,
    train_step,
)
from smt_runtime.testing import random_batch

CPU = torch.device("cpu")


def test_a_run_validates_once_per_epoch_and_stops_early(package: Any, config: Any) -> None:
    """16 steps an epoch, 8 epochs planned: one validation per epoch, the best weights kept, and
    a stop after early_stopping_patience validations without improvement (a large embedding
    learning rate overfits the ids within a few epochs)."""
    result = train(package.train.PARTS, replace(config, epochs=8, embedding_learning_rate=2.0))
    fitted = result.fit
    assert (fitted.steps_per_epoch, fitted.planned_steps) == (16, 128)
    assert [h["step"] for h in fitted.history] == [16 * (i + 1) for i in range(len(fitted.history))]
    assert [h["epoch"] for h in fitted.history] == [i + 1.0 for i in range(len(fitted.history))]
    best = min(fitted.history, key=lambda h: h["valid_loss"])
    assert fitted.best_step == best["step"] and [h["best"] for h in fitted.history].count(True) >= 1
    trailing = len(fitted.history) - fitted.history.index(best) - 1
    assert fitted.stopped_early, "the large learning rate should overfit before epoch 8"
    assert trailing == config.early_stopping_patience and fitted.steps < 128


def test_early_stopping_keeps_the_best_weights(feed_ctr: Any, feed_config: Any) -> None:
    """Without calibration the model ends with exactly the weights of its best validation."""
    config = replace(feed_config, eval_every=5, early_stopping_patience=2, embedding_learning_rate=5.0, calibrate=False)
    data = RunData.synthetic(config)
    result = train(feed_ctr.train.PARTS, config, steps=200, data=data)
    history = result.fit.history
    best = min(history, key=lambda h: h["valid_loss"])
    assert result.fit.best_step == best["step"] and result.fit.stopped_early and result.fit.steps < 200
    assert len(history) - history.index(best) - 1 == config.early_stopping_patience
    assert weighted_logloss(evaluate(result.model, data.valid, config), config) == pytest.approx(best["valid_loss"])


def test_a_validation_without_improvement_reduces_the_learning_rates(package: Any, config: Any) -> None:
    """Every learning rate (dense and embedding tables) is multiplied by lr_plateau_factor after a
    validation that does not improve; a best one leaves them."""
    config = replace(config, epochs=6, eval_every=4, early_stopping_patience=3, embedding_learning_rate=2.0, lr_plateau_factor=0.5)
    history = train(package.train.PARTS, config).fit.history
    assert history[0]["lr"] == [config.learning_rate, 2.0]
    for before, after in zip(history, history[1:]):
        factor = 1.0 if before["best"] else 0.5
        assert after["lr"] == pytest.approx([rate * factor for rate in before["lr"]])
    assert any(not entry["best"] for entry in history[:-1])  # a plateau happened


def test_early_stopping_can_monitor_auc(feed_ctr: Any, feed_config: Any) -> None:
    config = replace(feed_config, epochs=4, eval_every=4, monitor="auc", early_stopping_patience=100)
    fitted = train(feed_ctr.train.PARTS, config).fit
    best = max(fitted.history, key=lambda h: h["valid_auc"])
    assert fitted.best_step == best["step"] and len(fitted.history) == 16
    assert [h["best"] for h in fitted.history] == [h["valid_auc"] > max([0.0] + [e["valid_auc"] for e in fitted.history[:i]]) for i, h in enumerate(fitted.history)]


def test_the_schedule_is_sized_by_the_planned_run_and_stepped_after_every_step(feed_ctr: Any, feed_config: Any) -> None:
    """build_lr_schedule gets the planned length (epochs x steps per epoch, or the steps cap); the
    schedule steps once per optimizer step, after the after_backward hook, which sees every
    gradient of the dense parameters."""
    parts = feed_ctr.train.PARTS
    sizes: list[int] = []
    used: list[float] = []
    hooked: list[bool] = []

    def schedule(optimizer: torch.optim.Optimizer, config: Any, total_steps: int) -> Any:
        sizes.append(total_steps)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)

    def hook(model: torch.nn.Module, config: Any) -> None:
        dense = [p for name, p in model.named_parameters() if name not in table_parameter_names(model)]
        hooked.append(all(p.grad is not None for p in dense))

    spied = replace(parts, build_lr_schedule=schedule, after_backward=hook)
    config = replace(feed_config, epochs=2)
    assert train(spied, config).fit.planned_steps == 32
    train(spied, config, steps=3)
    assert sizes == [32, 3]
    assert used[-3:] == pytest.approx([config.learning_rate * 0.5**step for step in range(3)])
    assert hooked[-3:] == [True, True, True]


def test_metrics_json_keeps_history_time_and_rates_across_a_resume(package: Any, config: Any, tmp_path: Any) -> None:
    parts = package.train.PARTS
    config = replace(config, epochs=1, early_stopping_patience=100)
    data = RunData.synthetic(config)
    first = train(parts, config, data=data, run_dir=tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert len(saved["validation"]) == 1 and saved["train_seconds"] > 0
    assert saved["train_label_rates"] == pytest.approx(data.train.label_rates(config))
    resumed = train(parts, replace(config, epochs=2), data=data, run_dir=tmp_path, resume=True)
    after = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["step"] for h in after["validation"]] == [16, 32] and after["steps"] == 32
    assert after["validation"][0] == json.loads(json.dumps(first.fit.history[0]))
    assert after["segment_train_seconds"] == pytest.approx(resumed.fit.segment_seconds)
    assert after["train_seconds"] == pytest.approx(first.fit.seconds + resumed.fit.segment_seconds)
    assert after["train_label_rates"] == saved["train_label_rates"]  # kept in the checkpoint
    assert after["sharding"] == saved["sharding"] and after["sharding"]["rank_table_bytes"][0] > 0
    assert after["metrics"] == json.loads(json.dumps(resumed.metrics))


def test_calibration_matches_the_validation_rate_and_only_lowers_its_logloss(package: Any, config: Any) -> None:
    parts = package.train.PARTS
    config = replace(config, eval_every=20)
    data = RunData.synthetic(config)
    uncalibrated = train(parts, replace(config, calibrate=False), steps=60, data=data)
    result = train(parts, config, steps=60, data=data)
    for name, values in result.metrics["valid"].items():
        before = uncalibrated.metrics["valid"][name]
        assert values["logloss"] <= before["logloss"] + 1e-9, (name, values, before)
        positives = values["base_rate"] * config.eval_examples
        if min(positives, config.eval_examples - positives) >= 10:
            assert values["calibration"] == pytest.approx(1.0, abs=1e-4), (name, values)
        else:  # too few to measure a rate: the bias is left alone
            assert values["logloss"] == pytest.approx(before["logloss"]), (name, values)


def test_the_output_bias_starts_at_the_train_label_rates(package: Any, config: Any) -> None:
    parts = package.train.PARTS
    data = RunData.synthetic(config)
    result = train(parts, config, steps=1, data=data)
    for name, rate in result.label_rates.items():
        assert rate == pytest.approx(data.train.table.column("label_" + name).to_numpy().mean())
    model = build_model(parts, config)
    init_output_bias(model, result.label_rates, data.train, config)
    logits, _ = predict(model, islice(data.train.batches(config, config.batch_size), 4))
    mean = torch.sigmoid(torch.from_numpy(logits)).mean(dim=0)
    assert mean.tolist() == pytest.approx(list(result.label_rates.values()), rel=1e-6)  # before the first step


def test_dense_statistics_are_fitted_on_the_first_train_batches(feed_ctr: Any, feed_config: Any) -> None:
    """The template's DensePreprocessor standardizes each dense feature's signed log by the mean
    and spread of the first 8 global batches of the train split, fitted before step 1."""
    data = RunData.synthetic(feed_config)
    preprocessor = train(feed_ctr.train.PARTS, feed_config, steps=1, data=data).model.dense_arch.preprocessor
    table = data.train.table.slice(0, 8 * feed_config.batch_size)
    first = torch.from_numpy(np.stack([table.column(name).to_numpy() for name in feed_config.dense_features], 1)).double()
    logged = torch.sign(first) * torch.log1p(first.abs())
    torch.testing.assert_close(preprocessor.center.double(), logged.mean(dim=0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(preprocessor.scale.double(), logged.std(dim=0, unbiased=False), rtol=1e-5, atol=1e-6)


def test_a_model_built_alone_has_the_weights_a_run_starts_from(package: Any, config: Any) -> None:
    """build_model (export, tests, a run's model= argument) gives exactly the weights a training
    run of the same seed prepares: its tables are not drawn before the dense layers."""
    parts = package.train.PARTS
    built = build_model(parts, config).state_dict()
    started = unsharded_state_dict(prepare(parts, config, start("cpu")).model)
    assert built.keys() == started.keys()
    assert [name for name in built if not torch.equal(built[name], started[name])] == []


def test_regularizers_penalize_dense_weights_and_the_tables_the_dense_optimizer_trains(feed_ctr: Any, feed_config: Any) -> None:
    """net_regularizer / 2 x the squares of every dense weight matrix (not biases, not the
    tables); with the "dense" embedding optimizer, embedding_regularizer / 2 x the squares of
    every table too (as FuxiCTR regularizes embeddings)."""
    parts = feed_ctr.train.PARTS
    config = replace(feed_config, net_regularizer=0.01, embedding_regularizer=0.1, embedding_optimizer="dense")
    prepared = prepare(parts, config, start("cpu"))
    tables = table_parameter_names(prepared.model)
    matrices = sum(float(p.pow(2).sum()) for name, p in prepared.model.named_parameters() if p.dim() >= 2 and name not in tables)
    squares = sum(float(p.pow(2).sum()) for name, p in prepared.model.named_parameters() if name in tables)
    assert float(regularization(prepared, config, CPU)) == pytest.approx(0.005 * matrices + 0.05 * squares, rel=1e-5)
    assert float(regularization(prepared, replace(config, embedding_regularizer=0.0), CPU)) == pytest.approx(0.005 * matrices, rel=1e-5)
    assert float(regularization(prepared, replace(config, net_regularizer=0.0, embedding_regularizer=0.0), CPU)) == 0.0
    fused = prepare(parts, replace(config, embedding_optimizer="adagrad"), start("cpu"))
    assert float(regularization(fused, replace(config, net_regularizer=0.0), CPU)) == 0.0  # until a batch is looked up


def test_a_replicated_table_is_penalized_whole_with_a_fused_optimizer(feed_ctr: Any, feed_config: Any) -> None:
    """A table FBGEMM cannot hold (width 10) is data_parallel even with Adagrad; its gradient is
    dense, so the embedding regularizer penalizes it whole, as 0.6.0's replicated Adagrad did
    with its weight decay (the leaderboard DNN's settings rely on it), while the fused tables
    keep the penalty of the rows a batch looks up."""
    first, *rest = feed_config.sparse_features
    config = replace(
        feed_config,
        sparse_features=(replace(first, embedding_dim=10), *rest),
        embedding_regularizer=0.1,
        net_regularizer=0.0,
    )
    prepared = prepare(feed_ctr.train.PARTS, config, start("cpu"))
    placement = {table.table: table.sharding_type for table in prepared.tables}
    assert placement[first.name] == "data_parallel" and {placement[f.name] for f in rest} == {"table_wise"}
    (table,) = prepared.dense_tables
    assert tuple(table.shape) == (first.num_embeddings, 10)
    assert float(regularization(prepared, config, CPU)) == pytest.approx(0.05 * float(table.pow(2).sum()), rel=1e-5)
    batch = random_batch(config, batch_size=32)
    prepared.model.train()
    prepared.model(batch.dense, batch.sparse)
    assert len(prepared.pooled) == len(rest)  # the fused tables' lookups only


@pytest.mark.parametrize("embedding_optimizer", ["adagrad", "rowwise_adagrad", "sgd"])
def test_embedding_regularizer_shrinks_the_rows_a_fused_step_looks_up(feed_ctr: Any, feed_config: Any, embedding_optimizer: str) -> None:
    """FBGEMM's fused CPU kernels ignore weight decay, so the runtime adds embedding_regularizer / 2
    x the squared pooled embeddings of the batch (over the batch size) to the loss: the rows a
    step looks up end smaller than without it, and no other row moves."""
    parts = feed_ctr.train.PARTS
    batch = random_batch(feed_config, feed_config.batch_size, seed=1)

    def tables_after_a_step(regularizer: float) -> list[torch.Tensor]:
        config = replace(feed_config, embedding_optimizer=embedding_optimizer, embedding_regularizer=regularizer)
        prepared = prepare(parts, config, start("cpu"), model=build_model(parts, config))
        torch.manual_seed(7)
        train_step(prepared, parts, None, batch, config)
        state = unsharded_state_dict(prepared.model)
        return [state[name] for name in sorted(table_parameter_names(prepared.model))]

    start_state = unsharded_state_dict(build_model(parts, feed_config))
    names = sorted(name for name in start_state if name.endswith(".weight") and "embedding_bags" in name)
    plain, decayed = tables_after_a_step(0.0), tables_after_a_step(10.0)
    ids = batch.sparse.to_dict()
    assert len(plain) == len(names) == feed_config.num_sparse_features
    for name, without, with_it in zip(names, plain, decayed):
        before = start_state[name]
        looked_up = torch.zeros(before.shape[0], dtype=torch.bool)
        looked_up[ids[name.split(".")[-2]].values()] = True
        moved = (with_it != before).any(dim=1)
        assert moved.any() and not (moved & ~looked_up).any(), name  # only rows the batch looked up
        both = moved & (without != before).any(dim=1)
        assert float(with_it[both].norm()) < float(without[both].norm()), name


def test_the_fused_embedding_penalty_is_the_squared_pooled_embeddings(feed_ctr: Any, feed_config: Any) -> None:
    parts = feed_ctr.train.PARTS
    config = replace(feed_config, embedding_regularizer=0.2)
    prepared = prepare(parts, config, start("cpu"), model=build_model(parts, config))
    batch = random_batch(config, 64, seed=3)
    assert float(regularization(prepared, config, CPU)) == 0.0  # nothing looked up yet
    prepared.model.train()
    pooled = [tensor.detach() for tensor in prepared.model.sparse_arch.embedding_tables(batch.sparse)]
    expected = sum(0.2 / (2 * 64) * float(tensor.pow(2).sum()) for tensor in pooled)
    assert float(regularization(prepared, config, CPU)) == pytest.approx(expected, rel=1e-5)
    prepared.model.eval()
    prepared.pooled.clear()
    prepared.model.sparse_arch.embedding_tables(batch.sparse)  # evaluation is not penalized
    assert prepared.pooled == []


def test_batch_norm_adds_batchnorm_to_the_mlps_and_trains(feed_ctr: Any, feed_config: Any) -> None:
    parts = feed_ctr.train.PARTS

    def norms(model: torch.nn.Module) -> list[torch.nn.BatchNorm1d]:
        return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]

    assert norms(build_model(parts, feed_config)) == []
    config = replace(feed_config, batch_norm=True)
    result = train(parts, config, steps=32)
    assert len(norms(result.model)) > 0
    assert all(float(norm.running_mean.abs().sum()) > 0 for norm in norms(result.model))  # trained statistics
    losses = result.fit.losses
    assert all(np.isfinite(losses)) and np.mean(losses[-4:]) < np.mean(losses[:4])


def test_resume_refuses_a_run_directory_it_cannot_continue(feed_ctr: Any, packages: Any, feed_config: Any, tmp_path: Any) -> None:
    """No checkpoint, another model's, one written by another number of processes, or a file that
    is no checkpoint: each a one-line error saying what to do."""
    parts = feed_ctr.train.PARTS
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(parts, feed_config, steps=2, run_dir=tmp_path / "empty", resume=True)
    run = tmp_path / "run"
    train(parts, feed_config, steps=2, run_dir=run)
    other = packages["app_install"].train.PARTS
    with pytest.raises(ValueError, match="is a checkpoint of model feed_ctr, not app_install") as raised:
        train(other, replace(other.config(), batch_size=128), steps=2, run_dir=run, resume=True)
    assert "\n" not in str(raised.value)
    saved = torch.load(run / "checkpoint.pt", weights_only=False)
    torch.save({**saved, "world_size": 2}, run / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"written by 2 process\(es\), this run has 1; resume with --nproc_per_node=2"):
        train(parts, feed_config, steps=4, run_dir=run, resume=True)
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint") as raised:
        train(parts, feed_config, steps=4, run_dir=run, resume=True)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_a_run_refuses_an_empty_split_in_one_line(feed_ctr: Any, feed_config: Any, split: str) -> None:
    data = RunData.synthetic(feed_config)
    setattr(data, split, Examples.from_table(getattr(data, split).table.slice(0, 0), feed_config))
    with pytest.raises(ValueError, match=f"^the {split} split holds 0 example\\(s\\); a run needs at least 1"):
        train(feed_ctr.train.PARTS, feed_config, steps=1, data=data)
