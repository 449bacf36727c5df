"""Which techniques cannot be combined, read from what they replace (for `smt techniques show`).

Two techniques that replace the same extension point are alternatives: the engine refuses a model
using both unless one ``builds_on`` the other. Declared ``conflicts`` say the same in words. This
module finds both from the techniques' sources, so the listing never says "none" when the engine
would refuse the pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import engine


@dataclass(frozen=True)
class ExtensionPointUse:
    """One extension point a technique's patch defines: the file, the point and its kind."""

    target: str
    point: str
    kind: str  # "replace" points allow one owner; "hook" points many

    def __str__(self) -> str:
        return f"{self.target}:{self.point} ({self.kind})"


@dataclass(frozen=True)
class Incompatibility:
    """A technique that cannot be used together with another one, and why."""

    other: str
    reason: str


def extension_points_used(technique: engine.Technique, sources: engine.TemplateSources) -> list[ExtensionPointUse]:
    """The extension points ``technique``'s patches define, in patch order."""
    from .engine.patch import parse_patch  # noqa: PLC0415 - libcst

    used = []
    for target, source in technique.patches:
        points = sources.extension_points.get(target, {})
        for name, _ in parse_patch(source, target).definitions:
            names = [name] if name in points else [point for point in points if point.startswith(f"{name}.")]
            used += [ExtensionPointUse(target, point, points[point].kind) for point in names]
    return used


def _replaced(technique: engine.Technique, sources: engine.TemplateSources) -> set[tuple[str, str]]:
    return {(use.target, use.point) for use in extension_points_used(technique, sources) if use.kind != "hook"}


def incompatible_with(technique: engine.Technique, library: Mapping[str, engine.Technique], sources: engine.TemplateSources) -> list[Incompatibility]:
    """Techniques that cannot share a model with ``technique``: declared conflicts (either side) and
    techniques replacing one of the same extension points without a ``builds_on`` between them."""
    mine = _replaced(technique, sources)
    found: list[Incompatibility] = []
    for other in library.values():
        if other.name == technique.name:
            continue
        if other.name in technique.conflicts or technique.name in other.conflicts:
            found.append(Incompatibility(other.name, "declared conflict"))
            continue
        if other.name in technique.builds_on or technique.name in other.builds_on:
            continue
        shared = sorted(mine & _replaced(other, sources))
        if shared:
            points = ", ".join(f"{target}:{point}" for target, point in shared)
            found.append(Incompatibility(other.name, f"both replace {points}"))
    return found
