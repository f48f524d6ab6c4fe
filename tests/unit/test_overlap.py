"""Jobs in forked children (``planner.solver.overlap``) and the speculative simulator check (``verify.Speculation``)."""

import os
import time

import pytest

from planner.solver import overlap
from planner.solver.verify import Speculation

pytestmark = pytest.mark.skipif(not overlap.parallel(), reason="needs fork")


def test_a_job_returns_its_result_and_reraises_its_error():
    assert overlap.start(lambda: os.getpid()).wait() != os.getpid()  # it ran in a child

    def boom() -> None:
        raise ValueError("from the child")

    with pytest.raises(ValueError, match="from the child"):
        overlap.start(boom).wait()


def test_cancel_stops_the_child_at_once():
    job = overlap.start(lambda: time.sleep(30))
    t0 = time.perf_counter()
    job.cancel()
    assert time.perf_counter() - t0 < 5
    assert not job._proc.is_alive()


class _Cand:
    def __init__(self, ident: str) -> None:
        self.ident = ident


def test_speculation_follows_the_incumbent_and_hands_over_a_chosen_one():
    sims: dict = {}
    seen: list[str] = []

    def check(c):
        seen.append(c.ident)  # (in the child: the parent's list stays empty)
        return f"checked {c.ident}"

    ahead = Speculation(check, sims)
    ahead.guess([_Cand("a")])
    first = ahead._job
    ahead.guess([_Cand("a")])  # the same incumbent: the same job
    assert ahead._job is first
    ahead.guess([_Cand("b")])  # a new incumbent: the old job is cancelled
    assert first is not None and first[1]._done and ahead._job is not None and ahead._job[0] == "b"
    assert ahead.take([_Cand("a")]) == {}  # not chosen: cancelled, nothing handed over
    assert ahead._job is None
    ahead.guess([_Cand("c")])
    taken = ahead.take([_Cand("c")])
    assert list(taken) == ["c"] and taken["c"].wait() == "checked c"
    assert seen == []
    sims["d"] = "done"
    ahead.guess([_Cand("d")])  # already checked: nothing started
    assert ahead._job is None
