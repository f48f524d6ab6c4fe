"""What every `vlmplan` command module shares: expected errors become one line on stderr and exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import typer.core

from planner.core.errors import PlannerError

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


# --------------------------------------------------------------------------- one-line errors for every command

MAX_CLI_INT = 2**31 - 1
"""Largest integer any flag takes (counts, tokens, seeds); a bigger one is a typo, not a plan."""
MAX_CLI_TEXT = 4096
"""Longest text any flag takes (model ids, paths, JSON options)."""


def _flag(param: Any) -> str:
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return max(opts, key=len) if opts else str(param.name).upper()


def _check_value(flag: str, value: Any) -> None:
    """Any float must be finite, any int within MAX_CLI_INT, any text within MAX_CLI_TEXT characters."""
    import math

    from planner.core.inputs import clip

    if isinstance(value, (list, tuple)):
        for v in value:
            _check_value(flag, v)
        return
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"{flag} must be a finite number (got {value})")
    if isinstance(value, float) and abs(value) > 1e12:
        fail(f"{flag} {value:g} is out of range (at most 1e12)")
    if isinstance(value, int) and abs(value) > MAX_CLI_INT:
        fail(f"{flag} {clip(value, 30)} is out of range (at most {MAX_CLI_INT:,})")
    text = str(value) if value is not None and not isinstance(value, (int, float)) else ""
    if len(text) > MAX_CLI_TEXT:
        fail(f"{flag} is {len(text):,} characters long (at most {MAX_CLI_TEXT:,}): {clip(text)}")
    if "\x00" in text:
        fail(f"{flag} holds a NUL character: {clip(text)!r}")


def _checked(command: Any) -> None:
    """Wrap the callback of ``command`` (and of every subcommand) with ``_check_value`` on its arguments."""
    import functools

    for sub in getattr(command, "commands", {}).values():
        _checked(sub)
    cb = command.callback
    if cb is None or getattr(cb, "_vlmplan_checked", False):
        return
    flags = {p.name: _flag(p) for p in command.params}

    @functools.wraps(cb)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for name, value in kwargs.items():
            _check_value(flags.get(name, f"--{name.replace('_', '-')}"), value)
        return cb(*args, **kwargs)

    wrapper._vlmplan_checked = True  # type: ignore[attr-defined]
    command.callback = wrapper


def _usage_line(exc: Any) -> str:
    """A click usage error as one line: the message, plus which command it was for."""
    msg = one_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    words = (ctx.command_path.split() if ctx is not None and ctx.command_path else [])[1:]
    where = " ".join(["vlmplan", *words])
    return f"error: {msg} (see '{where} --help')"


class OneLineErrorsGroup(typer.core.TyperGroup):
    """The top-level command group: runs click in non-standalone mode and turns every failure into one
    ``error:`` line on stderr (exit 2 for bad input; 1 for an internal error, which is a bug to report)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        import os
        import sys

        from typer._click import exceptions as cx

        _checked(self)
        try:
            code = super().main(args=args, prog_name="vlmplan", complete_var=complete_var,
                                standalone_mode=False, windows_expand_args=windows_expand_args, **extra)
            code = code if isinstance(code, int) else 0
        except cx.NoArgsIsHelpError as exc:  # `vlmplan` or `vlmplan catalog` alone: help, not an error
            typer.echo(exc.ctx.get_help())
            code = 0
        except cx.ClickException as exc:  # usage errors: unknown option, --tp abc, missing argument
            typer.echo(_usage_line(exc), err=True)
            code = 2 if isinstance(exc, cx.UsageError) else exc.exit_code
        except typer.Exit as exc:
            code = exc.exit_code
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = 1
        except PlannerError as exc:
            typer.echo(f"error: {one_line(str(exc))}", err=True)
            code = 2
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            code = 130
        except Exception as exc:  # a bug: still one line, unless asked for the traceback
            if os.environ.get("VLMPLAN_TRACEBACK"):
                raise
            from planner.core.inputs import clip

            typer.echo(f"error: internal error ({type(exc).__name__}: {clip(one_line(str(exc)), 200)}); please "
                       "report it (VLMPLAN_TRACEBACK=1 shows the traceback)", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


# --------------------------------------------------------------------------- outputs: never replace a file silently

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace output files that already exist.")]


def check_out_folder(out: Path, flag: str = "--out") -> None:
    """``out`` may be created or is a folder we can write to; else one error line."""
    import os

    from planner.core.inputs import clip

    shown = clip(out, 120)
    if out.exists() and not out.is_dir():
        fail(f"{flag} {shown} is a file, not a folder")
    probe = out
    while not probe.exists():  # the nearest existing ancestor must be a writable folder
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        fail(f"{flag} {shown}: {clip(probe, 120)} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"{flag} {shown}: {clip(probe, 120)} is not writable")


def check_out_file(out: Path, force: bool, flag: str = "--out") -> None:
    """``out`` is a file we may write: not a folder, in a writable folder, not existing unless ``force``."""
    from planner.core.inputs import clip

    shown = clip(out, 120)
    if out.is_dir():
        fail(f"{flag} {shown} is a folder, not a file")
    if out.exists() and not force:
        fail(f"{flag} {shown} exists; pass --force to replace it")
    check_out_folder(out.parent if str(out.parent) else Path("."), flag)


def write_file(out: Path, text: str, force: bool, flag: str = "--out") -> None:
    """Write ``text`` to ``out`` (see ``check_out_file``) through a temporary file, so a failure leaves no
    half-written file."""
    import os
    import tempfile

    check_out_file(out, force, flag)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        fail(f"cannot write {flag} {out}: {exc.strerror or exc}")


def stage_outputs(out: Path, force: bool, render: Callable[[Path], list[Path]], flag: str = "--out") -> list[Path]:
    """Write what ``render(folder)`` writes into ``out``, all or nothing: ``render`` runs in a temporary folder
    (a refused target or any error leaves ``out`` untouched); then no file of ``out`` is replaced unless ``force``;
    then the files are moved in. Returns the paths in ``out``."""
    import shutil
    import tempfile

    check_out_folder(out, flag)
    with tempfile.TemporaryDirectory(prefix="vlmplan-") as tmp:
        staged = [Path(p) for p in run_or_exit(lambda: render(Path(tmp)))]
        rel = [p.relative_to(tmp) for p in staged]
        clash = [r for r in rel if (out / r).exists()]
        if clash and not force:
            more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
            fail(f"{flag} {out} already holds {out / clash[0]}{more}; pass --force to replace "
                 f"{'them' if len(clash) > 1 else 'it'}")
        bad = [r for r in clash if (out / r).is_dir()]
        if bad:
            fail(f"{flag} {out}: {out / bad[0]} is a folder where a file goes")
        try:
            for r in rel:
                dest = out / r
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(tmp) / r, dest)
        except OSError as exc:
            fail(f"cannot write {flag} {out}: {exc.strerror or exc}")
    return [out / r for r in rel]
