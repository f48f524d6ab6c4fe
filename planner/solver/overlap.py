"""Two independent jobs of a solve at once: the simulator check of the chosen deployments runs in a forked child
process while the parent finds the alternatives on other GPU types.

Both are pure CPU work in Python, so threads would take turns on the GIL; a forked child shares the parent's
memory (catalogs, step-cost tables, the search space) copy-on-write and starts in milliseconds, where a fresh
interpreter would spend most of a second importing. The child only reads; it sends its result back pickled.

The order of the work is the same with or without a child (the parent never reads the child's result before it
has done its own job), so the answer does not depend on it: where ``fork`` is missing (Windows, macOS's default)
or ``VLMPLAN_PARALLEL=0`` is set, the job runs first, in-process, and the parent's job after.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _parallel() -> bool:
    return (sys.platform.startswith("linux") and os.environ.get("VLMPLAN_PARALLEL", "1") != "0"
            and "fork" in multiprocessing.get_all_start_methods())


def _child(job: Callable[[], Any], conn: Any) -> None:
    try:
        conn.send((True, job()))
    except BaseException as exc:  # noqa: BLE001 - the parent re-raises it
        conn.send((False, exc))
    finally:
        conn.close()


def start(job: Callable[[], T]) -> Callable[[], T]:
    """Start ``job``; the returned function waits for its result (re-raising its exception)."""
    if not _parallel():
        result = job()
        return lambda: result
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(job, send), daemon=True)
    proc.start()
    send.close()

    def wait() -> T:
        try:
            ok, payload = receive.recv()
        except EOFError:  # the child died without a word (killed, out of memory): do the job here
            proc.join()
            return job()
        finally:
            receive.close()
        proc.join()
        if not ok:
            raise payload
        return payload  # type: ignore[no-any-return]

    return wait
