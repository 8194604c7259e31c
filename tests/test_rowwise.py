"""nm_mask's lane kernel against an independent oracle: a stable sort of every group's magnitudes.

The mask keeps, per group of m consecutive entries of a row, the first n of the
group in order of decreasing magnitude with ties to the lower column index;
``np.argsort(-|g|, kind="stable")`` gives that order directly. Inputs cover the
kernel's paths: lanes across the whole matrix (cols % m == 0) or per row with
an edge group, uint32/uint64/byte stores, m beyond the lane limit, the serial
path of small inputs and the parallel one of large inputs, and values that tie
at the threshold (integers, zeros of both signs, equal huge/tiny/denormal values).
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transmask as tm
from transmask.solvers import _rowwise

PAIRS = [(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4), (2, 5), (3, 8), (4, 8), (7, 8), (5, 12), (4, 16), (8, 16),
         (13, 16), (16, 32), (31, 32), (20, 64), (10, 65), (3, 100), (2, 1 << 20)]


def oracle(A: np.ndarray, n: int, m: int) -> np.ndarray:
    """Top-n of every group by a stable sort of -|a| (ties: lower column first); groups cut by the edge keep min(n, len)."""
    rows, cols = A.shape
    out = np.zeros(A.shape, dtype=bool)
    for j0 in range(0, cols, m):
        g = np.abs(A[:, j0 : j0 + m].astype(np.float64))
        order = np.argsort(-g, axis=1, kind="stable")[:, :n]
        np.put_along_axis(out[:, j0 : j0 + m], order, True, axis=1)
    return out


def values(rng, kind, shape):
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "ties":
        return rng.choice([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0], size=shape)
    if kind == "sparse":  # mostly zeros, as in an already pruned layer
        return np.where(rng.random(shape) < 0.7, 0.0, rng.standard_normal(shape))
    # equal magnitudes at the ends of the float32/float64 ranges (the threshold is a tie)
    return rng.choice([-1.0, 1.0], size=shape) * rng.choice([5e-324, 1e-300, 1e-38, 3e38, 1e300], size=shape)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PAIRS), st.integers(1, 40), st.integers(1, 140), st.sampled_from(["gaussian", "ties", "sparse", "extremes"]),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_nm_mask_equals_stable_sort_oracle(pair, rows, cols, kind, dtype, seed):
    n, m = pair
    with np.errstate(over="ignore"):
        W = values(np.random.default_rng(seed), kind, (rows, cols)).astype(dtype)
    W[~np.isfinite(W)] = 0  # 1e300 overflows float32
    assert np.array_equal(tm.nm_mask(W, n, m), oracle(W, n, m))


@pytest.mark.parametrize("shape", [(600, 512), (301, 1000), (257, 1028)])  # lanes across rows, per row + edge, uint32 only
def test_large_inputs_take_the_parallel_path_and_match(shape):
    assert shape[0] * shape[1] > _rowwise.SERIAL_MAX_ENTRIES
    rng = np.random.default_rng(sum(shape))
    W = values(rng, "sparse", shape).astype(np.float32)
    W[:, ::7] = 1.0  # ties at the threshold in many groups
    before = numba.get_num_threads()
    try:
        for n, m in [(2, 4), (4, 8), (8, 16), (16, 32), (3, 7)]:
            numba.set_num_threads(1)
            one = tm.nm_mask(W, n, m)
            numba.set_num_threads(before)
            assert np.array_equal(one, tm.nm_mask(W, n, m))
            assert np.array_equal(one, oracle(W, n, m))
    finally:
        numba.set_num_threads(before)


def test_memory_is_the_mask():
    """The kernel allocates the mask and per-thread lanes only (no copy of W)."""
    import tracemalloc

    W = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
    tm.nm_mask(W, 2, 4)
    tracemalloc.start()
    mask = tm.nm_mask(W, 2, 4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < mask.nbytes + (1 << 20)
