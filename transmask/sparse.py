"""Compressed storage of N:M-masked matrices: values + packed indices, forward and backward forms.

An N:M mask keeps at most ``n`` of every ``m`` consecutive entries of a row
(``n`` is the number *kept*). A matrix ``A`` of shape ``(rows, cols)`` masked
that way is stored compressed **along its columns**, the reduction dimension of
``Y = X @ A.T`` (a ``torch.nn.Linear`` weight is ``(out_features,
in_features)`` and ``in_features`` is what the forward product sums over).
For a *transposable* mask ``A.T`` is N:M as well, so the product that carries the
error backwards, ``dX = dY @ A``, i.e. ``dX = dY @ (A.T).T``, uses the same
storage built from ``A.T`` (:func:`compress_transposable` builds both from the
one mask and the gather map from one to the other).

Layout (numpy or torch; every array is C-contiguous)
----------------------------------------------------
Let ``G = ceil(cols / m)`` be the number of groups per row (the last one is
padded with zero columns when ``m`` does not divide ``cols``), ``S = G * n`` the
number of *slots* per row, ``b = max(1, ceil(log2 m))`` the bits per index and
``P = 32 // b`` the indices per 32-bit word.

``values`` : shape ``(rows, S)``, the dtype of the input
    Slot ``g * n + s`` holds the ``s``-th kept entry of group ``g`` (kept
    entries in increasing column order). A group that keeps ``k < n`` entries
    fills its last ``n - k`` slots with *padding*: value exactly ``0``.
``indices`` : shape ``(rows, ceil(S / P))``, ``int32``
    The in-group position (``0 .. m-1``) of every slot, ``b`` bits each, packed
    little-endian: slot ``t`` of a row lives in word ``t // P`` at bits
    ``[(t % P) * b, (t % P) * b + b)``; the top ``32 - P * b`` bits of a word and
    the fields past ``S`` in the last word are zero. For 2:4 (``b = 2``,
    ``P = 16``) that is 2 bits per kept value, 16 indices per word, and with fp16
    values 1.125 bytes per dense weight instead of 2. For ``m = 8`` (``b = 3``)
    ``P = 10`` (2 bits of every word unused), for ``m = 32`` (``b = 5``) ``P = 6``.
    Words are stored as ``int32`` because torch has no ``uint32`` bit operations;
    a word whose top bit is set is simply negative, and every reader masks with
    ``(1 << b) - 1`` after the shift, so the sign bit never leaks into an index.
Padding slots (groups keeping ``k < n``)
    The padding slots are encoded so that the **mask** round trip is exact as
    well as the values (a kept weight may itself be 0, so the values alone
    cannot say what was kept): kept positions are strictly increasing; for
    ``k >= 1`` every padding slot repeats the last kept position; for ``k = 0``
    the group is ``[1, 0, 0, ...]`` (a decrease in the first two slots, which no
    non-empty group has). A reader therefore takes the longest strictly
    increasing prefix, or nothing when ``idx[1] < idx[0]``. Decompression by
    *summing* ``value * (idx == position)`` over the slots (what the Triton
    kernels do) is unaffected, since padding values are 0. With ``n = 1`` an
    empty group cannot be told from one keeping position 0 with the value 0
    (there is no spare code); values are still exact, and :meth:`CompressedNM.to_mask`
    reports position 0 as kept in that case.

This is the same values-plus-metadata idea as NVIDIA's 2:4 sparse tensor cores
(2-bit metadata per kept value), generalised to any ``n:m``; the packing is our
own and is *not* the cuSPARSELt layout.

References
----------
.. [1] I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and
   Efficient Method to Find N:M Transposable Masks", NeurIPS 2021.
.. [2] A. Mishra et al., "Accelerating Sparse Deep Neural Networks",
   arXiv:2104.08378, 2021 (2:4 sparse tensor cores, values + 2-bit metadata).

Examples
--------
>>> import numpy as np
>>> from transmask import sparse
>>> W = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
>>> mask = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]], bool)
>>> c = sparse.compress(W, mask, 2, 4)
>>> c.values
array([[ 1.,  2.],
       [ 7.,  8.],
       [ 9., 10.],
       [15., 16.]], dtype=float32)
>>> c.unpacked_indices()
array([[0, 1],
       [2, 3],
       [0, 1],
       [2, 3]], dtype=uint8)
>>> bool((c.decompress() == W * mask).all()), bool((c.to_mask() == mask).all())
(True, True)
>>> pair = sparse.compress_transposable(W, mask, 2, 4)
>>> bool((pair.backward.decompress() == (W * mask).T).all())
True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import as_mask, check_nm

__all__ = [
    "CompressedNM",
    "TransposableNM",
    "compress",
    "decompress",
    "compress_transposable",
    "index_bits",
    "indices_per_word",
    "pack_indices",
    "unpack_indices",
]


# --------------------------------------------------------------------------- helpers


def index_bits(m: int) -> int:
    """Bits per stored in-group position: ``max(1, ceil(log2 m))``."""
    return max(1, int(m - 1).bit_length())


def indices_per_word(m: int) -> int:
    """How many ``index_bits(m)``-bit fields one 32-bit index word holds (``32 // bits``)."""
    return 32 // index_bits(m)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def pack_indices(idx: np.ndarray, m: int) -> np.ndarray:
    """Pack in-group positions ``idx`` (shape ``(rows, S)``, values ``< m``) into int32 words.

    See the module docstring for the layout. Returns ``(rows, ceil(S / P))`` int32.
    """
    idx = np.asarray(idx)
    b, P = index_bits(m), indices_per_word(m)
    rows, S = idx.shape
    words = -(-S // P)
    padded = np.zeros((rows, words * P), dtype=np.uint64)
    padded[:, :S] = idx
    shifts = (np.arange(P, dtype=np.uint64) * np.uint64(b))[None, None, :]
    packed = (padded.reshape(rows, words, P) << shifts).sum(axis=2, dtype=np.uint64)
    # fields do not overlap, so the sum is a bitwise OR; < 2**32 by construction
    return packed.astype(np.uint32).view(np.int32)


def unpack_indices(words, m: int, count: int):
    """Inverse of :func:`pack_indices`: the first ``count`` in-group positions of every row.

    Slot ``t`` of a row is field ``t % P`` of word ``t // P``, i.e.
    ``(word >> (b * (t % P))) & (2**b - 1)`` with ``b = index_bits(m)`` and
    ``P = indices_per_word(m)`` (the words are int32; the mask after the shift keeps the
    sign bit out).

    Parameters
    ----------
    words : ndarray or torch.Tensor of int32, shape (rows, ceil(count / P))
        Packed positions (``CompressedNM.indices``).
    m : int
        Group size (sets ``b`` and ``P``).
    count : int
        Slots per row to unpack (``CompressedNM.slots``); fields past it are ignored.

    Returns
    -------
    ndarray of uint8, or torch.Tensor of int64 (on ``words``' device), shape (rows, count)
        torch gets int64 because a uint8 tensor used as an index is read as a boolean mask.

    Examples
    --------
    >>> import numpy as np
    >>> from transmask.sparse import pack_indices, unpack_indices
    >>> idx = np.array([[0, 1, 2, 3, 3, 0]], dtype=np.uint8)
    >>> w = pack_indices(idx, 4)          # 2 bits per position, 16 per int32 word
    >>> int(w[0, 0]) == 0b00_11_11_10_01_00
    True
    >>> unpack_indices(w, 4, 6)
    array([[0, 1, 2, 3, 3, 0]], dtype=uint8)
    """
    b, P = index_bits(m), indices_per_word(m)
    if _is_torch(words):
        import torch

        shifts = torch.arange(P, device=words.device, dtype=torch.int32) * b
        fields = (words.to(torch.int32)[:, :, None] >> shifts) & ((1 << b) - 1)
        return fields.reshape(words.shape[0], -1)[:, :count].to(torch.int64)
    w = np.asarray(words).view(np.uint32).astype(np.uint64)
    shifts = (np.arange(P, dtype=np.uint64) * np.uint64(b))[None, None, :]
    fields = (w[:, :, None] >> shifts) & np.uint64((1 << b) - 1)
    return fields.reshape(w.shape[0], -1)[:, :count].astype(np.uint8)


def _valid_slots(idx, n: int):
    """Which slots hold a kept entry, decoded from the padding convention (numpy or torch)."""
    rows, S = idx.shape
    g = idx.reshape(rows, S // n, n)
    if _is_torch(idx):
        import torch

        valid = torch.ones_like(g, dtype=torch.bool)
        if n >= 2:
            empty = g[:, :, 1] < g[:, :, 0]
            inc = g[:, :, 1:] > g[:, :, :-1]
            valid[:, :, 1:] = torch.cumprod(inc.to(torch.uint8), dim=2).bool()
            valid &= ~empty[:, :, None]
        return valid.reshape(rows, S)
    valid = np.ones(g.shape, dtype=bool)
    if n >= 2:
        empty = g[:, :, 1] < g[:, :, 0]
        inc = g[:, :, 1:] > g[:, :, :-1]
        valid[:, :, 1:] = np.logical_and.accumulate(inc, axis=2)
        valid &= ~empty[:, :, None]
    return valid.reshape(rows, S)


def _mask_to_numpy(mask) -> np.ndarray:
    if _is_torch(mask):
        mask = mask.detach().cpu()
    return as_mask(mask)


def _slot_layout(M: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Slot positions (uint8, ``(rows, G*n)``) and validity for an N:M mask ``M``.

    Raises ValueError naming the first group that keeps more than ``n``.
    """
    R, C = M.shape
    G = -(-C // m)
    Mp = np.zeros((R, G * m), dtype=bool)
    Mp[:, :C] = M
    Mg = Mp.reshape(R, G, m)
    counts = Mg.sum(axis=2)
    if (counts > n).any():
        r, g = map(int, np.argwhere(counts > n)[0])
        raise ValueError(
            f"mask is not {n}:{m}: row {r}, columns {g * m}..{min(C, g * m + m) - 1} keep {int(counts[r, g])} > n={n} "
            f"({int((counts > n).sum())} such group(s)); n is the number kept of every m"
        )
    # kept positions first, in increasing order (a stable sort on 'not kept')
    order = np.argsort(~Mg, axis=2, kind="stable")[:, :, :n].astype(np.uint8)
    valid = np.arange(n)[None, None, :] < counts[:, :, None]
    if n < m or (counts < n).any():
        # padding slots: repeat the last kept position; an empty group becomes [1, 0, 0, ...]
        last = np.take_along_axis(order, np.maximum(counts - 1, 0)[:, :, None], axis=2)
        pad = np.where(counts[:, :, None] > 0, last, np.uint8(0))
        order = np.where(valid, order, pad).astype(np.uint8)
        if n >= 2:
            empty = counts == 0
            order[:, :, 0] = np.where(empty, 1, order[:, :, 0])
    return order.reshape(R, G * n), valid.reshape(R, G * n)


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class CompressedNM:
    """An N:M-masked matrix stored as values + packed indices along its columns.

    Attributes
    ----------
    values : ndarray or torch.Tensor, shape ``(rows, G * n)``
        Kept values, ``n`` slots per group of ``m`` columns; padding slots are 0.
    indices : ndarray or torch.Tensor of int32, shape ``(rows, ceil(G * n / P))``
        Packed in-group positions (layout in the module docstring).
    shape : tuple of int
        ``(rows, cols)`` of the dense matrix.
    n, m : int
        Keep (at most) ``n`` of every ``m``.
    """

    values: Any
    indices: Any
    shape: tuple
    n: int
    m: int

    @property
    def groups(self) -> int:
        """Groups of ``m`` columns per row, ``ceil(cols / m)``."""
        return -(-self.shape[1] // self.m)

    @property
    def slots(self) -> int:
        """Slots per row, ``groups * n``."""
        return self.groups * self.n

    @property
    def bits(self) -> int:
        return index_bits(self.m)

    @property
    def nbytes(self) -> int:
        """Bytes of values + indices (what a kernel reads)."""
        def size(a):
            return a.numel() * a.element_size() if _is_torch(a) else a.nbytes

        return int(size(self.values) + size(self.indices))

    def unpacked_indices(self):
        """In-group position of every slot, shape ``(rows, G * n)`` (uint8 numpy / int64 torch)."""
        return unpack_indices(self.indices, self.m, self.slots)

    def valid_slots(self):
        """Boolean ``(rows, G * n)``: which slots hold a kept entry (the others are padding)."""
        return _valid_slots(self.unpacked_indices(), self.n)

    def decompress(self):
        """Dense ``(rows, cols)`` matrix, equal bit for bit to ``A * mask``."""
        return decompress(self)

    def to_mask(self):
        """The mask, bool ``(rows, cols)`` (numpy, or torch on the same device).

        Exact, except for ``n = 1`` where an empty group reads as keeping position 0.
        """
        R, C = self.shape
        idx = self.unpacked_indices()
        valid = _valid_slots(idx, self.n)
        G, n, m = self.groups, self.n, self.m
        if _is_torch(self.values):
            import torch

            cols = idx + (torch.arange(G, device=idx.device).repeat_interleave(n) * m)[None, :]
            out = torch.zeros((R, G * m), dtype=torch.bool, device=idx.device)
            rr, ss = torch.nonzero(valid, as_tuple=True)
            out[rr, cols[rr, ss]] = True
            return out[:, :C]
        cols = idx.astype(np.int64) + (np.repeat(np.arange(G), n) * m)[None, :]
        out = np.zeros((R, G * m), dtype=bool)
        rr, ss = np.nonzero(valid)
        out[rr, cols[rr, ss]] = True
        return out[:, :C]

    def to(self, *args, **kwargs) -> "CompressedNM":
        """Move to a torch device / cast values (``torch.Tensor.to`` arguments); indices stay int32.

        numpy storage is first converted to torch tensors.
        """
        import torch

        v = self.values if _is_torch(self.values) else torch.from_numpy(np.ascontiguousarray(self.values))
        i = self.indices if _is_torch(self.indices) else torch.from_numpy(np.ascontiguousarray(self.indices))
        v = v.to(*args, **kwargs).contiguous()
        i = i.to(device=v.device).contiguous()
        return CompressedNM(v, i, tuple(self.shape), self.n, self.m)


@dataclass(frozen=True)
class TransposableNM:
    """Forward and backward compressed forms of one matrix under one transposable mask.

    Attributes
    ----------
    forward : CompressedNM
        ``A`` compressed along its columns; ``Y = X @ A.T`` reads it.
    backward : CompressedNM
        ``A.T`` compressed along its columns (the rows of ``A``); ``dX = dY @ A`` reads it.
    backward_from_forward : ndarray or torch.Tensor of int32, shape like ``backward.values``
        For every backward slot, the flat index into ``forward.values`` holding the
        same weight, or ``forward.values.size`` for a padding slot. So
        ``concat([forward.values.ravel(), [0]])[backward_from_forward]`` rebuilds
        ``backward.values`` after the forward values change (e.g. an optimizer step)
        without touching the mask.
    forward_columns : ndarray or torch.Tensor of int32, shape like ``forward.values``
        Dense column of every forward slot, or ``groups * m`` (one past the padded
        width) for a padding slot. Gathering a dense weight gradient padded with
        zero columns to ``groups * m + 1`` through it gives the gradient of
        ``forward.values`` with exact zeros on padding slots, so they stay 0.

    Both maps are int32 (int64 only when ``forward.values`` has 2**31 or more slots). The
    kernels in :mod:`transmask.kernels` need neither: they read the index words directly.
    """

    forward: CompressedNM
    backward: CompressedNM
    backward_from_forward: Any
    forward_columns: Any

    def to(self, *args, **kwargs) -> "TransposableNM":
        """``torch.Tensor.to`` on both forms (index maps move to the same device)."""
        import torch

        f, b = self.forward.to(*args, **kwargs), self.backward.to(*args, **kwargs)

        def idx(a):
            a = a if _is_torch(a) else torch.from_numpy(np.ascontiguousarray(a))
            return a.to(device=f.values.device)

        return TransposableNM(f, b, idx(self.backward_from_forward), idx(self.forward_columns))


# --------------------------------------------------------------------------- public functions


def _check_matrix(A, mask_shape) -> tuple:
    shape = tuple(A.shape)
    if len(shape) != 2:
        raise ValueError(f"A must be 2-D (rows, cols), got shape {shape}")
    if shape != tuple(mask_shape):
        raise ValueError(f"A has shape {shape} but mask has shape {tuple(mask_shape)}")
    if 0 in shape:
        raise ValueError(f"A is empty (shape {shape})")
    dt = str(A.dtype)
    if "complex" in dt or "bool" in dt:
        raise TypeError(f"A must hold real numbers, got dtype {A.dtype}")
    return shape


def _gather_values(A, slot_cols: np.ndarray, valid: np.ndarray, padded_cols: int):
    """values[r, t] = A[r, slot_cols[r, t]] where valid, else 0 (numpy or torch, dtype kept)."""
    R, C = A.shape
    if _is_torch(A):
        import torch

        A = A.detach()
        Ap = torch.zeros((R, padded_cols), dtype=A.dtype, device=A.device)
        Ap[:, :C] = A
        cols = torch.from_numpy(slot_cols).to(A.device)
        vals = torch.gather(Ap, 1, cols)
        return torch.where(torch.from_numpy(valid).to(A.device), vals, torch.zeros((), dtype=A.dtype, device=A.device)).contiguous()
    A = np.asarray(A)
    Ap = np.zeros((R, padded_cols), dtype=A.dtype)
    Ap[:, :C] = A
    vals = np.take_along_axis(Ap, slot_cols, axis=1)
    return np.where(valid, vals, np.zeros((), dtype=A.dtype)).astype(A.dtype, copy=False)


def _compress_np_layout(A, M: np.ndarray, n: int, m: int):
    R, C = M.shape
    pos, valid = _slot_layout(M, n, m)
    G = -(-C // m)
    slot_cols = pos.astype(np.int64) + (np.repeat(np.arange(G, dtype=np.int64), n) * m)[None, :]
    values = _gather_values(A, slot_cols, valid, G * m)
    words = pack_indices(pos, m)
    if _is_torch(A):
        import torch

        words = torch.from_numpy(words).to(A.device)
    return CompressedNM(values, words, (R, C), n, m), slot_cols, valid


def compress(A, mask, n: int, m: int) -> CompressedNM:
    """Compress ``A * mask`` along its columns (the reduction dimension of ``X @ A.T``).

    Parameters
    ----------
    A : ndarray or torch.Tensor, shape (rows, cols)
        Real matrix, any float dtype (torch bfloat16 included); torch tensors stay
        on their device and keep their dtype. Entries outside the mask are ignored.
    mask : array_like of bool, shape (rows, cols)
        N:M mask: every group of ``m`` consecutive columns of a row keeps at most ``n``.
    n, m : int
        Keep (at most) ``n`` of every ``m``; ``1 <= n <= m``.

    Returns
    -------
    CompressedNM
        ``values`` (same library, dtype and device as ``A``) and packed ``indices``.

    Raises
    ------
    ValueError
        The mask is not N:M (the message names the first offending row and
        columns), shapes differ, or ``A`` is empty or not 2-D.
    TypeError
        ``A`` is complex or boolean; ``n``/``m`` not integers.
    """
    n, m = check_nm(n, m)
    M = _mask_to_numpy(mask)
    _check_matrix(A, M.shape)
    c, _, _ = _compress_np_layout(A, M, n, m)
    return c


def decompress(c: CompressedNM):
    """Dense ``(rows, cols)`` matrix of a :class:`CompressedNM`: ``A * mask``, exactly.

    Slot ``g * n + s`` of row ``r`` holds the value of column ``g * m + idx[r, g * n + s]``;
    every kept value is copied there, everything else (including padding slots, which
    :func:`_valid_slots` decodes from the index layout) is 0. On CUDA the Triton kernel
    :func:`transmask.kernels.convert.nm_decompress` does the same in one pass.

    Parameters
    ----------
    c : CompressedNM
        numpy or torch storage (any device).

    Returns
    -------
    ndarray or torch.Tensor, shape ``c.shape``
        Same library, dtype and device as ``c.values``; C-contiguous.

    Examples
    --------
    >>> import numpy as np
    >>> from transmask import sparse
    >>> W = np.array([[1., 2., 3., 4., 5., 6.]], dtype=np.float32)
    >>> mask = np.array([[0, 1, 0, 1, 1, 0]], bool)   # 2:4; the cut last group keeps 1
    >>> c = sparse.compress(W, mask, 2, 4)
    >>> c.values, c.unpacked_indices()
    (array([[2., 4., 5., 0.]], dtype=float32), array([[1, 3, 0, 0]], dtype=uint8))
    >>> sparse.decompress(c)
    array([[0., 2., 0., 4., 5., 0.]], dtype=float32)
    """
    R, C = c.shape
    G, n, m = c.groups, c.n, c.m
    idx = c.unpacked_indices()
    valid = _valid_slots(idx, n)
    if _is_torch(c.values):
        import torch

        cols = idx + (torch.arange(G, device=idx.device).repeat_interleave(n) * m)[None, :]
        out = torch.zeros((R, G * m), dtype=c.values.dtype, device=c.values.device)
        rr, ss = torch.nonzero(valid, as_tuple=True)
        out[rr, cols[rr, ss]] = c.values[rr, ss]
        return out[:, :C].contiguous()
    cols = idx.astype(np.int64) + (np.repeat(np.arange(G), n) * m)[None, :]
    out = np.zeros((R, G * m), dtype=c.values.dtype)
    rr, ss = np.nonzero(valid)
    out[rr, cols[rr, ss]] = c.values[rr, ss]
    return np.ascontiguousarray(out[:, :C])


def compress_transposable(A, mask, n: int, m: int) -> TransposableNM:
    """Forward (``A``) and backward (``A.T``) compressed forms from one transposable N:M mask.

    Parameters
    ----------
    A : ndarray or torch.Tensor, shape (rows, cols)
        E.g. a Linear weight ``(out_features, in_features)``.
    mask : array_like of bool, shape (rows, cols)
        Transposable N:M mask: ``mask`` and ``mask.T`` are both N:M. (Any such
        mask works; :func:`transmask.optimal_mask` gives the one keeping the most
        magnitude.)
    n, m : int
        Keep (at most) ``n`` of every ``m``.

    Returns
    -------
    TransposableNM
        ``forward = compress(A, mask)``, ``backward = compress(A.T, mask.T)`` and the
        index maps between them.

    Raises
    ------
    ValueError
        ``mask`` or ``mask.T`` is not N:M (the message says which).
    """
    n, m = check_nm(n, m)
    M = _mask_to_numpy(mask)
    _check_matrix(A, M.shape)
    R, C = M.shape
    try:
        fwd, fcols, fvalid = _compress_np_layout(A, M, n, m)
    except ValueError as exc:
        raise ValueError(f"mask is not transposable {n}:{m}: {exc}") from None
    AT = A.t() if _is_torch(A) else np.asarray(A).T
    try:
        bwd, bcols, bvalid = _compress_np_layout(AT, np.ascontiguousarray(M.T), n, m)
    except ValueError as exc:
        raise ValueError(f"mask is transposable only if mask.T is {n}:{m} too, and it is not: {exc}") from None
    # flat forward slot of every kept (row r, col c): forward slot t of row r with fcols == c
    S = fwd.slots
    lookup = np.full((R, fwd.groups * m), R * S, dtype=np.int64)  # default: the appended zero
    rr, tt = np.nonzero(fvalid)
    lookup[rr, fcols[rr, tt]] = rr * S + tt
    # backward row = column c of A, backward slot columns = rows r of A
    cc, ss = np.nonzero(bvalid)
    b2f = np.full(bcols.shape, R * S, dtype=np.int64)
    b2f[cc, ss] = lookup[bcols[cc, ss], cc]
    fcols = np.where(fvalid, fcols, fwd.groups * m)
    index_dtype = np.int32 if R * S < 2**31 and fwd.groups * m < 2**31 else np.int64
    b2f, fcols = b2f.astype(index_dtype), fcols.astype(index_dtype)
    if _is_torch(A):
        import torch

        b2f = torch.from_numpy(b2f).to(A.device)
        fcols = torch.from_numpy(fcols).to(A.device)
    return TransposableNM(fwd, bwd, b2f, fcols)
