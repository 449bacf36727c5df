"""The libcst patch engine on small sources: imports, replacement, additions, conflicts, idempotence."""

from __future__ import annotations

import pytest

from generator.engine import SmtError
from generator.engine.layout import format_python
from generator.engine.patch import ExtensionPoint, apply_patch, parse_patch

TARGET = '''"""A module."""

import torch
from torch import nn


class Base(nn.Module):
    """An extension point."""

    def forward(self, x):
        return x


class Keep(nn.Module):
    pass
'''

PATCH = '''"""Replace Base with a scaled version."""

import math

import torch
from torch import nn, Tensor


SCALE = 2.0


def helper(x: Tensor) -> Tensor:
    return x * SCALE * math.pi


class Base(nn.Module):
    """Scaled."""

    def forward(self, x):
        return helper(x)
'''

POINTS = {
    "Base": ExtensionPoint("Base", "replace", "the base"),
    "after_step": ExtensionPoint("after_step", "hook", "a hook"),
}


def patched(source: str = TARGET, patch: str = PATCH) -> str:
    return format_python(
        apply_patch(source, parse_patch(patch, "patch.py"), target="m.py", technique="demo 1.0.0", extension_points=POINTS)
    )


def test_replaces_extension_point_and_adds_definitions_before_it() -> None:
    out = patched()
    assert "return helper(x)" in out and "return x\n" not in out
    assert out.index("SCALE = 2.0") < out.index("def helper") < out.index("class Base")
    assert out.index("class Base") < out.index("class Keep")
    assert "# SMT technique demo 1.0.0: replaces extension point Base." in out
    assert "# SMT technique demo 1.0.0: adds helper." in out
    assert '"""Replace Base' not in out  # the patch's docstring describes the patch, it is not copied


def test_imports_are_added_once() -> None:
    out = patched()
    assert out.count("import torch\n") == 1
    assert "import math\n" in out
    assert "from torch import Tensor\n" in out  # only the missing name of a partly present import
    assert out.count("from torch import nn") == 1


def test_applying_twice_changes_nothing() -> None:
    once = patched()
    assert patched(once) == once


def test_name_collision_is_an_error() -> None:
    with pytest.raises(SmtError, match="defines 'util' differently, but m.py already defines 'util'"):
        patched(TARGET + "\n\ndef util():\n    return 1\n", "def util():\n    return 2\n")


def test_unknown_extension_point_is_an_error() -> None:
    with pytest.raises(SmtError, match="no extension point 'Base'"):
        patched(source="import torch\n", patch="class Base:\n    pass\n")


def test_patch_with_statements_is_refused() -> None:
    with pytest.raises(SmtError, match="neither an import nor a definition"):
        parse_patch("print('hello')\n", "bad.py")


HOOKED = TARGET + """

def after_step(model, config) -> None:
    \"\"\"Hook: techniques insert code here.\"\"\"
"""


def test_hook_bodies_are_appended_in_order_and_once() -> None:
    first = "import torch\n\n\ndef after_step(model, config) -> None:\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
    second = "def after_step(model, config) -> None:\n    model.zero_grad()\n"
    out = patched(HOOKED, first)
    out = format_python(apply_patch(out, parse_patch(second, "b.py"), target="m.py", technique="other 2.0.0", extension_points=POINTS))
    hook = out[out.index("def after_step") :]
    assert hook.index("clip_grad_norm_") < hook.index("model.zero_grad()")
    assert "# SMT technique demo 1.0.0: inserts into hook after_step." in hook
    assert "# SMT technique other 2.0.0: inserts into hook after_step." in hook
    assert patched(out, first) == out  # idempotent


def test_collision_names_the_technique_that_added_the_name() -> None:
    once = patched()
    with pytest.raises(SmtError, match="technique demo 1.0.0 already added 'helper'"):
        format_python(apply_patch(once, parse_patch("def helper(x):\n    return x\n", "b.py"), target="m.py", technique="other 2.0.0", extension_points=POINTS))
