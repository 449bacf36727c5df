"""Quality benchmark: the plain template, each technique and FuxiCTR's DNN against the Bayes optimum.

    pip install -e '.[bench]'
    python benchmarks/quality.py [--quick] [--worlds crossed,...] [--techniques all|none|a,b]
                                 [--seed 0] [--threads 1] [--json out.json]

The data. Each world is a synthetic ranking problem written as Parquet train/valid/test
files by this script (not by the generated package, so the benchmark does not move when the
template's own synthetic data changes). Five single-valued sparse features with power-law
id frequencies and two heavy-tailed dense counters; every objective's logit is

    intercept_t + sum_f effect_t,f[id_f] + sum_j w_t,j * log1p(counter_j)
                + cross * (<u_t[user], v_t[category]> + c_t[hour, device])

where the cross terms are feature crosses no sum of per-feature effects can express (a
low-rank user x category term and a full hour x device table). Objectives share part of
every effect (correlation `shared`); intercepts are fitted to the target positive rates.
Labels are Bernoulli draws of the true probabilities, so the Bayes-optimal logloss of a
split is known exactly: the true probabilities scored on that split's labels.

Ours. For the plain template and for each technique alone (default params; a technique
whose preconditions the world does not meet is reported as n/a), a model is rendered from
the world's spec with the real pipeline and trained through its own command line,
`python -m MODEL train --train --valid --test` with its training defaults, validating once
per epoch with early stopping (up to --max-epochs epochs: `--epochs` where the generated
CLI has it, else the equivalent `--steps`); the test logloss is read from metrics.json.

Peer. FuxiCTR's DNN (the model zoo's DNN: FeatureEmbedding, then MLP_Block to one sigmoid
output, built here from the fuxictr package's layers and BaseModel) with the training
settings of FuxiCTR's DNN_default config (Adam at 1e-3, early stopping with patience 2 on
validation AUC - logloss every epoch, learning rate x0.1 on a plateau, gradient norm clipped
at 10, best weights restored) plus an L2 embedding regularizer (--peer-embedding-regularizer).
The dataset-dependent settings are matched to ours: the same embedding widths, MLP widths
(ours' over arch and tower), batch size and epoch budget. FuxiCTR's DNN is single-task, so in
a world with several objectives one peer is trained per objective.

Printed: per world and objective, the test logloss of each model and its gap to the
Bayes-optimal logloss (absolute, and relative to the constant prediction's gap), and
whether the plain template is at least as good as FuxiCTR's DNN.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from generator.engine.errors import SmtError  # noqa: E402
from generator.render import render_model  # noqa: E402
from generator.sync import write_tree  # noqa: E402

# (name, cardinality, embedding_dim); all single-valued.
SPARSE_FEATURES = [("user", 20000, 16), ("item", 5000, 16), ("category", 200, 8), ("hour", 24, 4), ("device", 8, 4)]
DENSE_FEATURES = ["price", "item_age_days"]
ZIPF_EXPONENT = 1.1
EFFECT_STD = 1.6  # logit std of all per-id effects together
DENSE_STD = 0.5  # logit std of all dense effects together
CROSS_RANK = 4


@dataclass(frozen=True)
class World:
    """One synthetic problem: its objectives (name, positive rate), cross strength and sharing."""

    name: str
    objectives: tuple[tuple[str, float], ...]
    cross: float  # logit std of each of the two cross terms
    shared: float = 0.6  # share of every effect's variance common to all objectives

    def describe(self) -> str:
        rates = ", ".join(f"{name} {rate:.0%}" for name, rate in self.objectives)
        return f"{self.name}: objectives {rates}; cross std {self.cross}; shared {self.shared}"


WORLDS = {
    "additive": World("additive", (("click", 0.2),), cross=0.0),
    "crossed": World("crossed", (("click", 0.2),), cross=1.0),
    "crossed_correlated": World("crossed_correlated", (("click", 0.2), ("convert", 0.05)), cross=1.0),
}


# ---------------------------------------------------------------------------------------
# The worlds' data


class TrueModel:
    """The hidden parameters of a world: per-id effects, crosses, dense weights, intercepts."""

    def __init__(self, world: World, seed: int) -> None:
        rng = np.random.default_rng([seed, 7])
        self.world = world
        num_tasks = len(world.objectives)
        per_feature = EFFECT_STD / math.sqrt(len(SPARSE_FEATURES))

        def mixed(shape: tuple[int, ...], std: float) -> np.ndarray:
            """T independent draws sharing a common part: shape T X shape."""
            common = rng.normal(0, std, shape)
            own = rng.normal(0, std, (num_tasks, *shape))
            return math.sqrt(world.shared) * common + math.sqrt(1 - world.shared) * own

        self.popularity = {}
        self.effects = {}
        for name, cardinality, _ in SPARSE_FEATURES:
            ranks = rng.permutation(cardinality) + 1
            weights = ranks.astype(float) ** -ZIPF_EXPONENT
            self.popularity[name] = weights / weights.sum()
            self.effects[name] = mixed((cardinality,), per_feature)
        cardinality = dict((name, card) for name, card, _ in SPARSE_FEATURES)
        factor_std = math.sqrt(world.cross) / CROSS_RANK**0.25  # <u, v> has std world.cross
        self.user_factors = mixed((cardinality["user"], CROSS_RANK), factor_std)
        self.category_factors = mixed((cardinality["category"], CROSS_RANK), factor_std)
        self.hour_device = mixed((cardinality["hour"], cardinality["device"]), world.cross)
        self.dense_weights = mixed((len(DENSE_FEATURES),), DENSE_STD / math.sqrt(len(DENSE_FEATURES)))
        self.intercepts = np.zeros(num_tasks)
        features, dense = self.draw_features(50000, rng)
        logits = self.logits_without_intercept(features, dense)
        for task, (_, rate) in enumerate(world.objectives):
            self.intercepts[task] = _intercept_for_rate(logits[:, task], rate)

    def draw_features(self, rows: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        features = {
            name: rng.choice(card, size=rows, p=self.popularity[name]) for name, card, _ in SPARSE_FEATURES
        }
        dense = rng.lognormal(mean=2.0, sigma=1.0, size=(rows, len(DENSE_FEATURES)))
        return features, dense

    def logits_without_intercept(self, features: dict[str, np.ndarray], dense: np.ndarray) -> np.ndarray:
        rows = len(features["user"])
        z = np.log1p(dense)
        z = z - 2.0  # about standardised: log1p of a lognormal(2, 1) counter
        out = np.zeros((rows, len(self.world.objectives)))
        for task in range(out.shape[1]):
            for name, _, _ in SPARSE_FEATURES:
                out[:, task] += self.effects[name][task][features[name]]
            out[:, task] += z @ self.dense_weights[task]
            if self.world.cross:
                u = self.user_factors[task][features["user"]]
                v = self.category_factors[task][features["category"]]
                out[:, task] += (u * v).sum(axis=1)
                out[:, task] += self.hour_device[task][features["hour"], features["device"]]
        return out

    def sample(self, rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
        """rows labelled examples (a Parquet-ready table) and their true probabilities (rows X T)."""
        rng = np.random.default_rng([seed, 11])
        features, dense = self.draw_features(rows, rng)
        probabilities = 1.0 / (1.0 + np.exp(-(self.logits_without_intercept(features, dense) + self.intercepts)))
        labels = (rng.random(probabilities.shape) < probabilities).astype(np.float32)
        columns: dict[str, Any] = {name: pa.array(features[name].astype(np.int64)) for name, _, _ in SPARSE_FEATURES}
        for j, name in enumerate(DENSE_FEATURES):
            columns[name] = pa.array(dense[:, j].astype(np.float32))
        for task, (name, _) in enumerate(self.world.objectives):
            columns[f"label_{name}"] = pa.array(labels[:, task])
        return pa.table(columns), probabilities


def _intercept_for_rate(logits: np.ndarray, rate: float) -> float:
    """The intercept b with mean(sigmoid(logits + b)) = rate (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(100):
        mid = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logits + mid)))) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def logloss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def write_world(world: World, sizes: dict[str, int], seed: int, directory: Path) -> dict[str, Any]:
    """Write train/valid/test.parquet of a world; returns the splits' paths and test optimum."""
    truth = TrueModel(world, seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths, optimum = {}, {}
    for offset, (split, rows) in enumerate(sizes.items()):
        table, probabilities = truth.sample(rows, seed * 1000 + offset + 1)
        paths[split] = directory / f"{split}.parquet"
        pq.write_table(table, paths[split])
        if split == "test":
            for task, (name, _) in enumerate(world.objectives):
                labels = table.column(f"label_{name}").to_numpy()
                rate = float(labels.mean())
                optimum[name] = {
                    "bayes_logloss": logloss(probabilities[:, task], labels),
                    "constant_logloss": logloss(np.full(len(labels), rate), labels),
                    "base_rate": rate,
                }
    return {"paths": paths, "optimum": optimum}


# ---------------------------------------------------------------------------------------
# Ours: rendered models trained through their own command line


def spec_for(world: World, techniques: list[str], batch_size: int, steps_per_epoch: int) -> dict[str, Any]:
    name = f"quality_{world.name}_{'_'.join(techniques) or 'plain'}"
    return {
        "model_name": name,
        "description": f"Quality benchmark model ({world.name}; {', '.join(techniques) or 'plain template'}).",
        "objectives": [{"name": objective, "weight": 1.0} for objective, _ in world.objectives],
        "sparse_features": [
            {"name": n, "cardinality": c, "embedding_dim": d, "multi_valued": False} for n, c, d in SPARSE_FEATURES
        ],
        "dense_features": [{"name": n} for n in DENSE_FEATURES],
        "serving": {"max_params": 10_000_000, "max_mflops_per_example": 10.0},
        "techniques": [{"name": t} for t in techniques],
        # Validation once per epoch, as FuxiCTR does; every other hyperparameter is the template's default.
        "hyperparameters": {"batch_size": batch_size, "eval_every": steps_per_epoch},
    }


def render(spec: dict[str, Any], directory: Path) -> Path:
    tree = render_model(REPO_ROOT, spec, spec["model_name"])
    target = directory / spec["model_name"]
    write_tree(target, tree, yaml.safe_dump(spec, sort_keys=False))
    return target


def train_ours(model_dir: Path, paths: dict[str, Path], max_epochs: int, steps_per_epoch: int, seed: int, threads: int) -> dict[str, Any]:
    """Train a rendered model through `python -m MODEL train`; returns its metrics.json."""
    name = model_dir.name
    env = {**os.environ, "PYTHONPATH": str(model_dir), "OMP_NUM_THREADS": str(threads)}
    help_text = subprocess.run(
        [sys.executable, "-m", name, "train", "--help"], cwd=model_dir, env=env, capture_output=True, text=True
    ).stdout
    # Keep working when the CLI counts epochs itself; until then, the same budget in steps.
    budget = ["--epochs", str(max_epochs)] if "--epochs" in help_text else ["--steps", str(max_epochs * steps_per_epoch)]
    if "--threads" in help_text:
        budget += ["--threads", str(threads)]
    run_dir = model_dir / "runs" / f"seed{seed}"
    command = [
        sys.executable, "-m", name, "train", *budget, f"--seed={seed}", f"--run-dir={run_dir}", "--no-progress",
        f"--train={paths['train']}", f"--valid={paths['valid']}", f"--test={paths['test']}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=model_dir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: {' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    saved = json.loads((run_dir / "metrics.json").read_text())
    saved["wall_seconds"] = time.perf_counter() - start
    return saved


# ---------------------------------------------------------------------------------------
# The peer: FuxiCTR's DNN


def build_peer_dnn(workdir: Path, label: str, hidden_units: list[int], regularizer: float, seed: int) -> Any:
    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel
    from fuxictr.pytorch.torch_utils import seed_everything

    class DNN(BaseModel):
        """FuxiCTR's model_zoo DNN (model_zoo/DNN/DNN_torch/src/DNN.py): embeddings, then an MLP."""

        def __init__(self, feature_map, model_id="DNN", gpu=-1, learning_rate=1e-3, embedding_dim=10,
                     hidden_units=[64, 64, 64], hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                     embedding_regularizer=None, net_regularizer=None, **kwargs):  # fmt: skip
            super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                             net_regularizer=net_regularizer, **kwargs)  # fmt: skip
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1, hidden_units=hidden_units,
                                 hidden_activations=hidden_activations, output_activation=self.output_activation,
                                 dropout_rates=net_dropout, batch_norm=batch_norm)  # fmt: skip
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X, flatten_emb=True)
            return {"y_pred": self.mlp(feature_emb)}

    features = [
        {n: {"source": "", "type": "categorical", "vocab_size": c, "embedding_dim": d}} for n, c, d in SPARSE_FEATURES
    ] + [{n: {"source": "", "type": "numeric", "embedding_dim": 16}} for n in DENSE_FEATURES]
    spec = {
        "dataset_id": "smt_quality",
        "num_fields": len(features),
        "total_features": sum(c for _, c, _ in SPARSE_FEATURES) + len(DENSE_FEATURES),
        "input_length": len(features),
        "labels": [label],
        "features": features,
    }
    (workdir / "feature_map.json").write_text(json.dumps(spec))
    feature_map = FeatureMap("smt_quality", str(workdir))
    feature_map.load(str(workdir / "feature_map.json"), params={"embedding_dim": 16})
    seed_everything(seed)
    torch.manual_seed(seed)
    return DNN(
        feature_map,
        learning_rate=1e-3,  # DNN_default
        embedding_dim=16,
        hidden_units=hidden_units,
        net_dropout=0,
        batch_norm=False,
        embedding_regularizer=regularizer,
        net_regularizer=0,
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=["logloss", "AUC"],
        monitor={"AUC": 1, "logloss": -1},
        monitor_mode="max",
        early_stop_patience=2,
        reduce_lr_on_plateau=True,
        save_best_only=True,
        model_root=str(workdir),
        verbose=0,
    )


class PeerBatches:
    """FuxiCTR's batch dicts (feature name -> tensor, label -> labels) of a table, as its
    DataLoader yields them: len() batches, reshuffled every epoch when shuffle is set."""

    def __init__(self, table: pa.Table, label: str, batch_size: int, shuffle: bool, seed: int) -> None:
        import torch

        self.columns = {n: torch.from_numpy(table.column(n).to_numpy().copy()) for n, _, _ in SPARSE_FEATURES}
        self.columns.update({n: torch.from_numpy(table.column(n).to_numpy().astype(np.float32)) for n in DENSE_FEATURES})
        self.columns[label] = torch.from_numpy(table.column(label).to_numpy().astype(np.float32))
        self.rows, self.batch_size, self.shuffle = table.num_rows, batch_size, shuffle
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self) -> Any:
        import torch

        order = self.rng.permutation(self.rows) if self.shuffle else np.arange(self.rows)
        for start in range(0, self.rows, self.batch_size):
            index = torch.from_numpy(order[start : start + self.batch_size])
            yield {name: values[index] for name, values in self.columns.items()}


def train_peer(paths: dict[str, Path], objective: str, args: argparse.Namespace, hidden_units: list[int], batch_size: int, workdir: Path) -> dict[str, Any]:
    """FuxiCTR's DNN trained by BaseModel.fit on one objective; its test logloss."""
    import logging

    import torch

    logging.disable(logging.INFO)
    label = f"label_{objective}"
    tables = {split: pq.read_table(path) for split, path in paths.items()}
    (workdir / "smt_quality").mkdir(parents=True, exist_ok=True)  # where BaseModel.fit keeps its best weights
    model = build_peer_dnn(workdir, label, hidden_units, args.peer_embedding_regularizer, args.seed)
    train_batches = PeerBatches(tables["train"], label, batch_size, shuffle=True, seed=args.seed)
    valid_batches = PeerBatches(tables["valid"], label, batch_size, shuffle=False, seed=0)
    start = time.perf_counter()
    model.fit(train_batches, epochs=args.max_epochs, validation_data=valid_batches, max_gradient_norm=10.0)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        test_batches = PeerBatches(tables["test"], label, 4096, shuffle=False, seed=0)
        predictions = torch.cat([model(b)["y_pred"][:, 0] for b in test_batches]).double().numpy()
    labels = tables["test"].column(label).to_numpy()
    return {"logloss": logloss(predictions, labels), "epochs": model._epoch_index + 1, "wall_seconds": seconds}


# ---------------------------------------------------------------------------------------
# Running and reporting


def available_techniques() -> list[str]:
    return sorted(p.parent.name for p in (REPO_ROOT / "techniques").glob("*/technique.yml"))


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    try:
        import fuxictr

        peer = f"fuxictr {fuxictr.__version__}"
    except ImportError:
        peer = "fuxictr not installed"
    return f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}, {peer}"


def progress(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = {"train": args.train_examples, "valid": args.eval_examples, "test": args.eval_examples}
    batch_size = args.batch_size
    steps_per_epoch = math.ceil(sizes["train"] / batch_size)
    techniques = {"all": available_techniques(), "none": []}.get(args.techniques)
    if techniques is None:
        techniques = [t for t in args.techniques.split(",") if t]
    workdir = Path(tempfile.mkdtemp(prefix="smt_quality_"))
    results: dict[str, Any] = {}
    for world_name in args.worlds.split(","):
        world = WORLDS[world_name]
        progress(f"{world.describe()}: writing {sizes} examples")
        data = write_world(world, sizes, args.seed, workdir / world.name / "data")
        rows: dict[str, Any] = {}
        hidden_units: list[int] = []
        for variant in [None, *techniques]:
            label = variant or "plain template"
            spec = spec_for(world, [variant] if variant else [], batch_size, steps_per_epoch)
            try:
                try:
                    model_dir = render(spec, workdir / world.name)
                except SmtError as error:
                    if "eval_every" not in str(error):
                        raise
                    # A template that validates once per epoch on its own has no eval_every.
                    del spec["hyperparameters"]["eval_every"]
                    model_dir = render(spec, workdir / world.name)
            except SmtError as error:  # a precondition this world does not meet
                rows[label] = {"n/a": str(error).splitlines()[0]}
                progress(f"  {label}: n/a ({rows[label]['n/a']})")
                continue
            progress(f"  training {label}")
            saved = train_ours(model_dir, data["paths"], args.max_epochs, steps_per_epoch, args.seed, args.threads)
            config = saved["config"]
            if variant is None:
                hidden_units = [*config["over_arch_layers"], *config["tower_layers"]]
            rows[label] = {
                "test": {name: saved["metrics"]["test"][name]["logloss"] for name, _ in world.objectives},
                "steps": saved["steps"],
                "best_step": saved.get("best_step"),
                "wall_seconds": saved["wall_seconds"],
            }
        if not args.no_peer:
            peer: dict[str, Any] = {}
            for objective, _ in world.objectives:
                progress(f"  training FuxiCTR DNN on {objective}")
                peer[objective] = train_peer(
                    data["paths"], objective, args, hidden_units, batch_size, workdir / world.name / f"peer_{objective}"
                )
            rows["FuxiCTR DNN"] = {"test": {o: r["logloss"] for o, r in peer.items()}, "peer": peer}
        results[world.name] = {"world": world.describe(), "optimum": data["optimum"], "models": rows}
    return {
        "command": " ".join(shlex.quote(p) for p in ["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "settings": {**vars(args), "steps_per_epoch": steps_per_epoch},
        "worlds": results,
    }


def format_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "Test logloss vs the Bayes optimum (gap = logloss - Bayes-optimal logloss; % = gap / gap of the constant prediction)",
        f"  data: {s['train_examples']:,} train / {s['eval_examples']:,} valid / {s['eval_examples']:,} test examples per world;"
        f" batch {s['batch_size']}, at most {s['max_epochs']} epochs ({s['steps_per_epoch']} steps each), seed {s['seed']}, {s['threads']} thread(s)",
    ]
    verdicts = []
    for world in report["worlds"].values():
        objectives = list(world["optimum"])
        lines += ["", world["world"]]
        header = f"  {'model':<24}" + "".join(f"{o + ' logloss':>17}{'gap':>9}{'%':>7}" for o in objectives) + f"{'steps':>7}"
        lines.append(header)
        optimum = world["optimum"]
        lines.append(
            f"  {'Bayes optimum':<24}"
            + "".join(f"{optimum[o]['bayes_logloss']:>17.5f}{'':>9}{'':>7}" for o in objectives)
        )
        lines.append(
            f"  {'constant prediction':<24}"
            + "".join(f"{optimum[o]['constant_logloss']:>17.5f}{optimum[o]['constant_logloss'] - optimum[o]['bayes_logloss']:>9.5f}{100:>6.0f}%" for o in objectives)
        )
        for label, row in world["models"].items():
            if "n/a" in row:
                lines.append(f"  {label:<24}  n/a: {row['n/a'][:90]}")
                continue
            cells = ""
            for o in objectives:
                gap = row["test"][o] - optimum[o]["bayes_logloss"]
                share = 100 * gap / (optimum[o]["constant_logloss"] - optimum[o]["bayes_logloss"])
                cells += f"{row['test'][o]:>17.5f}{gap:>9.5f}{share:>6.1f}%"
            steps = row.get("steps", "epochs " + "/".join(str(p["epochs"]) for p in row.get("peer", {}).values()))
            lines.append(f"  {label:<24}{cells} {steps:>6}")
        models = world["models"]
        if "FuxiCTR DNN" in models and "test" in models.get("plain template", {}):
            for o in objectives:
                ours, peer = models["plain template"]["test"][o], models["FuxiCTR DNN"]["test"][o]
                verdict = "PASS" if ours <= peer else "FAIL"
                verdicts.append(f"{world['world'].split(':')[0]} {o}: plain template {ours:.5f} vs FuxiCTR DNN {peer:.5f} ({100 * (ours / peer - 1):+.2f}%): {verdict}")
    if verdicts:
        lines += ["", "plain template at least as good as FuxiCTR's DNN (test logloss):", *("  " + v for v in verdicts)]
    lines += ["", f"date: {report['date']}", f"machine: {report['machine']}", f"command: {report['command']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small world (crossed_correlated), 3 epochs: minutes, not an hour")
    parser.add_argument("--worlds", default=",".join(WORLDS), help=f"comma-separated, of {', '.join(WORLDS)}")
    parser.add_argument("--techniques", default="all", help="all, none (plain template only) or a comma-separated list")
    parser.add_argument("--train-examples", type=int, default=200_000)
    parser.add_argument("--eval-examples", type=int, default=50_000, help="examples in each of valid and test")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every training process")
    parser.add_argument("--peer-embedding-regularizer", type=float, default=1e-5)
    parser.add_argument("--no-peer", action="store_true", help="skip FuxiCTR's DNN")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    if args.quick:
        args.worlds = "crossed_correlated" if args.worlds == ",".join(WORLDS) else args.worlds
        args.train_examples, args.eval_examples, args.max_epochs = 40_000, 10_000, 3
    import torch

    torch.set_num_threads(args.threads)
    report = run(args)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
