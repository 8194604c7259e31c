"""Inputs: dtypes, layouts, torch tensors, adversarial values, and every kind of bad input."""
from __future__ import annotations

import numpy as np
import pytest

import transmask as tm
from _oracles import tile_valid

METHODS = ["exact", "approx", "lp"]


def _W(shape=(12, 10), dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- dtypes, layouts, torch
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64])
@pytest.mark.parametrize("method", ["exact", "approx"])
def test_real_dtypes(dtype, method):
    W = (_W((13, 11), np.float64) * 8).astype(dtype)
    mask = tm.optimal_mask(W, 2, 4, method=method)
    assert tile_valid(mask, 2, 4, "exactly")
    ref = tm.optimal_mask(W.astype(np.float64), 2, 4, method=method)
    assert tm.kept_l1(W, mask) == pytest.approx(tm.kept_l1(W, ref))


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_layouts_give_the_same_mask(method):
    base = _W((24, 20), np.float64)
    mask = tm.optimal_mask(base, 4, 8, method=method)
    F = np.asfortranarray(base)
    strided = np.zeros((48, 40))[::2, ::2]
    strided[...] = base
    for variant in (F, strided, base.T.copy().T):
        assert np.array_equal(tm.optimal_mask(variant, 4, 8, method=method), mask)


def test_inputs_are_never_modified():
    for dtype in (np.float16, np.float32, np.float64):
        W = _W((17, 9), dtype)
        before = W.copy()
        for method in METHODS:
            tm.optimal_mask(W, 2, 4, method=method)
        tm.nm_mask(W, 2, 4)
        assert np.array_equal(W, before) and W.dtype == before.dtype


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    W = torch.randn(16, 24, requires_grad=True)
    mask = tm.optimal_mask(W, 2, 4)
    assert isinstance(mask, np.ndarray) and mask.shape == (16, 24)
    assert np.array_equal(mask, tm.optimal_mask(W.detach().numpy(), 2, 4))
    bf = W.detach().to(torch.bfloat16)
    assert tile_valid(tm.optimal_mask(bf, 2, 4), 2, 4, "exactly")
    assert np.array_equal(tm.nm_mask(W.detach(), 2, 4), tm.nm_mask(W.detach().numpy(), 2, 4))


def test_lists_are_accepted():
    mask = tm.optimal_mask([[1.0, 2.0], [4.0, 3.0]], 1, 2)
    assert mask.tolist() == [[False, True], [True, False]]


def test_n_equals_m_keeps_everything():
    W = _W((7, 9))
    for method in METHODS:
        assert tm.optimal_mask(W, 4, 4, method=method).all()
    assert tm.nm_mask(W, 3, 3).all()


# ---------------------------------------------------------------- adversarial values
@pytest.mark.parametrize("method", ["exact", "approx"])
@pytest.mark.parametrize("keep", ["exactly", "at_most"])
def test_all_equal_weights(method, keep):
    W = np.ones((16, 16), dtype=np.float32)
    mask = tm.optimal_mask(W, 2, 4, method=method, keep=keep)
    assert tile_valid(mask, 2, 4, keep)
    assert tm.kept_l1(W, mask) == 16 * 16 / 2  # every valid mask is optimal here
    assert np.array_equal(mask, tm.optimal_mask(W, 2, 4, method=method, keep=keep))


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_one_huge_entry(method):
    W = _W((8, 8), np.float64) * 1e-3
    W[3, 5] = 1e30
    mask = tm.optimal_mask(W, 4, 8, method=method)
    assert mask[3, 5] and tile_valid(mask, 4, 8, "exactly")


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_all_zeros(method):
    W = np.zeros((10, 12))
    exactly = tm.optimal_mask(W, 2, 4, method=method)
    assert tile_valid(exactly, 2, 4, "exactly")
    assert exactly[:8, :12].sum() == 8 * 12 / 2  # full tiles still keep exactly n
    assert tile_valid(tm.optimal_mask(W, 2, 4, method=method, keep="at_most"), 2, 4, "at_most")


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_denormals(method):
    tiny = np.finfo(np.float64).smallest_subnormal
    W = np.random.default_rng(1).integers(1, 100, size=(8, 8)) * tiny
    mask = tm.optimal_mask(W, 4, 8, method=method)
    assert tile_valid(mask, 4, 8, "exactly")
    if method == "exact":
        ref = tm.optimal_mask(W / tiny, 4, 8)  # same order of magnitudes, normal numbers
        assert tm.kept_l1(W / tiny, mask) == pytest.approx(tm.kept_l1(W / tiny, ref))


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_float16_extremes(method):
    f16 = np.finfo(np.float16)
    W = np.random.default_rng(2).choice([f16.max, -f16.max, f16.tiny, f16.smallest_subnormal, 0.0, 1.0], size=(16, 16)).astype(np.float16)
    mask = tm.optimal_mask(W, 2, 4, method=method)
    assert tile_valid(mask, 2, 4, "exactly")
    if method == "exact":
        lp = tm.optimal_mask(W, 2, 4, method="lp")
        assert tm.kept_l1(W, mask) == pytest.approx(tm.kept_l1(W, lp))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(method, bad):
    W = _W((8, 8), np.float64)
    W[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        tm.optimal_mask(W, 2, 4, method=method)
    with pytest.raises(ValueError, match="NaN or infinite"):
        tm.nm_mask(W, 2, 4)


def test_non_finite_float16_rejected():
    W = _W((8, 8), np.float16)
    W[0, 0] = np.float16("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tm.optimal_mask(W, 2, 4)


@pytest.mark.parametrize("W,msg", [
    (np.ones(8), "2-D"),
    (np.ones((2, 4, 4)), "2-D"),
    (np.ones((0, 4)), "empty"),
    (np.ones((4, 0)), "empty"),
])
def test_bad_shapes(W, msg):
    with pytest.raises(ValueError, match=msg):
        tm.optimal_mask(W, 2, 4)


@pytest.mark.parametrize("W,msg", [
    (np.ones((4, 4), dtype=complex), "complex"),
    (np.ones((4, 4), dtype=bool), "bool"),
    (np.array([[object(), 1], [2, 3]], dtype=object), "real numbers"),
    (np.array([["a", "b"], ["c", "d"]]), "real numbers"),
    ([[1, 2], [3]], "could not be converted|real numbers"),
])
def test_bad_dtypes(W, msg):
    with pytest.raises(TypeError, match=msg):
        tm.optimal_mask(W, 1, 2)


@pytest.mark.parametrize("n,m,exc,msg", [
    (0, 4, ValueError, "n must be a positive"),
    (-1, 4, ValueError, "n must be a positive"),
    (2, 0, ValueError, "m must be a positive"),
    (5, 4, ValueError, "must not exceed m"),
    (2.0, 4, TypeError, "n must be a positive integer"),
    (2, 4.5, TypeError, "m must be a positive integer"),
    (True, 4, TypeError, "n must be a positive integer"),
    ("2", 4, TypeError, "n must be a positive integer"),
    (None, 4, TypeError, "n must be a positive integer"),
])
def test_bad_n_m(n, m, exc, msg):
    with pytest.raises(exc, match=msg):
        tm.optimal_mask(_W(), n, m)
    with pytest.raises(exc, match=msg):
        tm.nm_mask(_W(), n, m)


def test_numpy_integers_accepted_for_n_m():
    assert tile_valid(tm.optimal_mask(_W(), np.int64(2), np.int32(4)), 2, 4, "exactly")


def test_unknown_method_and_keep():
    with pytest.raises(ValueError, match="unknown method 'simplex'"):
        tm.optimal_mask(_W(), 2, 4, method="simplex")
    with pytest.raises(ValueError, match="keep must be one of"):
        tm.optimal_mask(_W(), 2, 4, keep="at_least")
    with pytest.raises(ValueError, match="keep must be one of"):
        tm.is_transposable(np.ones((4, 4), bool), 2, 4, keep="maybe")


def test_lp_refuses_large_inputs_and_explains():
    with pytest.raises(ValueError, match='use method="exact"'):
        tm.optimal_mask(np.ones((1024, 1024)), 2, 4, method="lp")


def test_missing_pulp_gives_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pulp", None)  # makes "import pulp" raise ImportError
    with pytest.raises(ImportError, match="pip install pulp"):
        tm.optimal_mask(_W(), 2, 4, method="lp")


def test_gpu_tensor_rejected_with_hint():
    torch = pytest.importorskip("torch")
    meta = torch.empty(4, 4, device="meta")
    with pytest.raises(TypeError, match="on the meta device, which holds no values"):
        tm.optimal_mask(meta, 2, 4)
    with pytest.raises(TypeError, match="mask is a torch tensor on the meta device"):
        tm.is_nm(torch.empty(4, 4, dtype=torch.bool, device="meta"), 2, 4)


# ---------------------------------------------------------------- checks and stats
def test_is_nm_and_is_transposable_detect_violations():
    mask = tm.optimal_mask(_W((8, 8)), 2, 4)
    assert tm.is_transposable(mask, 2, 4, keep="exactly")
    bad = mask.copy()
    row = bad[0, :4]
    bad[0, np.flatnonzero(~row)[0]] = True  # three in a tile-row
    assert not tm.is_nm(bad, 2, 4) and not tm.is_transposable(bad, 2, 4)
    short = mask.copy()
    short[0, np.flatnonzero(mask[0, :4])[0]] = False
    assert tm.is_transposable(short, 2, 4, keep="at_most") and not tm.is_transposable(short, 2, 4, keep="exactly")
    assert tm.is_nm(short, 2, 4, keep="at_most") and not tm.is_nm(short, 2, 4, keep="exactly")
    with pytest.raises(ValueError, match="0/1"):
        tm.is_nm(np.full((4, 4), 2), 2, 4)


def test_checks_default_to_exactly_like_optimal_mask():
    """Issue 12 #6: one default counting mode everywhere (an empty mask is not 2:4 unless asked for "at most")."""
    empty = np.zeros((8, 8), bool)
    assert not tm.is_transposable(empty, 2, 4) and not tm.is_nm(empty, 2, 4)
    assert tm.is_transposable(empty, 2, 4, keep="at_most") and tm.is_nm(empty, 2, 4, keep="at_most")
    W = _W((8, 8), np.float64)
    assert tm.mask_stats(W, empty, 2, 4).keep == "exactly"
    assert not tm.mask_stats(W, empty, 2, 4).is_transposable and tm.mask_stats(W, empty, 2, 4, keep="at_most").is_transposable


@pytest.mark.parametrize("shape", [(0, 0), (4, 0), (0, 4)])
def test_empty_masks_are_refused_like_empty_weights(shape):
    """Issue 18 #10: no IndexError; the same policy as optimal_mask's for an empty W."""
    with pytest.raises(ValueError, match="empty"):
        tm.optimal_mask(np.ones(shape), 2, 4)
    for check in (tm.is_nm, tm.is_transposable):
        with pytest.raises(ValueError, match="mask is empty"):
            check(np.zeros(shape, bool), 2, 4)
    with pytest.raises(ValueError, match="empty"):
        tm.kept_l1(np.ones(shape), np.zeros(shape, bool))


@pytest.mark.parametrize("optimum,exc,msg", [
    ("x", TypeError, "optimum must be a real number"),
    ([1.0], TypeError, "optimum must be a real number"),
    (True, TypeError, "optimum must be a real number"),
    (-1.0, ValueError, "finite number >= 0"),
    (float("nan"), ValueError, "finite number >= 0"),
    (float("inf"), ValueError, "finite number >= 0"),
])
def test_mask_stats_rejects_bad_optimum(optimum, exc, msg):
    W = _W((8, 8), np.float64)
    with pytest.raises(exc, match=msg):
        tm.mask_stats(W, tm.optimal_mask(W, 2, 4), 2, 4, optimum=optimum)


def test_mask_stats_accepts_numeric_optima():
    W = _W((8, 8), np.float64)
    M = tm.optimal_mask(W, 2, 4)
    best = tm.kept_l1(W, M)
    for optimum in (best, np.float32(best), int(np.ceil(best)), np.int64(np.ceil(best))):
        assert 0.9 < tm.mask_stats(W, M, 2, 4, optimum=optimum).fraction_of_optimum <= 1.0 + 1e-6
    assert tm.mask_stats(np.zeros((8, 8)), M, 2, 4, optimum=0.0).fraction_of_optimum == 1.0


def test_mask_stats():
    W = _W((10, 10), np.float64)
    opt = tm.optimal_mask(W, 2, 4)
    approx = tm.optimal_mask(W, 2, 4, method="approx", keep="at_most")
    s = tm.mask_stats(W, approx, 2, 4, optimum=tm.kept_l1(W, opt), keep="at_most")
    assert 0.5 <= s.fraction_of_optimum <= 1.0
    assert s.is_transposable and s.is_nm
    assert s.kept_l1 == pytest.approx(tm.kept_l1(W, approx))
    assert s.total_l1 == pytest.approx(np.abs(W).sum())
    assert s.over_tile_rows == 0 and s.over_tile_cols == 0
    full = tm.mask_stats(W, opt, 2, 4)
    assert full.density == pytest.approx(opt.mean()) and full.fraction_of_optimum is None
    everything = tm.mask_stats(W, np.ones_like(opt), 2, 4)
    assert everything.over_tile_rows > 0 and not everything.is_transposable
    assert set(s.as_dict()) >= {"kept_l1", "short_tile_rows", "short_tile_cols"}
    with pytest.raises(ValueError, match="shape"):
        tm.mask_stats(W, opt[:4], 2, 4)


def test_import_is_light():
    # (numba itself imports scipy when it is installed, so scipy is not checked)
    import subprocess
    import sys

    code = "import sys, transmask; bad = [m for m in ('torch', 'triton', 'pulp', 'matplotlib', 'safetensors', 'tqdm') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_openmp_pools_do_not_spin_against_torch():
    """transmask sets a passive OpenMP wait policy, or Numba's own pool when torch loaded libgomp first."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    code_first = "import os, transmask, numba; print(os.environ['OMP_WAIT_POLICY'], numba.config.THREADING_LAYER)"
    out = subprocess.run([sys.executable, "-c", code_first], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["PASSIVE", "default"]
    code_torch = "import torch, transmask, numba; print(numba.config.THREADING_LAYER)"
    out = subprocess.run([sys.executable, "-c", code_torch], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["workqueue"]
    env["NUMBA_THREADING_LAYER"] = "omp"
    out = subprocess.run([sys.executable, "-c", code_torch], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["omp"]  # a user's explicit choice wins
