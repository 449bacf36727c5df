"""The ``smt`` Typer app, its one error handler and its entry point. Only the CLI prints for people
and decides exit codes: 0 success, 1 a check found something to fix, 2 bad input (one line naming
model, file or field)."""

from __future__ import annotations

import functools
from typing import Annotated, Callable, Optional, TypeVar

import typer

from ..engine import SmtError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SMT: render every model of the fleet from one standard template plus techniques.",
    pretty_exceptions_enable=False,
)

Models = Annotated[Optional[list[str]], typer.Argument(help="Model names (default: every model in generated/).")]
Jobs = Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Processes rendering models (default: one per CPU).")]
TrialJobs = Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Trials trained at a time (default: the usable cores divided by --threads).")]
TrialThreads = Annotated[Optional[int], typer.Option("--threads", min=1, help="Torch threads per trial (default: $SMT_THREADS, else 1).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Render every model, ignoring (and not trusting) .smt/cache.")]

# The errors a person can fix: each becomes "error: <message>" on stderr and exit 2. The library
# turns OS errors it expects (a write that fails) into SmtError with the model and file named.
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)
USER_ERRORS: tuple[type[Exception], ...] = (SmtError,)

Command = TypeVar("Command", bound=Callable[..., object])


def handle_errors(command: Command) -> Command:
    """Every command's error handling: a user error is one line on stderr and exit 2 (1 for an error
    that carries exit_code 1: a check's refusal, e.g. the qualification gate); anything else
    (typer.Exit with the command's own code, a bug) passes through. Typer reads the wrapped
    function's signature, so options and help are the command's own."""

    @functools.wraps(command)
    def run(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            fail(str(error))
            # a refusal by a check (the qualification gate) is exit 1, like any check that found something
            raise typer.Exit(getattr(error, "exit_code", 2)) from None

    return run  # type: ignore[return-value]


def say(message: str) -> None:
    """A note for the person (stderr), not part of the command's output."""
    typer.echo(message, err=True)


def fail(message: str) -> None:
    """One error line on stderr; the caller exits 2."""
    typer.echo(f"error: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run smt; a usage error (unknown option, bad value, missing argument) is one line and exit 2,
    like every other error (click's own spans a usage box)."""
    # typer bundles its own click; its UsageError is the base of the BadParameter it exports
    usage_error = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")
    try:
        code = app(args=argv, prog_name="smt", standalone_mode=False)
    except usage_error as error:
        message = " ".join(error.format_message().split()).rstrip(".")
        if not message:  # no arguments at all: the help was shown
            raise SystemExit(error.exit_code) from None
        command = error.ctx.command_path if error.ctx is not None else "smt"
        fail(f"{message}; see `{command} --help`")
        raise SystemExit(2) from None
    except typer.Abort:
        fail("aborted")
        raise SystemExit(1) from None
    if code == INTERRUPTED:  # typer's answer to Ctrl-C (KeyboardInterrupt, or SIGTERM while training)
        fail("interrupted; every training process it started has been stopped")
    # an int here is typer.Exit's code (commands return data, e.g. generate's list, or None)
    raise SystemExit(code if isinstance(code, int) and not isinstance(code, bool) else 0)
