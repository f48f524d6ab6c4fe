"""What every section fit shares: the ``Fitted`` record, the log least squares, and the planner's own formulas
evaluated with trial constants.

Each section fit (kernels, GEMM, attention, all-reduce, frontend) evaluates ``planner.perf.roofline.Roofline`` with
candidate constant values, so that a fitted constant means exactly what the speed model does with it. Times span
four orders of magnitude (1 us kernels to 100 ms GEMMs), so residuals are taken on log(time): relative errors,
not absolute ones, decide the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from planner.catalog.schema import Calibration, Constant


@dataclass(frozen=True)
class Fitted:
    """One fitted constant before it becomes a catalog ``Constant``."""

    value: float
    method: str
    n_points: int
    mape_pct: float | None


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


def log_fit(names: list[str], x0: list[float], bounds: tuple[list[float], list[float]],
            predict: Callable[[dict[str, float]], np.ndarray], measured: np.ndarray) -> dict[str, float]:
    """Least squares on log(predicted) - log(measured) over the named parameters."""
    def resid(x: np.ndarray) -> np.ndarray:
        return np.log(predict(dict(zip(names, x)))) - np.log(measured)

    res = least_squares(resid, np.asarray(x0, float), bounds=bounds, x_scale="jac", diff_step=1e-4)
    return dict(zip(names, (float(v) for v in res.x)))


def usable(p: dict[str, Any]) -> bool:
    """A measured point with a time: the device scripts record skipped and failed points too, with the reason."""
    return "time_us" in p and "skipped" not in p and "error" not in p
