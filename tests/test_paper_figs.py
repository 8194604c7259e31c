"""Smoke tests of paper_figs/: every script's ``main(["--quick", "--out", tmp])`` writes a PNG and its data.

The quick runs use tiny sizes (seconds each); together they stay well under the
~90 s budget on a 2-core CPU once Numba's cache is warm.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from _tracked import fingerprint, printed_folder

from transmask.views import view_to_weight, weight_to_2d

FIGS = Path(__file__).resolve().parents[1] / "paper_figs"

pytest.importorskip("matplotlib")


def load(name: str):
    """Import paper_figs/<name>.py by path (paper_figs is a folder of scripts, not a package)."""
    if str(FIGS) not in sys.path:
        sys.path.insert(0, str(FIGS))
    spec = importlib.util.spec_from_file_location(f"paper_figs_{name}", FIGS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_outputs(out: Path, name: str, data_ext=("csv", "json")) -> None:
    png = out / f"{name}.png"
    assert png.exists() and png.stat().st_size > 5000, f"{png} missing or tiny"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    found = [out / f"{name}.{ext}" for ext in data_ext if (out / f"{name}.{ext}").exists()]
    assert found, f"no data file for {name}"
    for p in found:
        assert p.stat().st_size > 0, f"{p} is empty"
        if p.suffix == ".json":
            json.loads(p.read_text())


def quick_run(name: str, out: Path) -> dict:
    """``main(["--quick", "--out", out])`` of paper_figs/<name>.py; checks its outputs and returns its JSON."""
    load(name).main(["--quick", "--out", str(out)])
    check_outputs(out, name)
    return json.loads((out / f"{name}.json").read_text())


def test_fig1_md_table(tmp_path):
    res = load("fig1_md_table").main(["--quick", "--out", str(tmp_path)])
    check_outputs(tmp_path, "fig1_md_table")
    rows = json.loads((tmp_path / "fig1_md_table.json").read_text())["rows"]
    by = {r["label"]: r["log10_md"] for r in rows}
    # the paper's ordering at 50 % sparsity
    assert by["unstructured 50%"] > by["4:8"] > by["2:4"] > by["2:4-T"] > by["block 4x4 50%"]
    assert by["4:8-T"] > by["2:4-T"]
    assert res["png"] == "fig1_md_table.png" and res["caption"]


def test_fig2_md_vs_accuracy(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    rep = quick_run("fig2_md_vs_accuracy", tmp_path)
    assert all(r["masks_valid"] for r in rep["runs"])
    sparse = [r for r in rep["runs"] if r["family"] != "dense"]
    assert sparse and all(abs(r["density"] - 0.5) < 1e-9 for r in sparse)


def test_fig2_structure_masks():
    np = pytest.importorskip("numpy")
    f2 = load("fig2_md_vs_accuracy")
    A = np.abs(np.random.default_rng(0).standard_normal((16, 72)))
    for label, family, p in f2.STRUCTURES[1:]:
        M = f2.structure_mask(A, family, p)
        assert M.shape == A.shape and M.mean() == 0.5, label
        assert f2.check_mask(M, family, p), label
    # channels-last view round trip (fig2 uses the library's views)
    w = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    assert (view_to_weight(weight_to_2d(w), w.shape) == w).all()


def test_fig3_solver_runtime(tmp_path):
    pytest.importorskip("ortools")
    pts = quick_run("fig3_solver_runtime", tmp_path)["points"]
    assert {"ours:exact", "ours:approx"} <= {p["method"] for p in pts}
    assert all(p["time_s"] > 0 for p in pts)


def test_fig3_reads_existing_bench_json(tmp_path):
    rep = {"machine": {"cpu": "test", "usable_cpus": 1, "date": "2026-01-01"},
           "results": [{"size": s, "pattern": "2:4", "dist": "gaussian", "method": meth, "time_s": s * 1e-4,
                        "timing": "full matrix" if meth.startswith("ours") else "extrapolated from 8 tiles"}
                       for s in (64, 128) for meth in ("ours:exact", "ortools")],
           "scaling_size": [{"size": 256, "pattern": "2:4", "method": "ours:exact", "time_s": 0.05}]}
    src = tmp_path / "solvers.json"
    src.write_text(json.dumps(rep))
    out = tmp_path / "out"
    load("fig3_solver_runtime").main(["--from-bench", str(src), "--out", str(out)])
    check_outputs(out, "fig3_solver_runtime")
    pts = json.loads((out / "fig3_solver_runtime.json").read_text())["points"]
    assert len(pts) == 5 and sum(p["extrapolated"] for p in pts) == 2


def test_fig4_approx_quality(tmp_path):
    rows = quick_run("fig4_approx_quality", tmp_path)["rows"]
    assert len(rows) == 2 * 3 * 3
    for r in rows:
        assert r["tile_worst"] >= 0.5 - 1e-9  # the greedy's 1/2 guarantee
        if r["method"] == "ours:approx":
            assert r["overall_l1_over_opt"] <= 1 + 1e-9


def test_fig5_adaprune(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    rep = quick_run("fig5_adaprune", tmp_path)
    assert {s["method"] for s in rep["summary"]} == {"dense", "magnitude", "magnitude + BN", "AdaPrune"}


def test_fig6_without_gpu_result(tmp_path):
    res = load("fig6_matmul_speedup").main(["--quick", "--out", str(tmp_path), "--results", str(tmp_path / "none")])
    check_outputs(tmp_path, "fig6_matmul_speedup", ("json",))
    rep = json.loads((tmp_path / "fig6_matmul_speedup.json").read_text())
    assert rep["available"] is False and "No GPU result available" in rep["message"]
    assert res["available"] is False


def test_fig6_with_gpu_result(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    rows = [{"shape": [64, 32], "tokens": t, "op": op, "dense_ms": 1.0, "ours_ms": 0.8, "hw_ms": None,
             "ours_speedup": 1.25, "hw_speedup": None} for t in (16, 4096) for op in ("fwd", "bwd", "fwd+bwd")]
    (results / "matmul_Test_GPU.json").write_text(json.dumps(
        {"meta": {"device": "Test GPU", "n": 2, "m": 4, "dtype": "fp16"}, "results": rows}))
    (results / "matmul_cpu_smoke.json").write_text(json.dumps({"meta": {"device": "cpu-smoke"}, "results": rows}))
    out = tmp_path / "out"
    res = load("fig6_matmul_speedup").main(["--out", str(out), "--results", str(results)])
    check_outputs(out, "fig6_matmul_speedup")
    assert res["available"] is True
    assert json.loads((out / "fig6_matmul_speedup.json").read_text())["sources"] == ["matmul_Test_GPU.json"]


def test_make_all_only(capsys):
    """A quick run writes to a temporary folder it prints, never to the published paper_figs/ files."""
    before = fingerprint("paper_figs")
    mod = load("make_all")
    status = mod.main(["--quick", "--only", "fig1,fig6"])
    out = printed_folder(capsys.readouterr().out, "quick run: figures go to")
    try:
        assert fingerprint("paper_figs") == before
        assert not out.resolve().is_relative_to(FIGS.parent)
        assert status == 0
        summary = json.loads((out / "make_all.json").read_text())
        assert [f["key"] for f in summary["figures"]] == ["fig1", "fig6"]
        assert (out / "fig1_md_table.png").exists() and (out / "fig6_matmul_speedup.png").exists()
        for name in ("make_all", "fig1_md_table", "fig6_matmul_speedup"):  # each results file names its origin
            made = json.loads((out / f"{name}.json").read_text())["machine"]
            assert made["git_commit"] and made["cpu"], name
    finally:
        shutil.rmtree(out, ignore_errors=True)
