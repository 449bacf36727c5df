"""The ``smt`` command line: a Typer app whose commands are thin wrappers over the library.

``_app`` holds the app, the one error handler (``handle_errors``: a user error is one line on
stderr and exit 2) and the entry point; ``_workspace`` the repository a command runs in. Each
other module registers one group of commands on the app when imported here. They import ``_app``
and ``_workspace``, never this package, so there is no import cycle.
"""

from __future__ import annotations

from . import fleet, adoption, blame, techniques, training, model_repo, qualification, tuning  # noqa: F401  (register commands)
from . import dashboard  # noqa: F401  (registers `smt dashboard`)
from ._app import app, main

__all__ = ["app", "main"]
