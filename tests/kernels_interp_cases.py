"""Triton-interpreter tests of the N:M kernels against dense torch matmul (run in their own process).

Not collected by the normal test run (the file name does not start with ``test_``):
``tests/test_kernels.py`` runs this module in a subprocess with ``TRITON_INTERPRET=1``,
because Triton decides between JIT and interpreter when the kernel is *decorated*, i.e.
when ``transmask.kernels`` is first imported, and other test modules import torch/triton
(and may import the kernels) first. Run directly with::

    TRITON_INTERPRET=1 python -m pytest tests/kernels_interp_cases.py

Sizes are small (the interpreter runs every program in numpy) but cover both expansion
paths (word path: 16-bit values with m <= 4; slot path: the rest), edge tiles in every
dimension and the unmasked (``EVEN_R``/``EVEN_K``) specialisation, several reduction blocks,
split-K with several programs per tile, both products (``x @ W.T`` and ``dy @ W``), the
conversion kernels, the fused weight gradient and the autograd function.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run with TRITON_INTERPRET=1 (tests/test_kernels.py does this)", allow_module_level=True)

import torch  # noqa: E402

import transmask.kernels as tk  # noqa: E402
from kernels_masks import nm_row_mask, slot_validity, transposable_mask  # noqa: E402
from transmask import sparse  # noqa: E402
from transmask.kernels import convert  # noqa: E402

TOL = {torch.float32: dict(atol=1e-4, rtol=1e-5), torch.float16: dict(atol=1e-2, rtol=2e-3),
       torch.bfloat16: dict(atol=6e-2, rtol=1.6e-2)}


def test_interpreter_is_active():
    assert tk.INTERPRET
    cfgs = tk.kernel_configs()
    assert {c.kwargs["BLOCK_T"] for c in cfgs} == {16, 32}
    for c in cfgs:  # GPU-legal tl.dot shapes, word-path alignment (BLOCK_K multiple of m * P / n)
        assert min(c.kwargs["BLOCK_T"], c.kwargs["BLOCK_R"], c.kwargs["BLOCK_K"]) >= 16
        assert c.kwargs["BLOCK_K"] % 64 == 0


def _case(T, R, K, n, m, dtype, seed=0, at_most=False, strided=False):
    rng = np.random.default_rng(seed)
    W = torch.from_numpy(rng.standard_normal((R, K)).astype(np.float32)).to(dtype)
    M = nm_row_mask(R, K, n, m, rng, at_most=at_most)
    c = sparse.compress(W, M, n, m)
    x = torch.from_numpy(rng.standard_normal((K, T) if strided else (T, K)).astype(np.float32)).to(dtype)
    dy = torch.from_numpy(rng.standard_normal((R, T) if strided else (T, R)).astype(np.float32)).to(dtype)
    if strided:
        x, dy = x.t(), dy.t()  # non-contiguous (stride 1 along tokens)
    Wd = W.float() * torch.from_numpy(M)
    return c, x, dy, Wd


def _check_products(T, R, K, n, m, dtype, split=None, **kw):
    c, x, dy, Wd = _case(T, R, K, n, m, dtype, **kw)
    y = tk.nm_matmul(x, c.values, c.indices, K, n, m, method="triton", split=split)
    dx = tk.nm_matmul_t(dy, c.values, c.indices, K, n, m, method="triton", split=split)
    assert y.dtype == dtype and y.shape == (T, R) and dx.dtype == dtype and dx.shape == (T, K)
    torch.testing.assert_close(y.float(), (x.float() @ Wd.t()).to(dtype).float(), **TOL[dtype])
    torch.testing.assert_close(dx.float(), (dy.float() @ Wd).to(dtype).float(), **TOL[dtype])
    return y, dx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_products_dtypes_2_4(dtype):
    # 19 tokens (two 16-token tiles), 37 x 150: edges in every dimension, 3 K blocks, 2 row blocks
    assert tk.word_path(dtype, 2, 4) == (dtype != torch.float32)
    _check_products(19, 37, 150, 2, 4, dtype, split=2)


@pytest.mark.parametrize("n,m,dtype", [(1, 2, torch.float16), (1, 4, torch.bfloat16), (4, 8, torch.float16),
                                       (3, 8, torch.float16), (8, 16, torch.float16), (16, 32, torch.float32)])
def test_products_every_format(n, m, dtype):
    # word path for 1:2 and 1:4, slot path (m >= 8, or n not dividing 32 // bits) for the rest
    _check_products(5, 20, 3 * m + 1, n, m, dtype, seed=n * m, split=1)


@pytest.mark.parametrize("n,m", [(2, 4), (3, 8)])
def test_at_most_masks_with_padding(n, m):
    # groups keeping fewer than n (and none) exercise the padding slots of both paths
    _check_products(7, 18, 50, n, m, torch.float16, seed=1, at_most=True)


def test_even_tiles_split_k_and_determinism():
    # R, K multiples of the tiles: the unmasked specialisation; 8 K blocks of 64 split 4 ways
    c, x, dy, Wd = _case(3, 64, 512, 2, 4, torch.float16, seed=3)
    y1 = tk.nm_matmul(x, c.values, c.indices, 512, 2, 4, method="triton", split=1)
    y4 = tk.nm_matmul(x, c.values, c.indices, 512, 2, 4, method="triton", split=4)
    y4b = tk.nm_matmul(x, c.values, c.indices, 512, 2, 4, method="triton", split=4)
    ref = (x.float() @ Wd.t()).half().float()
    torch.testing.assert_close(y1.float(), ref, **TOL[torch.float16])
    torch.testing.assert_close(y4.float(), ref, **TOL[torch.float16])
    assert torch.equal(y4, y4b)  # the split reduction sums in a fixed order
    # more splits than reduction blocks: the surplus programs contribute zeros
    y16 = tk.nm_matmul(x, c.values, c.indices, 512, 2, 4, method="triton", split=16)
    torch.testing.assert_close(y16.float(), ref, **TOL[torch.float16])
    dx = tk.nm_matmul_t(dy, c.values, c.indices, 512, 2, 4, method="triton", split=2)
    torch.testing.assert_close(dx.float(), (dy.float() @ Wd).half().float(), **TOL[torch.float16])


def test_gemv_strided_and_many_tokens():
    _check_products(1, 40, 64, 2, 4, torch.float16, seed=2)
    _check_products(17, 33, 40, 2, 4, torch.float16, seed=4, strided=True)
    # more tokens than SMALL_T: the kernel still serves them (method="triton"), token tiles via the grid
    _check_products(40, 24, 70, 2, 4, torch.float16, seed=5)


@pytest.mark.parametrize("n,m,dtype", [(2, 4, torch.float16), (2, 4, torch.bfloat16), (1, 4, torch.float16),
                                       (4, 8, torch.float32), (3, 8, torch.float16), (16, 32, torch.float16)])
def test_decompress_and_compress_are_exact(n, m, dtype):
    rng = np.random.default_rng(10 * n + m)
    R, K = 35, 5 * m + 3
    W = torch.from_numpy(rng.standard_normal((R, K)).astype(np.float32)).to(dtype)
    W[torch.from_numpy(rng.random((R, K)) < 0.1)] = 0  # kept zeros
    M = nm_row_mask(R, K, n, m, rng, at_most=True)
    c = sparse.compress(W, M, n, m)
    assert torch.equal(tk.nm_decompress(c.values, c.indices, K, n, m), c.decompress())
    bits = convert.valid_bitmask(c.indices, K, n, m, slot_validity(c, M))
    assert (bits is None) == (n >= 2)
    G = torch.from_numpy(rng.standard_normal((R, K)).astype(np.float32)).to(dtype)
    got = tk.nm_compress_like(G, c.indices, n, m, valid_bits=bits)
    assert torch.equal(got, sparse.compress(G, M, n, m).values)  # padding slots exactly 0


@pytest.mark.parametrize("n,m,dtype", [(2, 4, torch.float16), (1, 4, torch.float32), (4, 8, torch.float32)])
def test_sddmm_is_the_gradient_at_kept_entries(n, m, dtype):
    rng = np.random.default_rng(20 + n + m)
    T, R, K = 21, 40, 6 * m + 1
    W = torch.zeros(R, K)
    M = nm_row_mask(R, K, n, m, rng, at_most=True)
    c = sparse.compress(W, M, n, m)
    bits = convert.valid_bitmask(c.indices, K, n, m, slot_validity(c, M))
    dy = torch.from_numpy(rng.standard_normal((T, R)).astype(np.float32)).to(dtype)
    x = torch.from_numpy(rng.standard_normal((T, K)).astype(np.float32)).to(dtype)
    got = tk.nm_sddmm(dy, x, c.indices, K, n, m, valid_bits=bits)
    want = sparse.compress(dy.float().t() @ x.float(), M, n, m).values
    torch.testing.assert_close(got.float(), want.to(dtype).float(), **TOL[dtype])
    assert (got[~slot_validity(c, M)] == 0).all()


@pytest.mark.parametrize("n,m,dtype,T", [(2, 4, torch.float32, 9), (2, 4, torch.float16, 9), (4, 8, torch.float32, 40),
                                         (1, 4, torch.float32, 5)])
def test_sparse_linear_autograd_matches_dense(n, m, dtype, T):
    # T = 40 > SMALL_T takes the large-token route (decompress kernel + matmul here)
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    out_f, in_f = 24, 36
    lin = torch.nn.Linear(in_f, out_f)
    M = transposable_mask(out_f, in_f, n, m, rng, drop=0.1)
    sp = tk.SparseLinear.from_linear(lin, n, m, mask=M).to(dtype)
    assert torch.equal(sp.mask(), torch.from_numpy(M))
    x = torch.randn(T, in_f).to(dtype).requires_grad_()
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
    gv = sparse.CompressedNM(sp.values.grad, sp.indices, (out_f, in_f), n, m).decompress()
    torch.testing.assert_close(gv.float(), (Wd.grad * torch.from_numpy(M)).to(dtype).float(), **tol)
    # padding slots (the mask dropped some entries) get an exact zero gradient, so they stay 0
    valid = slot_validity(sp.compressed(), M)
    assert (~valid).any() and (sp.values.grad[~valid] == 0).all()
    # (Adam's eps underflows in fp16, as for a dense fp16 layer: SGD with momentum and decay there)
    opt = torch.optim.Adam(sp.parameters(), lr=0.1) if dtype == torch.float32 else \
        torch.optim.SGD(sp.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()
    assert torch.equal(sp.mask(), torch.from_numpy(M)) and (sp.values.detach()[~valid] == 0).all()
