"""What every section fit shares: the ``Fitted`` record, the log least squares, and the planner's own formulas
evaluated with trial constants.

Each section fit (kernels, GEMM, attention, all-reduce, frontend) evaluates ``planner.perf.roofline.Roofline`` with
candidate constant values, so that a fitted constant means exactly what the speed model does with it. Times span
four orders of magnitude (1 us kernels to 100 ms GEMMs), so residuals are taken on log(time): relative errors,
not absolute ones, decide the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from planner.catalog.calibration_schema import Calibration, Constant

BOUND_RTOL = 1e-6
"""A fitted parameter within this relative distance (of max(1, |bound|)) of an edge of its box is at that bound."""


@dataclass(frozen=True)
class AtBound:
    """A fitted parameter that ended on an edge of its least-squares box: the data wanted it past ``bound``.
    ``unbounded_value`` is what the same fit gives with that bound removed (None when that fit leaves the model's
    domain, e.g. a negative latency)."""

    side: Literal["lower", "upper"]
    bound: float
    unbounded_value: float | None

    def times(self, factor: float) -> AtBound:
        """The same flag for the parameter expressed in units ``factor`` times smaller (a rescaled fit)."""
        unb = None if self.unbounded_value is None else self.unbounded_value * factor
        return AtBound(self.side, self.bound * factor, unb)


@dataclass(frozen=True)
class Fitted:
    """One fitted constant before it becomes a catalog ``Constant``."""

    value: float
    method: str
    n_points: int
    mape_pct: float | None
    at_bound: AtBound | None = None


@dataclass(frozen=True)
class LogFit:
    """What ``log_fit`` found: the values, and the parameters that ended at a bound of their box."""

    values: dict[str, float]
    at_bound: dict[str, AtBound] = field(default_factory=dict)

    def merged(self, other: LogFit) -> LogFit:
        """Both fits' values and flags (``other``'s win on a shared name)."""
        return LogFit({**self.values, **other.values}, {**self.at_bound, **other.at_bound})

    def fitted(self, names: list[str], method: str, n_points: int, err: float | None) -> dict[str, Fitted]:
        """The named values as ``Fitted`` constants, each with its bound flag."""
        return {n: Fitted(self.values[n], method, n_points, err, self.at_bound.get(n)) for n in names}


def calibration_with(base: Calibration, values: dict[str, float]) -> Calibration:
    """``base`` with some constant values replaced (no validation: used inside the fit loop)."""
    consts = dict(base.constants)
    for k, v in values.items():
        consts[k] = Constant.model_construct(value=float(v), unit=consts[k].unit, fit=None, note=None)
    return Calibration.model_construct(schema_version=1, gpu=base.gpu, engine=base.engine, calibrated=False,
                                       constants=consts, sources=base.sources)


def mape_pct(pred: ArrayLike, meas: ArrayLike) -> float:
    """Mean absolute percentage error of ``pred`` against ``meas``: the error every fitted constant reports."""
    p, m = np.asarray(pred, float), np.asarray(meas, float)
    return float(np.mean(np.abs(p - m) / m) * 100.0)


def _active_bounds(x: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   active: np.ndarray) -> dict[int, Literal["lower", "upper"]]:
    """Index -> side of the parameters at a bound: scipy's ``active_mask``, or within ``BOUND_RTOL`` of one
    (the 'trf' method keeps iterates strictly inside the box, so a value can end a hair from its bound)."""
    out: dict[int, Literal["lower", "upper"]] = {}
    for i, v in enumerate(x):
        if active[i] < 0 or abs(v - lo[i]) <= BOUND_RTOL * max(1.0, abs(lo[i])):
            out[i] = "lower"
        elif active[i] > 0 or abs(v - hi[i]) <= BOUND_RTOL * max(1.0, abs(hi[i])):
            out[i] = "upper"
    return out


def log_fit(names: list[str], x0: list[float], bounds: tuple[list[float], list[float]],
            predict: Callable[[dict[str, float]], np.ndarray], measured: np.ndarray) -> LogFit:
    """Least squares on log(predicted) - log(measured) over the named parameters, within ``bounds``. A parameter
    that ends at a bound is flagged, with the value the same fit gives without that bound (``AtBound``)."""
    def resid(x: np.ndarray) -> np.ndarray:
        return np.log(predict(dict(zip(names, x)))) - np.log(measured)

    lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    res = least_squares(resid, np.asarray(x0, float), bounds=(lo, hi), x_scale="jac", diff_step=1e-4)
    values = dict(zip(names, (float(v) for v in res.x)))
    active = _active_bounds(res.x, lo, hi, res.active_mask)
    if not active:
        return LogFit(values)
    free_lo, free_hi = lo.copy(), hi.copy()
    for i in active:
        free_lo[i], free_hi[i] = -np.inf, np.inf
    unbounded: np.ndarray | None = None
    with np.errstate(all="ignore"):
        try:
            free = least_squares(resid, res.x, bounds=(free_lo, free_hi), x_scale="jac", diff_step=1e-4)
            unbounded = free.x if np.all(np.isfinite(free.fun)) and np.all(np.isfinite(free.x)) else None
        except ValueError:  # residuals not finite: the unbounded fit left the formulas' domain
            unbounded = None
    return LogFit(values, {
        names[i]: AtBound(side, float(lo[i] if side == "lower" else hi[i]),
                          None if unbounded is None else float(unbounded[i]))
        for i, side in active.items()})


def usable(p: dict[str, Any]) -> bool:
    """A measured point with a time: the device scripts record skipped and failed points too, with the reason."""
    return "time_us" in p and "skipped" not in p and "error" not in p
