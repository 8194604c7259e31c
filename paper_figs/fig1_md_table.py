#!/usr/bin/env python
"""Figure 1: mask diversity (MD) of unstructured, N:M, transposable N:M and block masks at equal sparsity.

    python paper_figs/fig1_md_table.py [--quick] [--out DIR] [--shape 4096x4096]

MD is the number of masks a structure allows on one layer at a given sparsity
(Hubara et al. 2021, Sec. 3), computed exactly in log10 by :mod:`transmask.diversity`:
unstructured C(T, T/2), row-wise N:M C(m,n)^(T/m), transposable N:M K(m,n)^(T/m^2),
b x b blocks C(T/b^2, T/2b^2). Two sparsities: 50 % (1:2, 2:4, 4:8, 8:16) and 75 %
(1:4, 2:8, 4:16; n = number kept of every m). Bars show log10 MD per weight, which does
not depend on the layer size; the total log10 MD of the layer is written next to each bar.

Writes ``fig1_md_table.png``, ``.csv`` (all rows), ``.json`` (rows + the exact integer MD
of one 8 x 8 tile for 2:4 / 4:8) and ``.md`` (the markdown table of the 50 % rows).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _common import plt  # noqa: E402

NAME = "fig1_md_table"
SPARSITIES = {
    "50%": ((1, 2), (2, 4), (4, 8), (8, 16)),
    "75%": ((1, 4), (2, 8), (4, 16)),
}


def build_rows(shape, block_sizes=(2, 4, 8)):
    from transmask import diversity as d

    rows = []
    for label, ratios in SPARSITIES.items():
        for r in d.md_table(shape, ratios, block_sizes=block_sizes):
            r = dict(r)
            r.pop("md", None)
            r["shape"] = list(shape)
            rows.append(r)
    return rows


def plot(rows, shape, out):
    fig, axes = plt.subplots(1, len(SPARSITIES), figsize=(12, 5.2), sharex=True)
    for ax, (label, _) in zip(axes, SPARSITIES.items()):
        sub = [r for r in rows if abs(r["sparsity"] - float(label[:-1]) / 100) < 1e-9]
        sub.sort(key=lambda r: r["log10_md"])
        y = range(len(sub))
        vals = [r["log10_md_per_weight"] for r in sub]
        ax.barh(list(y), vals, color=[C.COLORS[r["structure"]] for r in sub])
        ax.set_yticks(list(y), [r["label"].replace(f" {100 - float(label[:-1]):g}%", "") for r in sub])
        for yi, r in zip(y, sub):
            approx = "" if r["exact_log10"] else "~"
            ax.text(r["log10_md_per_weight"] + 0.003, yi, f"{approx}{r['log10_md']:,.0f}", va="center", fontsize=8)
        ax.set_title(f"{label} sparsity ({100 - float(label[:-1]):g}% of weights kept)")
        ax.set_xlabel("log10 MD per weight (decimal digits per weight)")
        ax.set_xlim(0, max(vals) * 1.35)
        ax.grid(axis="y", visible=False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=C.COLORS[s]) for s in ("unstructured", "nm", "transposable", "block")]
    axes[-1].legend(handles, ["unstructured", "row-wise N:M", "transposable N:M (-T)", "b x b blocks"],
                    loc="lower right")
    fig.suptitle(f"Mask diversity at equal sparsity, {shape[0]}x{shape[1]} layer "
                 f"(number at bar end: total log10 MD of the layer)")
    fig.tight_layout()
    return C.save_fig(fig, out, NAME)


def main(argv=None) -> dict:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="4096x4096", help="layer shape ROWSxCOLS (default 4096x4096, as the paper)")
    args = ap.parse_args(argv)
    out = C.out_dir(args)
    from transmask import diversity as d

    with C.Timer() as t:
        shape = (64, 64) if args.quick else tuple(int(s) for s in args.shape.lower().split("x"))
        rows = build_rows(shape)
        tile = d.md_table((8, 8), ((2, 4), (4, 8)), block_sizes=(2,), exact=True)
        C.save_csv(rows, out, NAME)
        C.save_json({"shape": list(shape), "rows": rows,
                     "one_8x8_tile_exact": [{"label": r["label"], "md": str(r["md"])} for r in tile],
                     "K": {"K(4,2)": d.transposable_tile_count(4, 2), "K(8,4)": d.transposable_tile_count(8, 4)},
                     "machine": C.machine()}, out, NAME)
        fifty = [r for r in rows if r["sparsity"] == 0.5]
        (out / f"{NAME}.md").write_text(d.md_table_markdown(fifty) + "\n")
        plot(rows, shape, out)
    by = {r["label"]: r for r in rows}
    caption = (f"Mask diversity of a {shape[0]}x{shape[1]} layer. At 50% sparsity, log10 MD per weight: "
               + ", ".join(f"{k} {by[k]['log10_md_per_weight']:.3f}" for k in
                           ("unstructured 50%", "4:8", "2:4", "4:8-T", "2:4-T", "block 4x4 50%") if k in by)
               + ". Transposable 4:8 keeps more diversity than plain 1:2 and than 2:4-T, as the paper argues; "
                 "exact combinatorics (K(4,2)=90, K(8,4)=116963796250), computed in about a second.")
    print(caption)
    return C.result(NAME, out, caption, t.s)


if __name__ == "__main__":
    main()
