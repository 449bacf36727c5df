"""``smt dashboard OUT``: the fleet as a static site, one self-contained page that opens from disk.

Data flows one way: ``collect`` gathers the fleet (specs, techniques, sync state, capacity, latest
training runs) and its history (``releases``: template releases from git; ``evidence``:
qualification and tuning reports; ``runs``: training metrics) into one JSON-able mapping;
``write`` embeds it in ``assets/page.html`` with the page's CSS and JavaScript inline and copies the
plots next to it. Nothing here imports PyTorch: capacity comes from ``generator.capacity``'s
subprocess when the caller asks for it.
"""

from __future__ import annotations

from .collect import Dashboard, collect_dashboard
from .write import check_output, write_dashboard

__all__ = ["Dashboard", "check_output", "collect_dashboard", "write_dashboard"]
