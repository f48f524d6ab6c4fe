"""Jobs of a solve in forked child processes: the simulator check of the search's best candidate runs while the
search goes on (``verify.Speculation``), and that of the chosen deployments while the parent finds the
alternatives on other GPU types.

Both are pure CPU work in Python, so threads would take turns on the GIL; a forked child shares the parent's
memory (catalogs, step-cost tables, the search space) copy-on-write and starts in milliseconds, where a fresh
interpreter would spend most of a second importing. The child only reads; it sends its result back pickled. A job
whose result is no longer wanted is cancelled (the child killed).

The answer does not depend on the children: a job's result is what the same call gives in the parent, and the
parent reads it only where it would have called it. Where ``fork`` is missing (Windows, macOS's default) or
``VLMPLAN_PARALLEL=0`` is set, ``start`` runs the job at once, in-process, and nothing is speculated."""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def parallel() -> bool:
    """Whether ``start`` runs its job in a child process (else in-process, at once)."""
    return (sys.platform.startswith("linux") and os.environ.get("VLMPLAN_PARALLEL", "1") != "0"
            and "fork" in multiprocessing.get_all_start_methods())


def _child(job: Callable[[], Any], conn: Any) -> None:
    try:
        conn.send((True, job()))
    except BaseException as exc:  # noqa: BLE001 - the parent re-raises it
        conn.send((False, exc))
    finally:
        conn.close()


class Job(Generic[T]):
    """A started job: ``wait`` for its result (re-raising its exception), or ``cancel`` it."""

    def __init__(self, job: Callable[[], T]) -> None:
        self._job = job
        self._proc: Any = None
        self._receive: Any = None
        self._done = False
        self._result: T | None = None
        if not parallel():
            self._result, self._done = job(), True
            return
        ctx = multiprocessing.get_context("fork")
        self._receive, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(job, send), daemon=True)
        # The child inherits the parent's objects frozen: its garbage collections skip them, so they do not write
        # to (and copy) every page of the parent's heap. The parent's own collections go on as before.
        gc.freeze()
        try:
            self._proc.start()
        finally:
            gc.unfreeze()
        send.close()

    def wait(self) -> T:
        if self._done:
            return self._result  # type: ignore[return-value]
        try:
            ok, payload = self._receive.recv()
        except EOFError:  # the child died without a word (killed, out of memory): do the job here
            self._proc.join()
            ok, payload = True, self._job()
        finally:
            self._receive.close()
        self._proc.join()
        if not ok:
            raise payload
        self._result, self._done = payload, True
        return payload  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Stop the child (its result is no longer wanted); nothing to do for a job that ran in-process."""
        if self._done or self._proc is None:
            return
        self._proc.kill()
        self._proc.join()
        self._receive.close()
        self._done = True


def start(job: Callable[[], T]) -> Job[T]:
    """Start ``job`` (in a forked child where ``parallel()``, else at once in-process)."""
    return Job(job)
