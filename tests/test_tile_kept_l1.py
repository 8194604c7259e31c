"""transmask.tile_kept_l1: kept magnitude per m x m tile, checked against a plain loop over entries."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import transmask as tm


def loop_reference(W, mask, m):
    R, C = W.shape
    out = np.zeros((-(-R // m), -(-C // m)))
    for i in range(R):
        for j in range(C):
            if mask[i, j]:
                out[i // m, j // m] += abs(float(W[i, j]))
    return out


@given(rows=st.integers(1, 23), cols=st.integers(1, 23), m=st.sampled_from([1, 2, 3, 4, 8]),
       seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32]))
def test_matches_loop_and_kept_l1(rows, cols, m, seed, dtype):
    rng = np.random.default_rng(seed)
    W = (rng.standard_t(3, (rows, cols)) * 10).astype(dtype)
    mask = rng.random((rows, cols)) < 0.5
    got = tm.tile_kept_l1(W, mask, m)
    ref = loop_reference(W.astype(np.float64), mask, m)
    assert got.shape == ref.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)
    assert np.isclose(got.sum(), tm.kept_l1(W, mask), rtol=1e-9, atol=1e-9)


def test_large_matrix_is_chunked_the_same():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((1040, 2056)).astype(np.float32)  # several chunks, edge tiles in both directions
    mask = tm.optimal_mask(W, 4, 8)
    got = tm.tile_kept_l1(W, mask, 8)
    ref = np.pad(np.abs(W, dtype=np.float64) * mask, ((0, 0), (0, 0))).reshape(130, 8, 257, 8).sum(axis=(1, 3))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    # an optimal mask keeps at least as much as the 2-approximation in every tile
    approx = tm.tile_kept_l1(W, tm.optimal_mask(W, 4, 8, method="approx"), 8)
    assert (got >= approx - 1e-9).all() and (approx >= 0.5 * got).all()


def test_bad_input():
    W = np.ones((4, 4))
    with pytest.raises(ValueError, match="shape"):
        tm.tile_kept_l1(W, np.ones((4, 3), bool), 2)
    with pytest.raises(ValueError, match="m must be"):
        tm.tile_kept_l1(W, np.ones((4, 4), bool), 0)
    with pytest.raises(ValueError, match="0/1"):
        tm.tile_kept_l1(W, np.full((4, 4), 2), 2)
