#!/usr/bin/env python
"""Regenerate every figure and table of paper_figs/ with one command.

    python paper_figs/make_all.py            # full run, about 10-20 min on a 2-core CPU
    python paper_figs/make_all.py --quick    # smoke run, about a minute, into a temporary folder
    python paper_figs/make_all.py --only fig1,fig4 --out /tmp/figs

Runs ``fig1_md_table`` ... ``fig6_matmul_speedup`` in order (each also runs alone:
``python paper_figs/<script>.py``), writes ``<out>/<name>.png`` plus the CSV/JSON
behind each, ``<out>/make_all.json`` (captions, run times, commit and machine) and
the gallery ``README.md`` (``paper_figs/README.md`` for the default output folder,
else ``<out>/README.md``). ``<out>`` is ``paper_figs/out`` (the published figures)
for a full run and a new temporary folder (printed) for ``--quick``, unless
``--out`` names one. A script that fails is reported and the others still run; the
exit status is 1 when any failed.
"""
from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCRIPTS = [
    ("fig1", "fig1_md_table", "Mask diversity (MD) table"),
    ("fig2", "fig2_md_vs_accuracy", "Mask diversity vs accuracy (small-scale training)"),
    ("fig3", "fig3_solver_runtime", "Solver run time vs matrix size"),
    ("fig4", "fig4_approx_quality", "Approximation quality per tile"),
    ("fig5", "fig5_adaprune", "AdaPrune: post-training conversion to N:M"),
    ("fig6", "fig6_matmul_speedup", "Sparse matmul speed-up (GPU)"),
    ("fig7", "fig7_llm_perplexity", "One-shot pruning of a language model: perplexity (from bench/llm.py)"),
]


def gallery(results: list[dict], out: Path, readme: Path, quick: bool, total_s: float) -> str:
    try:
        rel = out.resolve().relative_to(readme.parent.resolve()).as_posix()
    except ValueError:
        rel = out.resolve().as_posix()

    def link(f: str) -> str:
        return f if rel == "." else f"{rel}/{f}"

    info = C.machine()
    lines = [
        "# paper_figs: the paper's figures and tables, regenerated",
        "",
        "Everything here is rebuilt by one command from the repository root:",
        "",
        "```bash",
        "python paper_figs/make_all.py          # all figures, ~10-20 min on a 2-core CPU",
        "python paper_figs/make_all.py --quick  # smoke run (~1 min, tiny sizes, into a temporary folder)",
        "```",
        "",
        f"Each script also runs alone (`python paper_figs/<script>.py [--quick] [--out DIR]`) and writes "
        f"`out/<name>.png` plus the CSV/JSON behind it. Reference: Hubara et al., *Accelerated Sparse Neural "
        f"Training: A Provable and Efficient Method to Find N:M Transposable Masks*, NeurIPS 2021. "
        f"Convention: n:m keeps n of every m.",
        "",
        f"Last {'quick ' if quick else ''}run: commit {info['git_commit']}, "
        f"{info['date'][:16].replace('T', ' ')} UTC on {info['cpu']}, "
        f"{info['cores']} cores (shared with other jobs; load {(info.get('loadavg') or ['?'])[0]}), no GPU; "
        f"total {total_s / 60:.1f} min.",
        "",
    ]
    for res in results:
        key, script, title = res["key"], res["script"], res["title"]
        lines += [f"## {key.replace('fig', 'Figure ')}. {title}", ""]
        if res.get("error"):
            lines += [f"**Failed:** `{res['error']}`", ""]
            continue
        lines += [f"![{title}]({link(res['png'])})", "",
                  f"Command: `python paper_figs/{script}.py` ({res['seconds']:.0f} s). "
                  f"Data: {', '.join(f'[{f}]({link(f)})' for f in res['files'] if not f.endswith('.png'))}.", "",
                  res["caption"], ""]
        if script == "fig1_md_table" and (out / "fig1_md_table.md").exists():
            lines += ["50 % sparsity, 4096 x 4096 layer:", "", (out / "fig1_md_table.md").read_text().strip(), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated subset, e.g. fig1,fig4")
    args = ap.parse_args(argv)
    out = C.out_dir(args)
    todo = [s for s in SCRIPTS if args.only is None or s[0] in args.only.split(",") or s[1] in args.only.split(",")]
    passthrough = (["--quick"] if args.quick else []) + ["--out", str(out), "--seed", str(args.seed)]
    results = []
    t_all = time.perf_counter()
    for key, script, title in todo:
        print(f"==> {script} {' '.join(passthrough)}", flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(script)
            res = mod.main(passthrough)
            res.update(key=key, script=script, title=title, seconds=round(time.perf_counter() - t0, 1))
        except Exception as exc:  # report and go on with the others
            traceback.print_exc()
            res = {"key": key, "script": script, "title": title, "error": f"{type(exc).__name__}: {exc}",
                   "seconds": round(time.perf_counter() - t0, 1)}
        results.append(res)
        print(f"<== {script}: {res['seconds']:.0f} s{' FAILED' if res.get('error') else ''}", flush=True)
    total = time.perf_counter() - t_all
    C.save_json({"quick": args.quick, "total_s": total, "machine": C.machine(), "figures": results}, out, "make_all")
    readme = C.HERE / "README.md" if out.resolve() == C.OUT_DIR.resolve() else out / "README.md"
    if args.only is None:
        readme.write_text(gallery(results, out, readme, args.quick, total))
        print(f"gallery: {readme}")
    print(f"total {total:.0f} s ({total / 60:.1f} min)")
    for r in results:
        print(f"  {r['script']:<22} {r['seconds']:7.1f} s  {'FAILED: ' + r['error'] if r.get('error') else 'ok'}")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
