"""bench/targets.py --quick: every issue-17 target in its JSON, and the published results left alone."""
from __future__ import annotations

from _tracked import quick_bench_run

PATTERNS = ("2:4", "4:8", "8:16", "16:32")


def expected_targets(small: int, size: int) -> set[str]:
    names = set()
    for p in PATTERNS:
        names |= {f"nm_mask {p} / read once", f"exact {p} keep=exactly", f"exact {p} at_most / exactly", f"approx {p} / exact"}
        names |= {f"{what} {p} {small}^2 time per weight / {size}^2" for what in ("exact", "nm_mask")}
    names |= {"cold start: python -m transmask.demo, empty Numba cache", "compile notice on stderr, cold start",
              "warm start: python -m transmask.demo, warm cache"}
    names |= {f"memory {what}: peak extra - mask" for what in ("nm_mask 2:4", "exact 2:4", "exact 8:16", "exact_at_most 4:8", "approx 4:8")}
    return names


def test_quick_run_reports_every_target_and_writes_elsewhere():
    proc, report, md = quick_bench_run("targets", timeout=600)
    cfg = report["config"]
    rows = {r["target"]: r for r in report["targets"]}
    assert set(rows) == expected_targets(cfg["small"], cfg["size"])
    for name, r in rows.items():
        assert name in md and name in proc.stdout
        if name.startswith(("cold start", "warm start", "compile notice")):  # --quick skips the start-up
            assert r["measured"] is None and r["met"] is None
            continue
        assert r["measured"] is not None and (r["measured"] >= 0 or name.startswith("memory")), name  # RSS may reuse freed pages
        assert r["met"] == (r["measured"] <= r["goal"]), name
    # the side-by-side medians behind the ratios are in the report, one per call and pattern
    for p in PATTERNS:
        for what in ("nm_mask", "exact", "exact_at_most", "approx"):
            assert report["timings"][f"{what} {p}"]["median_s"] > 0
    assert report["machine"]["cpu"] and report["machine"]["loadavg"]
