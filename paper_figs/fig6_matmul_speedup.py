#!/usr/bin/env python
"""Figure 6: sparse N:M Linear speed-up over dense cuBLAS, from the GPU check (GPU only).

    python paper_figs/fig6_matmul_speedup.py [--quick] [--out DIR] [--results DIR]

Reads ``gpu.json`` in ``bench/results/`` (or ``--results``), written by ``python bench/gpu_check.py``
on a CUDA machine (older ``matmul_<device>.json`` files from ``bench/matmul.py`` are read too),
and plots the speed-up ``t_dense / t_method`` (> 1 is faster than dense cuBLAS) against the
number of tokens, one panel per product -- forward ``X @ W.T``, backward ``dY @ W``, weight
gradient, full training step -- and one panel row per weight shape. Lines: what
``SparseLinear`` runs (``ours``), the Triton kernel forced at every token count, expansion +
cuBLAS, and PyTorch's hardware 2:4 path (``to_sparse_semi_structured``). CPU smoke and dry-run
files are ignored.

When no GPU result exists the figure says so and the JSON records ``"available": false``.

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
NO_GPU = "No GPU result available: run python bench/gpu_check.py on a CUDA machine"
OP_ORDER = ("fwd", "bwd", "dw", "step", "fwd+bwd")
OP_TITLES = {"fwd": "forward  Y = X W^T", "bwd": "backward  dX = dY W", "dw": "weight gradient (kept entries)",
             "step": "training step (autograd)", "fwd+bwd": "forward + backward"}
LINES = (("ours_speedup", "ours (what SparseLinear runs)", "ours:exact", "o", "-"),
         ("triton_speedup", "Triton kernel, every T", "ours:approx", "^", ":"),
         ("expand_speedup", "expand + cuBLAS", "ours:lp", "v", ":"),
         ("hw_speedup", "2:4 hw (to_sparse_semi_structured)", "ortools", "s", "--"))
_NOT_GPU = ("cpu-smoke", "dry-run-cpu")


def _usable(meta, rows) -> bool:
    return meta.get("device", "cpu-smoke") not in _NOT_GPU and bool(rows)


def load_results(folder: Path) -> list[dict]:
    """GPU result sets in ``folder``: ``gpu.json`` first, then legacy ``matmul_*.json``."""
    found = []
    folder = Path(folder)
    gpu = folder / "gpu.json"
    if gpu.exists():
        try:
            rep = json.loads(gpu.read_text())
            mm = rep.get("matmul", {})
            meta = {**mm.get("meta", {}), **{k: v for k, v in rep.get("environment", {}).items() if k != "date"}}
            meta.setdefault("date", rep.get("environment", {}).get("date", ""))
            rows = [r for r in mm.get("rows", []) if r.get("op") in OP_ORDER]
            if _usable(meta, rows):
                found.append({"path": gpu, "meta": meta, "results": rows})
        except (OSError, ValueError):
            pass
    for path in sorted(folder.glob("matmul_*.json")):
        try:
            rep = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        meta = rep.get("meta", {})
        rows = [r for r in rep.get("results", []) if r.get("op") in OP_ORDER]
        if _usable(meta, rows) and not any(f["meta"].get("device") == meta.get("device") for f in found):
            found.append({"path": path, "meta": meta, "results": rows})
    return found


def plot_none(out: Path, folder: Path):
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.axis("off")
    ax.text(0.5, 0.6, NO_GPU, ha="center", va="center", fontsize=12, wrap=True)
    ax.text(0.5, 0.3, f"(no gpu.json from a GPU in {folder}; this machine has no CUDA GPU)",
            ha="center", va="center", fontsize=9, color="0.35")
    ax.set_title("Sparse N:M Linear speed-up over dense cuBLAS")
    return C.save_fig(fig, out, NAME)


def plot_results(found: list[dict], out: Path):
    panels = []
    for f in found:
        for r in f["results"]:
            key = (f["meta"]["device"], tuple(r["shape"]))
            if key not in panels:
                panels.append(key)
    ops = [op for op in OP_ORDER if any(r["op"] == op for f in found for r in f["results"])]
    fig, axes = plt.subplots(len(panels), len(ops), figsize=(4.0 * len(ops), 3.3 * len(panels)),
                             squeeze=False, sharey=True)
    for i, (dev, shape) in enumerate(panels):
        f = next(f for f in found if f["meta"]["device"] == dev)
        meta = f["meta"]
        for j, op in enumerate(ops):
            ax = axes[i][j]
            rs = sorted((r for r in f["results"] if tuple(r["shape"]) == shape and r["op"] == op),
                        key=lambda r: r["tokens"])
            for key, lab, col, mk, ls in LINES:
                pts = [(r["tokens"], r[key]) for r in rs if r.get(key)]
                if pts:
                    ax.plot(*zip(*pts), marker=mk, ls=ls, color=C.COLORS.get(col, None), label=lab)
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            if op in ("fwd", "bwd"):
                ax.axhline(1.5, color="0.6", lw=0.6, ls=":")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{OP_TITLES[op]}\nW {shape[0]}x{shape[1]}, {dev}", fontsize=9)
            ax.set_xlabel("tokens (rows of X)")
            if j == 0:
                ax.set_ylabel("speed-up over dense (x)")
    axes[0][0].legend(fontsize=7)
    metas = "; ".join(f"{f['meta']['device']}, {f['meta'].get('dtype')} {f['meta'].get('n')}:{f['meta'].get('m')}, "
                      f"torch {f['meta'].get('torch')}, triton {f['meta'].get('triton')}, "
                      f"{str(f['meta'].get('date', ''))[:10]}" for f in found)
    fig.suptitle(f"N:M sparse Linear speed-up over dense cuBLAS (> 1 is faster; {metas})", fontsize=10)
    fig.tight_layout()
    return C.save_fig(fig, out, NAME)


def main(argv=None) -> dict:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=C.ROOT / "bench" / "results",
                    help="folder with bench/gpu_check.py's gpu.json (default bench/results)")
    args = ap.parse_args(argv)
    out = C.out_dir(args)
    with C.Timer() as t:
        found = load_results(args.results)
        folder = args.results.resolve()
        shown = str(folder.relative_to(C.ROOT)) if folder.is_relative_to(C.ROOT) else str(folder)
        if not found:
            plot_none(out, shown)
            C.save_json({"available": False, "message": NO_GPU, "searched": f"{shown}/gpu.json, {shown}/matmul_*.json",
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
            caption = (f"N:M sparse Linear speed-up over dense from {', '.join(f['path'].name for f in found)}"
                       + (f"; best ours {best['ours_speedup']:.2f}x ({best['op']}, {best['shape']}, "
                          f"{best['tokens']} tokens)" if best else "") + ".")
    print(caption)
    return C.result(NAME, out, caption, t.s, available=bool(found))


if __name__ == "__main__":
    main()
