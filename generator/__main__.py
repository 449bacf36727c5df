"""`python -m generator` is the `smt` command."""

from .cli import main

main()
