"""The `budgetloop` command line.

Each subcommand lives in its own module here and registers itself on the one Typer app. A user's
mistake (an :class:`~budgetloop.errors.InputError`) ends with exit code 2 and a message naming the
file, row or key and what to change: never a traceback, never a half-written output.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn, TypeVar

import typer

from budgetloop.errors import BudgetloopError, InputError

app = typer.Typer(
    name="budgetloop",
    help="Closed-loop marketing mix modeling: fit, optimise, guard, approve, execute, monitor, audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., object])


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def not_built_yet(command: str, issue: str) -> NoReturn:
    """For a subcommand whose capability has not landed: say so and exit 2, never pretend."""
    fail(f"`budgetloop {command}` is not built yet (owned by {issue}); nothing was done.")


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same inode where both exist (a hard or symbolic link,
    another spelling), the same resolved path otherwise."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop, a path too long: compare as written
        return os.path.abspath(a) == os.path.abspath(b)


def check_not_an_input(out: Path | None, *, flag: str, inputs: Mapping[str, Path | None]) -> None:
    """Refuse an output path that is one of the command's input files (``inputs``: what each is,
    e.g. ``{"DATA table": path}``), before any work: writing it would destroy the user's input."""
    if out is None:
        return
    for what, path in inputs.items():
        if path is not None and same_file(out, path):
            raise InputError(
                f"{flag} is the input file {path} (the {what}): writing there would overwrite it",
                fix=f"give {flag} another path",
            )


def _register_all() -> None:
    from budgetloop.cli import (  # noqa: F401  (modules register their commands on import)
        demo,
        fit,
        ingest,
        optimize,
        policy,
        scenario,
        serve,
        token,
    )


def main(argv: list[str] | None = None) -> None:
    _register_all()
    try:
        app(args=argv, standalone_mode=True)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except BudgetloopError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
