"""The TorchRec sparse path in one process: tables as an EmbeddingBagCollection sharded by
DistributedModelParallel, every embedding optimizer (FBGEMM's fused kernels, or the dense
optimizer) against the same step in plain torch, data_parallel tables where FBGEMM's kernels
cannot go, the plan, and the sharding strategies. Sharding over processes: tests/test_sharding.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import torch
from torchrec import PoolingType

from smt_runtime.distributed import start
from smt_runtime.sparse import (
    EMBEDDING_LEARNING_RATES,
    STRATEGIES,
    Sharding,
    format_placements,
    local_table_bytes,
    table_configs,
    table_parameter_names,
    unsharded_state_dict,
)
from smt_runtime.testing import Interrupted, random_batch
from smt_runtime.training import Prepared, RunData, build_model, prepare, train, train_step

# Where a fused kernel and torch's optimizer of the same kind may differ on one step: float32
# rounding (measured: at most 3e-8 on rows of about 1e-2). Adagrad's and Adam's first step is
# about lr * sign(gradient) whatever the gradient's size, so an element whose gradient is rounding
# noise (terms cancelling to a millionth of the table's largest) steps by chance in both; those
# are left out of the comparison.
STEP_ATOL = 1e-6
NOISE = 1e-6


@pytest.fixture(scope="module")
def parts(feed_ctr: Any) -> Any:
    return feed_ctr.train.PARTS


def tables_of(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The embedding tables of a state dict of model, by table name."""
    names = table_parameter_names(model)
    return {name.split(".")[-2]: value.detach().clone() for name, value in state.items() if name in names}


@dataclass
class Step:
    """One training step through the runtime (sharded, fused) and the same step in plain torch on
    an unsharded copy, each table by name: before, after the runtime's step (trained), the plain
    step's gradient and result (expected, with the embedding optimizer's ordinary counterpart)."""

    prepared: Prepared
    before: dict[str, torch.Tensor]
    trained: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    expected: dict[str, torch.Tensor]

    def assert_matches(self) -> None:
        """The runtime's step is plain torch's wherever the gradient is above rounding noise."""
        for name, table in self.trained.items():
            gradient = self.gradients[name].abs()
            significant = gradient > NOISE * gradient.max()
            torch.testing.assert_close(table[significant], self.expected[name][significant], rtol=0, atol=STEP_ATOL)


def one_step(parts: Any, config: Any) -> Step:
    """Step of one batch of config's synthetic data, from the weights of build_model."""
    model = build_model(parts, config)
    reference = copy.deepcopy(model)
    before = tables_of(model.state_dict(), model)
    prepared = prepare(parts, config, start("cpu"), model=model)
    batch = random_batch(config, config.batch_size, seed=1)
    torch.manual_seed(7)  # the same field-dropout masks in both
    train_step(prepared, parts, None, batch, config)
    trained = tables_of(unsharded_state_dict(prepared.model), model)

    names = table_parameter_names(reference)
    weights = {name.split(".")[-2]: parameter for name, parameter in reference.named_parameters() if name in names}
    embedding = parts.build_embedding_optimizer(config)
    if embedding.fused:
        optimizer = embedding.build(list(weights.values()))
    else:
        optimizer = parts.build_optimizer([{"params": list(weights.values())}], config)
    torch.manual_seed(7)
    total, _ = parts.loss(config)(reference(batch.dense, batch.sparse), batch.labels)
    total.backward()
    gradients = {name: weight.grad.clone() for name, weight in weights.items()}
    optimizer.step()
    return Step(prepared, before, trained, gradients, {name: weight.detach().clone() for name, weight in weights.items()})


def test_tables_are_one_embedding_bag_collection_per_spec(feed_config: Any) -> None:
    """One table per sparse feature, named after it, of its cardinality (plus the reserved unknown
    row) and width: a single id is its row (sum), a bag is averaged (mean)."""
    configs = table_configs(feed_config)
    assert [(c.name, c.feature_names, c.num_embeddings, c.embedding_dim) for c in configs] == [
        (f.name, [f.name], f.cardinality + 1, f.embedding_dim) for f in feed_config.sparse_features
    ]
    pooling = [PoolingType.MEAN if f.multi_valued else PoolingType.SUM for f in feed_config.sparse_features]
    assert [c.pooling for c in configs] == pooling and PoolingType.MEAN in pooling and PoolingType.SUM in pooling


@pytest.mark.parametrize("embedding_optimizer", ["adagrad", "rowwise_adagrad", "sgd", "dense"])
def test_every_embedding_optimizer_steps_like_plain_torch_on_the_rows_looked_up(parts: Any, feed_config: Any, embedding_optimizer: str) -> None:
    """A fused optimizer (FBGEMM's kernel, run inside backward) updates exactly the rows the batch
    looked up, as torch's optimizer of the same kind does on the whole table; with "dense" the
    tables are data_parallel and the dense optimizer (AdamW) trains them. A short run learns."""
    config = replace(feed_config, embedding_optimizer=embedding_optimizer)
    step = one_step(parts, config)
    prepared = step.prepared
    fused = embedding_optimizer != "dense"
    assert (prepared.optimizer.fused is not None, prepared.optimizer.replicated) == (fused, None)
    assert {table.sharding_type for table in prepared.tables} == ({"table_wise"} if fused else {"data_parallel"})
    assert {table.compute_kernel for table in prepared.tables} == ({"fused"} if fused else {"dense"})
    if fused:
        assert prepared.optimizer.learning_rates()[-1] == pytest.approx(EMBEDDING_LEARNING_RATES[embedding_optimizer])
    batch = random_batch(config, config.batch_size, seed=1)
    for name, table in step.trained.items():
        moved = torch.nonzero((table != step.before[name]).any(dim=1)).flatten()
        assert set(moved.tolist()) <= set(batch.sparse[name].values().tolist()), name  # only rows looked up
        assert len(moved) > 0, name
    step.assert_matches()

    losses = train(parts, config, steps=32).fit.losses
    assert all(np.isfinite(losses)) and np.mean(losses[-4:]) < np.mean(losses[:4])


@pytest.mark.parametrize("embedding_optimizer", ["adagrad", "dense"])
def test_the_dense_optimizer_holds_every_parameter_but_the_fused_tables(package: Any, config: Any, embedding_optimizer: str) -> None:
    """Every parameter of the model and of the loss (app_install's has uncertainty weights) is
    the dense optimizer's, but the tables when a fused optimizer trains them."""
    prepared = prepare(package.train.PARTS, replace(config, embedding_optimizer=embedding_optimizer), start("cpu"))
    tables = table_parameter_names(prepared.model)
    dense = {id(p) for group in prepared.optimizer.dense.param_groups for p in group["params"]}
    owned = {id(p): name for name, p in [*prepared.model.named_parameters(), *prepared.loss_fn.named_parameters()]}
    expected = {pid for pid, name in owned.items() if embedding_optimizer == "dense" or name not in tables}
    assert dense == expected and len(dense) > 0


def test_a_reduced_learning_rate_reaches_the_fused_kernels(parts: Any, feed_config: Any) -> None:
    """FBGEMM's kernels read the learning rate when the forward pass builds the backward: a
    rate reduced on a plateau must be the one they use (SGD: half the rate, half the step)."""
    config = replace(feed_config, embedding_optimizer="sgd")
    batch = random_batch(config, config.batch_size, seed=1)

    def moves(factor: float) -> dict[str, torch.Tensor]:
        model = build_model(parts, config)
        before = tables_of(model.state_dict(), model)
        prepared = prepare(parts, config, start("cpu"), model=model)
        prepared.optimizer.scale_learning_rates(factor)
        torch.manual_seed(7)
        train_step(prepared, parts, None, batch, config)
        return {name: table - before[name] for name, table in tables_of(unsharded_state_dict(prepared.model), model).items()}

    full, half = moves(1.0), moves(0.5)
    for name in full:  # steps of about 1e-5 against weights' float32 rounding of about 5e-10
        assert float(half[name].norm() / full[name].norm()) == pytest.approx(0.5, rel=1e-4), name


def test_a_table_fbgemm_cannot_hold_is_data_parallel_with_a_note(parts: Any, feed_config: Any, tmp_path: Any) -> None:
    """FBGEMM's CPU kernels need widths divisible by 4: a table of width 10 is data_parallel,
    trained by an ordinary optimizer of the embedding optimizer's kind (its looked-up rows only),
    the plan says why, and its optimizer's state survives a resume."""
    features = tuple(replace(f, embedding_dim=10) if f.name == "advertiser_id" else f for f in feed_config.sparse_features)
    config = replace(feed_config, sparse_features=features)
    step = one_step(parts, config)
    prepared = step.prepared
    by_name = {table.table: table for table in prepared.tables}
    assert (by_name["advertiser_id"].sharding_type, by_name["advertiser_id"].compute_kernel) == ("data_parallel", "dense")
    assert by_name["advertiser_id"].note == "width 10 is not a multiple of 4 (FBGEMM's CPU kernels)"
    assert {t.sharding_type for name, t in by_name.items() if name != "advertiser_id"} == {"table_wise"}
    assert type(prepared.optimizer.replicated) is torch.optim.Adagrad
    [replicated] = [p for group in prepared.optimizer.replicated.param_groups for p in group["params"]]
    assert replicated.shape == (801, 10)  # 800 ids and the unknown row
    step.assert_matches()
    assert "note: advertiser_id is data_parallel: width 10 is not a multiple of 4" in format_placements(prepared.tables, 1)

    resumable = replace(config, eval_every=4, early_stopping_patience=100)
    data = RunData.synthetic(resumable)
    straight = train(parts, resumable, steps=12, data=data, run_dir=tmp_path / "straight")
    calls: list[int] = []

    def crash_at_step_6(model: torch.nn.Module, config_arg: Any) -> None:
        calls.append(1)
        if len(calls) == 6:  # after the checkpoint of step 4
            raise Interrupted()

    with pytest.raises(Interrupted):
        train(replace(parts, after_backward=crash_at_step_6), resumable, steps=12, data=data, run_dir=tmp_path / "split")
    resumed = train(parts, resumable, steps=12, data=data, run_dir=tmp_path / "split", resume=True)
    assert resumed.fit.losses == straight.fit.losses and resumed.metrics == straight.metrics


def test_the_plan_shows_every_table_and_the_bytes_held(parts: Any, feed_config: Any) -> None:
    prepared = prepare(parts, feed_config, start("cpu"))
    held = sum(4 * f.num_embeddings * f.embedding_dim for f in feed_config.sparse_features)
    assert local_table_bytes(prepared.model) == held == sum(table.rank_bytes(0) for table in prepared.tables)
    lines = format_placements(prepared.tables, 1).splitlines()
    assert lines[0].split() == ["table", "rows", "x", "dim", "sharding", "kernel", "rank", "0", "MB"]
    for feature, line in zip(feed_config.sparse_features, lines[1:]):
        assert line.split()[:5] == [feature.name, f"{feature.num_embeddings:,}", "x", str(feature.embedding_dim), "table_wise"]
    assert lines[-1].split() == ["all", "tables", f"{held / 2**20:.2f}"]


def test_every_sharding_strategy_trains_the_same_model_in_one_process(parts: Any, feed_config: Any) -> None:
    """In one process every strategy holds every table whole on the one rank; they differ only in
    kernels (data_parallel: dense gradients and torch's Adagrad), so they train alike."""
    data = RunData.synthetic(feed_config)
    runs = {strategy: train(parts, feed_config, steps=16, data=data, sharding=Sharding(strategy)) for strategy in STRATEGIES}
    for strategy, run in runs.items():
        assert {t.sharding_type for t in run.tables} == {"table_wise" if strategy == "auto" else strategy}, strategy
        assert all(shards == ((0, t.rows, t.dim),) for t in run.tables for shards in [t.shards]), strategy
        np.testing.assert_allclose(run.fit.losses, runs["auto"].fit.losses, rtol=1e-5, err_msg=strategy)


def test_sharding_options_are_checked() -> None:
    with pytest.raises(ValueError, match="--sharding diagonal: use one of auto, table_wise"):
        Sharding("diagonal")
    with pytest.raises(ValueError, match="--max-rank-memory 0: give a positive number of bytes"):
        Sharding("auto", 0)
