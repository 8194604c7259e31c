"""Channel permutation search (transmask.permute): validity, determinism, never worse, exact values, exact gains."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transmask as tm
from transmask.permute import _replacement as rp
from transmask.permute.search import _AxisSearch, _entity_major

SHAPES = st.sampled_from([(8, 8), (12, 16), (16, 12), (16, 24), (10, 16), (16, 18), (24, 16)])
NM = st.sampled_from([(2, 4), (1, 4), (3, 4), (4, 8), (2, 8)])


def _kept(A, n, m):
    return float(np.abs(A[tm.optimal_mask(A, n, m)], dtype=np.float64).sum())


@settings(max_examples=25, deadline=None)
@given(shape=SHAPES, nm=NM, seed=st.integers(0, 2**16), axes=st.sampled_from(["both", "columns", "rows"]),
       heavy=st.booleans())
def test_search_valid_never_worse_and_exact(shape, nm, seed, axes, heavy):
    n, m = nm
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(shape)
    if heavy:  # outlier channels, as in real layers
        W[:, rng.integers(0, shape[1], 2)] *= 8
    res = tm.permute.search(W, n, m, axes=axes, sweeps=3, seed=seed)
    assert sorted(res.row_perm) == list(range(shape[0])) and sorted(res.col_perm) == list(range(shape[1]))
    if axes == "columns":
        assert (res.row_perm == np.arange(shape[0])).all()
    if axes == "rows":
        assert (res.col_perm == np.arange(shape[1])).all()
    assert res.kept_identity == pytest.approx(_kept(W, n, m), rel=1e-12)
    assert res.kept >= res.kept_identity
    # re-solving the permuted matrix gives exactly the reported value
    assert res.kept == _kept(res.apply(W), n, m)
    assert res.total == pytest.approx(np.abs(W).sum())


@settings(max_examples=10, deadline=None)
@given(nm=st.sampled_from([(2, 4), (4, 8)]), seed=st.integers(0, 2**16))
def test_search_deterministic_for_a_seed(nm, seed):
    n, m = nm
    W = np.random.default_rng(seed).standard_normal((24, 32))
    a = tm.permute.search(W, n, m, sweeps=2, seed=seed)
    b = tm.permute.search(W.copy(), n, m, sweeps=2, seed=seed)
    assert (a.row_perm == b.row_perm).all() and (a.col_perm == b.col_perm).all() and a.kept == b.kept


def test_search_improves_a_structured_matrix():
    # Row 0 has four large entries in one group of columns: a tile row keeps only 2 of
    # them. Splitting them over two groups lets the mask keep all four.
    W = np.full((4, 8), 0.01)
    W[0, :4] = 1.0
    res = tm.permute.search(W, 2, 4, axes="columns", init="identity", sweeps=4)
    assert res.kept_identity == pytest.approx(2 + 14 * 0.01)
    assert res.kept == pytest.approx(4 + 12 * 0.01)
    assert sorted(np.nonzero(res.apply(W)[0] == 1.0)[0] // 4) == [0, 0, 1, 1]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), nm=st.sampled_from([(2, 4), (1, 4), (3, 4), (1, 2), (1, 3), (2, 3)]))
def test_exact_swap_gains_match_resolving(seed, nm):
    """The m <= 4 tables give every swap's gain exactly: compare with optimal_mask on the swapped stripes."""
    n, m = nm
    rng = np.random.default_rng(seed)
    A = np.abs(rng.standard_normal((3 * m, 3 * m)))
    E = _entity_major([A], m)
    state = _AxisSearch(E, n, m, np.arange(3 * m))
    assert state.objective() == pytest.approx(_kept(A, n, m), rel=1e-12)
    for a, b in itertools.combinations(range(3), 2):
        gain, sa, sb = state.best_swaps(np.array([a]), np.array([b]))
        best = 0.0
        for c, d in itertools.product(range(m), range(m)):
            p = np.arange(3 * m)
            p[a * m + c], p[b * m + d] = p[b * m + d], p[a * m + c]
            best = max(best, _kept(A[:, p], n, m) - _kept(A, n, m))
        assert gain[0] == pytest.approx(best, abs=1e-9)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_dual_bound_is_an_upper_bound(seed):
    """m > 4: the priced bound of every swap is >= its exact gain."""
    n, m = 4, 8
    rng = np.random.default_rng(seed)
    A = np.abs(rng.standard_normal((16, 24)))
    E = _entity_major([A], m)
    state = _AxisSearch(E, n, m, np.arange(24))
    top = m * m
    ug = np.zeros((1, top))
    ua = np.zeros((1, top), dtype=np.int64)
    ub = np.zeros((1, top), dtype=np.int64)
    rp.priced_pair_candidates(E, state.U, state.Q, state.perm, np.array([0]), np.array([2]), n, m, state.net, top, ug, ua, ub)
    assert (np.diff(ug[0]) <= 0).all()
    base = _kept(A, n, m)
    for g, c, d in zip(ug[0], ua[0], ub[0]):
        p = np.arange(24)
        p[c], p[2 * m + d] = p[2 * m + d], p[c]
        assert _kept(A[:, p], n, m) - base <= g + 1e-9


@pytest.mark.parametrize("k", range(1, 18))
def test_sorting_network_sorts(k):
    net = rp.sorting_network(k)
    rng = np.random.default_rng(k)
    for _ in range(50):
        x = rng.integers(0, 4, k).astype(float)  # ties included
        for i, j in net:
            x[i], x[j] = max(x[i], x[j]), min(x[i], x[j])
        assert (np.diff(x) <= 0).all()


def test_tile_patterns_count():
    from transmask.diversity import transposable_tile_count

    for n, m in [(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4)]:
        assert len(rp.tile_patterns(n, m)[1]) == transposable_tile_count(m, n)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), nm=st.sampled_from([(2, 4), (4, 8)]))
def test_search_coupled(seed, nm):
    n, m = nm
    rng = np.random.default_rng(seed)
    up, gate, down = rng.standard_normal((32, 16)), rng.standard_normal((32, 16)), rng.standard_normal((16, 32))
    res = tm.permute.search_coupled([up, gate], [down], n=n, m=m, sweeps=2, seed=seed)
    assert sorted(res.perm) == list(range(32))
    after = _kept(up[res.perm], n, m) + _kept(gate[res.perm], n, m) + _kept(down[:, res.perm], n, m)
    assert res.kept == pytest.approx(after, rel=1e-12) and res.kept >= res.kept_identity
    assert res.kept_identity == pytest.approx(_kept(up, n, m) + _kept(gate, n, m) + _kept(down, n, m), rel=1e-12)
    again = tm.permute.search_coupled([up, gate], [down], n=n, m=m, sweeps=2, seed=seed)
    assert (again.perm == res.perm).all()


def test_magnitude_order_deals_tiers():
    norms = np.arange(12.0)
    p = tm.permute.magnitude_order(norms, 4)
    assert sorted(p) == list(range(12))
    groups = norms[p].reshape(3, 4)
    # one channel of each tier of 3 per group
    assert (np.sort(groups // 3, axis=1) == np.arange(4)).all()


def test_bad_input():
    W = np.ones((8, 8))
    with pytest.raises(ValueError, match="axes"):
        tm.permute.search(W, 2, 4, axes="diagonal")
    with pytest.raises(ValueError, match="sweeps"):
        tm.permute.search(W, 2, 4, sweeps=-1)
    with pytest.raises(ValueError, match="init"):
        tm.permute.search(W, 2, 4, init="random")
    with pytest.raises(ValueError, match="2-D"):
        tm.permute.search(np.ones(8), 2, 4)
    with pytest.raises(ValueError, match="NaN"):
        tm.permute.search(np.full((8, 8), np.nan), 2, 4)
    with pytest.raises(ValueError, match="shared axis"):
        tm.permute.search_coupled([np.ones((8, 4))], [np.ones((4, 12))], n=2, m=4)
    with pytest.raises(ValueError, match="at least one"):
        tm.permute.search_coupled(n=2, m=4)


def test_trivial_cases():
    W = np.random.default_rng(0).standard_normal((6, 6))
    res = tm.permute.search(W, 4, 4)  # n == m keeps everything
    assert res.kept == res.kept_identity == pytest.approx(np.abs(W).sum())
    res = tm.permute.search(W[:, :5], 2, 4)  # one group only: nothing to swap
    assert res.kept >= res.kept_identity


def test_import_stays_light():
    """transmask.permute needs numpy and numba only; the torch part loads on first use of .models."""
    import subprocess
    import sys

    code = ("import sys, transmask as tm; tm.permute.search; "
            "assert 'torch' not in sys.modules and 'transmask.permute.models' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
