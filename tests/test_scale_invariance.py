"""Masks do not depend on the scale of W (issue 18 #9), and do not cost memory or time per m (issue 18 #7)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transmask as tm
from _oracles import tile_valid

PAIRS = [(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4), (2, 5), (3, 8), (4, 8), (7, 8), (8, 16), (5, 16)]


@st.composite
def spread_matrices(draw, dtype):
    """(W, n, m): magnitudes in [2^-20, 1) with signs, zeros and ties, so that W * 2^k stays normal for the exponents drawn."""
    n, m = draw(st.sampled_from(PAIRS))
    rows = draw(st.integers(1, 3 * m + 2))
    cols = draw(st.integers(1, 3 * m + 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    W = rng.uniform(0.5, 1.0, (rows, cols)) * 2.0 ** rng.integers(-20, 0, (rows, cols))
    W[rng.random((rows, cols)) < 0.1] = 0.0
    if draw(st.booleans()):  # ties
        W = np.round(W * 8) / 8
    W *= np.where(rng.random((rows, cols)) < 0.5, -1.0, 1.0)
    return W.astype(dtype), n, m


@settings(max_examples=60)
@given(spread_matrices(np.float64), st.integers(-1000, 1023), st.sampled_from(["exact", "approx"]), st.sampled_from(["exactly", "at_most"]))
def test_float64_masks_are_invariant_to_powers_of_two_over_the_whole_range(prob, k, method, keep):
    W, n, m = prob
    scaled = W * 2.0**k  # exact: every entry stays a normal number (or zero)
    assert np.array_equal(scaled / 2.0**k, W)
    assert np.array_equal(tm.optimal_mask(scaled, n, m, method=method, keep=keep), tm.optimal_mask(W, n, m, method=method, keep=keep))


@settings(max_examples=40)
@given(spread_matrices(np.float32), st.integers(-100, 127), st.sampled_from(["exact", "approx"]), st.sampled_from(["exactly", "at_most"]))
def test_float32_masks_are_invariant_to_powers_of_two_over_the_whole_range(prob, k, method, keep):
    W, n, m = prob
    scaled = (W * np.float32(2.0**k)).astype(np.float32)
    assert np.array_equal(scaled.astype(np.float64) / 2.0**k, W.astype(np.float64))
    assert np.array_equal(tm.optimal_mask(scaled, n, m, method=method, keep=keep), tm.optimal_mask(W, n, m, method=method, keep=keep))


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 4), (4, 8), (8, 16)])
def test_near_the_float64_limit_the_exact_mask_is_optimal(n, m):
    """The issue's repro: entries near 1.79e308 made the pattern sums overflow (2:4 kept 5-27 % less than the LP)."""
    W = np.random.default_rng(0).uniform(0.5, 1.0, (2 * m, 3 * m)) * 1.79e308
    small = W / 2.0**1000
    for keep in ("exactly", "at_most"):
        mask = tm.optimal_mask(W, n, m, keep=keep)
        assert tile_valid(mask, n, m, keep)
        assert np.array_equal(mask, tm.optimal_mask(small, n, m, keep=keep))
        lp = tm.optimal_mask(small, n, m, method="lp", keep=keep)  # the LP oracle, on the exactly rescaled matrix
        assert tm.kept_l1(small, mask) == pytest.approx(tm.kept_l1(small, lp), rel=1e-12)
        approx = tm.optimal_mask(W, n, m, method="approx", keep=keep)
        assert np.array_equal(approx, tm.optimal_mask(small, n, m, method="approx", keep=keep))
        assert tm.kept_l1(small, approx) >= 0.5 * tm.kept_l1(small, lp)


@pytest.mark.parametrize("method", ["exact", "approx"])
@pytest.mark.parametrize("keep", ["exactly", "at_most"])
def test_an_m_beyond_the_matrix_costs_the_matrix(method, keep):
    """Issue 18 #7: a matrix smaller than one tile is one tile cut by the edge; m = 2**20 used to allocate
    m x m work arrays (MemoryError after a minute, or a SystemError from the approximation at m = 16384)."""
    assert tm.optimal_mask(np.ones((4, 4)), 1, 2**20, method=method, keep=keep).sum() == 4
    W = np.random.default_rng(1).standard_normal((5, 7))
    mask = tm.optimal_mask(W, 3, 2**20, method=method, keep=keep)
    assert np.array_equal(mask, tm.optimal_mask(W, 3, 16384, method=method, keep=keep))
    assert np.array_equal(mask, tm.optimal_mask(W, 3, 8, method=method, keep=keep))  # 8 > 5 and 7: the same single tile
    assert tm.is_transposable(mask, 3, 2**20, keep="at_most")
    if method == "exact":
        lp = tm.optimal_mask(W, 3, 8, method="lp", keep=keep)
        assert tm.kept_l1(W, mask) == pytest.approx(tm.kept_l1(W, lp), rel=1e-12)


def test_checks_of_an_m_beyond_the_matrix_allocate_nothing_per_m():
    """Issue 18 #7: is_transposable(4x4, m=10**9) allocated 7.45 GiB of counts."""
    import tracemalloc

    mask = np.eye(4, dtype=bool)
    tracemalloc.start()
    try:
        ok = tm.is_transposable(mask, 1, 10**9, keep="at_most") and tm.is_nm(mask, 1, 10**9, keep="at_most")
        stats = tm.mask_stats(np.ones((4, 4)), mask, 1, 10**9, keep="at_most")
        per_tile = tm.tile_kept_l1(np.ones((4, 4)), mask, 10**9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ok and stats.is_transposable and per_tile.tolist() == [[4.0]]
    assert peak < 2**20
