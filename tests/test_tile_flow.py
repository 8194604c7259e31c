"""The exact solver's per-tile building blocks against an independent LP (scipy/HiGHS), for any warm start."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from transmask.solvers._dual_prices import dual_prices_across_tiles, lane_workspace, load_tile_lanes
from transmask.solvers._sorting import selection_network, sort_lanes, sorting_network
from transmask.solvers._tile_flow import full_tile_exactly, row_topn_at_prices, tile_workspace


def lp_optimum(w: np.ndarray, n: int, keep: str = "exactly") -> float:
    """max sum w*x, 0 <= x <= 1, every row and column sums to n (or at most n); totally unimodular: the LP optimum is the integer one."""
    m = w.shape[0]
    scale = w.max() if w.max() > 0 else 1.0  # HiGHS wants magnitudes near 1; the optimum scales linearly
    A_eq = np.zeros((2 * m, m * m))
    for i in range(m):
        A_eq[i, i * m : (i + 1) * m] = 1  # row i
        A_eq[m + i, i::m] = 1  # column i
    if keep == "exactly":
        res = linprog(-(w / scale).ravel(), A_eq=A_eq, b_eq=np.full(2 * m, n), bounds=(0, 1), method="highs")
    else:
        res = linprog(-(w / scale).ravel(), A_ub=A_eq, b_ub=np.full(2 * m, n), bounds=(0, 1), method="highs")
    assert res.status == 0
    return -res.fun * scale


def tiles(m: int, count: int, seed: int):
    """Gaussian, heavy-tailed, heavily tied, small-integer, huge (1e305, beyond float32) and tiny magnitudes."""
    rng = np.random.default_rng(seed)
    makers = [
        lambda: np.abs(rng.standard_normal((m, m))),
        lambda: np.abs(rng.standard_t(3, (m, m))),
        lambda: rng.choice([0.0, 1.0, 2.0], size=(m, m)),
        lambda: rng.integers(0, 6, size=(m, m)).astype(float),
        lambda: np.abs(rng.standard_normal((m, m))) * 1e305,
        lambda: np.abs(rng.standard_normal((m, m))) * 1e-300,
        lambda: np.zeros((m, m)),
    ]
    for k in range(count):
        yield makers[k % len(makers)]()


def loaded_scale(w: np.ndarray) -> float:
    """The power of two a tile is loaded at (transmask.solvers._scale): 1 near magnitude 1, else its top to [1, 2)."""
    top = w.max()
    if top == 0 or 2.0**-64 <= top < 2.0**64:
        return 1.0
    return 2.0 ** -np.floor(np.log2(top))


def prices(ws, n: int, rounds: int, pruned: bool = True, with_lanes: bool = False):
    """Column prices and row thresholds of a batch of tiles, packed into SIMD lanes as the kernel does."""
    m, L = ws[0].shape[0], len(ws)
    A = np.hstack(ws)  # one tile-row of L tiles, loaded as the kernel loads it
    lanes = lane_workspace(m, L)
    load_tile_lanes(A, 0, 0, L, m, lanes)
    for t, w in enumerate(ws):  # the layout the docstring promises, at the scale of the tile
        s = loaded_scale(w)
        assert np.array_equal(lanes.Wr[:, t::L], w * s) and np.array_equal(lanes.Wc[:, t::L], w.T * s)
        assert s == 1.0 or 1.0 <= lanes.Wr[:, t::L].max() < 2.0
    net = selection_network(m, (m - n - 1, m - n) if n < m else (0,)) if pruned else sorting_network(m)
    dual_prices_across_tiles(lanes, n, m, rounds, net)
    assert np.isfinite(lanes.v[:, :L]).all() and np.isfinite(lanes.thr[:, :L]).all()
    return (lanes.v, lanes.thr, lanes) if with_lanes else (lanes.v, lanes.thr)


def solve_tiles(ws, n: int, rounds: int):
    m, L = ws[0].shape[0], len(ws)
    v, thr, lanes = prices(ws, n, rounds, with_lanes=True)
    out = []
    for t, w in enumerate(ws):
        work = tile_workspace(m, m)
        work.w[:] = lanes.Wr[:, t::L]  # the tile as loaded, as the kernel copies it
        full_tile_exactly(work, n, m, v, thr, t)
        assert work.failed[0] == 0
        out.append(work.x.astype(bool))
    return out


@pytest.mark.parametrize("n,m", [(1, 5), (2, 5), (4, 8), (3, 8), (7, 8), (8, 8), (8, 16), (5, 16), (16, 32)])
def test_full_tile_exactly_is_optimal_for_every_number_of_rounds(n, m):
    ws = list(tiles(m, 14, seed=n * 100 + m))
    best = [lp_optimum(w, n) for w in ws]
    for rounds in (0, 1, 2, 5):
        for k, (w, x) in enumerate(zip(ws, solve_tiles(ws, n, rounds))):
            assert (x.sum(axis=0) == n).all() and (x.sum(axis=1) == n).all(), (k, rounds)
            assert w[x].sum() == pytest.approx(best[k], rel=1e-9, abs=1e-12 * max(1.0, np.abs(w).max())), (k, rounds)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (8, 16), (3, 16)])
def test_warm_start_at_dual_prices_is_row_feasible_with_valid_potentials(n, m):
    ws = list(tiles(m, 21, seed=m))  # huge and tiny tiles included: they are loaded at a fixed scale
    for rounds in (0, 1, 3):
        v, thr, lanes = prices(ws, n, rounds, with_lanes=True)
        for t, w in enumerate(ws):
            w = lanes.Wr[:, t :: len(ws)]  # the tile as loaded
            work = tile_workspace(m, m)
            work.w[:] = w
            excess = row_topn_at_prices(work.w, work.x, work.colcnt, work.pot, work.failed, n, m, v, thr, t)
            keep, colcnt, pot = work.x.astype(bool), work.colcnt, work.pot
            assert (keep.sum(axis=1) == n).all()
            assert (colcnt == keep.sum(axis=0)).all()
            assert excess == np.maximum(keep.sum(axis=0) - n, 0).sum()
            # complementary slackness for the column repair: within a row, every kept
            # w + pot is at least every dropped one
            s = w + pot[:m][None, :]
            for i in range(m):
                assert s[i, keep[i]].min() >= s[i, ~keep[i]].max() - 1e-12 * max(1.0, w.max())
            if rounds == 0:  # plain row top-n, ties to the lower column
                order = np.argsort(-w, axis=1, kind="stable")[:, :n]
                ref = np.zeros_like(keep)
                np.put_along_axis(ref, order, True, axis=1)
                assert np.array_equal(keep, ref)


def test_dual_ascent_rounds_remove_most_of_the_column_excess():
    """The reason for the rounds: far fewer augmenting paths on Gaussian tiles."""
    rng = np.random.default_rng(3)
    n, m = 4, 8
    ws = [np.abs(rng.standard_normal((m, m))) for _ in range(300)]
    totals = {}
    for rounds in (0, 1, 2):
        v, thr = prices(ws, n, rounds)
        totals[rounds] = 0
        for t, w in enumerate(ws):
            work = tile_workspace(m, m)
            work.w[:] = w
            totals[rounds] += row_topn_at_prices(work.w, work.x, work.colcnt, work.pot, work.failed, n, m, v, thr, t)
    assert totals[1] < 0.5 * totals[0] and totals[2] < totals[1]


@pytest.mark.parametrize("k", [2, 4, 5, 8, 9, 12, 16])
def test_sorting_network_sorts_every_01_input_and_lanes(k):
    """0-1 principle: a comparator network that sorts all 0/1 inputs sorts everything."""
    net = sorting_network(k)
    for bits in itertools.product((0, 1), repeat=k):
        a = list(bits)
        for i, j in net:
            if a[i] > a[j]:
                a[i], a[j] = a[j], a[i]
        assert a == sorted(a)
    S = np.random.default_rng(k).standard_normal((k, 7))
    ref = np.sort(S, axis=0)
    sort_lanes(S, net, S.shape[1])
    assert np.array_equal(S, ref)


@pytest.mark.parametrize("k", [4, 16, 64])
def test_sort_lanes_sorts_integer_keys_in_the_first_lanes_only(k):
    """The approximation sorts packed int64 keys (xor swap) in the first ``nt`` lanes of a chunk."""
    rng = np.random.default_rng(k)
    keys = rng.integers(-(2**62), 2**62, size=(k, 9))
    keys[:, 3] = 5  # a lane of ties
    before = keys.copy()
    sort_lanes(keys, sorting_network(k), 7)
    assert np.array_equal(keys[:, :7], np.sort(before[:, :7], axis=0))
    assert np.array_equal(keys[:, 7:], before[:, 7:])  # lanes beyond nt untouched


@pytest.mark.parametrize("n,m", [(4, 8), (1, 8), (7, 8), (8, 16), (16, 32)])
def test_selection_network_gives_the_same_prices_as_the_full_sort(n, m):
    ws = list(tiles(m, 30, seed=7 * m + n))
    for rounds in (0, 2):
        full, pruned = prices(ws, n, rounds, pruned=False), prices(ws, n, rounds)
        assert np.array_equal(full[0], pruned[0]) and np.array_equal(full[1], pruned[1])
    assert len(selection_network(m, (m - n - 1, m - n))) < len(sorting_network(m))


@pytest.mark.parametrize("k", [4, 8, 16])
def test_selection_network_places_the_requested_ranks(k):
    rng = np.random.default_rng(k)
    for pos in [(0,), (k - 1,), (k // 2 - 1, k // 2), (1, 2)]:
        net = selection_network(k, pos)
        S = rng.standard_normal((k, 200))
        ref = np.sort(S, axis=0)
        sort_lanes(S, net, S.shape[1])
        assert np.array_equal(S[list(pos)], ref[list(pos)])


@pytest.mark.parametrize("keep", ["exactly", "at_most"])
@pytest.mark.parametrize("n,m", [(4, 8), (2, 8), (8, 16), (2, 4), (7, 8)])
def test_exact_kernel_on_matrices_of_mixed_tiles_matches_the_lp_per_tile(n, m, keep):
    """Whole matrices through ``optimal_mask``: tiles feasible at the prices (written from the lanes),
    tiles needing a repair, tied tiles and tiles near the float64 limit side by side; with
    ``keep="at_most"`` also tiles whose exactly-n optimum is not at-most optimal (7:8, integers, zeros)."""
    import transmask as tm

    ws = list(tiles(m, 28, seed=11 * m + n))
    rng = np.random.default_rng(m)
    ws += [np.abs(rng.standard_normal((m, m))) for _ in range(12)]  # plenty of repair-free tiles
    rows = 4
    W = np.vstack([np.hstack(ws[r::rows]) for r in range(rows)])
    mask = tm.optimal_mask(W, n, m, keep=keep)
    assert tm.is_transposable(mask, n, m, keep=keep)
    for r in range(rows):
        for c, w in enumerate(ws[r::rows]):
            got = w[mask[r * m : (r + 1) * m, c * m : (c + 1) * m]].sum()
            assert got == pytest.approx(lp_optimum(w, n, keep), rel=1e-9, abs=1e-12 * max(1.0, w.max())), (r, c)


def test_at_most_falls_back_where_the_exactly_n_optimum_is_not_at_most_optimal():
    """The paper's 2:3 example keeps 30.3 with exactly 2 but 40.1 with at most 2: its certificate
    must fail and the at-most SSP take over, also between Gaussian tiles that pass it."""
    import transmask as tm
    from transmask.solvers._tile_flow import also_optimal_at_most

    assert also_optimal_at_most(1.0, -1.0) and not also_optimal_at_most(1.0, -1.5)
    special = np.array([[10, 10, 0.1], [10, 10, 0.1], [0.1, 0.1, 0.1]])
    rng = np.random.default_rng(0)
    blocks = [[special if (r + c) % 2 == 0 else rng.standard_normal((3, 3)) for c in range(6)] for r in range(4)]
    W = np.block(blocks)
    mask = tm.optimal_mask(W, 2, 3, keep="at_most")
    for r in range(4):
        for c in range(6):
            t = np.abs(W[3 * r : 3 * r + 3, 3 * c : 3 * c + 3])
            got = t[mask[3 * r : 3 * r + 3, 3 * c : 3 * c + 3]].sum()
            assert got == pytest.approx(lp_optimum(t, 2, "at_most"), rel=1e-12)
            if (r + c) % 2 == 0:
                assert got == pytest.approx(40.1)
