#!/usr/bin/env python
"""Figure 6: sparse N:M matmul speed-up over dense, from ``bench/matmul.py`` results (GPU only).

    python paper_figs/fig6_matmul_speedup.py [--quick] [--out DIR] [--results DIR]

Reads every ``matmul_<device>.json`` in ``bench/results/`` (or ``--results``), written by
``python bench/matmul.py`` on a CUDA machine, and plots the speed-up ``t_dense / t_method``
(> 1 is faster than dense cuBLAS) against the number of tokens for the forward ``X @ W.T``,
the backward ``dY @ W`` and their sum, for our Triton N:M kernel (``ours``) and PyTorch's
hardware 2:4 path (``to_sparse_semi_structured``, ``2:4-hw``), one panel row per weight
shape. CPU smoke-test files (``"device": "cpu-smoke"``) are ignored.

When no GPU result exists the figure says so ("No GPU result available: run python
bench/matmul.py on a CUDA machine") and the JSON records ``"available": false``.

Writes ``fig6_matmul_speedup.png``, ``.json`` and (with results) ``.csv``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _common import plt  # noqa: E402

NAME = "fig6_matmul_speedup"
NO_GPU = "No GPU result available: run python bench/matmul.py on a CUDA machine"
OPS = ("fwd", "bwd", "fwd+bwd")
OP_TITLES = {"fwd": "forward  Y = X W^T", "bwd": "backward  dX = dY W", "fwd+bwd": "forward + backward"}


def load_results(folder: Path) -> list[dict]:
    found = []
    for path in sorted(Path(folder).glob("matmul_*.json")):
        try:
            rep = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        meta = rep.get("meta", {})
        if meta.get("device", "cpu-smoke") == "cpu-smoke" or not rep.get("results"):
            continue
        found.append({"path": path, "meta": meta, "results": rep["results"]})
    return found


def plot_none(out: Path, folder: Path):
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.axis("off")
    ax.text(0.5, 0.6, NO_GPU, ha="center", va="center", fontsize=12, wrap=True)
    ax.text(0.5, 0.3, f"(no matmul_<device>.json from a GPU in {folder}; this machine has no CUDA GPU)",
            ha="center", va="center", fontsize=9, color="0.35")
    ax.set_title("Sparse N:M matmul speed-up over dense cuBLAS")
    return C.save_fig(fig, out, NAME)


def plot_results(found: list[dict], out: Path):
    shapes = []
    for f in found:
        for r in f["results"]:
            key = (f["meta"]["device"], tuple(r["shape"]))
            if key not in shapes:
                shapes.append(key)
    fig, axes = plt.subplots(len(shapes), len(OPS), figsize=(4.3 * len(OPS), 3.4 * len(shapes)),
                             squeeze=False, sharey=True)
    for i, (dev, shape) in enumerate(shapes):
        f = next(f for f in found if f["meta"]["device"] == dev)
        meta = f["meta"]
        for j, op in enumerate(OPS):
            ax = axes[i][j]
            rs = sorted((r for r in f["results"] if tuple(r["shape"]) == shape and r["op"] == op),
                        key=lambda r: r["tokens"])
            for key, lab, col, mk in (("ours_speedup", f"ours (Triton {meta.get('n')}:{meta.get('m')})",
                                       C.COLORS["ours:exact"], "o"),
                                      ("hw_speedup", "2:4-hw (to_sparse_semi_structured)", C.COLORS["ortools"], "s")):
                pts = [(r["tokens"], r[key]) for r in rs if r.get(key)]
                if pts:
                    ax.plot(*zip(*pts), marker=mk, color=col, label=lab)
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{OP_TITLES[op]}\nW {shape[0]}x{shape[1]}, {dev}", fontsize=9)
            ax.set_xlabel("tokens (rows of X)")
            if j == 0:
                ax.set_ylabel("speed-up over dense (x)")
    axes[0][-1].legend(fontsize=8)
    metas = "; ".join(f"{f['meta']['device']}, {f['meta'].get('dtype')}, torch {f['meta'].get('torch')}, "
                      f"triton {f['meta'].get('triton')}, {f['meta'].get('date', '')[:10]}" for f in found)
    fig.suptitle(f"N:M matmul speed-up over dense cuBLAS (> 1 is faster; {metas})", fontsize=10)
    fig.tight_layout()
    return C.save_fig(fig, out, NAME)


def main(argv=None) -> dict:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=C.ROOT / "bench" / "results",
                    help="folder with bench/matmul.py JSON files (default bench/results)")
    args = ap.parse_args(argv)
    out = C.out_dir(args)
    with C.Timer() as t:
        found = load_results(args.results)
        folder = args.results.resolve()
        shown = str(folder.relative_to(C.ROOT)) if folder.is_relative_to(C.ROOT) else str(folder)
        if not found:
            plot_none(out, shown)
            C.save_json({"available": False, "message": NO_GPU, "searched": f"{shown}/matmul_*.json",
                         "machine": C.machine()}, out, NAME)
            caption = NO_GPU + " (this machine has no CUDA GPU; the figure is a placeholder)."
        else:
            rows = [{"device": f["meta"]["device"], **r, "shape": "x".join(map(str, r["shape"]))}
                    for f in found for r in f["results"]]
            C.save_csv(rows, out, NAME)
            C.save_json({"available": True, "sources": [str(f["path"].name) for f in found],
                         "meta": [f["meta"] for f in found], "rows": rows}, out, NAME)
            plot_results(found, out)
            best = max((r for r in rows if r.get("ours_speedup")), key=lambda r: r["ours_speedup"], default=None)
            caption = (f"N:M matmul speed-up over dense from {', '.join(f['path'].name for f in found)}"
                       + (f"; best ours {best['ours_speedup']:.2f}x ({best['op']}, {best['shape']}, "
                          f"{best['tokens']} tokens)" if best else "") + ".")
    print(caption)
    return C.result(NAME, out, caption, t.s, available=bool(found))


if __name__ == "__main__":
    main()
