"""The README's main job (``python -m transmask.demo``): one unit, a row-wise baseline, one-line errors."""
from __future__ import annotations

import importlib.util

import pytest

from transmask import demo


def test_rows_are_in_one_unit_and_consistent():
    rows = demo.run(96, 80, patterns=[(2, 4), (4, 8)], seed=3)
    assert len(rows) == 2 * 5
    for r in rows:
        assert r["valid"]
        assert 0 < r["kept_percent"] <= 100
    for pattern in ("2:4", "4:8"):
        get = {(r["keep"], r["method"]): r for r in rows if r["pattern"] == pattern}
        # the exact solver defines the optimum of its keep mode; the approximation is within [1/2, 1]
        for keep in ("exactly", "at_most"):
            assert get[(keep, "exact")]["fraction_of_optimum"] == 1.0
            assert 0.5 <= get[(keep, "approx")]["fraction_of_optimum"] <= 1.0 + 1e-12
        # at most n can only keep more than exactly n; row-wise (not transposable) keeps more still
        assert get[("at_most", "exact")]["kept_percent"] >= get[("exactly", "exact")]["kept_percent"] - 1e-9
        assert get[("-", "row-wise")]["kept_percent"] > get[("exactly", "exact")]["kept_percent"]
        assert get[("-", "row-wise")]["fraction_of_optimum"] > 1.0


def test_main_prints_table_legend_and_summary(capsys):
    assert demo.main(["--size", "64", "48", "--patterns", "2:4", "--no-lp"]) == 0
    out = capsys.readouterr().out
    assert "row-wise" in out and "kept % = " in out
    assert "2:4: exact keeps" in out and "transposability costs" in out


def test_lp_rows_only_with_pulp(capsys, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pulp" else real_find_spec(name, *a))
    assert demo.main(["--size", "32", "32", "--patterns", "2:4"]) == 0
    assert "LP cross-check skipped: pulp is not installed" in capsys.readouterr().out


def test_lp_cross_check_agrees():
    pytest.importorskip("pulp")
    for pattern, exact, lp in demo.lp_check(40, 48, [(2, 4), (3, 8)], seed=1):
        assert exact == pytest.approx(lp, rel=1e-9), pattern


@pytest.mark.parametrize("argv, needle", [
    (["--patterns", "5:4"], "need 1 <= n <= m"),
    (["--patterns", "2-4"], "bad pattern"),
    (["--patterns", "0:4"], "need 1 <= n <= m"),
    (["--size", "0", "8"], "out of range"),
    (["--size", "x", "8"], "not an integer"),
    (["--bogus"], "unrecognized arguments"),
])
def test_argument_errors_are_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
