"""``assert_patch(before, patch, after)``: the patch engine's semantics on small sources, in-process.

In the style of LibCST's ``assertCodemod``: fixtures are dedented, the whole output is compared
(both sides formatted with black, as the pipeline formats every generated module), ``after``
omitted means "no change", and every patch is applied a second time to its own output, which must
change nothing. The extension points are set once for the module (``POINTS``); a test passes
others when it needs them.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Mapping

import pytest

from generator.engine import SmtError
from generator.engine.layout import format_python
from generator.engine.patch import ExtensionPoint, apply_patch, parse_patch

# The fixtures' template: ``Arch`` and ``build`` are replaceable, ``after_step`` is a hook.
POINTS = {"Arch": "replace", "build": "replace", "after_step": "hook"}
TECHNIQUE = "demo 1.0.0"


def _points(points: Mapping[str, str]) -> dict[str, ExtensionPoint]:
    return {name: ExtensionPoint(name, kind, "") for name, kind in points.items()}


def patch_once(before: str, patch: str, *, technique: str = TECHNIQUE, points: Mapping[str, str] = POINTS) -> str:
    """``patch`` (dedented) applied to ``before`` (dedented) by ``technique``, formatted."""
    parsed = parse_patch(textwrap.dedent(patch), "patch.py")
    out = apply_patch(textwrap.dedent(before), parsed, target="m.py", technique=technique, extension_points=_points(points))
    return format_python(out)


def assert_patch(
    before: str, patch: str, after: str | None = None, *, technique: str = TECHNIQUE, points: Mapping[str, str] = POINTS
) -> None:
    """Require ``patch`` applied to ``before`` to give exactly ``after`` (``before`` when omitted),
    and applying it again to change nothing."""
    expected = format_python(textwrap.dedent(after if after is not None else before))
    actual = patch_once(before, patch, technique=technique, points=points)
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "expected", "actual"))
        raise AssertionError(f"the patched module differs from the expected one:\n{diff}")
    again = patch_once(actual, patch, technique=technique, points=points)
    assert again == actual, "applying the patch to its own output changed it again"


def assert_patch_fails(before: str, patch: str, error: str, *, points: Mapping[str, str] = POINTS) -> None:
    """Require the engine to refuse ``patch`` on ``before`` with exactly the one line ``error``."""
    with pytest.raises(SmtError) as caught:
        patch_once(before, patch, points=points)
    assert str(caught.value) == error
    assert "\n" not in str(caught.value)
