#!/usr/bin/env python
"""Figure 7: perplexity of SmolLM2-135M pruned one-shot to each N:M structure, from ``bench/llm.py``.

    python paper_figs/fig7_llm_perplexity.py [--quick] [--out DIR] [--results FILE]

Reads ``bench/results/llm.json`` (or ``--results``), written by ``python bench/llm.py``,
and plots the evaluation perplexity (log scale) against the structure, one line per
saliency/update rule (magnitude, Wanda, SparseGPT-style), with the dense model as a
dashed line, and SparseGPT-style with act order (stripes by descending input
energy) as a dashed line. Otherwise only the main table's rows (calibration statistics
from the dense model, masks chosen per stripe) are drawn. Writes ``fig7_llm_perplexity.png``, ``.csv``
and ``.json``. Without a results file the figure says how to make one.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _common import plt  # noqa: E402

NAME = "fig7_llm_perplexity"
RULES = (("magnitude", "magnitude", "o", C.COLORS["nm"]),
         ("wanda", "Wanda", "s", C.COLORS["unstructured"]),
         ("sparsegpt", "SparseGPT-style (OBS)", "D", C.COLORS["transposable"]))
MISSING = "No bench/llm.py results yet: run python bench/llm.py"


def main_rows(doc: dict) -> list[dict]:
    return [r for r in doc.get("rows", []) if r.get("calib") == "dense" and r.get("order", "natural") == "natural"
            and not r.get("permute") and (r.get("scope") == "stripe" or r.get("method") == "ot")
            and (r.get("keep") == "exactly" or r.get("method") == "ot")]


def admm_rows(doc: dict) -> dict:
    """Perplexity by structure label of the ADMM rows (a variant of bench/llm.py: one mask per layer)."""
    return {r["label"]: r["ppl"] for r in doc.get("rows", []) if r.get("rule") == "admm" and r.get("calib") == "dense"
            and r.get("keep") == "exactly" and not r.get("permute")}


def plot(doc: dict, out: Path):
    rows = main_rows(doc)
    labels = []
    for r in rows:
        if r["label"] not in labels:
            labels.append(r["label"])
    fig, ax = plt.subplots(figsize=(10, 4.6))
    x = range(len(labels))
    for rule, title, marker, color in RULES:
        pts = {r["label"]: r["ppl"] for r in rows if r["rule"] == rule}
        xs = [i for i, lab in enumerate(labels) if lab in pts]
        ax.plot(xs, [pts[labels[i]] for i in xs], marker=marker, color=color, label=title, lw=1.4)
    act = {r["label"]: r["ppl"] for r in doc.get("rows", []) if r.get("order") == "act" and r["rule"] == "sparsegpt"
           and r.get("calib") == "dense"}
    xs = [i for i, lab in enumerate(labels) if lab in act]
    if xs:
        ax.plot(xs, [act[labels[i]] for i in xs], marker="D", mfc="white", ls="--", color=C.COLORS["transposable"],
                label="SparseGPT-style, act order", lw=1.2)
    admm = admm_rows(doc)
    xs = [i for i, lab in enumerate(labels) if lab in admm]
    if xs:
        ax.plot(xs, [admm[labels[i]] for i in xs], marker="*", ms=10, ls=":", color="black",
                label="ADMM (mask and weights together)", lw=1.2)
    dense = doc.get("dense_ppl")
    if dense:
        ax.axhline(dense, color=C.COLORS["dense"], ls="--", lw=1, label=f"dense ({dense:.1f})")
    ax.set_yscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=35, ha="right")
    ax.set_ylabel("evaluation perplexity (log scale)")
    data = doc.get("data", {})
    ax.set_title(f"SmolLM2-135M, one-shot 50 % sparsity: perplexity on {data.get('eval_tokens', '?')} held-out "
                 f"tokens of Shakespeare\n(calibration {data.get('nsamples', '?')} x {data.get('seq_len', '?')} "
                 "tokens; -T = transposable; lower is better)")
    ax.legend(loc="upper left")
    return C.save_fig(fig, out, NAME)


def plot_missing(out: Path):
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.axis("off")
    ax.text(0.5, 0.5, MISSING, ha="center", va="center", fontsize=12)
    return C.save_fig(fig, out, NAME)


def main(argv=None) -> dict:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=C.ROOT / "bench" / "results" / "llm.json",
                    help="bench/llm.py JSON (default bench/results/llm.json)")
    args = ap.parse_args(argv)
    out = C.out_dir(args)
    with C.Timer() as t:
        if not args.results.exists():
            plot_missing(out)
            C.save_json({"available": False, "message": MISSING}, out, NAME)
            caption = MISSING
            available = False
        else:
            doc = json.loads(args.results.read_text())
            rows = main_rows(doc)
            keep = ("rule", "label", "structure", "method", "keep", "ppl", "kept_saliency", "kept_l1",
                    "mean_rel_error", "prune_s")
            table = [{k: r.get(k) for k in keep} for r in rows]
            C.save_csv(table, out, NAME)
            C.save_json({"available": True, "source": str(args.results.name), "dense_ppl": doc.get("dense_ppl"),
                         "data": doc.get("data"), "goals": doc.get("goals"), "rows": table,
                         "bench_provenance": doc.get("provenance")}, out, NAME)
            plot(doc, out)
            best = {}
            for r in rows:
                if r["label"] in ("2:4", "2:4-T exact", "4:8", "4:8-T exact") and r["rule"] == "sparsegpt":
                    best[r["label"]] = r["ppl"]
            admm = {k: v for k, v in admm_rows(doc).items() if k in ("2:4", "2:4-T exact", "4:8", "4:8-T exact")}
            caption = (f"Perplexity of SmolLM2-135M after one-shot pruning (dense {doc.get('dense_ppl', 0):.1f})"
                       + ("; SparseGPT-style " + ", ".join(f"{k} {v:.1f}" for k, v in best.items()) if best else "")
                       + ("; ADMM " + ", ".join(f"{k} {v:.1f}" for k, v in admm.items()) if admm else "")
                       + ".")
            available = True
    print(caption)
    return C.result(NAME, out, caption, t.s, available=available)


if __name__ == "__main__":
    main()
