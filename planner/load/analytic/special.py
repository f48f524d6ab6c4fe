"""The few special functions the analytic model needs, without importing SciPy.

``scipy.special`` and ``scipy.linalg`` together cost about a quarter of a second of a cold ``vlmplan solve`` (they
pull in SciPy's array-API layer, which imports ``numpy.f2py``, ``numpy.testing`` and ``numpy.ma``) for five
functions. Each is computed here to within 1e-12 relative of SciPy's value (``tests/unit/test_load_analytic.py``
compares them on grids and on every call of a solve), or handed to SciPy outside the range that is checked:

- ``lgamma_table``: log k! from ``math.lgamma``;
- ``bdtr_half``: the binomial CDF at p = 1/2, exactly (integer sums, one correctly rounded division);
- ``pdtr``: the Poisson CDF, a sum of positive terms;
- ``nbinom_sf``: ``betainc(c, r, x)`` for integer ``c``, the negative binomial's P(N >= c), summed on the side
  that holds less than half the mass (so no cancellation);
- ``solve_banded``: LAPACK ``dgbsv`` from the OpenBLAS that SciPy's wheel ships (``scipy.libs``), called as
  ``scipy.linalg.solve_banded`` calls it, so the result is the same to the bit; SciPy itself where that library
  is not found (other platforms, other SciPy builds).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

_MAX_TERMS = 5000
"""Most series terms ``nbinom_sf`` sums before it hands the case to SciPy (each term adds a rounding error)."""
_MAX_MEAN = 600.0
"""Largest Poisson / negative binomial mean summed here (beyond it exp(-mean) would underflow)."""


def lgamma_table(n: int) -> np.ndarray:
    """log k! for k = 0..n-1."""
    return np.array([math.lgamma(k + 1.0) for k in range(n)])


@functools.lru_cache(maxsize=8)
def _binom_half_cdf(n_max: int) -> np.ndarray:
    """[n, k] = P(Binomial(n, 1/2) <= k) for 0 <= k <= n <= n_max (1 above the diagonal)."""
    out = np.ones((n_max + 1, n_max + 1))
    for n in range(n_max + 1):
        total, row = 0, []
        for k in range(n + 1):
            total += math.comb(n, k)
            row.append(total / 2**n)  # int / int: correctly rounded
        out[n, : n + 1] = row
    return out


def bdtr_half(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``scipy.special.bdtr(k, n, 0.5)`` for integer arrays 0 <= k, 0 <= n (broadcast)."""
    k, n = np.broadcast_arrays(np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64))
    size = int(n.max()) if n.size else 0
    table = _binom_half_cdf(max(64, 1 << max(0, size - 1).bit_length()))
    return table[n, np.minimum(k, n)]


def pdtr(k: int, mean: float) -> float:
    """``scipy.special.pdtr(k, mean)``: P(Poisson(mean) <= k)."""
    if k < 0:
        return 0.0
    if not 0.0 <= mean <= _MAX_MEAN:
        from scipy.special import pdtr as scipy_pdtr

        return float(scipy_pdtr(k, mean))
    term = math.exp(-mean)
    total = term
    for i in range(1, k + 1):
        term *= mean / i
        total += term
    return min(1.0, total)


def nbinom_sf(c: int, r: float, x: float) -> float:
    """``scipy.special.betainc(c, r, x)`` for integer ``c >= 1``: P(N >= c) for N negative binomial with
    P(N = k) = Gamma(r + k) / (Gamma(r) k!) (1 - x)^r x^k."""
    mean = r * x / (1.0 - x) if x < 1.0 else math.inf
    if not (0.0 < x < 1.0 and r > 0.0 and mean <= _MAX_MEAN and c <= _MAX_TERMS):
        return _scipy_betainc(c, r, x)
    term = math.exp(r * math.log1p(-x))
    head = term
    for k in range(c - 1):
        term *= (r + k) / (k + 1) * x
        head += term
    if head <= 0.5:
        return 1.0 - head
    # The tail itself: from k = c until the terms no longer count.
    term *= (r + c - 1) / c * x
    tail = term
    k = c
    while term > tail * 1e-18:
        if k - c >= _MAX_TERMS:
            return _scipy_betainc(c, r, x)
        term *= (r + k) / (k + 1) * x
        tail += term
        k += 1
    return tail


def _scipy_betainc(c: int, r: float, x: float) -> float:
    from scipy.special import betainc

    return float(betainc(c, r, x))


@functools.lru_cache(maxsize=1)
def _lapack_gbsv() -> Any:
    """``dgbsv`` of the OpenBLAS in SciPy's wheel (None when there is none to load)."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or spec.origin is None:
        return None
    libs = sorted((Path(spec.origin).parent.parent / "scipy.libs").glob("libscipy_openblas*.so"))
    for path in libs:
        try:
            fn = ctypes.CDLL(str(path)).scipy_dgbsv_
        except (OSError, AttributeError):
            continue
        fn.restype = None
        return fn
    return None


def solve_banded(kl: int, ku: int, ab: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``scipy.linalg.solve_banded((kl, ku), ab, rhs, check_finite=False)`` for ``kl + ku >= 3`` (LAPACK band
    storage, one right-hand side); raises ``np.linalg.LinAlgError`` on a singular matrix as SciPy does."""
    gbsv = _lapack_gbsv()
    if gbsv is None or kl + ku < 3:
        from scipy.linalg import solve_banded as scipy_solve_banded

        return scipy_solve_banded((kl, ku), ab, rhs, check_finite=False)  # type: ignore[no-any-return]
    n = ab.shape[1]
    a2 = np.zeros((2 * kl + ku + 1, n), dtype=np.float64, order="F")
    a2[kl:, :] = ab
    x = np.array(rhs, dtype=np.float64, order="F")
    ipiv = np.zeros(n, dtype=np.int32)
    info = ctypes.c_int(0)
    ints = [ctypes.c_int(v) for v in (n, kl, ku, 1, 2 * kl + ku + 1, n)]
    ptr = ctypes.c_void_p
    gbsv(ctypes.byref(ints[0]), ctypes.byref(ints[1]), ctypes.byref(ints[2]), ctypes.byref(ints[3]),
         ptr(a2.ctypes.data), ctypes.byref(ints[4]), ptr(ipiv.ctypes.data), ptr(x.ctypes.data),
         ctypes.byref(ints[5]), ctypes.byref(info))
    if info.value > 0:
        raise np.linalg.LinAlgError("singular matrix")
    if info.value < 0:
        raise ValueError(f"illegal value in {-info.value}-th argument of internal gbsv")
    return x
