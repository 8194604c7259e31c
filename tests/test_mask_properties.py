"""Property tests for optimal_mask: contract, optimality against LP and brute force, the 1/2 guarantee."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import transmask as tm
from _oracles import brute_force_best, tile_valid

NM_PAIRS = [(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4), (2, 5), (3, 5), (1, 8), (3, 8), (4, 8), (5, 8), (7, 8), (4, 16), (8, 16), (13, 16)]
KEEP = st.sampled_from(["exactly", "at_most"])


@st.composite
def problems(draw, pairs=NM_PAIRS, max_tiles=3, dtypes=(np.float32, np.float64)):
    """(W, n, m): shapes square, non-square and not multiples of m; Gaussian, heavy-tailed or tied values."""
    n, m = draw(st.sampled_from(pairs))
    rows = draw(st.integers(1, max_tiles * m + m - 1))
    cols = draw(st.integers(1, max_tiles * m + m - 1))
    if draw(st.booleans()):
        cols = rows  # square
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["gaussian", "student_t", "ties", "integers"]))
    if kind == "gaussian":
        W = rng.standard_normal((rows, cols))
    elif kind == "student_t":
        W = rng.standard_t(3, (rows, cols))
    elif kind == "ties":
        W = rng.choice([-1.0, 0.0, 1.0, 2.0], size=(rows, cols))
    else:
        W = rng.integers(-5, 6, size=(rows, cols)).astype(float)
    return W.astype(draw(st.sampled_from(dtypes))), n, m


@given(problems(), KEEP)
def test_exact_satisfies_contract_and_is_deterministic(prob, keep):
    W, n, m = prob
    mask = tm.optimal_mask(W, n, m, keep=keep)
    assert mask.dtype == np.bool_ and mask.shape == W.shape
    assert tile_valid(mask, n, m, keep)
    assert tm.is_transposable(mask, n, m, keep=keep)
    # rows of tiles cut by the bottom edge may keep fewer than n: row-wise, at most n
    assert tm.is_nm(mask, n, m, keep="at_most") and tm.is_nm(mask.T, n, m, keep="at_most")
    assert np.array_equal(mask, tm.optimal_mask(W.copy(), n, m, keep=keep))


@settings(max_examples=60)
@given(problems(max_tiles=2), KEEP)
def test_exact_equals_lp_optimum(prob, keep):
    W, n, m = prob
    exact = tm.kept_l1(W, tm.optimal_mask(W, n, m, keep=keep))
    lp_mask = tm.optimal_mask(W, n, m, method="lp", keep=keep)
    assert tile_valid(lp_mask, n, m, keep)
    assert exact == pytest.approx(tm.kept_l1(W, lp_mask), rel=1e-9, abs=1e-6)


@given(problems(pairs=[(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4)], max_tiles=2), KEEP)
def test_exact_equals_brute_force_on_tiny_tiles(prob, keep):
    W, n, m = prob
    exact = tm.kept_l1(W, tm.optimal_mask(W, n, m, keep=keep))
    assert exact == pytest.approx(brute_force_best(W, n, m, keep), rel=1e-9, abs=1e-6)


@given(problems(), KEEP)
def test_approx_contract_and_half_guarantee(prob, keep):
    W, n, m = prob
    approx = tm.optimal_mask(W, n, m, method="approx", keep=keep)
    assert tile_valid(approx, n, m, keep)
    # the 1/2 guarantee holds per tile, hence for the whole matrix
    opt = tm.kept_l1(W, tm.optimal_mask(W, n, m, keep=keep))
    got = tm.kept_l1(W, approx)
    assert got >= 0.5 * opt - 1e-9 * max(1.0, opt)
    assert got <= opt + 1e-9 * max(1.0, opt)
    assert np.array_equal(approx, tm.optimal_mask(W, n, m, method="approx", keep=keep))


@given(problems(), KEEP, st.sampled_from(["exact", "approx"]), st.sampled_from([0.25, 2.0, 1024.0]))
def test_invariant_to_positive_scale_and_signs(prob, keep, method, scale):
    W, n, m = prob
    base = tm.optimal_mask(W, n, m, method=method, keep=keep)
    signs = np.where(np.random.default_rng(0).random(W.shape) < 0.5, -1, 1).astype(W.dtype)
    assert np.array_equal(base, tm.optimal_mask(W * W.dtype.type(scale), n, m, method=method, keep=keep))
    assert np.array_equal(base, tm.optimal_mask(W * signs, n, m, method=method, keep=keep))


@given(problems())
def test_at_most_keeps_at_least_as_much_as_exactly(prob):
    W, n, m = prob
    exactly = tm.kept_l1(W, tm.optimal_mask(W, n, m, keep="exactly"))
    at_most = tm.kept_l1(W, tm.optimal_mask(W, n, m, keep="at_most"))
    assert at_most >= exactly - 1e-9 * max(1.0, exactly)


@given(problems(pairs=[(2, 4), (4, 8), (8, 16)]), KEEP)
def test_exact_lies_between_the_approximation_and_the_rowwise_relaxation(prob, keep):
    """The optimum is at most the row-wise N:M optimum (a relaxation) and at least the approximation."""
    W, n, m = prob
    rowwise = tm.nm_mask(W, n, m)
    assert tm.is_nm(rowwise, n, m)  # exactly n in every full group
    exact = tm.kept_l1(W, tm.optimal_mask(W, n, m, keep=keep))
    approx = tm.kept_l1(W, tm.optimal_mask(W, n, m, method="approx", keep=keep))
    tol = 1e-9 * max(1.0, exact)
    assert approx <= exact + tol
    assert exact <= tm.kept_l1(W, rowwise) + tol


def test_paper_example_modes_differ():
    W = np.array([[10, 10, 0.1], [10, 10, 0.1], [0.1, 0.1, 0.1]])
    assert tm.kept_l1(W, tm.optimal_mask(W, 2, 3)) == pytest.approx(30.3)
    assert tm.kept_l1(W, tm.optimal_mask(W, 2, 3, keep="at_most")) == pytest.approx(40.1)
    assert tm.kept_l1(W, tm.optimal_mask(W, 2, 3, method="lp", keep="at_most")) == pytest.approx(40.1)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (8, 16), (16, 32), (3, 64)])
def test_large_m_matches_lp(n, m):
    W = np.random.default_rng(m).standard_normal((m, 2 * m + 3))
    for keep in ("exactly", "at_most"):
        got = tm.optimal_mask(W, n, m, keep=keep)
        assert tile_valid(got, n, m, keep)
        lp = tm.optimal_mask(W, n, m, method="lp", keep=keep)
        assert tm.kept_l1(W, got) == pytest.approx(tm.kept_l1(W, lp), rel=1e-9)


def test_results_do_not_depend_on_thread_count():
    numba = pytest.importorskip("numba")
    W = np.random.default_rng(3).standard_normal((67, 61)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [tm.optimal_mask(W, 4, 8, method=meth) for meth in ("exact", "approx")]
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = [tm.optimal_mask(W, 4, 8, method=meth) for meth in ("exact", "approx")]
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many):
        assert np.array_equal(a, b)


@given(problems())
def test_nm_mask_is_rowwise_topn(prob):
    W, n, m = prob
    mask = tm.nm_mask(W, n, m)
    A = np.abs(W.astype(np.float64))
    for i in range(W.shape[0]):
        for j0 in range(0, W.shape[1], m):
            g = A[i, j0 : j0 + m]
            kept = g[mask[i, j0 : j0 + m]]
            dropped = g[~mask[i, j0 : j0 + m]]
            assert len(kept) == min(n, len(g))
            if len(dropped) and len(kept):
                assert kept.min() >= dropped.max()


@given(problems(pairs=[(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4)]), KEEP)
def test_vectorised_small_m_greedy_equals_per_tile_greedy(prob, keep):
    """The SIMD path for m <= 4 (sorting network, packed counters) must give the scalar greedy's mask."""
    from transmask.solvers import approx

    W, n, m = prob
    A = np.ascontiguousarray(W)
    fast = approx.solve(A, n, m, keep)
    ref = np.empty(A.shape, dtype=bool)
    f64 = A.dtype == np.float64
    bits = A.view(np.uint64 if f64 else np.uint32)
    approx._approx_kernel(A, bits, n, m, keep == "at_most", f64, approx.index_bits(m, *A.shape), False, ref)
    assert np.array_equal(fast, ref)
