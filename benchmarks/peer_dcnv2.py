"""Peer benchmark: an SMT-generated DCNv2 model against FuxiCTR's DCNv2, in one run.

    pip install -e '.[bench]'          # torch==2.13.0 (CPU), fuxictr==2.3.10 and its deps
    python benchmarks/peer_dcnv2.py [--steps 800] [--batch-size 512] [--repeats 5] [--threads 1]
                                    [--json out.json] [--profile]

What is compared. "Ours" is the model SMT renders from BENCH_SPEC below with the real
pipeline (generator.testing.build_model: Copier, the dcn_v2 technique, black), trained by its
own generated train.py: RankingModel, MultiTaskLoss, build_optimizer (AdamW for the dense
parameters at learning_rate, Adagrad with sparse gradients for the embedding tables at
embedding_learning_rate) and fit, without a validation split (so no early stopping).
"Peer" is FuxiCTR's DCNv2 (benchmarks/fuxictr_dcnv2.py: model_zoo/DCNv2/src/DCNv2.py of the
FuxiCTR repository, built from the fuxictr package's own layers and BaseModel), trained by
BaseModel.train_step with FuxiCTR's defaults: one Adam over every parameter at the same
learning_rate, BCE on the sigmoid output, clip_grad_norm_ at max_gradient_norm=10 (the value
BaseModel.fit passes). Each side keeps its own optimizer and initialisation.

Matched: the same synthetic data (one objective, click; F single-valued sparse features with
power-law ids; no dense features, since FuxiCTR embeds numeric features differently), the
same architecture (embeddings of width D per feature, concatenated to d = F * D; 3 full-rank
cross layers x_{l+1} = x0 * (W x_l + b) + x_l; then Linear+ReLU layers 128, 64, 32 and a
Linear to one logit: ours' OverArch (128, 64) and task tower (32), the peer's "stacked"
structure with stacked_dnn_hidden_units [128, 64, 32]), the same learning rate, batch size,
number of steps, batch order, seed and torch threads.

How it is timed. Data generation and model construction are outside the timed region. The
training time is wall clock around the whole loop of `steps` optimizer steps, and both sides
pay for the same data pipeline inside it: ours' fit draws each epoch's shuffled Batches from
data.Examples.batches (seed = config.seed + epoch); the peer iterates the very same batches
and re-keys each Batch into FuxiCTR's input dict (feature name -> ids, label -> labels), a
dict of F + 1 existing tensors, no copy. So both see the same examples in the same order.
Training examples/s = steps * batch size / seconds. Inference: eval mode, torch.no_grad,
one forward over every test batch, pre-built for both sides before the clock starts (our
Batch objects; the same tensors re-keyed for the peer); after both sides of a round are
trained, each test batch is timed --inference-passes times per side, the sides taking turns
batch by batch, and each side's time is the sum of its fastest time per batch. A warm-up of 20 steps per side runs
first; then each of --repeats rounds trains a fresh model of each side (alternating which
goes first). Examples/s are medians over rounds; the ratios ours/peer are medians of the
rounds' own ratios (paired, so that load from other processes, drifting between rounds,
mostly cancels).

Quality. Both sides are scored by the same functions, our generated metrics.py's logloss
and auc, on logits of the same test split (the peer's logit is the output of its final
Linear layer, read with a forward hook, so no sigmoid/logit round trip). The Bayes-optimal
test logloss (the true probabilities scored on the same labels) is printed as the floor.

Targets: training throughput ours/peer >= 1.0, and test logloss no more than 0.5 % (relative)
above the peer's (issue 5, item 5); inference throughput ours/peer >= 1.0 (issue 9, item 7).
--profile adds torch.profiler's top operators of one training run of each side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from generator.testing import build_model  # noqa: E402

OBJECTIVE = "click"
LABEL = f"label_{OBJECTIVE}"
EMBEDDING_DIM = 16
NUM_CROSS_LAYERS = 3
OVER_ARCH_LAYERS = [128, 64]
TOWER_LAYERS = [32]
LEARNING_RATE = 0.003  # the template's default
TRAINING_TARGET = 1.5  # ours/peer training examples/s at least this (issue 20, item 5)
INFERENCE_TARGET = 1.2  # ours/peer inference examples/s at least this (issue 20, item 5)
LOGLOSS_TARGET = 0.005  # ours' test logloss at most this much (relative) above the peer's

# Single-valued sparse features only; the two smallest interact in the synthetic world.
BENCH_SPEC: dict[str, Any] = {
    "model_name": "dcnv2_bench",
    "description": "Peer benchmark model: DCNv2 over single-valued sparse features.",
    "objectives": [{"name": OBJECTIVE, "weight": 1.0}],
    "sparse_features": [
        {"name": "user_id", "cardinality": 20000, "embedding_dim": EMBEDDING_DIM, "multi_valued": False},
        {"name": "ad_id", "cardinality": 5000, "embedding_dim": EMBEDDING_DIM, "multi_valued": False},
        {"name": "advertiser_id", "cardinality": 800, "embedding_dim": EMBEDDING_DIM, "multi_valued": False},
        {"name": "publisher_id", "cardinality": 300, "embedding_dim": EMBEDDING_DIM, "multi_valued": False},
        {"name": "hour_of_day", "cardinality": 24, "embedding_dim": EMBEDDING_DIM, "multi_valued": False},
        {"name": "device_type", "cardinality": 8, "embedding_dim": EMBEDDING_DIM, "multi_valued": False},
    ],
    "dense_features": [],
    "serving": {"max_params": 2000000, "max_mflops_per_example": 5.0},
    "techniques": [{"name": "dcn_v2", "params": {"num_cross_layers": NUM_CROSS_LAYERS, "low_rank": 0}}],
    "hyperparameters": {
        "embedding_dim": EMBEDDING_DIM,
        "over_arch_layers": OVER_ARCH_LAYERS,
        "tower_layers": TOWER_LAYERS,
        "dropout": 0.0,
        "learning_rate": LEARNING_RATE,
    },
}


# ---------------------------------------------------------------------------------------
# Ours: the only code that calls the generated package (data, train and metrics modules).
# Port these functions when its API changes; everything below only uses their results.


def ours_examples(pkg: ModuleType, config: Any, num_examples: int, seed: int) -> Any:
    """A split of synthetic examples (the runtime's data.Examples), with .table and .optimal."""
    from smt_runtime.data import Examples

    return Examples.synthetic(config, num_examples, seed)


def ours_batches(pkg: ModuleType, config: Any, examples: Any, shuffle: bool, seed: int) -> Iterator[Any]:
    """The Batches of examples exactly as our fit iterates them in an epoch (seed = config.seed + epoch)."""
    return examples.batches(config, config.batch_size, shuffle=shuffle, seed=seed)


def train_ours(
    pkg: ModuleType, config: Any, train_examples: Any, test_examples: Any | None, steps: int
) -> tuple[float, dict[str, float] | None, torch.nn.Module]:
    """Train a fresh generated model for steps steps the way its training runs do (the runtime's
    prepare: DistributedModelParallel in one process, FBGEMM's fused embedding optimizer; then its
    fit, with the package's loss, optimizers and schedule), with no validation split, so no
    early stopping: the peer has none either.

    Returns:
        (training examples per second: wall clock around fit, test metrics of the objective
        {logloss, ne, auc, ...} from the runtime's evaluate (None without test_examples), the
        trained model as served: unsharded, with serve.serving_model's lookups, the model
        `--export` writes).
    """
    from smt_runtime import distributed, serve, training

    runtime = distributed.start("cpu")
    parts = pkg.train.PARTS
    prepared = training.prepare(parts, config, runtime)
    training.init_output_bias(prepared.model, train_examples.label_rates(config), train_examples, config, runtime)
    torch.manual_seed(config.seed)
    scheduler = parts.build_lr_schedule(prepared.optimizer.dense, config, steps)
    start = time.perf_counter()
    fitted = training.fit(prepared, parts, train_examples, config, steps, scheduler, runtime=runtime)
    seconds = time.perf_counter() - start
    assert fitted.steps == steps, f"fit did {fitted.steps} of {steps} steps"
    metrics = None if test_examples is None else training.evaluate(prepared.model, test_examples, config, runtime)[OBJECTIVE]
    served = serve.serving_model(training.unsharded_model(parts, config, prepared.model, runtime))
    return steps * config.batch_size / seconds, metrics, served


@torch.no_grad()
def ours_forward(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """Our model's logits (B X T) of one Batch."""
    return model(batch.dense, batch.sparse)


def score(pkg: ModuleType, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Test logloss and AUC of 1-D logits by the runtime's metric functions (used for both sides)."""
    from smt_runtime import metrics

    return {"logloss": metrics.logloss(logits, labels), "auc": metrics.auc(logits, labels)}


# ---------------------------------------------------------------------------------------
# The peer: FuxiCTR's DCNv2 and FuxiCTR's train_step.


def peer_inputs(batch: Any) -> dict[str, torch.Tensor]:
    """FuxiCTR's batch dict from one of our Batches: every feature here is single-valued, so the
    KeyedJaggedTensor's values are one id per row, feature after feature (views, no copy)."""
    sparse = batch.sparse
    inputs = dict(zip(sparse.keys(), sparse.values().view(len(sparse.keys()), -1)))
    inputs[LABEL] = batch.labels[:, 0]
    return inputs


def build_peer(config: Any, workdir: Path) -> torch.nn.Module:
    """FuxiCTR's DCNv2 in the "stacked" structure matching ours, seeded like FuxiCTR does."""
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr_dcnv2 import DCNv2, feature_map_for

    feature_map = feature_map_for(
        workdir, {f.name: f.cardinality for f in config.sparse_features}, LABEL, config.embedding_dim
    )
    seed_everything(config.seed)
    model = DCNv2(
        feature_map,
        model_structure="stacked",
        learning_rate=config.learning_rate,
        embedding_dim=config.embedding_dim,
        stacked_dnn_hidden_units=[*config.over_arch_layers, *config.tower_layers],
        num_cross_layers=config.dcn_v2.num_cross_layers,
        net_dropout=config.dropout,
        batch_norm=False,
        optimizer="adam",
        loss="binary_crossentropy",
        verbose=0,
        model_root=str(workdir),
        metrics=["logloss", "AUC"],
    )
    model._max_gradient_norm = 10.0  # BaseModel.fit's default, which train_step reads
    return model


def train_peer(
    pkg: ModuleType, config: Any, train_examples: Any, steps: int, workdir: Path
) -> tuple[float, Any]:
    """Train a fresh peer model for steps steps over the batches our fit sees, in the same
    order; the clock runs around the whole loop, as around our fit."""
    model = build_peer(config, workdir)
    model.train()
    done, epoch = 0, 0
    start = time.perf_counter()
    while done < steps:
        for batch in ours_batches(pkg, config, train_examples, shuffle=True, seed=config.seed + epoch):
            if done == steps:
                break
            loss = model.train_step(peer_inputs(batch))
            loss.item()  # as BaseModel.train_epoch does every step
            done += 1
        epoch += 1
    seconds = time.perf_counter() - start
    return steps * config.batch_size / seconds, model


@torch.no_grad()
def peer_logits(model: Any, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """The peer's logits (its final Linear's output, before the sigmoid) over batches."""
    model.eval()
    outputs: list[torch.Tensor] = []
    hook = model.fc.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        for inputs in batches:
            model(inputs)
    finally:
        hook.remove()
    return torch.cat(outputs)[:, 0].double().numpy()


# ---------------------------------------------------------------------------------------
# Running both


@torch.no_grad()
def inference_rates(forwards: dict[str, Any], batches: dict[str, list[Any]], rows: int, passes: int) -> dict[str, float]:
    """Examples per second of each side's forward over every test batch (models in eval mode).

    Each test batch is timed `passes` times per side, the sides taking turns batch by batch;
    a side's time is the sum over batches of its fastest time for each. One forward lasts
    about a millisecond, so on a shared machine a single timing mostly measures what else
    ran meanwhile; the fastest of several (as timeit does), taken in turns so that both
    sides get the same chances, measures the model.
    """
    sides = list(forwards)
    best = {side: [math.inf] * len(batches[side]) for side in sides}
    for _ in range(passes):
        for index in range(len(batches[sides[0]])):
            for side in sides:
                start = time.perf_counter()
                forwards[side](batches[side][index])
                best[side][index] = min(best[side][index], time.perf_counter() - start)
    return {side: rows / sum(times) for side, times in best.items()}


def profile_training(train_once: Any) -> str:
    """torch.profiler's operators by self CPU time over one call of train_once."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_once()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def progress(message: str) -> None:
    print(f"[peer_dcnv2 {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import fuxictr

    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "fuxictr": fuxictr.__version__,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import fuxictr  # noqa: F401
    except ImportError:
        sys.exit("peer_dcnv2: fuxictr is not installed; run: pip install -e '.[bench]'")
    workdir = Path(tempfile.mkdtemp(prefix="peer_dcnv2_"))
    progress("rendering the generated model (dcn_v2) from BENCH_SPEC")
    spec = {**BENCH_SPEC, "hyperparameters": {**BENCH_SPEC["hyperparameters"], "batch_size": args.batch_size}}
    spec["hyperparameters"]["seed"] = args.seed
    pkg = build_model(spec, workdir / "ours")
    config = pkg.config.ModelConfig()
    assert dataclasses.asdict(config)["dcn_v2"] == {"num_cross_layers": NUM_CROSS_LAYERS, "low_rank": 0}

    progress(f"generating {args.train_examples:,} training and {args.test_examples:,} test examples")
    train_examples = ours_examples(pkg, config, args.train_examples, seed=args.seed)
    test_examples = ours_examples(pkg, config, args.test_examples, seed=args.seed + 1)
    optimal = test_examples.optimal[OBJECTIVE]
    test_batches = list(ours_batches(pkg, config, test_examples, shuffle=False, seed=0))
    peer_test_batches = [peer_inputs(batch) for batch in test_batches]
    test_labels = torch.cat([batch.labels[:, 0] for batch in test_batches]).double().numpy()

    # Same architecture, so the same parameter shapes (ours' loss has no parameters here), apart
    # from ours' output_bias: one scalar per objective added to the tower's logit, which
    # train.init_output_bias starts at the label rate's log-odds (the peer's starts at 0).
    from smt_runtime.training import build_model as build_ours

    ours_shapes = sorted(
        tuple(p.shape) for name, p in build_ours(pkg.train.PARTS, config).named_parameters() if name != "output_bias"
    )
    peer_shapes = sorted(tuple(p.shape) for p in build_peer(config, workdir).parameters())
    assert ours_shapes == peer_shapes, f"architectures differ: ours {ours_shapes}, peer {peer_shapes}"
    parameters = sum(int(np.prod(shape)) for shape in ours_shapes)

    warmup = min(args.steps, 20)
    progress(f"warm-up: {warmup} steps of each side (not timed)")
    train_ours(pkg, config, train_examples, None, warmup)
    train_peer(pkg, config, train_examples, warmup, workdir)

    rounds: list[dict[str, Any]] = []
    for index in range(args.repeats):
        result: dict[str, Any] = {}
        models: dict[str, Any] = {}
        order = ("ours", "peer") if index % 2 == 0 else ("peer", "ours")
        for side in order:
            progress(f"round {index + 1}/{args.repeats}: training {side} for {args.steps} steps")
            if side == "ours":
                rate, metrics, model = train_ours(pkg, config, train_examples, test_examples, args.steps)
                model.eval()
                logits = torch.cat([ours_forward(model, b)[:, 0] for b in test_batches]).double().numpy()
                scored = score(pkg, logits, test_labels)
                # Our evaluate and the shared scoring must agree on the same predictions.
                assert abs(scored["logloss"] - metrics["logloss"]) < 1e-9, (scored, metrics)
                models[side] = lambda b, model=model: ours_forward(model, b)
            else:
                rate, model = train_peer(pkg, config, train_examples, args.steps, workdir)
                scored = score(pkg, peer_logits(model, peer_test_batches), test_labels)
                models[side] = model  # peer_logits left it in eval mode
            result[side] = {"train_examples_per_s": rate, **scored}
        rates = inference_rates(
            {side: models[side] for side in order},
            {"ours": test_batches, "peer": peer_test_batches},
            test_examples.num_rows,
            args.inference_passes,
        )
        for side, rate in rates.items():
            result[side]["infer_examples_per_s"] = rate
        progress(
            "  ours {:,.0f} ex/s, peer {:,.0f} ex/s; logloss ours {:.5f}, peer {:.5f}".format(
                result["ours"]["train_examples_per_s"],
                result["peer"]["train_examples_per_s"],
                result["ours"]["logloss"],
                result["peer"]["logloss"],
            )
        )
        rounds.append(result)

    def ratio(result: dict[str, Any], key: str) -> float:
        return result["ours"][key] / result["peer"][key]

    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in rounds)

    summary = {side: {key: median(side, key) for key in rounds[0][side]} for side in ("ours", "peer")}
    profiles = {}
    if args.profile:
        steps = min(args.steps, 200)
        progress(f"profiling {steps} training steps of each side")
        profiles["ours"] = profile_training(lambda: train_ours(pkg, config, train_examples, None, steps))
        profiles["peer"] = profile_training(lambda: train_peer(pkg, config, train_examples, steps, workdir))
    # Ratios are paired: the median over rounds of ours / peer within a round, so that load
    # from other processes, which drifts between rounds, mostly cancels.
    train_ratio = statistics.median(ratio(r, "train_examples_per_s") for r in rounds)
    infer_ratio = statistics.median(ratio(r, "infer_examples_per_s") for r in rounds)
    logloss_gap = summary["ours"]["logloss"] / summary["peer"]["logloss"] - 1.0
    return {
        "command": " ".join(shlex.quote(part) for part in ["python", *sys.argv]),
        "machine": machine(),
        "settings": {
            "steps": args.steps,
            "batch_size": config.batch_size,
            "train_examples": args.train_examples,
            "test_examples": args.test_examples,
            "seed": args.seed,
            "repeats": args.repeats,
            "learning_rate": config.learning_rate,
            "ours_embedding_learning_rate": pkg.train.build_embedding_optimizer(config).arguments()["lr"],
            "threads": torch.get_num_threads(),
            "embedding_dim": config.embedding_dim,
            "sparse_features": [f.name for f in config.sparse_features],
            "num_cross_layers": config.dcn_v2.num_cross_layers,
            "hidden_units": [*config.over_arch_layers, *config.tower_layers],
            "parameters": parameters,
        },
        "ours": summary["ours"],
        "peer": summary["peer"],
        "train_ratio": train_ratio,
        "infer_ratio": infer_ratio,
        "logloss_relative_gap": logloss_gap,
        "bayes_logloss": optimal["bayes_logloss"],
        "constant_logloss": optimal["constant_logloss"],
        "train_target_met": train_ratio >= TRAINING_TARGET,
        "infer_target_met": infer_ratio >= INFERENCE_TARGET,
        "logloss_target_met": logloss_gap <= LOGLOSS_TARGET,
        "rounds": rounds,
        "profiles": profiles,
    }


def format_report(report: dict[str, Any]) -> str:
    ours, peer, settings, host = report["ours"], report["peer"], report["settings"], report["machine"]
    verdict = {True: "PASS", False: "MISS"}
    lines = [
        "SMT DCNv2 (ours) vs FuxiCTR DCNv2 (peer), median of {repeats} rounds".format(**settings),
        "  data: {train_examples:,} train / {test_examples:,} test synthetic examples, {n} single-valued"
        " sparse features, objective click; {parameters:,} parameters on each side (ours: + 1 output bias)".format(
            n=len(settings["sparse_features"]), **settings
        ),
        "  model: D={embedding_dim}, {num_cross_layers} full-rank cross layers, MLP {hidden_units}, 1 logit;"
        " batch {batch_size}, {steps} steps, lr {learning_rate} (ours' embeddings: Adagrad at"
        " {ours_embedding_learning_rate}), seed {seed}, {threads} threads".format(**settings),
        "",
        f"{'':<26}{'ours':>12}{'peer':>12}{'ours/peer':>12}",
        f"{'train examples/s':<26}{ours['train_examples_per_s']:>12,.0f}{peer['train_examples_per_s']:>12,.0f}"
        f"{report['train_ratio']:>12.3f}",
        f"{'inference examples/s':<26}{ours['infer_examples_per_s']:>12,.0f}{peer['infer_examples_per_s']:>12,.0f}"
        f"{report['infer_ratio']:>12.3f}",
        f"{'test logloss':<26}{ours['logloss']:>12.5f}{peer['logloss']:>12.5f}"
        f"{ours['logloss'] / peer['logloss']:>12.4f}",
        f"{'test AUC':<26}{ours['auc']:>12.5f}{peer['auc']:>12.5f}{ours['auc'] / peer['auc']:>12.4f}",
        f"{'Bayes-optimal logloss':<26}{report['bayes_logloss']:>12.5f}   (constant prediction:"
        f" {report['constant_logloss']:.5f})",
        "",
        f"training throughput ours/peer {report['train_ratio']:.3f} (target >= {TRAINING_TARGET:.1f}):"
        f" {verdict[report['train_target_met']]}",
        f"inference throughput ours/peer {report['infer_ratio']:.3f} (target >= {INFERENCE_TARGET:.1f}):"
        f" {verdict[report['infer_target_met']]}",
        f"test logloss ours vs peer {report['logloss_relative_gap']:+.2%} (target <= +{LOGLOSS_TARGET:.1%}):"
        f" {verdict[report['logloss_target_met']]}",
        "",
        "examples/s: medians over rounds; ours/peer: medians of the rounds' own ratios (paired)",
        "training ratio ours/peer per round: "
        + " ".join(
            f"{r['ours']['train_examples_per_s'] / r['peer']['train_examples_per_s']:.3f}"
            for r in report["rounds"]
        ),
        "inference ratio ours/peer per round: "
        + " ".join(
            f"{r['ours']['infer_examples_per_s'] / r['peer']['infer_examples_per_s']:.3f}"
            for r in report["rounds"]
        ),
        "machine: {platform}, {cpu}, {cpu_count} CPUs; Python {python}, torch {torch} ({torch_threads}"
        " threads), fuxictr {fuxictr}".format(**host),
        f"command: {report['command']}",
    ]
    for side, table in report["profiles"].items():
        lines += ["", f"torch.profiler, {side}, one training run:", table]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="optimizer steps per training run (800)")
    parser.add_argument("--batch-size", type=int, default=512, help="examples per step, both sides (512)")
    parser.add_argument(
        "--train-examples",
        type=int,
        default=409_600,
        help="training rows (409,600: 800 steps of 512 = 1 epoch)",
    )
    parser.add_argument("--test-examples", type=int, default=50_000, help="test table rows (50,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights and shuffling (0)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of both sides; medians reported (5)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads for both sides (default: torch's, one per core); 1 is far less noisy"
        " on a machine whose other cores are busy",
    )
    parser.add_argument(
        "--inference-passes",
        type=int,
        default=5,
        help="timings of each test batch per side and round, in turns; the fastest counts (5)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print torch.profiler's top operators of one run of each side",
    )
    args = parser.parse_args(argv)
    if (
        min(
            args.steps,
            args.batch_size,
            args.train_examples,
            args.test_examples,
            args.repeats,
            args.threads or 1,
        )
        < 1
    ):
        parser.error(
            "--steps, --batch-size, --train-examples, --test-examples, --repeats and --threads must be >= 1"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
