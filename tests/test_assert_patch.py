"""Patch semantics, one behaviour per test, in-process with ``assert_patch`` (see tests/patching.py).

The fixtures' template has the replaceable extension points ``Arch`` (a class) and ``build`` (a
function) and the hook ``after_step``; each test is applied by technique ``demo 1.0.0``.
"""

from __future__ import annotations

import pytest

from generator.engine import SmtError
from generator.engine.patch import parse_patch
from patching import assert_patch, assert_patch_fails, patch_once

ARCH = """
    import torch


    class Arch:
        def __init__(self, config, in_dim):
            self.output_dim = in_dim

        def forward(self, x):
            return x
"""


def test_replaces_a_class_extension_point() -> None:
    """A class named like an extension point replaces the template's, under a provenance comment."""
    assert_patch(
        ARCH,
        """
        class Arch:
            def __init__(self, config, in_dim):
                self.output_dim = in_dim

            def forward(self, x):
                return 2 * x
        """,
        """
        import torch


        # SMT technique demo 1.0.0: replaces extension point Arch.
        class Arch:
            def __init__(self, config, in_dim):
                self.output_dim = in_dim

            def forward(self, x):
                return 2 * x
        """,
    )


def test_replaces_a_function_extension_point() -> None:
    """A function named like an extension point replaces the template's."""
    assert_patch(
        """
        def build(model, config, steps=1):
            return None
        """,
        """
        def build(model, config, steps=1):
            return [model] * steps
        """,
        """
        # SMT technique demo 1.0.0: replaces extension point build.
        def build(model, config, steps=1):
            return [model] * steps
        """,
    )


def test_the_patch_docstring_is_not_copied() -> None:
    """The patch's module docstring says what the patch does; it stays out of the target."""
    assert_patch(
        "def build(model, config, steps=1):\n    return None\n",
        '"""Patch for m.py: builds nothing, explicitly."""\n\n\ndef build(model, config, steps=1):\n    return None\n',
        "# SMT technique demo 1.0.0: replaces extension point build.\ndef build(model, config, steps=1):\n    return None\n",
    )


def test_hook_body_is_appended_after_the_template_body() -> None:
    """A function named like a hook appends its body (minus docstring) to the hook's."""
    assert_patch(
        """
        def after_step(model, config):
            \"\"\"Hook: techniques append here.\"\"\"
            model.steps += 1
        """,
        """
        def after_step(model, config):
            \"\"\"Clip.\"\"\"
            model.clip()
        """,
        """
        def after_step(model, config):
            \"\"\"Hook: techniques append here.\"\"\"
            model.steps += 1
            # SMT technique demo 1.0.0: inserts into hook after_step.
            model.clip()
        """,
    )


def test_two_techniques_append_to_one_hook_in_order() -> None:
    """A second technique's hook body goes after the first's, each with its own provenance."""
    hook = "def after_step(model, config):\n    pass\n"
    once = patch_once(hook, "def after_step(model, config):\n    model.clip()\n")
    assert_patch(
        once,
        "def after_step(model, config):\n    model.zero_grad()\n",
        """
        def after_step(model, config):
            pass
            # SMT technique demo 1.0.0: inserts into hook after_step.
            model.clip()
            # SMT technique other 2.0.0: inserts into hook after_step.
            model.zero_grad()
        """,
        technique="other 2.0.0",
    )


def test_a_hook_body_already_there_is_not_appended_again() -> None:
    """No change: the hook already holds the patch's statements (a re-application)."""
    assert_patch(
        """
        def after_step(model, config):
            # SMT technique demo 1.0.0: inserts into hook after_step.
            model.clip()
        """,
        "def after_step(model, config):\n    model.clip()\n",
    )


def test_imports_are_added_after_the_last_import_and_deduplicated() -> None:
    """Missing imports go after the target's imports; present ones (even partly) are not repeated."""
    assert_patch(
        """
        import torch
        from torch import nn


        def build(model, config, steps=1):
            return None
        """,
        """
        import math
        import torch
        from torch import nn, Tensor


        def build(model, config, steps=1) -> Tensor:
            return torch.tensor(math.pi)
        """,
        """
        import torch
        from torch import nn
        import math
        from torch import Tensor


        # SMT technique demo 1.0.0: replaces extension point build.
        def build(model, config, steps=1) -> Tensor:
            return torch.tensor(math.pi)
        """,
    )


def test_a_helper_is_added_just_before_the_first_replaced_extension_point() -> None:
    """A definition that is not an extension point is added above the extension point using it."""
    assert_patch(
        """
        import torch

        SCALE = 1.0


        def build(model, config, steps=1):
            return None
        """,
        """
        def doubled(model):
            return [model, model]


        def build(model, config, steps=1):
            return doubled(model) * steps
        """,
        """
        import torch

        SCALE = 1.0


        # SMT technique demo 1.0.0: adds doubled.
        def doubled(model):
            return [model, model]


        # SMT technique demo 1.0.0: replaces extension point build.
        def build(model, config, steps=1):
            return doubled(model) * steps
        """,
    )


def test_applying_a_patch_to_its_own_output_changes_nothing() -> None:
    """Idempotence: the output of a patch (helper, replacement, imports) is a fixed point."""
    patch = "import math\n\n\ndef half(x):\n    return x / 2\n\n\ndef build(model, config, steps=1):\n    return half(math.pi)\n"
    once = patch_once("import torch\n\n\ndef build(model, config, steps=1):\n    return None\n", patch)
    assert_patch(once, patch)


def test_a_helper_the_target_already_defines_differently_is_refused() -> None:
    """Two different definitions of one name: one line naming the name."""
    assert_patch_fails(
        "def util():\n    return 1\n\n\ndef build(model, config, steps=1):\n    return util()\n",
        "def util():\n    return 2\n\n\ndef build(model, config, steps=1):\n    return util()\n",
        "technique demo 1.0.0 (m.py): defines 'util' differently, but m.py already defines 'util'; rename one of them",
    )


def test_a_collision_names_the_technique_that_added_the_name() -> None:
    """When a technique added the existing definition, the error names that technique."""
    added = patch_once("def build(model, config, steps=1):\n    return None\n", "def util():\n    return 1\n\n\ndef build(model, config, steps=1):\n    return util()\n")
    with pytest.raises(SmtError, match="technique demo 1.0.0 already added 'util' to m.py"):
        patch_once(added, "def util():\n    return 3\n\n\ndef build(model, config, steps=1):\n    return util()\n", technique="other 2.0.0")


def test_an_extension_point_the_template_lacks_is_refused() -> None:
    """A patch for an extension point the template no longer has: one line saying so."""
    assert_patch_fails(
        "import torch\n",
        "class Arch:\n    pass\n",
        "technique demo 1.0.0 (m.py): the template has no extension point 'Arch' in m.py; update the technique to the template",
    )


def test_an_addition_nothing_uses_is_refused() -> None:
    """A definition nothing uses is refused: usually the template renamed the point it meant to replace."""
    assert_patch_fails(
        "class SharedArch:\n    pass\n",
        "class OverArch:\n    pass\n",
        "technique demo 1.0.0 (m.py): adds 'OverArch' but nothing uses it; if it replaces an extension point, the template "
        "no longer has one by that name (extension points here: Arch, after_step, build)",
    )


def test_a_patch_may_only_import_and_define() -> None:
    """Any other top-level statement is refused when the patch is read."""
    with pytest.raises(SmtError, match=r"^bad.py: top-level statement \"print\('hello'\)\" is neither an import nor a definition"):
        parse_patch("print('hello')\n", "bad.py")


# The contract, read from the template's code.


def test_a_constructor_with_other_parameters_is_refused() -> None:
    """Renamed constructor parameters: one line naming the class, both signatures and what to do."""
    assert_patch_fails(
        ARCH,
        "class Arch:\n    def __init__(self, config, width):\n        self.output_dim = width\n\n    def forward(self, x):\n        return x\n",
        "technique demo 1.0.0 (m.py): Arch.__init__ takes (config, width) but the template's takes (config, in_dim); "
        "keep the template's signature",
    )


def test_forward_parameters_in_another_order_are_refused() -> None:
    """Parameter order is part of the contract: the template calls forward positionally."""
    before = ARCH.replace("def forward(self, x):", "def forward(self, dense, sparse):")
    assert_patch_fails(
        before,
        "class Arch:\n    def __init__(self, config, in_dim):\n        self.output_dim = in_dim\n\n"
        "    def forward(self, sparse, dense):\n        return dense\n",
        "technique demo 1.0.0 (m.py): Arch.forward takes (sparse, dense) but the template's takes (dense, sparse); "
        "keep the template's signature",
    )


def test_a_missing_output_dim_is_refused() -> None:
    """The template's class sets output_dim, which the next arch reads: a replacement must too."""
    assert_patch_fails(
        ARCH,
        "class Arch:\n    def __init__(self, config, in_dim):\n        self.width = in_dim\n\n    def forward(self, x):\n        return x\n",
        "technique demo 1.0.0 (m.py): Arch sets no self.output_dim but the template's does (the arches after it read it); set it",
    )


def test_a_missing_forward_is_refused() -> None:
    """A replacement class without the template's forward is refused."""
    assert_patch_fails(
        ARCH,
        "class Arch:\n    def __init__(self, config, in_dim):\n        self.output_dim = in_dim\n",
        "technique demo 1.0.0 (m.py): Arch defines no forward but the template's takes (x); keep the template's signature",
    )


def test_a_function_with_another_default_is_refused() -> None:
    """Defaults are part of a function's signature."""
    assert_patch_fails(
        "def build(model, config, steps=1):\n    return None\n",
        "def build(model, config, steps=2):\n    return None\n",
        "technique demo 1.0.0 (m.py): build takes (model, config, steps=2) but the template's takes (model, config, steps=1); "
        "keep the template's signature",
    )


def test_a_hook_with_another_signature_is_refused() -> None:
    """A hook body is written for the hook's parameters; a different signature is refused."""
    assert_patch_fails(
        "def after_step(model, config):\n    pass\n",
        "def after_step(model):\n    model.clip()\n",
        "technique demo 1.0.0 (m.py): after_step takes (model) but the template's takes (model, config); keep the template's signature",
    )


def test_a_class_replacing_a_function_is_refused() -> None:
    """The kind of definition is part of the contract."""
    assert_patch_fails(
        "def build(model, config, steps=1):\n    return None\n",
        "class build:\n    pass\n",
        "technique demo 1.0.0 (m.py): build is a function in the template; define `def build(...)` with the template's signature",
    )


def test_annotations_and_extra_attributes_are_free() -> None:
    """Only names, order and defaults are checked: a replacement may add annotations and attributes."""
    assert_patch(
        ARCH,
        """
        class Arch:
            def __init__(self, config: object, in_dim: int) -> None:
                self.output_dim = 2 * in_dim
                self.scale = 2

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.scale * torch.cat([x, x], dim=1)
        """,
        """
        import torch


        # SMT technique demo 1.0.0: replaces extension point Arch.
        class Arch:
            def __init__(self, config: object, in_dim: int) -> None:
                self.output_dim = 2 * in_dim
                self.scale = 2

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.scale * torch.cat([x, x], dim=1)
        """,
    )
