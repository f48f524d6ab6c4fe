"""planner.load.analytic.special against SciPy: the functions the analytic model took from scipy.special and
scipy.linalg, within 1e-12 relative (the solver's goldens and example READMEs rest on them)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import solve_banded as scipy_solve_banded
from scipy.special import bdtr, betainc, gammaln
from scipy.special import pdtr as scipy_pdtr

from planner.load.analytic.special import _lapack_gbsv, bdtr_half, lgamma_table, nbinom_sf, pdtr, solve_banded


def test_lgamma_table_is_gammaln():
    assert lgamma_table(20001) == pytest.approx(gammaln(np.arange(20001) + 1.0), rel=1e-14, abs=0)


def test_bdtr_half_is_scipy_bdtr():
    # k <= n only: SciPy gives nan above (1 here), where the chain takes 1 anyway.
    k, n = np.meshgrid(np.arange(0, 300), np.arange(0, 300), indexing="ij")
    ok = k <= n
    assert bdtr_half(k, n)[ok] == pytest.approx(bdtr(k, n, 0.5)[ok], rel=1e-12, abs=0)
    assert (bdtr_half(k, n)[~ok] == 1.0).all()


@pytest.mark.parametrize("mean", [0.0, 1e-6, 0.3, 2.5, 17.0, 63.9, 200.0, 255.99])
def test_pdtr_is_scipy_pdtr(mean: float):
    for k in (0, 1, 3, 8, 31, 64, 255):
        assert pdtr(k, mean) == pytest.approx(float(scipy_pdtr(k, mean)), rel=1e-12, abs=0)


def test_nbinom_sf_is_betainc():
    # slot_wait's negative binomial: c slots, r = held / (dispersion - 1), x = 1 - 1 / dispersion.
    for c in (1, 2, 8, 16, 32, 64, 128, 256):
        for held in (0.01, 0.5, 3.0, 0.5 * c, 0.9 * c, c - 1e-6, 1.5 * c):
            for dispersion in (1.0 + 2e-6, 1.001, 1.1, 1.5, 2.0, 4.0, 10.0, 50.0):
                r, x = held / (dispersion - 1.0), 1.0 - 1.0 / dispersion
                want = float(betainc(c, r, x))
                got = nbinom_sf(c, r, x)
                if want > 1e-4:  # below it slot_wait's wait is dropped (with_wait)
                    assert got == pytest.approx(want, rel=1e-12, abs=0), (c, held, dispersion)
                else:
                    assert got == pytest.approx(want, rel=1e-6, abs=1e-15), (c, held, dispersion)


def test_solve_banded_is_scipy_to_the_bit():
    assert _lapack_gbsv() is not None  # the OpenBLAS of SciPy's wheel is found here (else SciPy is called)
    rng = np.random.default_rng(3)
    for kl, ku, n in ((2, 1, 9), (5, 3, 40), (30, 8, 401), (12, 1, 120)):
        ab = rng.random((kl + ku + 1, n))
        ab[ku, :] += kl + ku  # diagonally dominant
        rhs = rng.random(n)
        assert np.array_equal(solve_banded(kl, ku, ab, rhs), scipy_solve_banded((kl, ku), ab, rhs,
                                                                                check_finite=False))
    with pytest.raises(np.linalg.LinAlgError):
        solve_banded(2, 1, np.zeros((4, 5)), np.ones(5))
