"""What every `vlmplan` command module shares: expected errors become one line on stderr and exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer

from planner.errors import PlannerError

T = TypeVar("T")


def run_or_exit(fn: Callable[[], T]) -> T:
    """Expected failures: one line on stderr, exit 2."""
    try:
        return fn()
    except PlannerError as exc:
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        raise typer.Exit(code=2) from None


def one_line(text: str) -> str:
    """Messages that quote a parser (YAML, JSON) may hold newlines: the CLI's errors are one line."""
    return " ".join(text.split())


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code=2)


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=False))
