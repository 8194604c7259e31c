"""transmask.sparse: compression round trips, packing, forward/backward forms, errors (numpy + CPU torch)."""
from __future__ import annotations

import numpy as np
import pytest

from kernels_masks import nm_row_mask, transposable_mask
from transmask import is_transposable, sparse

NM = [(1, 2), (2, 4), (1, 4), (3, 4), (3, 8), (4, 8), (8, 16), (16, 32), (2, 3), (5, 6), (4, 4)]


@pytest.mark.parametrize("m", [2, 3, 4, 5, 8, 16, 32, 64])
def test_pack_unpack_roundtrip(m):
    rng = np.random.default_rng(m)
    idx = rng.integers(0, m, size=(5, 37)).astype(np.uint8)
    words = sparse.pack_indices(idx, m)
    assert words.dtype == np.int32
    assert words.shape == (5, -(-37 // sparse.indices_per_word(m)))
    assert (sparse.unpack_indices(words, m, 37) == idx).all()


def test_bits_and_layout_of_2_4():
    assert sparse.index_bits(4) == 2 and sparse.indices_per_word(4) == 16
    assert [sparse.index_bits(m) for m in (2, 8, 16, 32)] == [1, 3, 4, 5]
    # slot t at bits [2t, 2t+2) of word 0, little-endian
    idx = np.array([[1, 3, 0, 2]], dtype=np.uint8)
    assert sparse.pack_indices(idx, 4)[0, 0] == 1 | 3 << 2 | 0 << 4 | 2 << 6
    # a full word with index 3 in the top field sets the sign bit: stored as a negative int32
    full = np.full((1, 16), 3, dtype=np.uint8)
    w = sparse.pack_indices(full, 4)
    assert w[0, 0] == -1 and (sparse.unpack_indices(w, 4, 16) == 3).all()


@pytest.mark.parametrize("n,m", NM)
@pytest.mark.parametrize("at_most", [False, True])
def test_roundtrip_numpy(n, m, at_most):
    rng = np.random.default_rng(100 * n + m)
    R, C = 11, 3 * m + (m // 2 or 1)  # cols not a multiple of m
    W = rng.standard_normal((R, C)).astype(np.float32)
    W[rng.random(W.shape) < 0.1] = 0.0  # kept zeros must survive the mask round trip
    M = nm_row_mask(R, C, n, m, rng, at_most=at_most)
    c = sparse.compress(W, M, n, m)
    G = -(-C // m)
    assert c.values.shape == (R, G * n) and c.values.dtype == np.float32
    assert c.indices.dtype == np.int32
    D = c.decompress()
    assert D.dtype == W.dtype and (D == W * M).all()  # bit exact
    if n >= 2 or not at_most:
        assert (c.to_mask() == M).all()
    else:  # n = 1: an empty group reads as "position 0 kept" (documented)
        assert (c.to_mask() | ~M).all()
    # padding slots hold exact zeros
    assert (c.values[~c.valid_slots()] == 0).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_roundtrip_torch_keeps_dtype(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    W = torch.randn(9, 21, dtype=torch.float32).to(getattr(torch, dtype))
    M = nm_row_mask(9, 21, 2, 4, rng, at_most=True)
    c = sparse.compress(W, torch.from_numpy(M), 2, 4)
    assert isinstance(c.values, torch.Tensor) and c.values.dtype == W.dtype
    assert c.indices.dtype == torch.int32
    assert torch.equal(c.decompress(), W * torch.from_numpy(M))
    assert torch.equal(c.to_mask(), torch.from_numpy(M))
    # the numpy and torch paths agree bit for bit on the indices
    cn = sparse.compress(W.float().numpy(), M, 2, 4)
    assert (c.indices.numpy() == cn.indices).all()


def test_docstring_example_values():
    W = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    mask = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]], bool)
    c = sparse.compress(W, mask, 2, 4)
    assert c.values.tolist() == [[1, 2], [7, 8], [9, 10], [15, 16]]
    assert c.nbytes == 4 * 2 * 4 + 4 * 4


def test_padding_encoding():
    # group keeping one entry repeats it; an empty group is [1, 0, ...]
    W = np.arange(1, 9, dtype=np.float32).reshape(1, 8)
    M = np.array([[0, 0, 1, 0, 0, 0, 0, 0]], bool)
    c = sparse.compress(W, M, 2, 4)
    assert c.unpacked_indices().tolist() == [[2, 2, 1, 0]]
    assert c.values.tolist() == [[3, 0, 0, 0]]
    assert c.valid_slots().tolist() == [[True, False, False, False]]
    assert (c.to_mask() == M).all()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (3, 8), (8, 16), (1, 4)])
@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_transposable_forms(n, m, drop):
    rng = np.random.default_rng(7 * n + m)
    R, C = 2 * m + 3, 3 * m + 1
    W = rng.standard_normal((R, C)).astype(np.float32)
    M = transposable_mask(R, C, n, m, rng, drop=drop)
    assert is_transposable(M, n, m, keep="at_most")
    p = sparse.compress_transposable(W, M, n, m)
    assert (p.forward.decompress() == W * M).all()
    assert (p.backward.decompress() == (W * M).T).all()
    assert p.backward.shape == (C, R)
    flat = np.concatenate([p.forward.values.ravel(), [0]])
    assert (flat[p.backward_from_forward] == p.backward.values).all()
    # forward_columns: real column for kept slots, groups*m (the zero column) for padding
    G = p.forward.groups
    valid = p.forward_columns < G * m
    rows = np.nonzero(valid)[0]
    assert (W[rows, p.forward_columns[valid]] == p.forward.values[valid]).all()
    assert valid.sum() == M.sum()
    # the decoded slot validity agrees (n = 1 reads empty groups as position 0: superset)
    decoded = p.forward.valid_slots()
    assert (decoded == valid).all() if n >= 2 else (decoded | ~valid).all()
    assert (p.forward.values[~valid] == 0).all()


def test_transposable_torch_and_to():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    W = torch.randn(12, 20, dtype=torch.float16)
    M = transposable_mask(12, 20, 2, 4, rng)
    p = sparse.compress_transposable(W, M, 2, 4)
    flat = torch.cat([p.forward.values.ravel(), p.forward.values.new_zeros(1)])
    assert torch.equal(flat[p.backward_from_forward], p.backward.values)
    q = sparse.compress_transposable(W.float().numpy(), M, 2, 4).to(dtype=torch.float16)
    assert torch.equal(q.forward.values, p.forward.values) and torch.equal(q.backward.indices, p.backward.indices)
    assert q.backward_from_forward.dtype == torch.int32 and q.forward_columns.dtype == torch.int32


def test_errors():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 8)).astype(np.float32)
    bad = np.zeros((4, 8), bool)
    bad[2, 4:7] = True  # 3 kept in one group of 4
    with pytest.raises(ValueError, match=r"not 2:4: row 2, columns 4\.\.7 keep 3 > n=2"):
        sparse.compress(W, bad, 2, 4)
    # row-wise 2:4 but not transposable: W.T's groups keep 4
    rowwise = np.zeros((4, 8), bool)
    rowwise[:, :2] = True
    with pytest.raises(ValueError, match="mask.T"):
        sparse.compress_transposable(W, rowwise, 2, 4)
    with pytest.raises(ValueError, match="shape"):
        sparse.compress(W, np.ones((4, 4), bool), 2, 4)
    with pytest.raises(ValueError, match="n must not exceed m"):
        sparse.compress(W, rowwise, 5, 4)
    with pytest.raises(TypeError):
        sparse.compress(W.astype(np.complex64), rowwise, 2, 4)
    with pytest.raises(ValueError, match="0/1"):
        sparse.compress(W, np.full((4, 8), 2), 2, 4)
