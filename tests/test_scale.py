"""Fleet scale (issue 12): the render cache, model-name shapes and the process pool change how fast
smt is, never what it writes or reports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from support import REPO, run_smt
from generator import cache as cache_module
from generator import engine
from generator.cache import RenderCache
from generator.engine import pipeline
from generator.engine.shapes import placeholder_for, shape_of
from generator.engine.slots import fill_slots, slot_fields
from generator.fleet import Fleet
from generator.regeneration import fleet_changes, render_models
from generator.render import render_model
from generator.sync import read_tree, write_tree

MODEL = "app_install"  # one of the smaller example models


def _spec(model: str = MODEL) -> dict:
    return yaml.safe_load((REPO / "generated" / model / ".copier-answers.yml").read_text())


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """A repository with the real template, techniques and engine and one example model."""
    root = tmp_path / "smt"
    root.mkdir()
    for name in ("template_repo", "techniques"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "golden"))
    (root / "generator").symlink_to(REPO / "generator", target_is_directory=True)  # one engine, as in a checkout
    shutil.copytree(REPO / "generated" / MODEL, root / "generated" / MODEL, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    return root


def _key(root: Path, model: str = MODEL) -> str:
    entry = Fleet(root).model(model)
    return RenderCache(root).model_key(entry.name, entry.directory, entry.answers)


# -- shapes -------------------------------------------------------------------------------------


def test_shape_swaps_only_where_it_cannot_change_how_python_reads_the_file() -> None:
    text = "from feed_ctr.data import x\nimport feed_ctr_extra\n"
    shaped = shape_of("feed_ctr", text)
    assert shaped == text.replace("feed_ctr", placeholder_for("feed_ctr"))
    assert len(placeholder_for("feed_ctr")) == len("feed_ctr")
    assert shape_of("lse_", "x = 1\nif x:\n    pass\nelse_ = 2\n") is not None
    assert shape_of("ports", "from a import ports_x\nimport reports\n") is not None
    assert shape_of("mport", "import x\n") is None  # inside the keyword `import`
    assert shape_of("e500", "x = 1e500\n") is None  # inside a number
    assert shape_of("skip", "x = 1  # fmt: skip\n") is None  # a pragma black reads
    assert shape_of("abc", "abc = 1\n") is None  # too short to be sure of a unique placeholder
    assert shape_of("feed_ctr", "feed_ctr = 1\n", ["def feed_ctr(): ..."]) is None  # a technique names it


@pytest.mark.parametrize("name", ["data_model", "train", "config_item"])
def test_a_shaped_render_equals_the_render_without_shapes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names that are also words of the template (data, train, config) still render exactly."""
    answers = {**_spec(), "model_name": name}
    engine.use_store(None)
    shaped = render_model(REPO, answers, name)
    monkeypatch.setattr(pipeline, "shape_of", lambda *args: None)
    pipeline._RENDERERS.clear()  # a fresh memo: nothing from the shaped render
    plain = render_model(REPO, answers, name)
    assert shaped == plain
    assert any(name in text for text in plain.values())


# -- config slots ---------------------------------------------------------------------------------


def test_slots_take_every_config_field_and_refuse_a_file_that_does_not_split_cleanly() -> None:
    text = 'class ModelConfig:\n    """Doc."""\n\n    # why\n    a: int = 1\n    b: tuple[int, ...] = (\n        1,\n    )\n'
    shape, fields = slot_fields(text)
    assert shape == 'class ModelConfig:\n    """Doc."""\n\n    # why\n    smt_slot_00000: int = 0\n    smt_slot_00001: int = 0\n'
    assert fields == ["    a: int = 1\n", "    b: tuple[int, ...] = (\n        1,\n    )\n"]
    assert fill_slots(shape, fields, lambda field: field) == text
    assert slot_fields("class ModelConfig:\n    a: int = 1; b: int = 2\n") is None  # one line, two statements
    assert slot_fields("class Other:\n    a: int = 1\n") is None
    assert slot_fields("class ModelConfig:\n    smt_slot_00000: int = 1\n") is None
    assert fill_slots(shape, fields[:1], lambda field: field) is None  # a placeholder without its field


# Descriptions from 60 to 130 characters cross every width at which black splits `description: str = "..."`
# differently; long feature names and many features make the tuples split at every level.
@pytest.mark.parametrize("width", [60, 83, 91, 97, 101, 104, 130])
def test_config_formatted_by_slots_equals_formatting_the_whole_file(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = _spec()
    answers["description"] = ("Installs attributed to an ad, é " * 5)[:width]
    features = answers["sparse_features"]
    answers["sparse_features"] = features + [
        {**features[0], "name": "f" * (width // 3) + str(i), "cardinality": 10 ** (i % 7 + 1)} for i in range(width % 5 + 1)
    ]
    answers["serving"] = {**answers["serving"], "max_params": 50_000_000}  # room for the added tables
    seen: list[str] = []

    def slot_fields_seen(text: str):
        seen.append(text)
        return slot_fields(text)

    monkeypatch.setattr(pipeline, "slot_fields", slot_fields_seen)
    engine.use_store(None)
    slotted = render_model(REPO, answers, MODEL)[f"{MODEL}/config.py"]
    sources, plan = pipeline.plan_for(REPO, answers)
    target = "config.py"
    whole = pipeline.renderer_for(sources)._finish(target, seen[-1], pipeline.relevant_plan(target, plan))
    assert slotted == whole
    assert "f" * (width // 3) + "0" in slotted


# -- the cache key covers every input -------------------------------------------------------------


def test_model_key_changes_with_every_input(small_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = small_root / "generated" / MODEL
    keys = [_key(small_root)]
    assert _key(small_root) == keys[0]  # stable

    def changed() -> bool:
        keys.append(_key(small_root))
        return keys[-1] != keys[-2]

    template_file = small_root / "template_repo" / "template" / "{{ model_name }}" / "__main__.py.jinja"
    template_file.write_text(template_file.read_text() + "\n")
    assert changed(), "a template file"
    used = _spec()["techniques"][0]["name"]
    patch = next((small_root / "techniques" / used).glob("*.py"))
    patch.write_text(patch.read_text() + "\n# edited\n")
    assert changed(), "a technique the model uses"
    unused = next(name for name in sorted(p.name for p in (small_root / "techniques").iterdir() if p.is_dir())
                  if name not in {use["name"] for use in _spec()["techniques"]})
    other = next((small_root / "techniques" / unused).glob("*.yml"))
    other.write_text(other.read_text() + "\n")
    keys.append(_key(small_root))
    assert keys[-1] == keys[-2], "a technique the model does not use must not invalidate it"
    spec = folder / ".copier-answers.yml"
    spec.write_text(spec.read_text() + "\n# a comment\n")
    assert changed(), "the spec"
    local = folder / "local_techniques" / "mine"
    local.mkdir(parents=True)
    (local / "technique.yml").write_text("name: mine\n")
    assert changed(), "a local technique"
    generator_copy = small_root.parent / "generator-copy"
    shutil.copytree(REPO / "generator", generator_copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache_module, "GENERATOR_DIR", generator_copy)
    keys.append(_key(small_root))
    (generator_copy / "sync.py").write_text((generator_copy / "sync.py").read_text() + "\n# a change\n")
    assert changed(), "the generator's code"
    monkeypatch.setattr(RenderCache, "tool_versions", lambda self: cache_module._tool_versions())
    for tool in ("black", "libcst", "copier"):
        real = cache_module.version
        monkeypatch.setattr(cache_module, "version", lambda name, real=real, tool=tool: "0.0-other" if name == tool else real(name))
        assert changed(), f"{tool}'s version"
        monkeypatch.setattr(cache_module, "version", real)
        keys.append(_key(small_root))


def test_the_finished_file_cache_keys_on_engine_tools_technique_and_text(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = engine.load_sources(REPO)
    renderer = engine.FileRenderer(sources)
    _, plan = engine.plan_for(REPO, _spec())
    key = renderer.store_key("model.py", "x = 1\n", plan)
    assert renderer.store_key("model.py", "x = 2\n", plan) != key
    assert renderer.store_key("model.py", "x = 1\n", plan[1:]) != key
    assert renderer.store_key("train.py", "x = 1\n", plan) != key
    monkeypatch.setattr(pipeline.black, "__version__", "0.0-other")
    other = engine.FileRenderer(pipeline.TemplateSources(REPO, sources.version, sources.extension_points, sources.library, pipeline.engine_fingerprint()))
    assert other.store_key("model.py", "x = 1\n", plan) != key


# -- the cache changes speed, never answers --------------------------------------------------------


def test_fleet_changes_render_only_what_the_cache_cannot_vouch_for(small_root: Path) -> None:
    fleet = Fleet(small_root)
    cache = RenderCache(small_root)
    first = fleet_changes(small_root, fleet.models(), 1, cache)
    assert (first.rendered, first.cached) == (1, 0) and first.results[0].changes == []
    again = fleet_changes(small_root, fleet.models(), 1, cache)
    assert (again.rendered, again.cached) == (1 - 1, 1)

    edited = small_root / "generated" / MODEL / MODEL / "model.py"
    original = edited.read_text()
    edited.write_text(original + "# a hand edit\n")
    hand = fleet_changes(small_root, fleet.models(), 1, cache)
    assert hand.rendered == 1
    assert [(c.path, c.kind) for c in hand.results[0].changes] == [(f"{MODEL}/model.py", "modified")]
    edited.write_text(original)

    extra = small_root / "generated" / MODEL / MODEL / "stray.py"
    extra.write_text("x = 1\n")
    stray = fleet_changes(small_root, fleet.models(), 1, cache)
    assert [(c.path, c.kind) for c in stray.results[0].changes] == [(f"{MODEL}/stray.py", "removed")]
    extra.unlink()

    spec = small_root / "generated" / MODEL / ".copier-answers.yml"
    data = yaml.safe_load(spec.read_text())
    spec.write_text(yaml.safe_dump({**data, "description": "Changed."}, sort_keys=False))
    changed = fleet_changes(small_root, fleet.models(), 1, cache)
    assert changed.rendered == 1 and [c.path for c in changed.results[0].changes] == ["README.md", f"{MODEL}/config.py", "pyproject.toml"]


def test_output_is_the_same_whatever_jobs_and_cache(small_root: Path) -> None:
    fleet = Fleet(small_root)
    second = yaml.safe_load((REPO / "generated" / "video_vtr" / ".copier-answers.yml").read_text())
    folder = small_root / "generated" / "video_vtr"
    write_tree(folder, {}, yaml.safe_dump(second))
    entries = fleet.models() * 2  # four renders: enough for the pool
    serial = render_models(small_root, entries, 1, RenderCache(small_root, enabled=False))
    pooled = render_models(small_root, entries, 2, RenderCache(small_root))
    cached = render_models(small_root, entries, 2, RenderCache(small_root))
    assert serial == pooled == cached
    assert serial[0] == read_tree(REPO / "generated" / MODEL)
    assert serial[1] == read_tree(REPO / "generated" / "video_vtr")


def test_folder_hashes_are_reused_only_while_a_files_stat_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "generated" / "m"
    (folder / "m").mkdir(parents=True)
    target = folder / "m" / "model.py"
    target.write_text("x = 1\n")
    (folder / ".copier-answers.yml").write_text("model_name: m\n")
    (folder / "runs").mkdir()
    (folder / "runs" / "metrics.json").write_text("{}")  # outputs are not part of the folder's hashes
    later = cache_module.time.time_ns() + 10_000_000_000  # record as if ten seconds had passed: trusted
    monkeypatch.setattr(cache_module.time, "time_ns", lambda: later)
    cache = RenderCache(tmp_path)
    first = cache.folder_digests(folder)
    assert set(first) == {"m/model.py"}
    cache.flush()
    reread = RenderCache(tmp_path)
    monkeypatch.setattr(cache_module, "file_digest", lambda path: pytest.fail(f"re-hashed {path}"))
    assert reread.folder_digests(folder) == first  # stat unchanged: the recorded hash is reused
    monkeypatch.undo()
    info = target.stat()
    target.write_text("x = 2\n")  # same size, and the old mtime put back: only ctime tells
    import os

    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert RenderCache(tmp_path).folder_digests(folder)["m/model.py"] != first["m/model.py"]


def test_blame_takes_a_range_and_remembers_each_file_by_its_inputs_and_text() -> None:
    from support import run_smt

    model_py = (REPO / "generated/feed_ctr/feed_ctr/model.py").read_text().splitlines()
    cross = next(i for i, line in enumerate(model_py, 1) if "return torch.addcmul(x, x0, self.projection(x))" in line)
    result = run_smt(REPO, "blame", f"generated/feed_ctr/feed_ctr/model.py:2-{cross}")
    assert result.code == 0, result.err
    heads = [line for line in result.out.splitlines() if not line.startswith("    ")]
    assert len(heads) == cross - 1
    assert heads[0].startswith("generated/feed_ctr/feed_ctr/model.py:2: header")
    version = yaml.safe_load((REPO / "techniques/dcn_v2/technique.yml").read_text())["version"]
    assert heads[-1] == f"generated/feed_ctr/feed_ctr/model.py:{cross}: technique dcn_v2 {version} (techniques/dcn_v2)"
    single = run_smt(REPO, "blame", f"generated/feed_ctr/feed_ctr/model.py:{cross}")
    assert single.out.splitlines()[0] == heads[-1]
    assert run_smt(REPO, "blame", "generated/feed_ctr/feed_ctr/model.py:5-4").code == 2


def test_a_folder_found_in_sync_stays_so_only_while_no_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "generated" / "m"
    tree = {"m/model.py": "x = 1\n", "README.md": "readme\n"}
    write_tree(folder, tree, "model_name: m\n")
    later = cache_module.time.time_ns() + 10_000_000_000
    monkeypatch.setattr(cache_module.time, "time_ns", lambda: later)
    cache = RenderCache(tmp_path)
    cache.put_model("k" * 64, tree)
    assert cache.in_sync(folder, "k" * 64)
    cache.flush()
    fresh = RenderCache(tmp_path)
    monkeypatch.setattr(RenderCache, "model_digests", lambda self, key: pytest.fail("the fast path reads no entry"))
    assert fresh.in_sync(folder, "k" * 64)
    monkeypatch.undo()
    assert not RenderCache(tmp_path).in_sync(folder, "j" * 64)  # another key: compared, and differs (no entry)
    (folder / "m" / "model.py").write_text("x = 2\n")
    assert not RenderCache(tmp_path).in_sync(folder, "k" * 64)


def test_sources_are_checked_once_per_render_and_an_edit_between_renders_is_seen(small_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = Fleet(small_root).model(MODEL)
    render_model(small_root, entry.answers, entry.name, entry.directory)
    stamps: list[int] = []
    stamp = pipeline._stamp
    monkeypatch.setattr(pipeline, "_stamp", lambda paths: stamps.append(len(paths)) or stamp(paths))
    first = render_model(small_root, entry.answers, entry.name, entry.directory)
    # the template's files call the engine ~20 times; sources and local techniques are stamped per
    # root path the render names (the caller's and the Jinja extension's), not per file
    assert 0 < len(stamps) <= 4
    version = small_root / "template_repo" / "VERSION"
    version.write_text("9.9.9\n")
    second = render_model(small_root, entry.answers, entry.name, entry.directory)
    init = f"{MODEL}/__init__.py"
    assert '__template_version__ = "9.9.9"' in second[init] and '__template_version__ = "9.9.9"' not in first[init]


def test_a_spec_read_from_the_cache_keeps_the_files_key_order(small_root: Path) -> None:
    """`smt adopt` writes a spec back from its parsed answers: a cached parse must keep the order."""
    spec = small_root / "generated" / MODEL / ".copier-answers.yml"
    first = RenderCache(small_root).load_answers(spec)
    cache = RenderCache(small_root)
    cache.load_answers(spec)
    cache.flush()
    again = RenderCache(small_root).load_answers(spec)  # from specs.json
    assert list(again) == list(first) == list(yaml.safe_load(spec.read_text()))
    assert list(first)[:2] == ["model_name", "description"]


def test_generate_leaves_the_lock_comparison_ready_for_the_next_check(repo_copy: Path) -> None:
    """`smt check` compares technique locks with the template's definitions (a render of the
    reference model); `smt generate` computes them, so the pre-commit check after it need not."""
    stored = repo_copy / ".smt" / "template_definitions.json"
    stored.unlink(missing_ok=True)
    assert run_smt(repo_copy, "generate").code == 0
    assert stored.is_file()
    before = stored.stat().st_mtime_ns
    assert run_smt(repo_copy, "check").code == 0
    assert stored.stat().st_mtime_ns == before  # reused, not computed again
