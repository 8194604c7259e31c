"""Triton-interpreter tests of the N:M kernels against dense torch matmul (run in their own process).

Not collected by the normal test run (the file name does not start with
``test_``): ``tests/test_kernels.py`` runs this module in a subprocess with
``TRITON_INTERPRET=1``, because Triton decides between JIT and interpreter when
the kernel is *decorated*, i.e. when ``transmask.kernels`` is first imported,
and other test modules import torch/triton (and may import the kernels) first.
Run directly with::

    TRITON_INTERPRET=1 python -m pytest tests/kernels_interp_cases.py

Sizes are small (the interpreter runs every program in numpy) but cover edge
tiles in every dimension, several K blocks, several program tiles, and every
supported m.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run with TRITON_INTERPRET=1 (tests/test_kernels.py does this)", allow_module_level=True)

import torch  # noqa: E402

import transmask.kernels as tk  # noqa: E402
from kernels_masks import nm_row_mask, transposable_mask  # noqa: E402
from transmask import sparse  # noqa: E402

TOL = {torch.float32: dict(atol=1e-4, rtol=1e-5), torch.float16: dict(atol=1e-2, rtol=2e-3),
       torch.bfloat16: dict(atol=6e-2, rtol=1.6e-2)}


def test_interpreter_is_active():
    assert tk.INTERPRET
    assert len(tk.kernel_configs()) == 1
    cfg = tk.kernel_configs()[0].kwargs
    assert min(cfg["BLOCK_T"], cfg["BLOCK_R"], cfg["BLOCK_K"]) >= 16  # GPU-legal tl.dot shapes


def _check(T, R, K, n, m, dtype, seed=0, at_most=False, strided=False):
    rng = np.random.default_rng(seed)
    W = torch.from_numpy(rng.standard_normal((R, K)).astype(np.float32)).to(dtype)
    M = nm_row_mask(R, K, n, m, rng, at_most=at_most)
    c = sparse.compress(W, M, n, m)
    x = torch.from_numpy(rng.standard_normal((K, T) if strided else (T, K)).astype(np.float32)).to(dtype)
    if strided:
        x = x.t()  # non-contiguous (stride 1 along tokens)
    y = tk.nm_linear(x, c)
    assert y.dtype == dtype and y.shape == (T, R)
    ref = (x.float() @ (W.float() * torch.from_numpy(M)).t()).to(dtype)
    torch.testing.assert_close(y.float(), ref.float(), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_forward_dtypes_2_4(dtype):
    # 19 tokens, 37 rows, 75 cols: edges in every dimension, 3 K blocks, 2 row blocks, 2 token blocks
    _check(19, 37, 75, 2, 4, dtype)


@pytest.mark.parametrize("n,m", [(1, 2), (3, 8), (4, 8), (8, 16), (16, 32)])
def test_forward_every_m(n, m):
    _check(5, 20, 2 * m + 3, n, m, torch.float32, seed=n * m)


@pytest.mark.parametrize("n,m", [(2, 4), (3, 8)])
def test_forward_at_most_masks_with_padding(n, m):
    # groups keeping fewer than n (and none) exercise the padding slots
    _check(7, 18, 50, n, m, torch.float32, seed=1, at_most=True)


def test_forward_strided_input_and_gemv():
    _check(17, 33, 40, 2, 4, torch.float16, seed=2, strided=True)
    _check(1, 40, 64, 2, 4, torch.float16, seed=3)


def test_forward_and_backward_forms_from_one_mask():
    rng = np.random.default_rng(4)
    R, K, T = 36, 44, 9
    W = torch.from_numpy(rng.standard_normal((R, K)).astype(np.float32))
    M = transposable_mask(R, K, 2, 4, rng)
    p = sparse.compress_transposable(W, M, 2, 4)
    Wd = W * torch.from_numpy(M)
    x = torch.randn(T, K)
    dy = torch.randn(T, R)
    torch.testing.assert_close(tk.nm_linear(x, p.forward), x @ Wd.t(), **TOL[torch.float32])
    torch.testing.assert_close(tk.nm_linear(dy, p.backward), dy @ Wd, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sparse_linear_autograd_matches_dense(dtype):
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    out_f, in_f = 24, 36
    lin = torch.nn.Linear(in_f, out_f)
    M = transposable_mask(out_f, in_f, 2, 4, rng, drop=0.1)
    sp = tk.SparseLinear.from_linear(lin, 2, 4, mask=M).to(dtype)
    x = torch.randn(2, 9, in_f).to(dtype).requires_grad_()
    y = sp(x)
    g = torch.randn_like(y)
    y.backward(g)

    Wd = (lin.weight.detach() * torch.from_numpy(M)).to(dtype).float().requires_grad_()
    xr = x.detach().float().requires_grad_()
    yr = xr @ Wd.t() + lin.bias.detach().to(dtype).float()
    yr.backward(g.float())
    tol = TOL[dtype]
    torch.testing.assert_close(y.float(), yr.to(dtype).float(), **tol)
    torch.testing.assert_close(x.grad.float(), xr.grad.to(dtype).float(), **tol)
    gv = sparse.CompressedNM(sp.values.grad, sp.fwd_indices, (out_f, in_f), 2, 4).decompress()
    torch.testing.assert_close(gv.float(), (Wd.grad * torch.from_numpy(M)).to(dtype).float(), **tol)
    # padding slots (the mask dropped some entries) get an exact zero gradient
    pad = sp.forward_columns == sp.values.shape[1] // 2 * 4
    assert pad.any() and (sp.values.grad[pad] == 0).all()
