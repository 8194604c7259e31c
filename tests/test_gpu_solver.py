"""The device solver (transmask.solvers.gpu): API checks here, kernels in subprocesses.

* ``tests/gpu_solver_interp_cases.py``: the Triton kernels through the interpreter
  (``TRITON_INTERPRET=1``, read when the kernels are decorated, hence a fresh process)
  against the Numba solver tile by tile, and against brute force for tiny tiles;
* ``tests/gpu_solver_compile_cases.py``: ``triton.compile`` of the kernels for sm_80 and
  sm_90 (a fresh process without the interpreter and with an empty Triton cache).

Their pytest output is shown when they fail. GPU timings are in ``bench/_gpu_solver_check.py``.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import transmask as tm
from transmask.solvers.gpu import optimal_mask_torch
from transmask.solvers.gpu._patterns import exact_patterns, pattern_tables

try:
    import torch
except ImportError:  # the pattern tables and the subprocess suites' skips still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _pytest_in_subprocess(case_file: str, env: dict, timeout: int = 900) -> None:
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(HERE), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the kernels set it per launch; silences triton's warning
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", str(HERE / case_file)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    report = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, f"{case_file} failed (exit {proc.returncode}):\n{report}"
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last and "skipped" not in last, report


def test_kernels_in_interpreter_match_numba():
    """Kernels vs the Numba solver and brute force, through Triton's interpreter."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    _pytest_in_subprocess("gpu_solver_interp_cases.py", {**os.environ, "TRITON_INTERPRET": "1"})


def test_kernels_compile_for_sm80_sm90(tmp_path):
    """``triton.compile`` of every kernel family for A100 and H100/H200 targets."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    _pytest_in_subprocess("gpu_solver_compile_cases.py", env)


def test_import_is_light():
    code = ("import sys, transmask.solvers.gpu\n"
            "assert 'torch' not in sys.modules and 'triton' not in sys.modules, sorted(sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- pattern tables (pure numpy) -----------------------------------------------------------------

@pytest.mark.parametrize("n,m,count", [(2, 4, 90), (1, 4, 24), (3, 4, 24), (1, 3, 6), (2, 3, 6), (1, 2, 2)])
def test_exact_patterns_are_all_valid_patterns(n, m, count):
    """K(m, n) of OEIS A008300, each pattern valid and distinct, none missing (brute force over 2^(m*m))."""
    pats = exact_patterns(n, m)
    assert pats.shape == (count, m, m)
    assert (pats.sum(axis=1) == n).all() and (pats.sum(axis=2) == n).all()
    assert len({p.tobytes() for p in pats}) == count
    brute = sum(1 for bits in itertools.product((0, 1), repeat=m * m)
                if (np.reshape(bits, (m, m)).sum(0) == n).all() and (np.reshape(bits, (m, m)).sum(1) == n).all())
    assert brute == count


def test_pattern_tables_score_every_pattern():
    scores, bits, K = pattern_tables(2, 4)
    assert scores.shape == (16, 128) and bits.shape == (128, 16) and K == 90
    rng = np.random.default_rng(0)
    tile = rng.random((4, 4)).astype(np.float32)
    got = tile.reshape(16) @ scores
    want = (exact_patterns(2, 4) * tile).sum(axis=(1, 2))
    np.testing.assert_allclose(got[:K], want, rtol=1e-6)
    assert not bits[K:].any() and not scores[:, K:].any()
    with pytest.raises(ValueError, match="m <= 4"):
        pattern_tables(2, 5)


# ---- the public function on CPU tensors (host path: no interpreter in this process) --------------

@needs_torch
@pytest.mark.parametrize("n,m,keep,method", [(2, 4, "exactly", "exact"), (4, 8, "at_most", "exact"), (4, 8, "exactly", "approx")])
def test_cpu_tensor_gives_the_host_mask(n, m, keep, method):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((37, 45)).astype(np.float32)
    got = optimal_mask_torch(torch.from_numpy(A), n, m, method=method, keep=keep)
    assert got.dtype == torch.bool and got.device.type == "cpu"
    np.testing.assert_array_equal(got.numpy(), tm.optimal_mask(A, n, m, method=method, keep=keep))
    bf = torch.from_numpy(A).to(torch.bfloat16)
    np.testing.assert_array_equal(optimal_mask_torch(bf, n, m, method=method, keep=keep).numpy(),
                                  tm.optimal_mask(bf.float().numpy(), n, m, method=method, keep=keep))


@needs_torch
def test_n_equals_m_and_grad_tensors():
    W = torch.randn(6, 10, requires_grad=True)
    assert optimal_mask_torch(W, 4, 4).all()
    mask = optimal_mask_torch(W, 2, 4)
    assert mask.shape == W.shape and not mask.requires_grad
    assert tm.is_transposable(mask.numpy(), 2, 4, keep="exactly")


BAD_INPUTS = [  # (make W from torch, n, m, error, message)
    (lambda t: np.ones((4, 4)), 2, 4, TypeError, "torch.Tensor"),
    (lambda t: t.empty(4, 4, device="meta"), 2, 4, TypeError, "meta device"),
    (lambda t: t.ones(4, 4, dtype=t.bool), 2, 4, TypeError, "bool"),
    (lambda t: t.ones(4, 4, dtype=t.complex64), 2, 4, TypeError, "complex"),
    (lambda t: t.ones(2, 4, 4), 2, 4, ValueError, "2-D"),
    (lambda t: t.ones(0, 4), 2, 4, ValueError, "empty"),
    (lambda t: t.tensor([[1.0, float("nan")], [1.0, 2.0]]), 1, 2, ValueError, "1 NaN or infinite"),
    (lambda t: t.tensor([[1.0, float("inf")], [-float("inf"), 2.0]]), 1, 2, ValueError, "2 NaN or infinite"),
    (lambda t: t.ones(4, 4), 5, 4, ValueError, "must not exceed"),
    (lambda t: t.ones(4, 4), 0, 4, ValueError, "positive"),
    (lambda t: t.ones(4, 4), 2.0, 4, TypeError, "integer"),
]


@needs_torch
@pytest.mark.parametrize("make,n,m,err,match", BAD_INPUTS, ids=[c[-1] for c in BAD_INPUTS])
def test_bad_input_is_named(make, n, m, err, match):
    with pytest.raises(err, match=match):
        optimal_mask_torch(make(torch), n, m)


@needs_torch
def test_bad_method_and_keep():
    with pytest.raises(ValueError, match="unknown method"):
        optimal_mask_torch(torch.ones(4, 4), 2, 4, method="magic")
    with pytest.raises(ValueError, match="keep must be"):
        optimal_mask_torch(torch.ones(4, 4), 2, 4, keep="some")


# ---- the GPU bench script (bench/_gpu_solver_check.py) -------------------------------------------

BENCH = ROOT / "bench" / "_gpu_solver_check.py"


@needs_torch
def test_bench_without_cuda_says_so_and_exits_0():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would time it")
    proc = subprocess.run([sys.executable, str(BENCH)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines() == ["gpu solver check skipped: no CUDA device"]


@needs_torch
def test_bench_rehearsal_on_cpu(tmp_path):
    """Every step of the GPU bench on tiny CPU tensors (kernels in the interpreter): the script is ready for a GPU."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "TRITON_DEFAULT_FP_FUSION": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(BENCH), "--rehearse-on-cpu", "--size", "16", "--patterns", "2:4,4:8",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    import json

    res = json.loads((tmp_path / "gpu_solver.json").read_text())
    assert res["errors"] == [], res["errors"]
    assert [r["pattern"] for r in res["rows"]] == ["2:4", "4:8"]
    for row in res["rows"]:
        assert row["exactness"]["exact"] and row["exactness"]["tiles_below_optimum"] == 0
        for key in ("gpu", "kernels", "topk", "ot", "cpu"):
            assert row[key]["median_s"] > 0
        assert 0.9 < row["ot_kept_fraction"] <= 1.0 + 1e-9
        assert len(row["sweep"]) >= 3  # the default and the variants, each checked exact
    md = (tmp_path / "gpu_solver.md").read_text()
    assert "| 2:4 |" in md and "| 4:8 |" in md and "Variants" in md



@needs_torch
def test_cuda_tensors_are_dispatched_to_the_device_solver(monkeypatch):
    """optimal_mask and sparsify's mask updates hand CUDA tensors to optimal_mask_torch (no host round trip).

    Without a GPU here, "CUDA" is simulated: the dispatch test is told every torch tensor is on CUDA, and the
    device solver (which also runs on CPU tensors) is spied on."""
    import transmask as tm
    import transmask.solvers.gpu as gpu
    from transmask.training import sparsify

    calls = []
    real = gpu.optimal_mask_torch

    def spy(W, n, m, method="exact", keep="exactly"):
        calls.append((tuple(W.shape), n, m, method, keep))
        return real(W, n, m, method=method, keep=keep)

    monkeypatch.setattr(gpu, "optimal_mask_torch", spy)
    monkeypatch.setattr(tm.masks, "_is_cuda_tensor", lambda W: isinstance(W, torch.Tensor))
    W = torch.randn(16, 24, generator=torch.Generator().manual_seed(0))
    mask = tm.optimal_mask(W, 2, 4)
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
    assert np.array_equal(mask.numpy(), tm.optimal_mask(W.numpy(), 2, 4))
    assert calls == [((16, 24), 2, 4, "exact", "exactly")]
    # a Conv2d weight through sparsify's mask update: solved in its channels-last 2-D view, returned in its shape
    conv = torch.nn.Conv2d(8, 16, 3)
    m2d = tm.views.weight_to_2d(conv.weight.detach()).abs().numpy().copy()  # before sparsify masks it
    controller = sparsify(torch.nn.Sequential(conv), n=2, m=4, transposable=True)
    (layer,) = controller.layers.values()
    assert calls[-1] == ((16, 72), 2, 4, "exact", "exactly")
    got = tm.views.weight_to_2d(layer.mask.detach()).numpy()
    assert np.array_equal(got, tm.optimal_mask(m2d, 2, 4))
