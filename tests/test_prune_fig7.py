"""paper_figs/fig7_llm_perplexity.py and bench/llm.py's table writer, on a small synthetic results file."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    for folder in (str(path.parent), str(ROOT)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_doc(bench):
    rows = []
    ppl = {"magnitude": 2000.0, "wanda": 200.0, "sparsegpt": 100.0, "admm": 90.0}
    for k, r in enumerate(bench.all_rows(quick=False)):
        if r["calib"] != "dense" or r["rule"] == "wanda" and r["structure"] == "unstructured":
            continue  # leave some cells empty: the writer must cope
        rows.append(dict(r, label=bench.structure_label(r), ppl=ppl[r["rule"]] * (1 + k / 100), kept_saliency=0.7,
                         kept_l1=0.7, density=0.5, mean_rel_error=0.3, prune_s=10.0, eval_s=5.0))
    return {"command": "python bench/llm.py", "provenance": {"cpu": "test", "git_commit": "abc", "loadavg": [1, 1, 1]},
            "loadavg_end": [1, 1, 1], "versions": {"torch": "x"},
            "model": {"name": "tiny", "parameters": 1e6, "blocks": 2, "pruned_layers": 14, "pruned_parameters": 5e5},
            "data": {"source": "text", "nsamples": 4, "seq_len": 8, "seed": 0, "calibration_works": ["a"],
                     "evaluation_works": ["b"], "eval_tokens": 64, "eval_seq_len": 32},
            "dense_ppl": 40.0, "rows": rows, "goals": bench.goals(rows)}


def test_bench_table_and_figure(tmp_path):
    bench = load(ROOT / "bench" / "llm.py", "bench_llm")
    doc = fake_doc(bench)
    assert any("2:4-T / 2:4 (dense calibration)" in k for k in doc["goals"])
    assert any("act order" in k for k in doc["goals"])
    assert any(k.startswith("ADMM 2:4-T / SparseGPT 2:4") for k in doc["goals"])
    assert any(k.startswith("ADMM 4:8-T / ADMM 4:8") for k in doc["goals"])
    bench.write_markdown(doc, tmp_path / "llm.md")
    md = (tmp_path / "llm.md").read_text()
    assert "| 2:4-T exact |" in md and "| 8:16-T approx |" in md and "Variants:" in md and "†" in md
    main_lines = [line for line in md.splitlines() if line.startswith("| 2:4-T OT peer |")]
    assert len(main_lines) == 1 and main_lines[0].count("**") == 6  # magnitude, Wanda and SparseGPT cells
    results = tmp_path / "llm.json"
    results.write_text(json.dumps(doc))
    fig = load(ROOT / "paper_figs" / "fig7_llm_perplexity.py", "paper_figs_fig7")
    res = fig.main(["--out", str(tmp_path / "figs"), "--results", str(results)])
    assert res["available"] and (tmp_path / "figs" / "fig7_llm_perplexity.png").stat().st_size > 10_000
    assert "ADMM 2:4" in res["caption"]
    saved = json.loads((tmp_path / "figs" / "fig7_llm_perplexity.json").read_text())
    assert {r["rule"] for r in saved["rows"]} == {"magnitude", "wanda", "sparsegpt"}
    assert all(r["calib"] == "dense" for r in doc["rows"] if r["label"] in {x["label"] for x in saved["rows"]})
    # one point per rule and structure: the variants (permuted channels, act order, ADMM) are not main rows
    assert len({(r["rule"], r["label"]) for r in saved["rows"]}) == len(saved["rows"])
    res = fig.main(["--quick", "--out", str(tmp_path / "none"), "--results", str(tmp_path / "missing.json")])
    assert not res["available"] and (tmp_path / "none" / "fig7_llm_perplexity.png").exists()
