"""Tests of the bench peers (bench/peers) and a smoke run of bench/solvers.py --quick.

bench/ is not installed with transmask, so the repository root goes on sys.path.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import transmask as tm  # noqa: E402

peers = pytest.importorskip("bench.peers")
PEERS = peers.PEERS
from bench.peers.numpy_greedy import greedy_mask, greedy_tiles  # noqa: E402
from bench.peers.sinkhorn_ot import sinkhorn_plan  # noqa: E402
from _tracked import quick_bench_run  # noqa: E402

PATTERNS = [(1, 4), (2, 4), (3, 4), (4, 8), (8, 16)]


def _needs(mod):
    return pytest.importorskip(mod)


def _rand(shape, seed, dist="gaussian"):
    rng = np.random.default_rng(seed)
    if dist == "student_t":
        return rng.standard_t(3, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- references
_PATTERNS_CACHE: dict = {}


def brute_force(a: np.ndarray, n: int, exactly: bool) -> float:
    """Best kept magnitude of one small tile by enumerating every 0/1 matrix (rows/cols <= n or == n)."""
    r, c = a.shape
    key = (r, c, n, exactly)
    if key not in _PATTERNS_CACHE:
        bits = (np.arange(2 ** (r * c))[:, None] >> np.arange(r * c)[None, :]) & 1
        x = bits.reshape(-1, r, c)
        rs, cs = x.sum(axis=2), x.sum(axis=1)
        ok = ((rs == n).all(1) & (cs == n).all(1)) if exactly else ((rs <= n).all(1) & (cs <= n).all(1))
        _PATTERNS_CACHE[key] = bits[ok].astype(np.float64)
    return float((_PATTERNS_CACHE[key] @ np.abs(a.astype(np.float64)).reshape(-1)).max())


def lp_optimum(a: np.ndarray, n: int) -> float:
    """Optimum of one full tile (exactly n per row/column) from the LP relaxation (integral: TU)."""
    from scipy.optimize import linprog

    m = a.shape[0]
    A_eq = np.zeros((2 * m, m * m))
    for i in range(m):
        A_eq[i, i * m:(i + 1) * m] = 1
        A_eq[m + i, i::m] = 1
    res = linprog(-np.abs(a).reshape(-1), A_eq=A_eq, b_eq=np.full(2 * m, n), bounds=(0, 1), method="highs")
    assert res.status == 0
    return -res.fun


def greedy_reference(a: np.ndarray, n: int) -> np.ndarray:
    """The paper's greedy on one tile, written plainly: visit by descending |a| (ties: row-major index)."""
    r, c = a.shape
    flat = np.abs(a).reshape(-1).tolist()
    order = sorted(range(r * c), key=lambda k: (-flat[k], k))
    rows, cols = [0] * r, [0] * c
    keep = np.zeros((r, c), dtype=bool)
    for k in order:
        i, j = divmod(k, c)
        if rows[i] < n and cols[j] < n:
            keep[i, j] = True
            rows[i] += 1
            cols[j] += 1
    return keep


def greedy_reference_mask(W, n, m):
    out = np.zeros(W.shape, dtype=bool)
    for a in range(0, W.shape[0], m):
        for b in range(0, W.shape[1], m):
            out[a:a + m, b:b + m] = greedy_reference(W[a:a + m, b:b + m], n)
    return out


# ----------------------------------------------------------------------------- validity
@pytest.mark.parametrize("name", list(PEERS))
@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("shape", [(16, 16), (19, 13)])
def test_peer_masks_are_valid(name, n, m, shape):
    peer = PEERS[name]
    if name == "ortools":
        _needs("ortools")
    if name == "networkx":
        _needs("networkx")
    if name == "networkx" and m > 8:
        shape = (m, m)  # keep the slow peer quick
    W = _rand(shape, seed=n * 100 + m)
    mask = peer.fn(W, n, m)
    assert mask.shape == W.shape and mask.dtype == np.bool_
    assert tm.is_transposable(mask, n, m, keep="at_most")
    if peer.keep == "exactly":
        assert tm.is_transposable(mask, n, m, keep="exactly")


def test_registry_flags():
    assert PEERS["ortools"].exact and PEERS["networkx"].exact
    assert not PEERS["numpy_greedy"].exact and not PEERS["sinkhorn"].exact
    assert PEERS["ortools"].per_tile and PEERS["networkx"].per_tile
    assert not PEERS["numpy_greedy"].per_tile and not PEERS["sinkhorn"].per_tile
    assert {p.keep for p in PEERS.values()} <= {"exactly", "at_most"}


def test_ties_and_zeros_are_handled():
    for name, peer in PEERS.items():
        if name in ("ortools", "networkx"):
            _needs(name)
        for W in (np.zeros((8, 8)), np.ones((8, 8)), np.tile([[1.0, 1.0, 0.0, 0.0]], (8, 2))):
            mask = peer.fn(W, 2, 4)
            assert tm.is_transposable(mask, 2, 4, keep=peer.keep), name
            assert np.array_equal(mask, peer.fn(W, 2, 4)), f"{name} is not deterministic"


# ----------------------------------------------------------------------------- exact peers are optimal
@pytest.mark.parametrize("name", ["ortools", "networkx"])
def test_exact_peers_match_brute_force(name):
    _needs(name)
    fn = PEERS[name].fn
    for seed in range(6):
        for dist in ("gaussian", "student_t"):
            W = _rand((4, 4), seed, dist)
            assert np.isclose(tm.kept_l1(W, fn(W, 2, 4)), brute_force(W, 2, True), rtol=1e-6)
    # a tile cut by the matrix edge keeps at most n (3 real rows of a 4x4 tile)
    for seed in range(3):
        W = _rand((3, 4), 10 + seed)
        mask = fn(W, 2, 4)
        assert tm.is_transposable(mask, 2, 4, keep="at_most")
        assert np.isclose(tm.kept_l1(W, mask), brute_force(W, 2, False), rtol=1e-6)
    # the design's example: exactly-n optimum 30.3, at-most optimum 40.1
    W = np.array([[10, 10, .1], [10, 10, .1], [.1, .1, .1]])
    assert np.isclose(tm.kept_l1(W, fn(W, 2, 3)), 30.3)
    assert np.isclose(tm.kept_l1(W, fn(W, 2, 3, keep="at_most")), 40.1)


@pytest.mark.parametrize("name", ["ortools", "networkx"])
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (3, 8), (8, 16)])
def test_exact_peers_match_lp(name, n, m):
    _needs(name)
    _needs("scipy")
    W = _rand((m, 2 * m if name == "ortools" else m), seed=7 * m + n, dist="student_t")
    mask = PEERS[name].fn(W, n, m)
    for b in range(W.shape[1] // m):
        tile = W[:, b * m:(b + 1) * m]
        kept = float((np.abs(tile.astype(np.float64)) * mask[:, b * m:(b + 1) * m]).sum())
        assert np.isclose(kept, lp_optimum(tile, n), rtol=1e-6)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (8, 16), (16, 32)])
def test_ortools_matches_transmask_exact(n, m):
    _needs("ortools")
    W = _rand((4 * m, 4 * m), seed=m, dist="student_t")
    ours = tm.tile_kept_l1(W, tm.optimal_mask(W, n, m), m)
    peer = tm.tile_kept_l1(W, PEERS["ortools"].fn(W, n, m), m)
    np.testing.assert_allclose(ours, peer, rtol=1e-6)


# ----------------------------------------------------------------------------- greedy and OT peers
@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("shape", [(16, 16), (21, 18)])
def test_numpy_greedy_equals_the_papers_greedy(n, m, shape):
    for dist in ("gaussian", "student_t"):
        W = _rand(shape, seed=3 * m + n, dist=dist)
        W[0, :3] = W[0, 0]  # ties
        np.testing.assert_array_equal(greedy_mask(W, n, m), greedy_reference_mask(W, n, m))
    Wq = np.round(_rand(shape, seed=1), 0)  # many ties
    np.testing.assert_array_equal(greedy_mask(Wq, n, m), greedy_reference_mask(Wq, n, m))


@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (4, 8), (8, 16)])
def test_numpy_greedy_keeps_half_of_optimal(n, m):
    _needs("ortools")
    for seed, dist in enumerate(("gaussian", "student_t")):
        W = _rand((4 * m, 4 * m), seed, dist)
        opt = tm.tile_kept_l1(W, PEERS["ortools"].fn(W, n, m), m)
        got = tm.tile_kept_l1(W, greedy_mask(W, n, m), m)
        assert (got >= 0.5 * opt - 1e-9).all()
    # an adversarial tile for the greedy: 1+e blocks the two 1s (ratio -> 1/2)
    W = np.array([[1.001, 1.0], [1.0, 0.0]])
    got = tm.kept_l1(W, greedy_mask(W, 1, 2))
    assert np.isclose(got, 1.001) and got >= 0.5 * 2.0


def test_greedy_tiles_respects_caps_and_padding():
    scores = np.abs(_rand((5, 4, 4), 0)).astype(np.float64)
    scores[:, 3, :] = -1.0  # padded row
    keep = greedy_tiles(scores, 2)
    assert not keep[:, 3, :].any()
    assert (keep.sum(axis=2) <= 2).all() and (keep.sum(axis=1) <= 2).all()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (8, 16)])
def test_sinkhorn_plan_is_feasible_and_rounding_is_good(n, m):
    W = _rand((8 * m, 8 * m), seed=m)
    tiles = np.abs(W).reshape(8, m, 8, m).transpose(0, 2, 1, 3).reshape(64, m, m).astype(np.float64)
    X = sinkhorn_plan(tiles, n, iters=200)
    assert (X <= 1 + 1e-6).all() and (X >= 0).all()
    np.testing.assert_allclose(X.sum(axis=1), n, atol=1e-2)  # columns exact after the last scaling
    np.testing.assert_allclose(X.sum(axis=2), n, atol=5e-2)
    mask = PEERS["sinkhorn"].fn(W, n, m)
    assert tm.is_transposable(mask, n, m, keep="at_most")  # the OT peer may leave rows short
    greedy = tm.kept_l1(W, greedy_mask(W, n, m))
    assert tm.kept_l1(W, mask) >= 0.98 * greedy


# ----------------------------------------------------------------------------- the bench script
def test_bench_quick_runs():
    """The smoke run writes to a temporary folder it prints, never to the published bench/results."""
    proc, report, md = quick_bench_run("solvers", "--patterns", "2:4,4:8", "--dists", "gaussian,student_t", timeout=300)
    assert "AMD" in md or "Machine:" in md
    methods = {r["method"] for r in report["results"]}
    assert set(PEERS) <= methods
    for r in report["results"]:
        if "error" not in r:
            assert r["valid"], r
            assert r["time_s"] > 0
            if r["method"] in ("ortools", "networkx"):
                assert r["timing"].startswith("extrapolated from")
    assert report["machine"]["cpu"] and report["machine"]["versions"]["numpy"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    assert report["machine"]["git_commit"].removesuffix("-dirty") == commit.strip()
    assert f"commit {report['machine']['git_commit']}" in md
