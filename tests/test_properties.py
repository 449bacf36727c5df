"""Property-based tests (Hypothesis): random inputs never end in a traceback, and patching is
deterministic and idempotent.

- Random specs, valid or not: validation and planning either accept them or raise SmtError with
  one line (what the CLI prints, exit 2); valid ones render to valid Python.
- Random YAML text and bytes: the input reader returns data or raises a one-line SmtError.
- Random template modules and technique patches (replacing extension points, appending to hooks,
  adding helpers and imports): applying a patch gives the same text every time, and applying it
  again to its own output changes nothing.

Examples are modest and in-process (no subprocesses), so the file runs in well under a minute.
"""

from __future__ import annotations

import keyword
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import REPO
from generator.engine import SmtError
from generator.engine.patch import ExtensionPoint, apply_patch, parse_patch
from generator.engine.store import parse_yaml, read_input_text
from generator.render import check_spec, render_model

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: not keyword.iskeyword(name) and not name.startswith("label_")
)
bad_names = st.sampled_from(["", "1st", "class", "user-id", "os", "label_x", "ü", "a b"])


def assert_one_line(error: SmtError) -> None:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, message
    assert len(message) < 2000, message[:200]


@st.composite
def specs(draw: st.DrawFn, valid_only: bool = False) -> dict[str, Any]:
    """A spec dict; unless valid_only, any field may be missing, mistyped or out of range."""

    def maybe_bad(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(good) if valid_only or draw(st.integers(0, 9)) else draw(bad)

    names = draw(st.lists(identifiers, min_size=2, max_size=7, unique=True))
    sparse_names, dense_names = names[: max(1, len(names) - 2)], names[max(1, len(names) - 2) :]
    spec: dict[str, Any] = {
        "model_name": maybe_bad(st.sampled_from(["prop_model", "other_model"]), bad_names),
        "description": draw(st.text(max_size=30)),
        "objectives": [
            {"name": f"obj{index}", "weight": maybe_bad(st.floats(0.1, 5.0), st.one_of(st.text(max_size=3), st.none()))}
            for index in range(maybe_bad(st.integers(1, 3), st.sampled_from([0, 9])))
        ],
        "sparse_features": [
            {
                "name": maybe_bad(st.just(name), bad_names),
                "cardinality": maybe_bad(st.integers(2, 300), st.one_of(st.integers(-3, 1), st.just("many"), st.just(10**15))),
                "embedding_dim": maybe_bad(st.sampled_from([4, 8]), st.sampled_from([0, 2048, 3.5])),
                "multi_valued": maybe_bad(st.booleans(), st.just("yes")),
            }
            for name in sparse_names
        ],
        "dense_features": [{"name": name} for name in dense_names],
        "serving": {
            "max_params": maybe_bad(st.just(10_000_000), st.integers(-1, 100)),
            "max_mflops_per_example": maybe_bad(st.just(10.0), st.sampled_from([0, -1.0, "fast"])),
        },
        "techniques": maybe_bad(
            st.sampled_from([[], [{"name": "dcn_v2", "params": {"num_cross_layers": 2}}], [{"name": "grad_clip"}]]),
            st.sampled_from(
                [
                    [{"name": "no_such_technique"}],
                    [{"name": "dcn_v2", "params": {"num_cross_layers": -1}}],
                    [{"name": "dcn_v2", "params": {"layers": 2}}],
                    [{"name": "dcn_v2"}, {"name": "dcn_v2"}],
                    [{"name": "mmoe"}],
                    "dcn_v2",
                ]
            ),
        ),
    }
    if not valid_only and not draw(st.integers(0, 9)):
        spec[draw(st.sampled_from(["servng", "hyperparameters", "data", "synthetic"]))] = draw(
            st.sampled_from([{}, {"nope": 1}, [], "x", {"epochs": 0}, {"labels": {"zzz": "c"}}, {"label_noise": 0.9}])
        )
    if not valid_only and not draw(st.integers(0, 9)):
        spec.pop(draw(st.sampled_from(sorted(spec))))
    return spec


@FAST
@given(specs())
def test_random_specs_are_accepted_or_refused_in_one_line(spec: dict[str, Any]) -> None:
    name = str(spec.get("model_name", "prop_model"))
    try:
        check_spec(REPO, spec, name)
    except SmtError as error:
        assert_one_line(error)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(valid_only=True))
def test_valid_random_specs_render_to_python(spec: dict[str, Any]) -> None:
    spec["model_name"] = "prop_model"
    tree = render_model(REPO, spec, "prop_model")
    assert "prop_model/model.py" in tree
    for path, text in tree.items():
        if path.endswith(".py"):
            compile(text, path, "exec")


yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["a:", " b", "- ", "&x ", "*x", "[", "]", "{", "}", ": ", "\n", "\t", "'", '"', "!!python/object:os.system", "? ", "|", ">", "#"]), max_size=40).map("".join),
)


@settings(max_examples=200, deadline=None)
@given(yaml_text)
def test_random_yaml_is_read_or_refused_in_one_line(text: str) -> None:
    try:
        parse_yaml(text, "random.yml", "the spec")
    except SmtError as error:
        assert_one_line(error)
        assert error.message.startswith("random.yml")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_read_or_refused_in_one_line(data: bytes) -> None:
    import tempfile  # noqa: PLC0415 - a fresh file per example

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.yml"
        path.write_bytes(data)
        try:
            parse_yaml(read_input_text(path, "the spec"), str(path), "the spec")
        except SmtError as error:
            assert_one_line(error)
            assert str(path) in error.message


# -- patches ------------------------------------------------------------------------------------------
@st.composite
def modules_and_patches(draw: st.DrawFn) -> tuple[str, str, dict[str, ExtensionPoint]]:
    """A template module (functions and classes, some of them extension points or hooks) and a
    technique patch replacing some points, appending to hooks, adding a helper and imports."""
    names = draw(st.lists(identifiers, min_size=2, max_size=6, unique=True))
    kinds = [draw(st.sampled_from(["replace", "hook", "plain"])) for _ in names]
    constants = [draw(st.integers(0, 99)) for _ in names]
    template = ['"""A generated module."""', "", "import math", ""]
    points: dict[str, ExtensionPoint] = {}
    for name, kind, value in zip(names, kinds, constants):
        if kind == "hook":
            template += [f"def {name}(state):", f"    state.append({value})", ""]
        elif draw(st.booleans()):
            template += [f"class {name.title()}Arch:", f"    width = {value}", ""]
            name = f"{name.title()}Arch"
        else:
            template += [f"def {name}(x):", f"    return math.floor(x) + {value}", ""]
        if kind != "plain":
            points[name] = ExtensionPoint(name, kind, "")
    caller = ["def forward(x):", "    return " + " + ".join(f"{name}" for name in points if points[name].kind == "replace") or "    return x"]
    template += caller if any(p.kind == "replace" for p in points.values()) else ["def forward(x):", "    return x"]
    replaced = [name for name, point in points.items() if point.kind == "replace" and draw(st.booleans())]
    hooks = [name for name, point in points.items() if point.kind == "hook" and draw(st.booleans())]
    helper = f"helper_{draw(st.integers(0, 999))}"
    patch = ['"""A technique."""', ""]
    patch += draw(st.lists(st.sampled_from(["import math", "import os", "from typing import Any", "from math import sqrt"]), unique=True, max_size=3))
    patch.append("")
    if replaced:
        patch += [f"def {helper}(x):", f"    return x * {draw(st.integers(1, 9))}", ""]
    for name in replaced:
        if name.endswith("Arch"):
            patch += [f"class {name}:", f"    width = {helper}(2)", ""]
        else:
            patch += [f"def {name}(x):", f"    return {helper}(x)", ""]
    for name in hooks:
        patch += [f"def {name}(state):", f"    state.append({draw(st.integers(100, 199))})", ""]
    if not replaced and not hooks:
        name = next(iter(points), None)
        if name is None:
            patch += ["def forward(x):", "    return x", ""]  # the same code: a no-op patch
        elif points[name].kind == "hook":
            patch += [f"def {name}(state):", "    state.append(-1)", ""]
        elif name.endswith("Arch"):
            patch += [f"class {name}:", "    width = 0", ""]
        else:
            patch += [f"def {name}(x):", "    return -x", ""]
    return "\n".join(template) + "\n", "\n".join(patch) + "\n", points


@FAST
@given(modules_and_patches())
def test_patch_application_is_deterministic_and_idempotent(case: tuple[str, str, dict[str, ExtensionPoint]]) -> None:
    source, patch_source, points = case

    def apply(text: str) -> str:
        return apply_patch(text, parse_patch(patch_source, "model.py"), target="model.py", technique="t", extension_points=points)

    once = apply(source)
    assert apply(source) == once  # deterministic
    assert apply(once) == once  # idempotent
    compile(once, "model.py", "exec")
