"""The error catalogue: every bad input to `smt` and to a generated model's CLI ends in one line
naming the file, model or field and what to do, exit code 2, and writes nothing.

One case per bad input: specs, technique metadata, extension points, patch files, template files,
`smt` options, a generated model's options, its data files and its checkpoints. Each case asserts
exit 2, exactly one line of output (stdout and stderr together; for a model's command line, one
line on stderr after at most the run's preamble) without a traceback, a hint in the message, and
an unchanged tree (a hash of the repository copy, or of the model's working folder, taken after
the bad input was put in place and again after the command).

Cases run in-process for speed (the CLIs' own ``main``, which is what the console scripts call);
``test_cases_hold_in_a_real_process`` runs a few through real subprocesses. The model cases share
one model generated once per module with tiny Parquet splits.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from support import HANG_TIMEOUT, REPO, make_repo_copy, run_smt

MODEL = "catalogue_model"
TEMPLATE_FILE = "template_repo/template/{{ model_name }}/train.py.jinja"
METADATA = "techniques/dcn_v2/technique.yml"
PATCH = "techniques/dcn_v2/model.py"
POINTS = "template_repo/extension_points.yml"
ANSWERS = "generated/feed_ctr/.copier-answers.yml"

GOOD_SPEC = {
    "description": "A model for the error catalogue.",
    "objectives": [{"name": "click", "weight": 1.0}],
    "sparse_features": [
        {"name": "user_id", "cardinality": 100, "embedding_dim": 8, "multi_valued": False},
        {"name": "item_id", "cardinality": 50, "embedding_dim": 8, "multi_valued": False},
    ],
    "dense_features": [{"name": "price"}],
    "serving": {"max_params": 100000, "max_mflops_per_example": 1.0},
    "techniques": [{"name": "dcn_v2", "params": {"num_cross_layers": 2}}],
    "hyperparameters": {"batch_size": 32, "train_examples": 256, "eval_examples": 128, "epochs": 1},
}
ROWS = 96  # rows of each tiny Parquet split


def tree_hash(root: Path) -> str:
    """Every file under root (paths and bytes), except caches smt and Python keep for themselves."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if "__pycache__" in parts or ".smt" in parts or ".pytest_cache" in parts:
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def assert_one_line_error(code: int | None, out: str, err: str, hint: str) -> None:
    text = (out + err).strip()
    assert code == 2, text
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    assert hint.lower() in text.lower(), text


def assert_one_line_model_error(code: int | None, out: str, err: str, hint: str) -> None:
    """A generated model's command line: its error is one line on stderr, as for `smt`; stdout
    holds at most the run's preamble (what it will train, the tables' plan), which the runtime
    prints while it builds the run, before it meets a problem only a built run shows (a
    checkpoint whose tensors do not fit the model), and never a training step."""
    assert_one_line_error(code, "", err, hint)
    assert "Traceback" not in out, out
    preamble = out.strip().splitlines()
    assert not preamble or preamble[0].startswith(f"{MODEL}: training at most"), out
    assert not any(" train loss " in line for line in preamble), out


def spec_text(**changes: object) -> str:
    spec = {**GOOD_SPEC, **changes}
    return yaml.safe_dump(spec, sort_keys=False)


def with_field(path: str, value: object) -> str:
    """GOOD_SPEC with one nested field (dot path, numeric parts index lists) set to value."""
    spec = yaml.safe_load(yaml.safe_dump(GOOD_SPEC))
    node = spec
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    node[int(last) if last.isdigit() else last] = value
    return yaml.safe_dump(spec, sort_keys=False)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A billion-laughs YAML: `levels` anchors, each a list of `width` aliases of the previous."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def inline_bomb(levels: int, width: int = 9) -> str:
    """A flow sequence holding its own anchors: width**levels values once expanded, under the
    reader's bound for levels <= 5, so it reaches validation, whose message must stay short."""
    items = ["&b0 [" + ", ".join(["lol"] * width) + "]"]
    items += [f"&b{level} [" + ", ".join([f"*b{level - 1}"] * width) + "]" for level in range(1, levels)]
    return "[" + ", ".join(items) + "]"


# -- smt: specs given to `smt new` ------------------------------------------------------------------
# name -> (spec file bytes, a word the one line must contain)
SPEC_CASES: dict[str, tuple[bytes, str]] = {
    "binary spec": (bytes(range(256)) * 4, "not UTF-8"),
    "oversized spec": (b"description: '" + b"x" * (3 * 1024 * 1024) + b"'\n", "over the limit"),
    "alias bomb": ((alias_bomb() + spec_text()).encode(), "aliases"),
    "alias bomb as a technique param": (
        (alias_bomb() + spec_text().replace("num_cross_layers: 2", "num_cross_layers: *a8")).encode(),
        "aliases",
    ),
    "large alias as a technique param": (
        spec_text().replace("num_cross_layers: 2", f"num_cross_layers: {inline_bomb(5)}").encode(),
        "num_cross_layers: expected int",
    ),
    "recursive alias": (b"a: &a [*a]\n" + spec_text().encode(), "contains itself"),
    "deep nesting": (b"description: " + b"[" * 200 + b"]" * 200 + b"\n", "nests deeper"),
    "YAML syntax error": (b"objectives: [1, 2\nserving: {}\n", "not valid YAML"),
    "tab indentation": (b"objectives:\n\t- name: click\n", "not valid YAML"),
    "spec is a list": (b"- a\n- b\n", "mapping"),
    "empty spec": (b"", "mapping"),
    "unknown technique": (with_field("techniques.0.name", "dcn_v3").encode(), "smt techniques"),
    "mistyped objective weight": (with_field("objectives.0.weight", None).encode(), "fix objectives[0].weight in the spec"),
    "unknown key": (spec_text(servng={}).encode(), "check its spelling"),
    "cardinality not a number": (with_field("sparse_features.0.cardinality", "many").encode(), "cardinality"),
    "keyword as feature name": (with_field("sparse_features.0.name", "class").encode(), "choose another"),
    "tables over the serving budget": (
        with_field("sparse_features.0.cardinality", 50_000).encode(),
        "raise serving.max_params",
    ),
    "tables larger than memory": (
        spec_text(
            serving={"max_params": 10**15, "max_mflops_per_example": 1.0},
            sparse_features=[{"name": "user_id", "cardinality": 10**13, "embedding_dim": 16, "multi_valued": False}],
        ).encode(),
        "GiB",
    ),
    "model_name differs from NAME": (spec_text(model_name="other_name").encode(), "make it"),
}


@pytest.fixture(scope="module")
def smt_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository copy for every smt case (each case restores what it changed)."""
    return make_repo_copy(tmp_path_factory.mktemp("catalogue"))


@pytest.fixture
def in_repo(smt_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SMT_ROOT", str(smt_repo))
    monkeypatch.chdir(smt_repo)
    yield smt_repo


def run_smt_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | None, str, str]:
    """The real `smt` entry point, in this process."""
    from generator.cli import main  # noqa: PLC0415

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_spec(case: str, in_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, hint = SPEC_CASES[case]
    spec = tmp_path / "spec.yml"
    spec.write_bytes(data)
    before = tree_hash(in_repo)
    code, out, err = run_smt_here(capsys, "new", "new_model", "--data-file", str(spec))
    assert_one_line_error(code, out, err, hint)
    assert tree_hash(in_repo) == before


def test_missing_spec_file(in_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree_hash(in_repo)
    code, out, err = run_smt_here(capsys, "new", "new_model", "--data-file", str(tmp_path / "nope.yml"))
    assert_one_line_error(code, out, err, "check the path")
    assert tree_hash(in_repo) == before


def test_endless_spec_file(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """/dev/zero never ends: the reader stops one byte past its limit instead of reading forever."""
    before = tree_hash(in_repo)
    code, out, err = run_smt_here(capsys, "new", "new_model", "--data-file", "/dev/zero")
    assert_one_line_error(code, out, err, "over the limit")
    assert tree_hash(in_repo) == before


def test_existing_model_name(in_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yml"
    spec.write_text(spec_text())
    before = tree_hash(in_repo)
    code, out, err = run_smt_here(capsys, "new", "feed_ctr", "--data-file", str(spec))
    assert_one_line_error(code, out, err, "smt generate feed_ctr")
    assert tree_hash(in_repo) == before


# -- smt: repository inputs (technique metadata, extension points, patches, templates) ---------------
def replace_text(old: str, new: str) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        text = data.decode()
        assert old in text, old
        return text.replace(old, new, 1).encode()

    return edit


def replace_version(new: str) -> Callable[[bytes], bytes]:
    """technique.yml with its version line (whatever the version is) replaced by ``new``."""

    def edit(data: bytes) -> bytes:
        text = data.decode()
        return re.sub(r"^version: .*\n", new, text, count=1, flags=re.M).encode()

    return edit


def insert_line(number: int, line: str) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        lines = data.decode().splitlines(keepends=True)
        lines.insert(number - 1, line + "\n")
        return "".join(lines).encode()

    return edit


def constant(data: bytes) -> Callable[[bytes], bytes]:
    return lambda _: data


# name -> (file relative to the repository, its edit, a word the one line must contain)
REPO_CASES: dict[str, tuple[str, Callable[[bytes], bytes], str]] = {
    # a model's answers file in generated/
    "answers file binary": (ANSWERS, constant(b"\x89PNG\r\n\x1a\n" + bytes(range(256))), "not UTF-8"),
    "answers file YAML syntax error": (ANSWERS, lambda d: d + b"objectives: [\n", ".copier-answers.yml:"),
    "answers file alias bomb": (ANSWERS, lambda d: alias_bomb().encode() + d, "aliases"),
    "answers file oversized": (ANSWERS, lambda d: d + b"# " + b"y" * (3 * 1024 * 1024) + b"\n", "over the limit"),
    "answers file tables over the budget": (ANSWERS, replace_text("max_params: 1000000", "max_params: 1000"), "serving.max_params"),
    # technique metadata
    "technique.yml YAML syntax error": (METADATA, replace_text("requires: []", "requires: [\n  bad: :"), "technique.yml:"),
    "technique.yml binary": (METADATA, constant(b"\xff\xfe\x00bin" * 50), "not UTF-8"),
    "technique.yml oversized": (METADATA, lambda d: d + b"# " + b"x" * (3 * 1024 * 1024) + b"\n", "over the limit"),
    "technique.yml alias bomb": (METADATA, lambda d: alias_bomb().encode() + d, "aliases"),
    "technique.yml not a mapping": (METADATA, constant(b"- dcn_v2\n"), "mapping"),
    "technique.yml unknown key": (METADATA, lambda d: d + b"autor: me\n", "allowed"),
    "technique.yml missing version": (METADATA, replace_version(""), "version"),
    "technique.yml bad version": (METADATA, replace_version("version: one\n"), "1.2.3"),
    "technique.yml name differs from folder": (METADATA, replace_text("name: dcn_v2", "name: dcn_v9"), "folder name"),
    "technique.yml default of the wrong type": (METADATA, replace_text("default: 3", "default: three"), "default"),
    "technique.yml requires not a list": (METADATA, replace_text("requires: []", "requires: mmoe"), "list of technique names"),
    "technique.yml requires an unknown technique": (METADATA, replace_text("requires: []", "requires: [dcn_v9]"), "fix the name"),
    "technique.yml builds on an unknown technique": (METADATA, lambda d: d + b"builds_on: [no_such]\n", "fix the name"),
    # the template's extension points
    "extension_points.yml YAML syntax error": (POINTS, lambda d: d + b"model.py: [\n", "extension_points.yml:"),
    "extension_points.yml binary": (POINTS, constant(b"\x80\x81\x82" * 100), "not UTF-8"),
    "extension_points.yml not a mapping": (POINTS, constant(b"[1, 2]\n"), "expected a mapping"),
    "extension_points.yml bad entry": (POINTS, lambda d: d + b"extra.py:\n  Thing: 3\n", "expected {kind: replace|hook"),
    # patch files
    "patch file empty": (PATCH, constant(b""), "defines nothing"),
    "patch file with only a docstring and imports": (PATCH, constant(b'"""Nothing."""\nimport torch\n'), "defines nothing"),
    "patch file binary": (PATCH, constant(b"\x00\xff\xfe" * 40), "not UTF-8"),
    "patch file syntax error": (PATCH, lambda d: d + b"\ndef broken(:\n", "fix the syntax"),
    "patch file top-level statement": (PATCH, lambda d: d + b"\nprint('hello')\n", "patches may only import and define"),
    # template files
    "template Jinja syntax error": (TEMPLATE_FILE, insert_line(5, "{% if model_name %}"), "train.py.jinja:"),
    "template unknown filter": (TEMPLATE_FILE, insert_line(5, "{{ model_name | no_such_filter }}"), "train.py.jinja:5"),
    "template undefined attribute": (TEMPLATE_FILE, insert_line(5, "{{ model_name.no.such }}"), "train.py.jinja:5"),
    "template runtime error": (TEMPLATE_FILE, insert_line(15, "{{ 1 // 0 }}"), "train.py.jinja:15"),
    "template includes a missing file": (TEMPLATE_FILE, insert_line(5, '{% include "missing.jinja" %}'), "train.py.jinja:5"),
    "template renders invalid Python": (TEMPLATE_FILE, insert_line(15, "def broken(:"), "train.py.jinja:15: renders train.py"),
    "template file binary": (TEMPLATE_FILE, constant(b"\xff\xfe\xfd" * 30), "train.py.jinja"),
}


@pytest.mark.parametrize("case", list(REPO_CASES))
def test_bad_repository_input(case: str, in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    relative, edit, hint = REPO_CASES[case]
    path = in_repo / relative
    original = path.read_bytes()
    path.write_bytes(edit(original))
    try:
        before = tree_hash(in_repo)
        code, out, err = run_smt_here(capsys, "check", "feed_ctr", "--jobs", "1", "--no-cache")
        assert_one_line_error(code, out, err, hint)
        assert tree_hash(in_repo) == before
    finally:
        path.write_bytes(original)


def test_local_technique_yaml_syntax_error(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = in_repo / "generated/feed_ctr/local_techniques/mine"
    folder.mkdir(parents=True)
    (folder / "technique.yml").write_text("name: mine\nversion: [1.0.0\nsummary: s\n")
    try:
        before = tree_hash(in_repo)
        code, out, err = run_smt_here(capsys, "check", "feed_ctr", "--jobs", "1", "--no-cache")
        assert_one_line_error(code, out, err, "local_techniques/mine/technique.yml:")
        assert tree_hash(in_repo) == before
    finally:
        shutil.rmtree(folder.parent)


# -- smt: options ---------------------------------------------------------------------------------
SMT_OPTION_CASES: dict[str, tuple[list[str], str]] = {
    "unknown option": (["check", "--bogus"], "smt check --help"),
    "unknown command": (["bogus"], "smt --help"),
    "missing argument": (["new"], "missing argument"),
    "--jobs 0": (["check", "--jobs", "0"], "--jobs"),
    "smt train --steps 0": (["train", "feed_ctr", "--steps", "0"], "--steps"),
    "smt train of an unknown model": (["train", "no_such_model"], "smt new"),
    "--format without --since": (["diff", "--format", "json"], "--since"),
    "--where that is not an expression": (["adopt", "mmoe", "--where", "num_objectives >="], "not a valid expression"),
    "--param without =": (["adopt", "dcn_v2", "--models", "feed_ctr", "--param", "layers"], "NAME=VALUE"),
    "adopt an unknown technique": (["preview", "dcn_v9"], "smt techniques"),
    "blame without a line": (["blame", "generated/feed_ctr/feed_ctr/model.py"], "line"),
    "blame of a missing file": (["blame", "generated/feed_ctr/nope.py:3"], "of a file that exists"),
    "blame past the last line": (["blame", "generated/feed_ctr/feed_ctr/model.py:99999"], "give a line from 1 to"),
    "conflicts in a missing folder": (["conflicts", "/no/such/folder"], "give the folder"),
    "diff --since outside git": (["diff", "--since", "main"], "git checkout"),
    "techniques show of an unknown technique": (["techniques", "show", "dcn_v9"], "use one of"),
    "adopt --force without --reason": (["adopt", "residual_mlp", "--models", "feed_ctr", "--force"], "--force needs --reason"),
    "adopt --reason without --force": (["adopt", "residual_mlp", "--models", "feed_ctr", "--reason", "x"], "goes with --force"),
    "promote --force without --reason": (["promote", "residual_mlp", "--force"], "--force needs --reason"),
    "qualify --threads 0": (["qualify", "residual_mlp", "--threads", "0"], "--threads"),
    "adopt --jobs 0": (["adopt", "residual_mlp", "--models", "feed_ctr", "--verify", "--jobs", "0"], "--jobs"),
}

# qualification.yml and the environment of the commands that train: (qualification.yml text, environment, args, hint)
TRAINING_CASES: dict[str, tuple[str, dict[str, str], list[str], str]] = {
    "qualification.yml still sets noise_sigmas": ("criterion:\n  noise_sigmas: 2.0\n", {}, ["qualify", "residual_mlp", "--on", "feed_ctr"], "noise_sigmas is no longer used"),
    "qualification.yml confidence as a percentage": ("criterion:\n  confidence: 95\n", {}, ["qualify", "residual_mlp", "--on", "feed_ctr"], "confidence must be between 0.5 and 1"),
    "SMT_THREADS not a number": ("", {"SMT_THREADS": "two"}, ["qualify", "residual_mlp", "--on", "feed_ctr"], "SMT_THREADS='two'"),
    "SMT_THREADS zero for tune": ("", {"SMT_THREADS": "0"}, ["tune", "--study", "s", "--trials", "1"], "SMT_THREADS='0'"),
}


@pytest.mark.parametrize("case", list(TRAINING_CASES))
def test_bad_training_setting(case: str, in_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    text, environment, args, hint = TRAINING_CASES[case]
    shutil.copy(REPO / "qualification.yml", in_repo / "qualification.yml")
    shutil.copy(REPO / "tune.yml", in_repo / "tune.yml")
    if text:
        (in_repo / "qualification.yml").write_text(text)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    try:
        before = tree_hash(in_repo)
        code, out, err = run_smt_here(capsys, *args)
        assert_one_line_error(code, out, err, hint)
        assert tree_hash(in_repo) == before
    finally:
        (in_repo / "qualification.yml").unlink()
        (in_repo / "tune.yml").unlink()


@pytest.mark.parametrize("case", list(SMT_OPTION_CASES))
def test_bad_smt_option(case: str, in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args, hint = SMT_OPTION_CASES[case]
    before = tree_hash(in_repo)
    code, out, err = run_smt_here(capsys, *args)
    assert_one_line_error(code, out, err, hint)
    assert tree_hash(in_repo) == before


# -- a generated model's CLI: options, data files, checkpoints, output paths -----------------------
class ModelWorld:
    """The generated model package (imported), its working folder, tiny splits and a good run."""

    def __init__(self, package_dir: Path, work: Path) -> None:
        self.package_dir = package_dir
        self.work = work
        sys.path.insert(0, str(package_dir))
        self.parts = importlib.import_module(f"{MODEL}.train").PARTS
        self.config = self.parts.config()

    def main(self, argv: list[str]) -> int:
        """The model's command line (its __main__ runs smt_runtime.cli.main with its PARTS)."""
        from smt_runtime.cli import main  # noqa: PLC0415

        return main(self.parts, argv)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelWorld]:
    from smt_runtime.synthetic import write_synthetic  # noqa: PLC0415

    root = make_repo_copy(tmp_path_factory.mktemp("catalogue_model"))
    spec = root / "spec.yml"
    spec.write_text(spec_text())
    created = run_smt(root, "new", MODEL, "--data-file", str(spec))
    assert created.code == 0, created.err
    work = tmp_path_factory.mktemp("work")
    world = ModelWorld(root / "generated" / MODEL, work)
    for offset, split in enumerate(("train", "valid", "test")):
        write_synthetic(world.config, work / f"{split}.parquet", ROWS, offset, 32)
    good = bytearray((work / "train.parquet").read_bytes())
    (work / "truncated.parquet").write_bytes(bytes(good[: len(good) // 2]))
    (work / "random.parquet").write_bytes(os.urandom(4096))
    for index in range(64, len(good) - 2048, 5):  # data pages, not the footer
        good[index] ^= 0xFF
    (work / "corrupt.parquet").write_bytes(bytes(good))
    (work / "text.parquet").write_text("user_id,item_id\n1,2\n")
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    pq.write_table(pa.table({"something_else": [1, 2, 3]}), work / "foreign.parquet")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        code = world.main(["train", *SPLITS, "--steps", "2", "--no-progress", "--threads", "1", "--run-dir", "good_run"])
        assert code == 0
        _make_checkpoints(work)
    finally:
        os.chdir(cwd)
    yield world
    sys.path.remove(str(world.package_dir))
    for name in [name for name in sys.modules if name == MODEL or name.startswith(f"{MODEL}.")]:
        del sys.modules[name]


SPLITS = ["--train", "train.parquet", "--valid", "valid.parquet", "--test", "test.parquet"]


def _make_checkpoints(work: Path) -> None:
    import torch  # noqa: PLC0415

    good = (work / "good_run" / "checkpoint.pt").read_bytes()
    saved = torch.load(work / "good_run" / "checkpoint.pt", weights_only=False)

    def run_with(name: str, data: bytes | None = None, obj: object = None) -> None:
        folder = work / name
        folder.mkdir()
        if data is not None:
            (folder / "checkpoint.pt").write_bytes(data)
        else:
            torch.save(obj, folder / "checkpoint.pt")

    run_with("ck_truncated", good[: len(good) // 3])
    run_with("ck_random", os.urandom(8192))
    run_with("ck_empty", b"")
    run_with("ck_foreign_dict", obj={"weights": torch.zeros(3)})
    run_with("ck_foreign_list", obj=[1, 2, 3])
    run_with("ck_other_model", obj={**saved, "model_name": "some_other_model"})
    # A whole run (checkpoint.pt and its tensor folders) that the misfit case resumes with other widths.
    shutil.copytree(work / "good_run", work / "ck_misfit")
    (work / "empty_run").mkdir()
    (work / "a_file").write_text("not a folder\n")
    (work / "existing.pt2").write_bytes(b"an earlier export")
    (work / "data_dir").mkdir()
    (work / "data_dir" / "train.parquet").write_bytes((work / "train.parquet").read_bytes())


TRAIN = ["train", "--no-progress", "--threads", "1"]
# name -> (argv, a word the one line must contain)
MODEL_CASES: dict[str, tuple[list[str], str]] = {
    # nonsensical numbers
    "--steps -1": ([*TRAIN, *SPLITS, "--steps", "-1"], "at least 1"),
    "--steps 0": ([*TRAIN, *SPLITS, "--steps", "0"], "at least 1"),
    "--epochs -3": ([*TRAIN, *SPLITS, "--epochs", "-3"], "at least 1"),
    "--epochs 0": ([*TRAIN, *SPLITS, "--epochs", "0"], "at least 1"),
    "--threads 0": (["train", "--no-progress", *SPLITS, "--threads", "0"], "at least 1"),
    "--seed -1": ([*TRAIN, *SPLITS, "--seed", "-1"], "--seed"),
    "--steps not a number": ([*TRAIN, *SPLITS, "--steps", "many"], "--help"),
    "--set batch_size=0": ([*TRAIN, *SPLITS, "--set", "batch_size=0"], "batch_size"),
    "--set learning_rate=-1": ([*TRAIN, *SPLITS, "--set", "learning_rate=-1"], "learning_rate"),
    "--set unknown key": ([*TRAIN, *SPLITS, "--set", "no_such=1"], "unknown hyperparameter"),
    "unknown option": ([*TRAIN, "--bogus"], "--help"),
    "unknown command": (["bogus"], "--help"),
    "write-data --row-group-size 0": (["write-data", "new_data", "--row-group-size", "0"], "at least 1"),
    # data files
    "only some splits": ([*TRAIN, "--train", "train.parquet"], "all of --train"),
    "missing Parquet file": ([*TRAIN, "--train", "nope.parquet", *SPLITS[2:]], "nope.parquet"),
    "random bytes as Parquet": ([*TRAIN, "--train", "random.parquet", *SPLITS[2:]], "random.parquet"),
    "truncated Parquet": ([*TRAIN, "--train", "truncated.parquet", *SPLITS[2:]], "truncated.parquet"),
    "corrupt Parquet pages": ([*TRAIN, "--train", "corrupt.parquet", *SPLITS[2:]], "corrupt.parquet"),
    "CSV named .parquet": ([*TRAIN, "--train", "text.parquet", *SPLITS[2:]], "text.parquet"),
    "Parquet of another schema": ([*TRAIN, "--train", "foreign.parquet", *SPLITS[2:]], "foreign.parquet"),
    "a folder as Parquet": ([*TRAIN, "--train", "empty_run", *SPLITS[2:]], "empty_run"),
    # checkpoints
    "--resume without --run-dir": ([*TRAIN, *SPLITS, "--resume"], "--run-dir"),
    "--resume without a checkpoint": ([*TRAIN, *SPLITS, "--resume", "--run-dir", "empty_run"], "run without resume"),
    "truncated checkpoint": ([*TRAIN, *SPLITS, "--resume", "--run-dir", "ck_truncated"], "not a readable checkpoint"),
    "random checkpoint": ([*TRAIN, *SPLITS, "--resume", "--run-dir", "ck_random"], "not a readable checkpoint"),
    "empty checkpoint": ([*TRAIN, *SPLITS, "--resume", "--run-dir", "ck_empty"], "not a readable checkpoint"),
    "foreign checkpoint (a dict)": ([*TRAIN, *SPLITS, "--resume", "--run-dir", "ck_foreign_dict"], "not a checkpoint written by this runtime"),
    "foreign checkpoint (a list)": ([*TRAIN, *SPLITS, "--resume", "--run-dir", "ck_foreign_list"], "not a checkpoint written by this runtime"),
    "checkpoint of another model": ([*TRAIN, *SPLITS, "--resume", "--run-dir", "ck_other_model"], "some_other_model"),
    "checkpoint that does not fit": (
        [*TRAIN, *SPLITS, "--resume", "--run-dir", "ck_misfit", "--set", "over_arch_layers=[16]"],
        "does not fit",
    ),
    # output paths
    "run dir holding a run, without --resume": ([*TRAIN, *SPLITS, "--run-dir", "good_run"], "--resume"),
    "run dir is a file": ([*TRAIN, *SPLITS, "--run-dir", "a_file"], "a_file"),
    "run dir under a file": ([*TRAIN, *SPLITS, "--run-dir", "a_file/run"], "a file is in the way"),
    "train --export to an existing file": ([*TRAIN, *SPLITS, "--export", "existing.pt2"], "already exists"),
    "train --export into a missing folder": ([*TRAIN, *SPLITS, "--export", "no/such/dir/m.pt2"], "mkdir -p"),
    "export to an existing file": (["export", "existing.pt2"], "already exists"),
    "export into a missing folder": (["export", "missing_dir/m.pt2"], "mkdir -p"),
    "export under a file": (["export", "a_file/m.pt2"], "not a directory"),
    "export into an unwritable folder": (["export", "/proc/m.pt2"], "not writable"),
    "write-data over existing files": (["write-data", "data_dir"], "already exist"),
    "write-data under a file": (["write-data", "a_file/data"], "a file is in the way"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_cli_input(
    case: str, model: ModelWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, hint = MODEL_CASES[case]
    monkeypatch.chdir(model.work)
    before = tree_hash(model.work)
    capsys.readouterr()
    try:
        code = model.main(argv)
    except SystemExit as exited:  # argparse's own exits
        code = exited.code
    out, err = capsys.readouterr()
    assert_one_line_model_error(code, out, err, hint)
    assert tree_hash(model.work) == before


def test_cases_hold_in_a_real_process(model: ModelWorld, in_repo: Path, tmp_path: Path) -> None:
    """A few cases through the console entry points in subprocesses: no traceback reaches the
    terminal, whatever the interpreter does at exit."""
    import subprocess  # noqa: PLC0415

    spec = tmp_path / "spec.yml"
    spec.write_bytes(b"\xff\xfe binary")
    result = run_smt(in_repo, "new", "x_model", "--data-file", str(spec))
    assert_one_line_error(result.code, result.out, result.err, "not UTF-8")
    env = {**os.environ, "PYTHONPATH": str(model.package_dir), "OMP_NUM_THREADS": "1"}
    before = tree_hash(model.work)
    for argv, hint in (MODEL_CASES["--steps -1"], MODEL_CASES["random checkpoint"]):
        done = subprocess.run(
            [sys.executable, "-m", MODEL, *argv], cwd=model.work, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT
        )
        assert_one_line_model_error(done.returncode, done.stdout, done.stderr, hint)
    assert tree_hash(model.work) == before


def test_the_catalogue_is_large_enough() -> None:
    cases = len(SPEC_CASES) + 3 + len(REPO_CASES) + 1 + len(SMT_OPTION_CASES) + len(MODEL_CASES)
    assert cases >= 60, cases


def test_capacity_is_computed_from_the_spec_without_allocating_the_tables(model: ModelWorld) -> None:
    """Tables of 3 x 10**9 rows (96 GB as float32) are measured in a moment: the report counts
    them from the spec and measures FLOPs on small stand-in tables; the rest equals the real
    model's report."""
    from dataclasses import replace  # noqa: PLC0415

    from smt_runtime import serve  # noqa: PLC0415
    from smt_runtime.training import build_model  # noqa: PLC0415

    small = serve.spec_capacity_report(model.parts, model.config)
    measured = serve.capacity_report(build_model(model.parts, model.config), model.config)
    assert small == measured
    huge_features = tuple(replace(feature, cardinality=3 * 10**9) for feature in model.config.sparse_features)
    huge = serve.spec_capacity_report(model.parts, replace(model.config, sparse_features=huge_features))
    rows = sum(3 * 10**9 * feature.embedding_dim for feature in model.config.sparse_features)
    assert huge["embedding_parameters"] == rows
    assert huge["embedding_bytes"] == 4 * rows
    assert huge["dense_parameters"] == measured["dense_parameters"]
    assert huge["mflops_per_example"] == measured["mflops_per_example"]
    assert not huge["params_within_budget"]
