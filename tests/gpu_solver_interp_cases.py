"""The device solver's kernels (Triton interpreter, CPU tensors) against the Numba solver, tile by tile.

Run by ``tests/test_gpu_solver.py`` in a fresh interpreter with ``TRITON_INTERPRET=1`` (Triton reads
it when the kernels are decorated). Directly::

    TRITON_INTERPRET=1 python -m pytest tests/gpu_solver_interp_cases.py

Every case stacks tile-rows of different kinds of data into one matrix (tiles are independent, and the
interpreter's cost is per operation, not per tile) and checks, for every tile, that the kept magnitude
equals the Numba solver's optimum within a few float32 roundings of the tile's sum, plus the
transposable N:M contract. Tiny patterns are also checked against brute force over all masks.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    pytest.skip("needs TRITON_INTERPRET=1 before the kernels are imported", allow_module_level=True)

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import transmask as tm  # noqa: E402
from _oracles import brute_force_best, tile_valid  # noqa: E402
from transmask.solvers.gpu import _kernels, optimal_mask_torch  # noqa: E402

F32_MAX = float(np.finfo(np.float32).max)


def _tile_sums(A: np.ndarray, m: int) -> np.ndarray:
    """Per-tile sums of a float64 matrix (edge tiles zero padded)."""
    R, C = A.shape
    TR, TC = -(-R // m), -(-C // m)
    P = np.zeros((TR * m, TC * m))
    P[:R, :C] = A
    return P.reshape(TR, m, TC, m).sum(axis=(1, 3))


def zoo(m: int, kinds, cols: int, extra_rows: int, seed: int) -> np.ndarray:
    """float32 matrix of ``m``-row bands, one per kind, plus ``extra_rows`` Gaussian rows; ``cols`` wide."""
    rng = np.random.default_rng(seed)
    bands = []
    for kind in kinds:
        shape = (m, cols)
        if kind == "gauss":
            B = rng.standard_normal(shape)
        elif kind == "student":  # heavy tails: a few entries dominate their tile
            B = rng.standard_t(1.5, shape)
        elif kind == "ties":  # small integers: many equal magnitudes, equally good optima
            B = rng.integers(-3, 4, shape).astype(float)
        elif kind == "zeros":  # all-zero tiles, and tiles with a few nonzeros
            B = np.zeros(shape)
            B[:, cols // 2:] = rng.standard_normal((m, cols - cols // 2)) * (rng.random((m, cols - cols // 2)) < 0.15)
        elif kind == "huge":
            B = rng.standard_normal(shape) * 1e30
        elif kind == "maxfloat":  # sums of a tile overflow float32 unless the kernel scales the tile
            B = rng.uniform(0.05, 1.0, shape) * F32_MAX * rng.choice([-1, 1], shape)
        elif kind == "tiny":  # normal and subnormal float32 magnitudes
            B = rng.standard_normal(shape) * np.where(rng.random(shape) < 0.5, 1e-30, 1e-41)
        elif kind == "mixed":  # 1e30 next to O(1) in the same tile: the small ones still count exactly in ties
            B = rng.standard_normal(shape) * np.where(rng.random(shape) < 0.2, 1e30, 1.0)
        else:
            raise ValueError(kind)
        bands.append(B)
    bands.append(rng.standard_normal((extra_rows, cols)))
    return np.concatenate(bands).astype(np.float32)


ALL_KINDS = ("gauss", "student", "ties", "zeros", "huge", "maxfloat", "tiny", "mixed")


def assert_optimal_per_tile(W: torch.Tensor, n: int, m: int, keep: str):
    """The device mask is transposable N:M and keeps the optimum of every tile (Numba solver)."""
    mask = optimal_mask_torch(W, n, m, keep=keep)
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.shape == W.shape
    M = mask.numpy()
    # what the host solver sees: the same values, bfloat16 widened exactly to float32
    host = (W.float() if W.dtype == torch.bfloat16 else W).numpy()
    ref = tm.optimal_mask(host, n, m, keep=keep)
    assert tm.is_transposable(M, n, m, keep=keep), f"{n}:{m} {keep}: not a transposable mask"
    assert tile_valid(M, n, m, keep)
    A = np.abs(host.astype(np.float64))
    got, best, total = _tile_sums(A * M, m), _tile_sums(A * ref, m), _tile_sums(A, m)
    eps = np.finfo(np.float64 if W.dtype == torch.float64 else np.float32).eps
    tol = 4 * m * eps * total  # a few roundings of sums of up to 2m entries, relative to the tile's sum
    worse = got < best - tol
    assert not worse.any(), (f"{n}:{m} {keep} {W.dtype}: {int(worse.sum())} tile(s) below the optimum, e.g. "
                             f"{got[worse][:3]} < {best[worse][:3]}")
    assert not (got > best + tol).any(), "kept more than the Numba optimum: one of the two solvers is wrong"
    return M


@pytest.fixture(autouse=True, scope="module")
def _interpreting():
    assert _kernels.INTERPRET, "the kernels were not decorated in interpreter mode"


# (n, m, keep, kinds, full tile-columns, extra columns, extra rows): shapes not multiple of m included
CASES = [
    (2, 4, "exactly", ALL_KINDS, 5, 3, 2),
    (2, 4, "at_most", ALL_KINDS, 4, 1, 3),
    (1, 4, "exactly", ALL_KINDS[:4], 3, 2, 1),
    (3, 4, "at_most", ALL_KINDS[:4], 3, 3, 0),
    (1, 2, "exactly", ALL_KINDS, 6, 1, 1),
    (4, 8, "exactly", ALL_KINDS, 4, 5, 3),
    (4, 8, "at_most", ALL_KINDS, 3, 0, 5),
    (2, 8, "exactly", ALL_KINDS[:5], 3, 3, 0),
    (8, 16, "exactly", ALL_KINDS, 2, 0, 0),
    (8, 16, "at_most", ("gauss", "zeros", "maxfloat"), 1, 7, 0),
    (16, 32, "exactly", ("gauss", "ties"), 2, 0, 0),
    (16, 32, "at_most", ("gauss",), 1, 9, 5),
    (32, 64, "exactly", ("gauss",), 1, 0, 0),  # the largest m on the device
    (2, 3, "exactly", ALL_KINDS[:4], 4, 2, 1),
    (3, 5, "at_most", ALL_KINDS[:4], 3, 4, 2),
]


@pytest.mark.parametrize("n,m,keep,kinds,tc,extra_c,extra_r", CASES, ids=lambda v: str(v) if not isinstance(v, tuple) else "kinds")
def test_kernel_matches_numba_per_tile(n, m, keep, kinds, tc, extra_c, extra_r):
    W = torch.from_numpy(zoo(m, kinds, tc * m + extra_c, extra_r, seed=n * 100 + m))
    assert_optimal_per_tile(W, n, m, keep)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n,m,keep", [(2, 4, "exactly"), (4, 8, "at_most")])
def test_dtypes(dtype, n, m, keep):
    rng = np.random.default_rng(7)
    W = torch.from_numpy(rng.standard_normal((3 * m + 1, 4 * m + 2))).to(dtype)
    assert_optimal_per_tile(W, n, m, keep)


def test_strided_and_integer_input():
    rng = np.random.default_rng(3)
    base = torch.from_numpy(rng.standard_normal((40, 40)).astype(np.float32))
    view = base.t()[::2]  # non-contiguous rows and columns
    ref = optimal_mask_torch(view.contiguous(), 4, 8)
    assert torch.equal(optimal_mask_torch(view, 4, 8), ref)
    ints = torch.from_numpy(rng.integers(-50, 50, (16, 24)))
    assert_optimal_per_tile(ints, 2, 4, "exactly")


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 4), (1, 2), (1, 3), (2, 3)])
@pytest.mark.parametrize("keep", ["exactly", "at_most"])
def test_brute_force_oracle(n, m, keep):
    """Independent oracle: the best of every 0/1 mask, tile by tile (tiles of at most 16 entries)."""
    rng = np.random.default_rng(n * 10 + m)
    W = rng.integers(0, 4, (2 * m + 1, 3 * m + 2)).astype(np.float32) * rng.choice([1, 0.5, 3], (2 * m + 1, 3 * m + 2))
    M = optimal_mask_torch(torch.from_numpy(W), n, m, keep=keep).numpy()
    assert tile_valid(M, n, m, keep)
    assert np.isclose(float((np.abs(W) * M).sum()), brute_force_best(W, n, m, keep))


def test_all_edge_tiles_and_single_rows():
    rng = np.random.default_rng(5)
    for shape in [(1, 9), (9, 1), (3, 5), (7, 7)]:
        W = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        assert_optimal_per_tile(W, 2, 8, "exactly")


@pytest.mark.parametrize("n,m,keep", [(8, 16, "exactly"), (5, 12, "at_most")])
def test_lp_oracle(n, m, keep):
    """Independent oracle for larger tiles: the tile's LP (totally unimodular, so its optimum is the mask's), by HiGHS."""
    linprog = pytest.importorskip("scipy.optimize").linprog
    rng = np.random.default_rng(m)
    W = np.concatenate([rng.standard_normal((m, 2 * m + 3)), rng.integers(-2, 3, (m + 2, 2 * m + 3))]).astype(np.float32)
    M = optimal_mask_torch(torch.from_numpy(W), n, m, keep=keep).numpy()
    assert tile_valid(M, n, m, keep)
    A = np.abs(W.astype(np.float64))
    for i0 in range(0, A.shape[0], m):
        for j0 in range(0, A.shape[1], m):
            t = A[i0:i0 + m, j0:j0 + m]
            r, c = t.shape
            rows = np.kron(np.eye(r), np.ones((1, c)))
            cols = np.kron(np.ones((1, r)), np.eye(c))
            cons = np.vstack([rows, cols])
            if keep == "exactly" and (r, c) == (m, m):
                lp = linprog(-t.ravel(), A_eq=cons, b_eq=np.full(r + c, n), bounds=(0, 1), method="highs")
            else:
                lp = linprog(-t.ravel(), A_ub=cons, b_ub=np.full(r + c, n), bounds=(0, 1), method="highs")
            got = float((t * M[i0:i0 + m, j0:j0 + m]).sum())
            assert got >= -lp.fun - 4 * m * np.finfo(np.float32).eps * t.sum(), (i0, j0, got, -lp.fun)


@pytest.mark.parametrize("n,m,keep", [(4, 8, "exactly"), (2, 4, "at_most")])
def test_gpu_launch_configuration_gives_the_same_mask(n, m, keep):
    """The GPU's small blocks (a few tiles in lockstep) give the masks of the interpreter's one big block."""
    rng = np.random.default_rng(11)
    W = torch.from_numpy(np.concatenate([rng.standard_normal((m, 2 * m + 1)),
                                         rng.integers(-2, 3, (m + 1, 2 * m + 1))]).astype(np.float32))
    ref, _ = _kernels.solve(W, n, m, keep)
    got, failures = _kernels.solve(W, n, m, keep, flow=_kernels.FLOW_CONFIGS[m])
    assert int(failures) == 0 and torch.equal(got, ref)


def test_large_m_and_approx_run_on_the_host(monkeypatch):
    """m > DEVICE_MAX_M and methods other than "exact" never reach the kernels; the host solver answers."""
    from transmask.solvers.gpu import DEVICE_MAX_M

    def refuse(*args, **kwargs):
        raise AssertionError("the kernels were called")

    monkeypatch.setattr(_kernels, "solve", refuse)
    rng = np.random.default_rng(2)
    W = rng.standard_normal((5, 2 * DEVICE_MAX_M + 5)).astype(np.float32)
    m = DEVICE_MAX_M + 1
    np.testing.assert_array_equal(optimal_mask_torch(torch.from_numpy(W), 3, m).numpy(), tm.optimal_mask(W, 3, m))
    np.testing.assert_array_equal(optimal_mask_torch(torch.from_numpy(W), 2, 4, method="approx").numpy(),
                                  tm.optimal_mask(W, 2, 4, method="approx"))
