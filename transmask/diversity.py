r"""Mask diversity: exact combinatorics of N:M, transposable N:M, block and unstructured masks.

Hubara et al. (2021, Sec. 3) rank sparsity structures by their **mask diversity**
(MD): the number of distinct masks a structure allows on a tensor of ``T``
weights at a given sparsity. A structure with a larger MD constrains the choice
of kept weights less, and the paper shows that it goes with higher accuracy
(e.g. 4:8-transposable beats 2:4-transposable). This module computes MD exactly
(Python integers) and as ``log10`` (floats that stay finite for any layer size).

Convention (shared by all of ``transmask``): **n is the number kept of every m**
("2:4 keeps 2 of 4"). The paper's prose counts zeros; for ``n = m/2`` (1:2, 2:4,
4:8, 8:16) both readings agree. Density ``d = n/m``, sparsity ``1 - d``.

Formulas (``T`` weights, all divisibility conditions checked):

=====================  ==============================================  ==========================
structure              mask diversity                                  function
=====================  ==============================================  ==========================
unstructured, k kept   :math:`\binom{T}{k}`                              :func:`md_unstructured`
row-wise N:M           :math:`\binom{m}{n}^{T/m}`                        :func:`md_nm`
transposable N:M       :math:`K(m,n)^{T/m^2}`                            :func:`md_transposable`
b x b blocks, k kept   :math:`\binom{T/b^2}{k/b^2}`                      :func:`md_block`
=====================  ==============================================  ==========================

where :math:`K(m, n)` (:func:`transposable_tile_count`) is the number of
``m x m`` 0/1 matrices whose rows and columns all sum to ``n`` -- the number of
valid transposable patterns of one ``m x m`` tile (``keep="exactly"``), OEIS
A008300: K(4,2)=90, K(8,4)=116963796250. It is computed by the general counter
:func:`count_binary_matrices` (number of 0/1 matrices with given row and column
sums: Gale-Ryser feasibility test, then a dynamic programme over column-capacity
classes; see its docstring).

For a real layer the exact integers are astronomically large (``C(4096**2,
4096**2/2)`` has about five million digits), so every ``md_*`` function has a
``log10_md_*`` twin that never builds the integer, and :func:`md_table`
reports ``log10`` by default.

References
----------
.. [1] I. Hubara, B. Chmiel, M. Island, R. Banner, S. Naor, D. Soudry,
   "Accelerated Sparse Neural Training: A Provable and Efficient Method to Find
   N:M Transposable Masks", NeurIPS 2021, Sec. 3 (mask diversity), arXiv:2102.08124.
.. [2] D. Gale, "A theorem on flows in networks", Pacific J. Math. 7 (1957) 1073-1082.
.. [3] H. J. Ryser, "Combinatorial properties of matrices of zeros and ones",
   Canad. J. Math. 9 (1957) 371-377.
.. [4] OEIS A008300: number of n x n 0/1 matrices with all row and column sums k;
   A058527 (its central column, 2n x 2n with sums n). https://oeis.org/A008300
.. [5] E. R. Canfield, B. D. McKay, "Asymptotic enumeration of dense 0-1 matrices
   with equal row sums and equal column sums", Electron. J. Combin. 12 (2005) R29.
.. [6] J. W. Miller, M. T. Harrison, "Exact sampling and counting for fixed-margin
   matrices", Ann. Statist. 41 (2013) 1569-1592 (DP over margins; the idea used here).

Examples
--------
>>> from transmask import diversity as md
>>> md.transposable_tile_count(4, 2)             # K(4, 2), OEIS A008300
90
>>> md.md_nm(16, 2, 4), md.md_transposable(16, 2, 4), md.md_unstructured(16, 8)
(1296, 90, 12870)
>>> round(md.log10_md_transposable(4096 * 4096, 2, 4))   # 90 ** (4096**2 / 16)
2049172
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np

from ._validation import as_int, check_nm

__all__ = [
    "CountTooExpensiveError",
    "gale_ryser_feasible",
    "count_binary_matrices",
    "transposable_tile_count",
    "K",
    "log10_transposable_tile_count",
    "log10_transposable_tile_count_asymptotic",
    "log10_int",
    "log10_binom",
    "md_unstructured",
    "md_nm",
    "md_transposable",
    "md_block",
    "log10_md_unstructured",
    "log10_md_nm",
    "log10_md_transposable",
    "log10_md_block",
    "mask_diversity",
    "log10_mask_diversity",
    "STRUCTURES",
    "PAPER_RATIOS",
    "md_table",
    "md_table_markdown",
]

_LN10 = math.log(10.0)

#: Structures known to :func:`mask_diversity`, :func:`log10_mask_diversity` and :func:`md_table`.
STRUCTURES = ("unstructured", "block", "nm", "transposable")

#: The 50 %-sparse N:M ratios the paper compares (``(n, m)``, n kept of every m).
PAPER_RATIOS = ((1, 2), (2, 4), (4, 8), (8, 16))

#: Default cap on the number of DP states (capacity histograms in one layer) before an exact
#: count gives up with :class:`CountTooExpensiveError`. ~2e5 states is about a minute of work.
DEFAULT_MAX_STATES = 200_000


class CountTooExpensiveError(RuntimeError):
    """An exact count would need more DP states than ``max_states`` allows.

    Raised instead of running for hours and exhausting memory (e.g. ``K(32, 16)``,
    whose middle DP layer has about 2e10 states). Use the ``log10_*`` functions,
    which fall back to an asymptotic formula, or raise ``max_states``.
    """


# --------------------------------------------------------------------------- validation
def _as_margins(values, name: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Iterable, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of non-negative integers, got {type(values).__name__}")
    arr = values
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got an array of shape {values.shape}")
        arr = values.tolist() if np.issubdtype(values.dtype, np.integer) else list(values)
    out = []
    for i, v in enumerate(arr):
        try:
            out.append(as_int(v, f"{name}[{i}]", 0))
        except ValueError:
            raise ValueError(f"{name}[{i}] must be a non-negative integer, got {v}") from None
    return tuple(out)


def _check_T(T) -> int:
    return as_int(T, "T", 1)


# --------------------------------------------------------------------------- log10 helpers
def log10_int(x: int) -> float:
    """``log10`` of a positive integer of any size, without overflow.

    Python's :func:`math.log10` accepts arbitrarily large ``int`` objects (it
    splits off the exponent internally), so ``log10_int(10**100000) == 100000.0``.

    Examples
    --------
    >>> log10_int(10 ** 5000)
    5000.0
    """
    x = as_int(x, "x", None)
    if x <= 0:
        raise ValueError(f"log10 is defined for positive integers only, got {x}")
    return math.log10(x)


def log10_binom(n: int, k: int) -> float:
    r"""``log10`` of the binomial coefficient :math:`\binom{n}{k}`.

    Exact (through the integer) when ``min(k, n - k) <= 1000``, otherwise from
    :math:`\ln\Gamma`: :math:`\log_{10}\binom{n}{k} = [\ln\Gamma(n+1) - \ln\Gamma(k+1)
    - \ln\Gamma(n-k+1)] / \ln 10`, accurate to about ``1e-16 * n log n`` in absolute
    terms (``~1e-8`` for ``n = 4096**2``). ``-inf`` when ``k < 0`` or ``k > n``
    (the coefficient is 0).

    Examples
    --------
    >>> round(log10_binom(64, 32), 6)
    18.263073
    """
    n = as_int(n, "n", 0)
    k = as_int(k, "k", None)
    if k < 0 or k > n:
        return -math.inf
    k = min(k, n - k)
    if k <= 1000:
        return math.log10(math.comb(n, k))
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / _LN10


# --------------------------------------------------------------------------- the counter
def gale_ryser_feasible(row_sums: Sequence[int], col_sums: Sequence[int]) -> bool:
    r"""Whether some 0/1 matrix has these row and column sums (Gale-Ryser theorem).

    With row sums :math:`r_1 \ge r_2 \ge \dots \ge r_p` (sorted) and column sums
    :math:`c_1, \dots, c_q`, a 0/1 matrix exists iff :math:`\sum_i r_i = \sum_j c_j`
    and, for every :math:`k = 1, \dots, p`,

    .. math:: \sum_{i=1}^{k} r_i \;\le\; \sum_{j=1}^{q} \min(c_j, k),

    i.e. the conjugate of ``c`` dominates ``r`` (Gale 1957, Ryser 1957). This
    also rules out a row sum above ``q`` or a column sum above ``p``.

    Examples
    --------
    >>> gale_ryser_feasible([2, 2], [1, 1, 2])
    True
    >>> gale_ryser_feasible([3, 1], [2, 2])      # a row of 3 in a 2-column matrix
    False
    """
    r = sorted(_as_margins(row_sums, "row_sums"), reverse=True)
    c = _as_margins(col_sums, "col_sums")
    return _gale_ryser(r, c)


def _gale_ryser(r_desc: Sequence[int], c: Sequence[int]) -> bool:
    if sum(r_desc) != sum(c):
        return False
    partial = 0
    for k, rk in enumerate(r_desc, start=1):
        partial += rk
        if partial > sum(min(cj, k) for cj in c):
            return False
    return True


def _forward(rows: Sequence[int], cap: int, ncols: int, extra_rows: int,
             max_states: int | None = None) -> tuple[dict[int, int], int]:
    """Row-by-row DP over column-capacity classes; all ``ncols`` columns start with capacity ``cap``.

    Returns ``(states, B)``. A state is the multiset of remaining column capacities,
    encoded as ``sum_j h_j * B**j`` where ``h_j`` columns have ``j`` left (``B = ncols + 1``);
    its value is the number of ways (over labelled columns) the processed rows reach it.
    ``extra_rows`` rows come after these ones (they can absorb at most one per column each),
    which prunes states that leave some column more than it can still receive.
    """
    return _forward_general(rows, [cap] * ncols, extra_rows, max_states)


def _forward_general(rows: Sequence[int], caps: Sequence[int], extra_rows: int,
                     max_states: int | None = None) -> tuple[dict[int, int], int]:
    ncols = len(caps)
    C = max(caps, default=0)
    B = ncols + 1
    P = [B**j for j in range(C + 2)]
    binom = [[math.comb(a, k) for k in range(a + 1)] for a in range(ncols + 1)]
    states = {sum(P[c] for c in caps): 1}
    nrows = len(rows)
    for i, r in enumerate(rows):
        left = nrows - i - 1 + extra_rows
        R1 = r + 1
        # A partial state is (capacities, ones of this row still to place) folded into one int.
        # Classes are visited in increasing capacity j: choosing k of the h_j columns with j left
        # moves them to class j-1, which was already visited, so no column is chosen twice.
        part = {v * R1 + r: w for v, w in states.items()}
        for j in range(1, C + 1):
            Pj = P[j]
            shift = (P[j] - P[j - 1]) * R1  # moving one column from class j to j-1, in folded units
            nxt: dict[int, int] = {}
            get = nxt.get
            for key, w in part.items():
                rem = key % R1
                hj = (key // R1 // Pj) % B
                if hj == 0 or rem == 0:
                    nxt[key] = get(key, 0) + w
                    continue
                bj = binom[hj]
                for k in range(min(hj, rem) + 1):
                    nk = key - k * shift - k
                    nxt[nk] = get(nk, 0) + w * bj[k]
            part = nxt
        limit = P[left + 1] if left + 1 < len(P) else None
        states = {}
        for key, w in part.items():
            v, rem = divmod(key, R1)
            # rem > 0: the row could not be completed; v >= B**(left+1): a column still needs
            # more ones than there are rows left.
            if rem or (limit is not None and v >= limit):
                continue
            states[v] = states.get(v, 0) + w
        if max_states is not None and len(states) > max_states:
            raise CountTooExpensiveError(
                f"exact count needs more than max_states={max_states} DP states (after {i + 1} of "
                f"{nrows} rows); raise max_states or use an asymptotic log10 estimate")
    return states, B


def _digits(v: int, B: int, length: int) -> list[int]:
    out = []
    for _ in range(length):
        v, d = divmod(v, B)
        out.append(d)
    return out


def _count_equal_columns(rows: Sequence[int], c: int, ncols: int, max_states: int | None = None) -> int:
    """Meet-in-the-middle count when every column sums to ``c``.

    Split the rows into a top and a bottom part. With ``F_top(H)`` the number of
    ways the top rows leave remaining column capacities with histogram ``H``
    (summed over the ``mult(H) = q! / prod_j H_j!`` labelled columnings of ``H``),
    and ``F_bot`` the same for the bottom rows started from capacity ``c``, the
    bottom must fill exactly what the top left, i.e. end at the reflected
    histogram ``H'_j = H_{c-j}``:

    ``N = sum_H F_top(H) * F_bot(H') / mult(H)``  (exact division).
    """
    h = len(rows) // 2
    top, bottom = list(rows[:h]), list(rows[h:])
    F_top, B = _forward(top, c, ncols, len(bottom), max_states)
    F_bot = F_top if sorted(top) == sorted(bottom) else _forward(bottom, c, ncols, len(top), max_states)[0]
    fq = math.factorial(ncols)
    total = 0
    for v, w in F_top.items():
        hist = _digits(v, B, c + 1)
        refl = 0
        for hj in hist:  # Horner: refl = sum_j hist[j] * B**(c - j)
            refl = refl * B + hj
        w2 = F_bot.get(refl)
        if not w2:
            continue
        mult = fq
        for hj in hist:
            mult //= math.factorial(hj)
        total += w * w2 // mult
    return total


@lru_cache(maxsize=4096)
def _count_cached(rows: tuple[int, ...], cols: tuple[int, ...], max_states: int | None) -> int:
    if not _gale_ryser(rows, cols):
        return 0
    if not rows or not cols or sum(rows) == 0:
        return 1
    # Complement: a 0/1 matrix with sums (r, c) <-> one with sums (q - r, p - c). Take the
    # lighter one: fewer capacity classes and fewer ones to place per row.
    p, q = len(rows), len(cols)
    if 2 * sum(rows) > p * q:
        return _count_cached(tuple(sorted((q - r for r in rows), reverse=True)),
                             tuple(sorted((p - c for c in cols), reverse=True)), max_states)
    # Orientation: the DP state lives on the column side; prefer equal column sums there
    # (meet-in-the-middle applies), otherwise the side with the smaller largest sum.
    rows_equal, cols_equal = len(set(rows)) == 1, len(set(cols)) == 1
    if (rows_equal and not cols_equal) or (rows_equal == cols_equal and max(cols) > max(rows)):
        rows, cols = cols, rows
        cols_equal = rows_equal
    if cols_equal and len(rows) >= 2:
        return _count_equal_columns(rows, cols[0], len(cols), max_states)
    states, _ = _forward_general(rows, cols, 0, max_states)
    return states.get(len(cols), 0)  # every column at capacity 0: key = q * B**0


def count_binary_matrices(row_sums: Sequence[int], col_sums: Sequence[int], *,
                          max_states: int | None = DEFAULT_MAX_STATES) -> int:
    r"""Number of 0/1 matrices with the given row sums and column sums (exact).

    Parameters
    ----------
    row_sums, col_sums : sequences of non-negative int
        ``row_sums[i]`` ones in row ``i`` (``p`` rows), ``col_sums[j]`` in column
        ``j`` (``q`` columns). Numpy integer arrays are accepted.
    max_states : int or None
        Give up with :class:`CountTooExpensiveError` when one DP layer holds more
        states than this (default :data:`DEFAULT_MAX_STATES`); ``None``: no limit.

    Returns
    -------
    int
        :math:`N(r, c) = \#\{X \in \{0,1\}^{p \times q} : X\mathbf 1 = r,\ X^\top \mathbf 1 = c\}`,
        a Python int (exact, unbounded). ``0`` when no such matrix exists
        (unequal totals, a sum larger than the other dimension, or any other
        violation of the Gale-Ryser condition, see :func:`gale_ryser_feasible`).
        An empty matrix (``p == 0`` or ``q == 0``) with all-zero margins counts 1.

    Raises
    ------
    TypeError
        A margin is not an integer (floats and bools are refused, not rounded).
    ValueError
        A margin is negative, or a margin array is not 1-D.
    CountTooExpensiveError
        The DP outgrew ``max_states``.

    Notes
    -----
    Algorithm (the DP over margins of Miller & Harrison 2013, specialised):

    1. Gale-Ryser test; infeasible margins return 0 at once.
    2. Complement if more than half the entries are ones:
       :math:`N(r, c) = N(q - r, p - c)`.
    3. Rows are processed one at a time. Because columns with the same remaining
       capacity are interchangeable, the state is the *histogram* ``H`` of
       remaining column capacities (``H_j`` columns can take ``j`` more ones), not
       the vector. Placing a row with sum :math:`r_i` means choosing
       :math:`k_j` columns from each class ``j`` with :math:`\sum_j k_j = r_i`, in
       :math:`\prod_j \binom{H_j}{k_j}` ways, after which those columns move to
       class ``j - 1``. The choice is made class by class (a nested DP, so equal
       partial states from different predecessors merge), and states in which a
       column needs more ones than there are rows left are dropped.
    4. When all column sums are equal (after choosing the orientation), the rows
       are split in halves and the two half-DPs are joined (meet in the middle):
       :math:`N = \sum_H F_{top}(H)\,F_{bot}(\bar H)/\mathrm{mult}(H)` with
       :math:`\bar H_j = H_{c-j}` and :math:`\mathrm{mult}(H) = q!/\prod_j H_j!`.

    The cost is governed by the number of histograms, which is polynomial in
    ``q`` for bounded sums (``O(q^c)``) but grows like a Gaussian binomial
    coefficient when the sums are about half the dimension: the ``m x m``,
    sums ``m/2`` case takes a few seconds at ``m = 16``, about a minute at
    ``m = 18``, and is out of reach at ``m = 32`` (the middle layer alone has
    ~2e10 histograms), see :func:`transposable_tile_count` and
    :func:`log10_transposable_tile_count`. Results are memoised.

    Examples
    --------
    >>> count_binary_matrices([2, 2, 2, 2], [2, 2, 2, 2])     # K(4, 2)
    90
    >>> count_binary_matrices([1, 2], [2, 1])               # only [[1, 0], [1, 1]]
    1
    >>> count_binary_matrices([3, 0], [1, 1])               # infeasible
    0
    """
    rows = tuple(sorted(_as_margins(row_sums, "row_sums"), reverse=True))
    cols = tuple(sorted(_as_margins(col_sums, "col_sums"), reverse=True))
    if max_states is not None:
        max_states = as_int(max_states, "max_states", 1)
    return _count_cached(rows, cols, max_states)


# --------------------------------------------------------------------------- K(m, n)
# Central values K(2k, k) that the DP below takes seconds to recompute, stored so that
# md_table() is instant. Computed by _count_equal_columns; tests recompute them. Independent
# checks: K(12, 6) (OEIS A058527) and K(14, 7) (OEIS A172541, column 7 of A008300).
_PRECOMPUTED_K = {
    (12, 6): 64051375889927380035549804336,
    (14, 7): 108738182111446498614705217754614976371200,
    (16, 8): 34812290428176298285394893936773707951192224124239796250,
}


def _middle_layer_states(m: int, s: int) -> int:
    """Number of capacity histograms in the middle layer of the K(m, s) DP.

    Histograms of ``m`` columns with capacities in ``0..s`` and total ``m*s // 2``, i.e. the
    partitions of ``m*s // 2`` into at most ``m`` parts of size at most ``s``: the coefficient
    of ``q**(m*s//2)`` in the Gaussian binomial ``[m+s choose s]_q = prod_{i=1..s} (1 - q**(m+i)) / (1 - q**i)``.
    """
    deg = m * s
    poly = [1] + [0] * deg
    for i in range(1, s + 1):
        for d in range(deg, m + i - 1, -1):  # times (1 - q**(m+i))
            poly[d] -= poly[d - m - i]
        for d in range(i, deg + 1):          # divided by (1 - q**i)
            poly[d] += poly[d - i]
    return poly[deg // 2]


def _K(m: int, n: int, max_states: int | None) -> int:
    s = min(n, m - n)  # K(m, n) = K(m, m - n): complement every entry
    if s == 0:
        return 1
    if s == 1:
        return math.factorial(m)  # permutation matrices
    if (m, s) in _PRECOMPUTED_K:
        return _PRECOMPUTED_K[(m, s)]
    return _K_dp(m, s, max_states)


@lru_cache(maxsize=None)
def _K_dp(m: int, s: int, max_states: int | None) -> int:
    if max_states is not None:
        need = _middle_layer_states(m, s)
        if need > max_states:
            raise CountTooExpensiveError(
                f"exact K({m}, {s}) needs about {need:.3g} DP states in its middle layer "
                f"(max_states={max_states}); exact counting is out of reach at this size. "
                f"Use log10_transposable_tile_count({m}, {s}) (Canfield-McKay asymptotic) "
                f"or raise max_states.")
    return _count_equal_columns([s] * m, s, m)


def transposable_tile_count(m: int, n: int, *, max_states: int | None = DEFAULT_MAX_STATES) -> int:
    r"""K(m, n): the number of ``m x m`` 0/1 matrices whose rows and columns all sum to ``n``.

    This is the number of valid transposable ``n:m`` patterns of one ``m x m``
    tile when every tile-row and tile-column keeps exactly ``n``, so the mask
    diversity of transposable ``n:m`` on ``T`` weights is ``K(m, n) ** (T / m**2)``
    (Hubara et al. 2021, Sec. 3). Equivalently, the number of ``n``-regular
    bipartite graphs on ``m + m`` labelled vertices. OEIS A008300 (table),
    A058527 (``K(2k, k)``).

    Identities used and tested: ``K(m, n) = K(m, m - n)`` (complement),
    ``K(m, 0) = 1``, ``K(m, 1) = m!`` (permutation matrices),
    ``K(4, 2) = 90``, ``K(8, 2) = 187530840``, ``K(8, 3) = 24046189440``,
    ``K(8, 4) = 116963796250``, ``K(10, 5) = 6736218287430460752``.

    Parameters
    ----------
    m : int
        Tile size, ``m >= 1``.
    n : int
        Ones per row and per column, ``0 <= n <= m``.
    max_states : int or None
        Refuse (:class:`CountTooExpensiveError`, raised at once) when the DP's middle
        layer would hold more capacity histograms than this; ``None``: no limit.

    Returns
    -------
    int
        Exact count (Python int).

    Raises
    ------
    TypeError
        ``m`` or ``n`` is not an integer.
    ValueError
        ``m < 1``, ``n < 0`` or ``n > m``.
    CountTooExpensiveError
        The exact count is out of reach (e.g. ``K(32, 16)``: ~2e10 states).

    Notes
    -----
    Computed by the meet-in-the-middle histogram DP of :func:`count_binary_matrices`
    (memoised); ``K(12, 6)``, ``K(14, 7)``, ``K(16, 8)`` are stored (and
    re-derived by the tests). The cost is set by the number of capacity
    histograms in the middle layer, the coefficient of ``q**(m s / 2)`` in the
    Gaussian binomial ``[m+s choose s]_q`` with ``s = min(n, m - n)``: 545 for
    ``K(64, 3)`` (well under a second), 17575 for ``K(16, 8)`` (a few seconds),
    94257 for ``K(18, 9)`` (about a minute), 1.9e10 for ``K(32, 16)`` and 9e22 for
    ``K(64, 32)`` -- out of reach for this DP (and for every exact method known
    to us). For those use :func:`log10_transposable_tile_count`, which falls back
    to the Canfield-McKay asymptotic formula (``log10 K(32, 16) ~ 255.0``).

    Examples
    --------
    >>> transposable_tile_count(4, 2), transposable_tile_count(8, 4)
    (90, 116963796250)
    >>> transposable_tile_count(5, 1) == 120     # m!
    True
    """
    n, m = check_nm(n, m, allow_zero=True)
    if max_states is not None:
        max_states = as_int(max_states, "max_states", 1)
    return _K(m, n, max_states)


#: Short alias used in the paper's notation: ``K(m, n) == transposable_tile_count(m, n)``.
K = transposable_tile_count


def log10_transposable_tile_count_asymptotic(m: int, n: int) -> float:
    r"""Canfield-McKay asymptotic ``log10 K(m, n)``.

    .. math:: K(m, n) \sim e^{-1/2}\, \binom{m}{n}^{2m} \Big/ \binom{m^2}{mn}

    (Canfield & McKay 2005, equal row and column sums, dense range; it also
    matches the sparse regime). The relative error of ``K`` vanishes as ``m``
    grows. Measured against the exact values it *under*-estimates
    ``log10 K`` by about ``0.2 / m`` (``ln K`` by about ``0.5 / m``): 0.018 at
    ``K(12, 6)``, 0.013 at ``K(16, 8)``, 0.006 at ``K(32, 4)``, 0.003 at
    ``K(64, 3)``; so ``K(32, 16)`` is known to roughly 1.5 %, and a layer's
    ``log10`` MD to a relative ``~1e-5``. ``n in (0, m)`` gives exactly ``0.0``.

    Examples
    --------
    >>> round(log10_transposable_tile_count_asymptotic(32, 16), 1)
    255.0
    """
    n, m = check_nm(n, m, allow_zero=True)
    if n in (0, m):
        return 0.0
    return 2 * m * log10_binom(m, n) - log10_binom(m * m, m * n) - 0.5 / _LN10


def _exact_is_cheap(m: int, n: int) -> bool:
    """Whether the exact K(m, n) costs at most a few seconds (the "auto" rule).

    Work ~ (middle-layer states) x (rows) x (capacity classes); 5e5 units is about 2 s here
    (K(40, 4): 3.4e5 units, 2 s; K(16, 8): 2.2e6 units but stored).
    """
    s = min(n, m - n)
    if s <= 1 or (m, s) in _PRECOMPUTED_K:
        return True
    if m * s > 4096:  # the estimate itself would cost; such cases are far beyond reach anyway
        return False
    return _middle_layer_states(m, s) * m * s <= 500_000


def log10_transposable_tile_count(m: int, n: int, exact: bool | None = None) -> float:
    r"""``log10 K(m, n)``, exact when affordable.

    Parameters
    ----------
    m, n : int
        As in :func:`transposable_tile_count`.
    exact : bool or None
        ``True``: always through the exact integer (raises
        :class:`CountTooExpensiveError` where that is out of reach, e.g. ``K(32, 16)``). ``False``: always the Canfield-McKay asymptotic value
        (:func:`log10_transposable_tile_count_asymptotic`). ``None`` (default):
        exact when the DP takes at most a few seconds (all ``m <= 16``, ``min(n, m-n) <= 3``
        for ``m <= 64``, ...), asymptotic otherwise (e.g. ``K(32, 16)``).

    Examples
    --------
    >>> round(log10_transposable_tile_count(8, 4), 6)
    11.068051
    """
    n, m = check_nm(n, m, allow_zero=True)
    if exact is None:
        exact = _exact_is_cheap(m, n)
    if exact:
        return math.log10(_K(m, n, DEFAULT_MAX_STATES))
    return log10_transposable_tile_count_asymptotic(m, n)


# --------------------------------------------------------------------------- mask diversity
def _divisible(T: int, d: int, what: str) -> int:
    if T % d:
        raise ValueError(f"T={T} weights cannot be split into {what} (T must be a multiple of {d})")
    return T // d


def md_unstructured(T: int, kept: int) -> int:
    r"""Mask diversity of unstructured sparsity: :math:`\binom{T}{k}` masks keep ``k`` of ``T`` weights.

    Examples
    --------
    >>> md_unstructured(64, 32)
    1832624140942590534
    """
    T = _check_T(T)
    kept = as_int(kept, "kept", 0)
    if kept > T:
        raise ValueError(f"kept={kept} exceeds the number of weights T={T}")
    return math.comb(T, kept)


def log10_md_unstructured(T: int, kept: int) -> float:
    r""":math:`\log_{10}\binom{T}{k}` (see :func:`md_unstructured`, :func:`log10_binom`)."""
    T = _check_T(T)
    kept = as_int(kept, "kept", 0)
    if kept > T:
        raise ValueError(f"kept={kept} exceeds the number of weights T={T}")
    return log10_binom(T, kept)


def md_nm(T: int, n: int, m: int) -> int:
    r"""Mask diversity of row-wise ``n:m``: :math:`\binom{m}{n}^{T/m}` (each group of ``m`` keeps ``n``).

    Hubara et al. 2021, Sec. 3. ``T`` must be a multiple of ``m``.

    Examples
    --------
    >>> md_nm(8, 2, 4)       # two groups of 4, C(4, 2) = 6 choices each
    36
    """
    T = _check_T(T)
    n, m = check_nm(n, m)
    return math.comb(m, n) ** _divisible(T, m, f"groups of m={m}")


def log10_md_nm(T: int, n: int, m: int) -> float:
    r""":math:`(T/m)\,\log_{10}\binom{m}{n}` (see :func:`md_nm`)."""
    T = _check_T(T)
    n, m = check_nm(n, m)
    return _divisible(T, m, f"groups of m={m}") * log10_binom(m, n)


def md_transposable(T: int, n: int, m: int) -> int:
    r"""Mask diversity of transposable ``n:m``: :math:`K(m, n)^{T/m^2}`.

    Every ``m x m`` tile independently takes one of the ``K(m, n)`` patterns
    whose tile-rows and tile-columns all keep exactly ``n`` (Hubara et al. 2021,
    Sec. 3). ``T`` must be a multiple of ``m**2`` (a matrix whose sides are
    multiples of ``m``).

    Examples
    --------
    >>> md_transposable(64, 4, 8)     # one 8x8 tile
    116963796250
    """
    T = _check_T(T)
    n, m = check_nm(n, m)
    tiles = _divisible(T, m * m, f"{m}x{m} tiles")
    return transposable_tile_count(m, n) ** tiles


def log10_md_transposable(T: int, n: int, m: int, exact: bool | None = None) -> float:
    r""":math:`(T/m^2)\,\log_{10} K(m, n)`; ``exact`` as in :func:`log10_transposable_tile_count`."""
    T = _check_T(T)
    n, m = check_nm(n, m)
    tiles = _divisible(T, m * m, f"{m}x{m} tiles")
    return tiles * log10_transposable_tile_count(m, n, exact=exact)


def _block_counts(T: int, b, kept) -> tuple[int, int]:
    b = as_int(b, "b", 1)
    kept = as_int(kept, "kept", 0)
    if kept > T:
        raise ValueError(f"kept={kept} exceeds the number of weights T={T}")
    blocks = _divisible(T, b * b, f"{b}x{b} blocks")
    if kept % (b * b):
        raise ValueError(f"kept={kept} is not a whole number of {b}x{b} blocks (must be a multiple of {b * b})")
    return blocks, kept // (b * b)


def md_block(T: int, b: int, kept: int) -> int:
    r"""Mask diversity of ``b x b`` block sparsity: :math:`\binom{T/b^2}{k/b^2}`.

    Whole ``b x b`` blocks are kept or pruned; ``kept`` counts weights and must be
    a multiple of ``b**2``, as must ``T``. ``b = 1`` is unstructured sparsity.

    Examples
    --------
    >>> md_block(64, 2, 32)       # 16 blocks of 2x2, keep 8 of them
    12870
    """
    T = _check_T(T)
    blocks, kept_blocks = _block_counts(T, b, kept)
    return math.comb(blocks, kept_blocks)


def log10_md_block(T: int, b: int, kept: int) -> float:
    r""":math:`\log_{10}\binom{T/b^2}{k/b^2}` (see :func:`md_block`)."""
    T = _check_T(T)
    blocks, kept_blocks = _block_counts(T, b, kept)
    return log10_binom(blocks, kept_blocks)


def _kept_at_density(T: int, n: int, m: int) -> int:
    kept = Fraction(T * n, m)
    if kept.denominator != 1:
        raise ValueError(f"density {n}/{m} of T={T} weights is not a whole number of weights")
    return int(kept)


def mask_diversity(structure: str, T: int, n: int, m: int, *, b: int | None = None) -> int:
    """Exact mask diversity of ``structure`` at density ``n/m`` on ``T`` weights.

    ``structure`` is one of :data:`STRUCTURES`: ``"unstructured"`` (any ``T*n/m``
    weights), ``"block"`` (``b x b`` blocks, ``b`` required), ``"nm"`` (row-wise
    ``n:m``) or ``"transposable"`` (transposable ``n:m``). See the ``md_*``
    functions for the formulas.

    Examples
    --------
    >>> [mask_diversity(s, 64, 4, 8, b=2) for s in STRUCTURES]
    [1832624140942590534, 12870, 576480100000000, 116963796250]
    """
    T = _check_T(T)
    n, m = check_nm(n, m)
    if structure == "unstructured":
        return md_unstructured(T, _kept_at_density(T, n, m))
    if structure == "block":
        if b is None:
            raise ValueError('structure="block" needs the block side b')
        return md_block(T, b, _kept_at_density(T, n, m))
    if structure == "nm":
        return md_nm(T, n, m)
    if structure == "transposable":
        return md_transposable(T, n, m)
    raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")


def log10_mask_diversity(structure: str, T: int, n: int, m: int, *, b: int | None = None,
                         exact: bool | None = None) -> float:
    """``log10`` of :func:`mask_diversity`, without building the integer.

    ``exact`` only matters for ``"transposable"`` (see :func:`log10_transposable_tile_count`).

    Examples
    --------
    >>> round(log10_mask_diversity("nm", 4096 * 4096, 2, 4))
    3263803
    """
    T = _check_T(T)
    n, m = check_nm(n, m)
    if structure == "unstructured":
        return log10_md_unstructured(T, _kept_at_density(T, n, m))
    if structure == "block":
        if b is None:
            raise ValueError('structure="block" needs the block side b')
        return log10_md_block(T, b, _kept_at_density(T, n, m))
    if structure == "nm":
        return log10_md_nm(T, n, m)
    if structure == "transposable":
        return log10_md_transposable(T, n, m, exact=exact)
    raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")


# --------------------------------------------------------------------------- the paper's table
def _check_shape(shape) -> tuple[int, int]:
    try:
        rows, cols = shape
    except (TypeError, ValueError):
        raise TypeError(f"shape must be a pair (rows, cols), got {shape!r}") from None
    return as_int(rows, "shape[0]", 1), as_int(cols, "shape[1]", 1)


def md_table(shape: tuple[int, int] = (4096, 4096),
             ratios: Iterable[tuple[int, int]] = PAPER_RATIOS,
             *,
             structures: Iterable[str] = ("unstructured", "nm", "transposable", "block"),
             block_sizes: Iterable[int] = (2, 4, 8),
             exact: bool = False) -> list[dict]:
    """Mask diversity of each structure on one ``rows x cols`` layer: the paper's comparison.

    For every ratio ``(n, m)`` (``n`` kept of every ``m``) the table has a row for
    row-wise ``n:m`` and transposable ``n:m``; for every distinct density
    ``n/m`` a row for unstructured sparsity and one per ``b x b`` block size.
    The default reproduces the paper's 50 % comparison (1:2, 2:4, 4:8, 8:16,
    their transposable forms, unstructured) on a 4096 x 4096 layer; pass other
    ``ratios`` (e.g. ``((1, 4), (2, 8), (4, 16))``) for other sparsities, and
    ``shape=(8, 8)`` for the one-tile view.

    Parameters
    ----------
    shape : (int, int)
        Layer shape; row-wise ``n:m`` needs ``cols % m == 0``, transposable
        ``n:m`` both sides multiples of ``m``, blocks both sides multiples of ``b``.
        Combinations that do not fit raise ``ValueError``.
    ratios : iterable of (n, m)
    structures : iterable of str
        Subset of :data:`STRUCTURES`.
    block_sizes : iterable of int
        Block sides ``b`` for ``"block"`` rows.
    exact : bool
        Also compute the exact integer MD (key ``"md"``); only sensible for small
        layers (the 4096 x 4096 integers have millions of digits). Also forces
        exact ``K(m, n)``.

    Returns
    -------
    list of dict
        One dict per row, sorted by density then decreasing ``log10_md``, with keys
        ``structure`` (one of :data:`STRUCTURES`), ``label`` (e.g. ``"2:4-T"``),
        ``n``, ``m`` (``None`` for unstructured/block), ``b`` (block side or ``None``),
        ``density``, ``sparsity`` (floats), ``T`` (weights), ``kept`` (weights kept),
        ``log10_md``, ``log10_md_per_weight`` (``log10_md / T``: independent of the
        layer size), ``exact_log10`` (False when ``log10 K(m, n)`` came from the
        asymptotic formula) and ``md`` (int, or ``None`` unless ``exact``).
        Plain Python types, so ``json.dumps`` works on it directly (except huge ``md``).

    Raises
    ------
    ValueError
        A ratio, block size or density does not fit ``shape``; unknown structure.
    CountTooExpensiveError
        ``exact=True`` with a ``K(m, n)`` out of reach (e.g. 16:32).

    Examples
    --------
    >>> rows = md_table((8, 8), ((2, 4), (4, 8)), block_sizes=(2,), exact=True)
    >>> for r in rows:
    ...     print(f"{r['label']:<16} {r['md']}")
    unstructured 50% 1832624140942590534
    4:8              576480100000000
    2:4              2821109907456
    4:8-T            116963796250
    2:4-T            65610000
    block 2x2 50%    12870
    """
    rows_, cols_ = _check_shape(shape)
    T = rows_ * cols_
    structures = tuple(structures)
    for s in structures:
        if s not in STRUCTURES:
            raise ValueError(f"structures must be drawn from {STRUCTURES}, got {s!r}")
    ratio_list = []
    for item in ratios:
        try:
            n, m = item
        except (TypeError, ValueError):
            raise TypeError(f"ratios must hold (n, m) pairs, got {item!r}") from None
        ratio_list.append(check_nm(n, m))
    block_list = [as_int(b, "block size", 1) for b in block_sizes]

    out: list[dict] = []

    def add(structure, label, n, m, b, density: Fraction, log10_md, exact_log10, md):
        out.append({
            "structure": structure, "label": label, "n": n, "m": m, "b": b,
            "density": float(density), "sparsity": float(1 - density), "T": T,
            "kept": int(density * T), "log10_md": float(log10_md),
            "log10_md_per_weight": float(log10_md) / T, "exact_log10": exact_log10, "md": md,
        })

    densities: dict[Fraction, None] = {}
    for n, m in ratio_list:
        density = Fraction(n, m)
        densities.setdefault(density, None)
        if "nm" in structures:
            if cols_ % m:
                raise ValueError(f"row-wise {n}:{m} needs cols a multiple of {m}, got shape {shape}")
            md = md_nm(T, n, m) if exact else None
            add("nm", f"{n}:{m}", n, m, None, density, log10_md_nm(T, n, m), True, md)
        if "transposable" in structures:
            if rows_ % m or cols_ % m:
                raise ValueError(f"transposable {n}:{m} needs both sides multiples of {m}, got shape {shape}")
            want_exact = True if exact else None
            is_exact = True if exact else _exact_is_cheap(m, n)
            md = md_transposable(T, n, m) if exact else None
            add("transposable", f"{n}:{m}-T", n, m, None, density,
                log10_md_transposable(T, n, m, exact=want_exact), is_exact, md)
    for density in densities:
        pct = f"{float(density) * 100:g}%"
        kept = density * T
        if "unstructured" in structures:
            if kept.denominator != 1:
                raise ValueError(f"density {density} of T={T} weights is not a whole number of weights")
            md = md_unstructured(T, int(kept)) if exact else None
            add("unstructured", f"unstructured {pct}", None, None, None, density,
                log10_md_unstructured(T, int(kept)), True, md)
        if "block" in structures:
            for b in block_list:
                if rows_ % b or cols_ % b:
                    raise ValueError(f"{b}x{b} blocks need both sides multiples of {b}, got shape {shape}")
                if kept.denominator != 1 or int(kept) % (b * b):
                    raise ValueError(f"density {density} of a {shape} layer is not a whole number of {b}x{b} blocks")
                md = md_block(T, b, int(kept)) if exact else None
                add("block", f"block {b}x{b} {pct}", None, None, b, density,
                    log10_md_block(T, b, int(kept)), True, md)
    out.sort(key=lambda r: (r["density"], -r["log10_md"]))
    return out


def md_table_markdown(rows: Sequence[dict], *, digits: int = 1) -> str:
    """Render :func:`md_table` rows as a GitHub markdown table.

    Columns: structure label, density, sparsity, ``log10 MD``, ``log10 MD`` per
    weight, and the exact MD when present. Asymptotic ``K(m, n)`` values are
    marked with ``~``.

    Examples
    --------
    >>> print(md_table_markdown(md_table((8, 8), ((4, 8),), block_sizes=())))
    | structure | density | sparsity | log10 MD | log10 MD / weight |
    |---|---:|---:|---:|---:|
    | unstructured 50% | 0.5 | 0.5 | 18.3 | 0.2854 |
    | 4:8 | 0.5 | 0.5 | 14.8 | 0.2306 |
    | 4:8-T | 0.5 | 0.5 | 11.1 | 0.1729 |
    """
    digits = as_int(digits, "digits", 0)
    rows = list(rows)
    show_md = any(r.get("md") is not None for r in rows)
    head = ["structure", "density", "sparsity", "log10 MD", "log10 MD / weight"] + (["MD"] if show_md else [])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        approx = "" if r.get("exact_log10", True) else "~"
        cells = [str(r["label"]), f"{r['density']:g}", f"{r['sparsity']:g}",
                 f"{approx}{r['log10_md']:,.{digits}f}", f"{approx}{r['log10_md_per_weight']:.4f}"]
        if show_md:
            cells.append("" if r.get("md") is None else str(r["md"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
