"""Tests for transmask.diversity: exact counts vs brute force, OEIS values, identities, MD formulas, table."""
from __future__ import annotations

import json
import math
import time
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transmask
from transmask import diversity as md


# --------------------------------------------------------------------------- brute force
@lru_cache(maxsize=None)
def _all_margins(p: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column sums of every p x q 0/1 matrix (2**(p*q) of them, p*q <= 16)."""
    bits = (np.arange(2 ** (p * q), dtype=np.int64)[:, None] >> np.arange(p * q)) & 1
    mats = bits.reshape(-1, p, q)
    return mats.sum(axis=2), mats.sum(axis=1)


def brute_count(rows, cols) -> int:
    p, q = len(rows), len(cols)
    if p == 0 or q == 0:
        return int(sum(rows) == 0 and sum(cols) == 0)
    R, C = _all_margins(p, q)
    return int(np.sum(np.all(R == np.asarray(rows), axis=1) & np.all(C == np.asarray(cols), axis=1)))


@st.composite
def margins(draw):
    p = draw(st.integers(0, 4))
    q = draw(st.integers(0, 4))
    # mostly consistent margins (a real matrix's), sometimes arbitrary ones (mostly infeasible)
    if draw(st.booleans()):
        X = np.array(draw(st.lists(st.integers(0, 1), min_size=p * q, max_size=p * q)), dtype=int).reshape(p, q)
        rows, cols = X.sum(axis=1).tolist(), X.sum(axis=0).tolist()
    else:
        rows = draw(st.lists(st.integers(0, q + 1), min_size=p, max_size=p))
        cols = draw(st.lists(st.integers(0, p + 1), min_size=q, max_size=q))
    return rows, cols


@settings(max_examples=150, deadline=None)
@given(margins())
def test_count_matches_brute_force(rc):
    rows, cols = rc
    expected = brute_count(rows, cols)
    assert md.count_binary_matrices(rows, cols) == expected
    assert md.gale_ryser_feasible(rows, cols) == (expected > 0)
    # transposing and permuting do not change the count
    assert md.count_binary_matrices(cols[::-1], rows) == expected


def test_brute_force_all_square_equal_margins():
    # every K(m, n) with m <= 4 by exhaustive enumeration
    for m in range(1, 5):
        for n in range(m + 1):
            assert md.transposable_tile_count(m, n) == brute_count([n] * m, [n] * m)


def test_rectangular_equal_margins_use_meet_in_the_middle_correctly():
    # p x q matrices, rows all r, columns all c: compare the MITM path with the plain DP
    for p, q, r in [(4, 6, 3), (6, 4, 2), (5, 10, 4), (6, 9, 3), (7, 7, 3), (3, 5, 5), (9, 6, 2)]:
        c = p * r // q
        plain, _ = md._forward_general([r] * p, [c] * q, 0)
        assert md.count_binary_matrices([r] * p, [c] * q) == plain.get(q, 0)
    assert md.count_binary_matrices([4, 4, 4, 4, 4, 4], [3] * 8) == md.count_binary_matrices([3] * 8, [4] * 6)


def test_mixed_margins_small_known():
    # 2 x 3 with rows (2, 1), cols (1, 1, 1): choose the row-0 pair (3 ways)
    assert md.count_binary_matrices([2, 1], [1, 1, 1]) == 3
    assert md.count_binary_matrices(np.array([2, 1]), np.array([1, 1, 1], dtype=np.int8)) == 3
    assert md.count_binary_matrices([], []) == 1
    assert md.count_binary_matrices([0, 0], []) == 1
    assert md.count_binary_matrices([0, 0], [0, 0, 0]) == 1


# --------------------------------------------------------------------------- K(m, n)
OEIS = {
    # OEIS A008300 (as in the issue)
    (4, 2): 90,
    (8, 2): 187530840,
    (8, 3): 24046189440,
    (8, 4): 116963796250,
    (10, 5): 6736218287430460752,
    # A058527 (central column) and A058528 (column 4)
    (6, 3): 297200,
    (7, 4): 68938800,
    (9, 4): 315031400802720,
    (10, 4): 1289144584143523800,
    # A172541 (column 7 of A008300)
    (9, 7): 14398171200,
    (10, 7): 8302816499443200,
    (11, 7): 7722015017013984456000,
    (12, 7): 11649337108041078980732943360,
}


@pytest.mark.parametrize("mn, value", sorted(OEIS.items()))
def test_oeis_values(mn, value):
    m, n = mn
    assert md.transposable_tile_count(m, n) == value
    assert md.K(m, n) == value


def test_symmetry_and_closed_forms():
    for m in range(1, 13):
        for n in range(m + 1):
            assert md.K(m, n) == md.K(m, m - n)
        assert md.K(m, 0) == 1 == md.K(m, m)
        assert md.K(m, 1) == math.factorial(m)
    for m in (16, 32, 64):
        assert md.K(m, 1) == math.factorial(m) == md.K(m, m - 1)
    # K(m, 2) = sum_{i} ... : compare the DP (not the closed form) with the general counter
    assert md.K(9, 2) == md.count_binary_matrices([2] * 9, [2] * 9)


def test_precomputed_central_values_are_reproduced_by_the_dp():
    # K(12, 6), K(14, 7), K(16, 8) are stored so md_table is instant; recompute them here.
    for (m, s), value in md._PRECOMPUTED_K.items():
        if m == 16:
            continue  # the slowest one, done in the next test
        assert md._count_equal_columns([s] * m, s, m) == value
    # Independent sources: OEIS A058527 (12, 6), A172541 (14, 7)
    assert md._PRECOMPUTED_K[(12, 6)] == 64051375889927380035549804336
    assert md._PRECOMPUTED_K[(14, 7)] == 108738182111446498614705217754614976371200


def test_k_16_8_by_dp():
    assert md._count_equal_columns([8] * 16, 8, 16) == md._PRECOMPUTED_K[(16, 8)]


def test_large_m_small_n_is_exact_and_fast():
    # m = 64 with n = 2, 3 (and their complements) runs the DP; checked against the
    # closed form for n = 2 (OEIS A001499):
    # K(m, 2) = sum_k (-1)^k m!^2 (2m - 2k)! / (k! (m-k)!^2 2^(2m-k))
    def closed_form(m):
        total = sum(Fraction((-1) ** k * math.factorial(m) ** 2 * math.factorial(2 * m - 2 * k),
                             math.factorial(k) * math.factorial(m - k) ** 2 * 2 ** (2 * m - k))
                    for k in range(m + 1))
        assert total.denominator == 1
        return int(total)

    assert closed_form(4) == 90 and closed_form(8) == 187530840
    closed = closed_form(64)
    assert md.K(64, 2) == closed == md.K(64, 62)
    assert md.K(32, 3) > 0 and md.K(64, 3) == md.K(64, 61)


def test_k_32_16_log10_and_exact_refusal():
    t0 = time.perf_counter()
    value = md.log10_transposable_tile_count(32, 16)
    assert time.perf_counter() - t0 < 5  # loose: speed belongs in benches
    assert 254 < value < 256
    # exact: refused at once with a clear error instead of running for hours
    with pytest.raises(md.CountTooExpensiveError, match="K\\(32, 16\\)"):
        md.transposable_tile_count(32, 16)
    with pytest.raises(md.CountTooExpensiveError):
        md.transposable_tile_count(64, 32)
    with pytest.raises(md.CountTooExpensiveError):
        md.count_binary_matrices([6] * 12, [6] * 12, max_states=10)
    assert md.count_binary_matrices([6] * 12, [6] * 12, max_states=None) == md.K(12, 6)


def test_asymptotic_close_to_exact():
    for m, n in [(8, 4), (12, 6), (16, 8), (32, 4), (64, 3), (16, 6)]:
        exact = md.log10_int(md.K(m, n))
        approx = md.log10_transposable_tile_count_asymptotic(m, n)
        assert abs(exact - approx) < 0.05
        assert md.log10_transposable_tile_count(m, n, exact=True) == pytest.approx(exact, abs=1e-12)
        assert md.log10_transposable_tile_count(m, n, exact=False) == approx
    assert md.log10_transposable_tile_count_asymptotic(5, 0) == 0.0


# --------------------------------------------------------------------------- infeasible / errors
@pytest.mark.parametrize("rows, cols", [
    ([1, 1], [1]),              # totals differ
    ([3], [2, 1]),              # a row sum above the number of columns
    ([2, 1], [3, 0]),           # a column sum above the number of rows
    ([2, 0], [2, 0]),           # totals and bounds fine, Gale-Ryser fails at k = 1
    ([3, 0], [0, 1, 2]),        # ... 3 ones in row 0 but only 2 columns are non-empty
])
def test_infeasible_margins_give_zero(rows, cols):
    assert md.count_binary_matrices(rows, cols) == brute_count(rows, cols) == 0
    assert not md.gale_ryser_feasible(rows, cols)


@pytest.mark.parametrize("call, exc", [
    (lambda: md.count_binary_matrices([1, -1], [0, 0]), ValueError),
    (lambda: md.count_binary_matrices([1.0, 1], [1, 1]), TypeError),
    (lambda: md.count_binary_matrices([True, 1], [1, 1]), TypeError),
    (lambda: md.count_binary_matrices("12", [1, 1]), TypeError),
    (lambda: md.count_binary_matrices(np.ones((2, 2), int), [1, 1]), ValueError),
    (lambda: md.count_binary_matrices([1], [1], max_states=0), ValueError),
    (lambda: md.gale_ryser_feasible(5, [1]), TypeError),
    (lambda: md.K(4, 5), ValueError),
    (lambda: md.K(4, -1), ValueError),
    (lambda: md.K(0, 0), ValueError),
    (lambda: md.K(4.0, 2), TypeError),
    (lambda: md.K(4, 2.0), TypeError),
    (lambda: md.md_nm(10, 2, 4), ValueError),            # 10 weights are not groups of 4
    (lambda: md.md_transposable(24, 2, 4), ValueError),  # 24 weights are not 4x4 tiles
    (lambda: md.md_nm(16, 0, 4), ValueError),
    (lambda: md.md_unstructured(16, 17), ValueError),
    (lambda: md.md_unstructured(0, 0), ValueError),
    (lambda: md.md_block(64, 2, 6), ValueError),         # not whole 2x2 blocks
    (lambda: md.md_block(54, 2, 8), ValueError),         # 54 weights are not 2x2 blocks
    (lambda: md.mask_diversity("block", 64, 1, 2), ValueError),
    (lambda: md.mask_diversity("diagonal", 64, 1, 2), ValueError),
    (lambda: md.log10_int(0), ValueError),
    (lambda: md.log10_int(2.5), TypeError),
    (lambda: md.md_table((8, 8), ((8, 16),)), ValueError),
    (lambda: md.md_table((8, 12), ((2, 8),), structures=("nm",)), ValueError),
    (lambda: md.md_table((8, 8), structures=("bogus",)), ValueError),
    (lambda: md.md_table((8, 8), ((2, 4),), block_sizes=(3,), structures=("block",)), ValueError),
    (lambda: md.md_table(8), TypeError),
])
def test_bad_input_raises(call, exc):
    with pytest.raises(exc):
        call()


def test_numpy_integers_accepted():
    assert md.K(np.int64(4), np.int32(2)) == 90
    assert md.md_nm(np.int64(16), 2, 4) == 6 ** 4


# --------------------------------------------------------------------------- MD formulas
@lru_cache(maxsize=None)
def _all_masks(p: int, q: int) -> np.ndarray:
    """Every p x q 0/1 matrix, shape (2**(p*q), p, q)."""
    bits = (np.arange(2 ** (p * q), dtype=np.int64)[:, None] >> np.arange(p * q)) & 1
    return bits.reshape(-1, p, q)


def test_md_formulas_against_brute_force_on_4x4():
    M = _all_masks(4, 4)  # all 65536 masks of a 4 x 4 layer, T = 16

    def nm_ok(A, n, m):
        return np.all(A.reshape(A.shape[0], A.shape[1], -1, m).sum(axis=3) == n, axis=(1, 2))

    def transposable_ok(A, n, m):
        return nm_ok(A, n, m) & nm_ok(A.transpose(0, 2, 1), n, m)

    def block_ok(A, b, kept):
        tiles = A.reshape(A.shape[0], 4 // b, b, 4 // b, b).sum(axis=(2, 4))
        return (A.sum(axis=(1, 2)) == kept) & np.all((tiles == 0) | (tiles == b * b), axis=(1, 2))

    def count(ok):
        return int(ok.sum())

    assert md.md_nm(16, 1, 2) == count(nm_ok(M, 1, 2)) == 2 ** 8
    assert md.md_nm(16, 2, 4) == count(nm_ok(M, 2, 4)) == 6 ** 4
    assert md.md_nm(16, 3, 4) == count(nm_ok(M, 3, 4))
    assert md.md_transposable(16, 1, 2) == count(transposable_ok(M, 1, 2)) == 2 ** 4
    assert md.md_transposable(16, 2, 4) == count(transposable_ok(M, 2, 4)) == 90
    assert md.md_transposable(16, 1, 4) == count(transposable_ok(M, 1, 4)) == 24
    assert md.md_transposable(16, 3, 4) == count(transposable_ok(M, 3, 4)) == 24
    assert md.md_block(16, 2, 8) == count(block_ok(M, 2, 8)) == 6
    assert md.md_block(16, 2, 4) == count(block_ok(M, 2, 4)) == 4
    for kept in (0, 4, 8, 13):
        assert md.md_unstructured(16, kept) == count(M.sum(axis=(1, 2)) == kept)


def test_md_log10_twins_agree_with_exact():
    T = 256
    for n, m in [(1, 2), (2, 4), (4, 8), (8, 16), (1, 4), (2, 8), (3, 8)]:
        assert md.log10_md_nm(T, n, m) == pytest.approx(math.log10(md.md_nm(T, n, m)), rel=1e-12)
        assert md.log10_md_transposable(T, n, m) == pytest.approx(math.log10(md.md_transposable(T, n, m)), rel=1e-12)
        kept = T * n // m
        assert md.log10_md_unstructured(T, kept) == pytest.approx(math.log10(md.md_unstructured(T, kept)), rel=1e-12)
        for s in md.STRUCTURES:
            exact = md.mask_diversity(s, T, n, m, b=2)
            assert md.log10_mask_diversity(s, T, n, m, b=2) == pytest.approx(math.log10(exact), rel=1e-12)
    assert md.log10_md_block(256, 4, 128) == pytest.approx(math.log10(md.md_block(256, 4, 128)), rel=1e-12)


def test_log10_helpers_on_huge_numbers():
    assert md.log10_int(10 ** 5000) == 5000.0
    assert md.log10_int(3 * 10 ** 400) == pytest.approx(400 + math.log10(3))
    # lgamma path against the exact integer (min(k, n-k) > 1000)
    assert md.log10_binom(4000, 2000) == pytest.approx(math.log10(math.comb(4000, 2000)), rel=1e-12)
    assert md.log10_binom(10, 11) == -math.inf
    T = 4096 * 4096
    assert md.log10_md_unstructured(T, T // 2) == pytest.approx(5050441.5, abs=0.1)


def test_paper_ordering_of_structures():
    # Hubara et al.: MD grows with m at fixed density, and the transposable constraint costs
    # diversity but 4:8-T keeps more than 1:2, 8:16-T more than 2:4.
    T = 4096 * 4096
    lg = {(s, n, m): md.log10_mask_diversity(s, T, n, m) for s in ("nm", "transposable")
          for n, m in md.PAPER_RATIOS}
    nm = [lg[("nm", n, m)] for n, m in md.PAPER_RATIOS]
    tr = [lg[("transposable", n, m)] for n, m in md.PAPER_RATIOS]
    assert nm == sorted(nm) and tr == sorted(tr)
    assert all(t < r for t, r in zip(tr, nm))
    assert lg[("transposable", 4, 8)] > lg[("nm", 1, 2)]
    assert lg[("transposable", 8, 16)] > lg[("nm", 2, 4)]
    assert md.log10_md_unstructured(T, T // 2) > max(nm)


# --------------------------------------------------------------------------- md_table
def test_md_table_default_rows_and_markdown():
    t0 = time.perf_counter()
    rows = md.md_table()
    assert time.perf_counter() - t0 < 10  # K(16, 8) is stored: no DP here
    labels = [r["label"] for r in rows]
    for want in ["1:2", "2:4", "4:8", "8:16", "1:2-T", "2:4-T", "4:8-T", "8:16-T", "unstructured 50%",
                 "block 4x4 50%"]:
        assert want in labels
    for r in rows:
        assert r["T"] == 4096 * 4096 and r["density"] == 0.5 and r["sparsity"] == 0.5
        assert r["log10_md"] == pytest.approx(r["log10_md_per_weight"] * r["T"])
        assert r["exact_log10"] is True and r["md"] is None
    by = {r["label"]: r for r in rows}
    assert by["2:4-T"]["log10_md"] == pytest.approx(4096 * 4096 / 16 * math.log10(90))
    assert by["4:8"]["log10_md"] == pytest.approx(4096 * 4096 / 8 * math.log10(70))
    json.dumps(rows)  # plain types, ready for paper_figs
    text = md.md_table_markdown(rows)
    assert text.count("\n") == len(rows) + 1 and "| 8:16-T |" in text


def test_md_table_other_sparsities_and_exact():
    rows = md.md_table((64, 64), ((1, 4), (2, 8), (4, 16), (8, 32)), structures=("transposable", "unstructured"))
    by = {r["label"]: r for r in rows}
    assert by["8:32-T"]["exact_log10"] is False  # K(32, 8) via Canfield-McKay
    assert by["2:8-T"]["exact_log10"] is True
    assert by["unstructured 25%"]["kept"] == 64 * 64 // 4
    assert "~" in md.md_table_markdown(rows)
    small = md.md_table((8, 8), ((2, 4), (4, 8)), block_sizes=(2,), exact=True)
    got = {r["label"]: r["md"] for r in small}
    assert got == {"unstructured 50%": math.comb(64, 32), "4:8": 70 ** 8, "2:4": 6 ** 16,
                   "4:8-T": 116963796250, "2:4-T": 90 ** 4, "block 2x2 50%": math.comb(16, 8)}
    assert "| MD |" in md.md_table_markdown(small)


def test_lazy_import():
    assert transmask.diversity is md
