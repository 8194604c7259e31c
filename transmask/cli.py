"""The ``transmask`` command line: masks for whole checkpoints, mask diversity, the solver bench, the demo.

Usage (``python -m transmask`` works the same)::

    transmask mask CHECKPOINT -n 2 -m 4 [--method exact|approx|lp] [--keep exactly|at_most]
                   [--no-transposable] [--include GLOB] [--exclude GLOB] [--min-numel K]
                   [--include-embeddings] [--pruned PRUNED] [--json] [--quiet] -o OUT
    transmask diversity -n 4 -m 8 [--size ROWS COLS]
    transmask bench [ARGS...]          # bench/solvers.py of a source checkout, e.g. --quick
    transmask demo [ARGS...]           # transmask.demo.main(ARGS)

This module is argument parsing and printing only: reading checkpoints,
choosing the weights to mask and writing outputs atomically live in
:mod:`transmask.io`, the masks in :mod:`transmask.masks`.

Errors are one line on stderr with a non-zero exit status: 1 the run failed
(nothing written), 2 bad arguments, 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM); an interrupted or failed run leaves no partial output.

Adding a subcommand: write ``add_NAME_parser(subparsers)`` (it adds the
parser and ``set_defaults(func=cmd_NAME)``) and ``cmd_NAME(args) -> int``, and
append ``add_NAME_parser`` to :data:`SUBCOMMANDS`. Raise :class:`CLIError` for
a one-line error; :class:`~transmask.io.CheckpointError`, a missing optional
dependency (ImportError), OSError, KeyboardInterrupt and SIGTERM are turned
into one line and an exit status by :func:`main`. A subcommand that hands its
arguments to another program registers with :func:`_add_passthrough` instead.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .io import (CATEGORY_LABELS, OUTPUT_FORMATS, CheckpointError, CheckpointNote, Entry, OutputGroup, SelectionRules,
                 TensorRef, TensorWriter, check_output_path, one_line, open_output, quote, read_checkpoint, select_weights, to_float)
from .views import view_to_weight, weight_to_2d

__all__ = ["main", "build_parser", "SUBCOMMANDS", "CLIError"]

PROG = "transmask"

# Exit statuses.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

# Warm-up solves (which compile or load the Numba kernels outside the timed region) run on one tile of at most
# this side; a larger m is not warmed up (its solve dwarfs the compilation anyway).
_WARM_UP_MAX_M = 64


class CLIError(Exception):
    """A failure reported to the user as one line, with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so that outputs are cleaned up as on Ctrl-C."""


# --------------------------------------------------------------------------------------
# `transmask mask`
# --------------------------------------------------------------------------------------
_MASK_EPILOG = """\
formats:
  input   .npy (one array, memory-mapped; named after the file), .npz (uncompressed members
          memory-mapped; members of np.savez_compressed files are decompressed one at a time),
          .safetensors (memory-mapped, bf16 widened to float32 per tensor), torch state_dicts
          .pt/.pth/.bin/.ckpt (torch.load with mmap=True, weights_only=True; nested dicts
          flattened with dots, so a training checkpoint's optimizer state shows up too: select
          with --include 'model.*'), a sharded checkpoint's model.safetensors.index.json (every
          shard read lazily), or a Hugging Face model directory (its model.safetensors[.index.json]
          or pytorch_model.bin[.index.json]).
  output  by the suffix of OUT: .safetensors (default for any other suffix), .npz, .npy (one
          tensor only), .pt/.pth/.bin. Masks are bool tensors named like the weights, in the
          weights' original shape; the safetensors metadata records n, m, method and keep.
          safetensors and .npz outputs are streamed one tensor at a time; torch outputs are
          built in memory.
  pruned  --pruned writes every tensor of the checkpoint, masked ones multiplied by their mask,
          in their original dtypes (bf16 as float32 in .npz/.npy) into one file; nested torch
          dicts come out flat, with dotted names.

which tensors:
  the matmul weights, which sparse tensor cores speed up: floating-point tensors that are 2-D
  (Linear) or conv weights (3-D to 5-D), whose names (in a state dict) end in 'weight', with
  at least --min-numel elements. Skipped by default, and said so in the summary: embedding
  tables (*embed*, wte, wpe, word/position/token_type_embeddings, ...) and output heads tied
  to them (lm_head sharing the embedding's data, or tie_word_embeddings in the config.json
  beside the checkpoint); --include-embeddings masks them too. --include/--exclude globs
  (fnmatch syntax, e.g. '*.attn.*' or 'model.layers.*.mlp.*') narrow the selection. A 2-D
  weight is masked as stored, rows = first dimension (nn.Linear's (out, in)); for weights
  stored (in, out), like GPT-2's Conv1D, a transposable mask suits both orientations but
  --no-transposable groups along the other dimension.

conv weights:
  a conv weight (out, in, *kernel) is masked in the channels-last 2-D view
  (out, prod(kernel) * in), i.e. w.permute(0, 2, 3, 1).reshape(out, -1) for a Conv2d; groups of m
  are m input channels at one kernel position. The mask is written back in the original
  (out, in, *kernel) shape.

conventions:
  n is the number KEPT of every m (2:4 keeps 2 of 4). Transposable masks keep n per row and per
  column of every m x m tile, so W and W.T are both n:m sparse. The table's "kept L1" is the
  fraction of |W| kept, "valid" checks the pattern ("-" with --no-check), "time" is the
  solver's time (after a warm-up call on one small tile that compiles or loads the kernels).
  An m larger than a tensor makes it one partial tile (at most n per row and column); the
  solver then works on the tensor's size, not on m x m.

guarantees:
  outputs are written to a temporary file in the target's directory, flushed to disk and
  renamed into place only when every tensor succeeded: an error, Ctrl-C or SIGTERM leaves no
  partial file, and an existing output stays as it was. Refused before anything is written:
  outputs that exist and are not regular files (directories, FIFOs, devices), an output that
  is the checkpoint, tensor names that collide after flattening or that the output format
  cannot store (a NUL in a .npz member name), dtypes the output format cannot hold, and
  malformed or truncated checkpoints (safetensors headers are checked as strictly as the
  safetensors library checks them). Pickles are never executed.

exit status: 0 success, 1 failure (missing file, unknown format, NaN in a tensor, ...; no output
  file is left behind), 2 bad arguments, 130 interrupted, 143 terminated.

example:
  transmask mask model.safetensors -n 2 -m 4 -o masks.safetensors
"""


def add_mask_parser(subparsers) -> argparse.ArgumentParser:
    from .solvers import REGISTRY

    p = subparsers.add_parser(
        "mask", help="compute masks for the matmul weights of a checkpoint",
        description="Compute an N:M (by default transposable) mask for every matmul weight of a checkpoint,\n"
                    "reading one tensor at a time, and write the masks (and optionally the pruned checkpoint).",
        epilog=_MASK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a .npy, .npz, .safetensors or torch .pt/.pth/.bin file, a *.index.json, or a model directory")
    p.add_argument("-n", type=int, default=2, help="weights kept of every m (default 2)")
    p.add_argument("-m", type=int, default=4, help="group size and tile side (default 4)")
    p.add_argument("--method", choices=sorted(REGISTRY), default="exact",
                   help="solver: exact (optimal, default), approx (the paper's 2-approximation), lp (slow reference)")
    p.add_argument("--keep", choices=("exactly", "at_most"), default="exactly",
                   help="keep exactly n (density n/m, default) or at most n per tile-row/column")
    p.add_argument("--no-transposable", action="store_true",
                   help="plain row-wise N:M masks (transmask.nm_mask) instead of transposable ones")
    p.add_argument("--permute", action="store_true",
                   help="first permute the hidden units of every MLP found by name (Llama gate/up/down, fc1/fc2, "
                        "BERT intermediate/output) so the transposable masks keep more, without changing the "
                        "model's function; the permutations go to OUT's stem + .permutations.json, and --pruned "
                        "writes the permuted tensors")
    p.add_argument("--permute-sweeps", type=int, default=6, metavar="S",
                   help="sweeps of the permutation search (default 6; more is slower and keeps a little more)")
    p.add_argument("--permute-seed", type=int, default=0, metavar="SEED",
                   help="seed of the permutation search (default 0; the search is deterministic per seed)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="where to write the masks; the format follows the suffix (.safetensors by default)")
    p.add_argument("--format", choices=OUTPUT_FORMATS,
                   help="format of OUT, overriding its suffix")
    p.add_argument("--pruned", metavar="PATH",
                   help="also write the checkpoint with the masked weights zeroed (every tensor, original dtypes; "
                        "format by suffix)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="mask only tensors whose name matches GLOB (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="do not mask tensors whose name matches GLOB (repeatable)")
    p.add_argument("--include-embeddings", action="store_true",
                   help="also mask embedding tables and the output heads tied to them (skipped by default: "
                        "they are looked up, not multiplied)")
    p.add_argument("--min-numel", type=int, default=4096, metavar="K",
                   help="skip tensors with fewer than K elements (default 4096)")
    p.add_argument("--no-conv", action="store_true", help="skip conv weights (3-D to 5-D tensors)")
    p.add_argument("--no-check", action="store_true",
                   help="skip checking each mask's pattern (is_transposable / is_nm); saves about a solve's time")
    p.add_argument("--threads", type=int, metavar="T", help="Numba threads for the solvers (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the per-tensor results as JSON instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="list the skipped tensors and why")
    p.set_defaults(func=cmd_mask)
    return p


def cmd_mask(args) -> int:
    n, m = _checked_nm(args.n, args.m)
    checkpoint_path, out, pruned = _checked_paths(args)
    _set_threads(args.threads)
    rules = SelectionRules(include=tuple(args.include), exclude=tuple(args.exclude), min_numel=args.min_numel,
                           conv=not args.no_conv, include_embeddings=args.include_embeddings)
    transposable = not args.no_transposable
    solve = _Solver(n, m, transposable, args.method, args.keep, check=not args.no_check)

    checkpoint = _read_with_notes(checkpoint_path)
    for target in filter(None, (out, pruned)):  # a shard of the input is as off-limits as the input
        if any(_same_file(target, f) for f in checkpoint.files):
            raise CLIError(f"output {target} would overwrite a file of the checkpoint being read", EXIT_USAGE)
    selected, skipped = select_weights(checkpoint.tensors, rules, checkpoint.config)
    if not selected:
        raise CLIError(f"no tensor of {checkpoint_path} was selected ({len(checkpoint.tensors)} tensors; "
                       "check --include/--exclude/--min-numel/--include-embeddings, or use -v to see why each "
                       "was skipped)")

    permutations, permutation_report = {}, {}
    if args.permute:
        permutations, permutation_report = _search_permutations(checkpoint, selected, n, m, args)

    metadata = {"format": "transmask masks", **solve.metadata, "source": checkpoint.path.name}
    if args.permute:
        metadata["permuted"] = f"hidden units of {len(permutation_report)} MLP(s); see the .permutations.json"
    rows: list[dict] = []
    selected_names = {r.name for r in selected}
    with OutputGroup() as outputs, _progress(sum(r.numel for r in selected), args.quiet) as bar:
        masks_out = outputs.add(open_output(out, [Entry(r.name, "BOOL", r.shape) for r in selected], metadata,
                                            args.format))
        pruned_out = None
        if pruned is not None:
            pruned_out = outputs.add(open_output(pruned, checkpoint.tensors,
                                                 {**metadata, "format": "transmask pruned"}))
        # Selected tensors in file order; with --pruned every tensor, also in file order.
        if args.permute:
            outputs.add(_JsonOutput(_permutations_path(out), {
                "format": "transmask permutations", "n": n, "m": m, "source": checkpoint.path.name,
                "meaning": "new hidden unit i is old unit perm[i]: rows of 'rows_of' (and 'biases'), columns of "
                           "'columns_of'; undo with argsort(perm)",
                "groups": permutation_report}))
        for ref in checkpoint.tensors if pruned_out is not None else selected:
            raw = ref.load()
            if ref.name in permutations:
                perm, axis = permutations[ref.name]
                raw = np.take(raw, perm, axis=axis)
            if ref.name not in selected_names:
                pruned_out.write(ref.name, raw)
                continue
            if bar is not None:
                bar.set_postfix_str(ref.name, refresh=False)
            mask, row = solve(ref, raw)
            masks_out.write(ref.name, mask)
            if pruned_out is not None:
                pruned_out.write(ref.name, np.where(mask, raw, np.zeros((), raw.dtype)))
            rows.append(row)
            if bar is not None:
                bar.update(ref.numel)
        outputs.commit()

    if args.json:
        _print_mask_json(args, checkpoint, out, pruned, solve, rows, skipped)
    else:
        _print_mask_report(args, checkpoint, out, pruned, solve, rows, skipped)
    return EXIT_OK


def _permutations_path(out: Path) -> Path:
    return out.with_name(out.stem + ".permutations.json")


class _JsonOutput(TensorWriter):
    """A JSON document written atomically alongside the tensor outputs (same :class:`OutputGroup`)."""

    format = "json"

    def __init__(self, path, payload: dict):
        self.payload = payload
        super().__init__(path, [])

    def _finish(self, f) -> None:
        f.write(json.dumps(self.payload, indent=1).encode())


def _search_permutations(checkpoint, selected, n: int, m: int, args) -> tuple[dict, dict]:
    """``--permute``: one hidden-unit permutation per MLP whose weights are all selected, searched on their magnitudes.

    Returns ``{tensor name: (perm, axis)}`` for every tensor to permute (biases of
    the producing layers included) and the per-MLP report for the JSON output.
    """
    from .permute.named import find_coupled_groups
    from .permute.search import search_coupled

    if args.no_transposable:
        raise CLIError("--permute searches for transposable masks; it cannot be combined with --no-transposable",
                       EXIT_USAGE)
    if args.permute_sweeps < 1:
        raise CLIError(f"--permute-sweeps must be at least 1, got {args.permute_sweeps}", EXIT_USAGE)
    refs = {r.name: r for r in checkpoint.tensors}
    selected_names = {r.name for r in selected}
    groups = [g for g in find_coupled_groups(refs) if set(g.rows_of + g.columns_of) <= selected_names]
    if not groups:
        print(f"{PROG}: note: --permute found no MLP whose weights are all selected; nothing permuted",
              file=sys.stderr)
    permutations, report = {}, {}
    for i, g in enumerate(groups, 1):
        if not args.quiet and sys.stderr.isatty():
            print(f"\rpermuting {i}/{len(groups)}: {_printable(g.prefix or '(root)')}", end="", file=sys.stderr,
                  flush=True)
        load = lambda name: weight_to_2d(to_float(refs[name].load(), refs[name].dtype))  # noqa: E731
        res = search_coupled([load(k) for k in g.rows_of], [load(k) for k in g.columns_of], n=n, m=m,
                             sweeps=args.permute_sweeps, seed=args.permute_seed)
        for name in g.rows_of + g.biases:
            permutations[name] = (res.perm, 0)
        for name in g.columns_of:
            permutations[name] = (res.perm, 1)
        report[g.prefix] = {"family": g.family, "rows_of": list(g.rows_of), "columns_of": list(g.columns_of),
                            "biases": list(g.biases), "perm": res.perm.tolist(), "kept_identity": res.kept_identity,
                            "kept": res.kept, "total": res.total, "seconds": res.seconds}
    if groups and not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    return permutations, report


class _Solver:
    """One tensor's mask: the 2-D view, the solver (warmed up once per dtype), its check and its statistics."""

    def __init__(self, n: int, m: int, transposable: bool, method: str, keep: str, check: bool):
        self.n, self.m, self.transposable, self.method, self.keep, self.check = n, m, transposable, method, keep, check
        self.pattern = f"{n}:{m} {'transposable' if transposable else 'row-wise'}"
        self.metadata = {
            "n": str(n), "m": str(m), "transposable": str(transposable).lower(),
            "method": method if transposable else "nm_mask",
            "keep": keep if transposable else "exactly",  # nm_mask keeps n of every full group
            "conv_2d_view": "(out, in, *kernel) -> (out, prod(kernel) * in), channels last",
        }
        self._warm: set = set()

    def effective_nm(self, shape2d: tuple[int, int]) -> tuple[int, int]:
        """``(n, m)`` that give the same mask on a matrix of this shape, with m no larger than the matrix needs.

        n = m keeps everything, as 1:1 does. A tile (row group) larger than the
        matrix is one partial tile, in which every row and column keeps at most
        n of its real entries: the same problem for every m beyond the matrix,
        so it is solved with m = side + 1 (and n at most the side), and work and
        memory follow the tensor, not m x m.
        """
        n, m = self.n, self.m
        if n == m:
            return 1, 1
        side = max(shape2d) if self.transposable else shape2d[1]
        if m > side:
            return min(n, side), side + 1
        return n, m

    def _mask2d(self, W2: np.ndarray, n: int, m: int) -> np.ndarray:
        from .masks import nm_mask, optimal_mask

        if self.transposable:
            return optimal_mask(W2, n, m, method=self.method, keep=self.keep)
        return nm_mask(W2, n, m)

    def _warm_up(self, W2: np.ndarray, n: int, m: int) -> None:
        """Compile or load the kernels for this dtype on one small tile of the tensor, outside the timed region."""
        key = (W2.dtype, W2.flags.writeable)  # Numba compiles read-only (memory-mapped) arrays separately
        if key in self._warm or m > _WARM_UP_MAX_M:
            return
        self._warm.add(key)
        tile = np.array(W2[:m, :m], order="C")
        tile.flags.writeable = W2.flags.writeable
        with contextlib.suppress(Exception):  # a NaN in the tile: the real call reports it
            self._mask2d(tile, n, m)

    def __call__(self, ref: TensorRef, raw: np.ndarray) -> tuple[np.ndarray, dict]:
        from .masks import is_nm, is_transposable

        W2 = weight_to_2d(to_float(raw, ref.dtype))
        n, m = self.effective_nm(W2.shape)
        self._warm_up(W2, n, m)
        t0 = time.perf_counter()
        try:
            mask2 = self._mask2d(W2, n, m)
        except (ValueError, TypeError) as exc:
            msg = one_line(exc)  # "W contains 1 NaN ..." -> "tensor 'x' contains 1 NaN ..."
            raise CLIError(f"tensor {quote(ref.name)} {msg[2:]}" if msg.startswith("W ")
                           else f"tensor {quote(ref.name)}: {msg}") from exc
        elapsed = time.perf_counter() - t0
        kept = int(np.count_nonzero(mask2))
        absW = np.abs(W2)  # kept/total L1 in one pass (mask_stats would also recount every tile)
        total_l1 = float(absW.sum(dtype=np.float64))
        kept_l1 = float(absW.sum(dtype=np.float64, where=mask2))
        del absW
        valid = None
        if self.check:
            valid = bool(is_transposable(mask2, n, m, keep=self.keep) if self.transposable
                         else is_nm(mask2, n, m, keep="exactly"))
        if valid is False:  # a solver bug; refuse to write a mask that breaks the pattern
            raise CLIError(f"tensor {quote(ref.name)}: the {self.metadata['method']} solver returned a mask that is "
                           f"not {self.pattern}; please report this")
        row = {
            "name": ref.name, "shape": list(ref.shape), "view_shape": list(W2.shape), "dtype": ref.dtype,
            "kept_l1": kept_l1, "total_l1": total_l1, "kept_fraction_l1": kept_l1 / total_l1 if total_l1 > 0 else 1.0,
            "density": kept / W2.size, "kept": kept, "valid": valid, "time_s": elapsed,
        }
        return view_to_weight(mask2, ref.shape), row


def _checked_nm(n, m) -> tuple[int, int]:
    from ._validation import check_nm

    try:
        return check_nm(n, m)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"invalid -n/-m: {one_line(exc)}", EXIT_USAGE) from exc


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, ValueError):
        return False


def _checked_paths(args) -> tuple[Path, Path, Path | None]:
    """The checkpoint, output and pruned paths, refused here (exit 2) when they clash or cannot be outputs."""
    if not args.output or args.pruned == "":
        raise CLIError("an output path is empty", EXIT_USAGE)
    checkpoint, out = Path(args.checkpoint), Path(args.output)
    pruned = Path(args.pruned) if args.pruned is not None else None
    for target in filter(None, (out, pruned)):
        if _same_file(target, checkpoint):
            raise CLIError(f"output {target} would overwrite the checkpoint being read", EXIT_USAGE)
        try:
            check_output_path(target)
        except CheckpointError as exc:  # exists but is a directory, FIFO or device (2), or no such directory (1)
            raise CLIError(str(exc), EXIT_USAGE if os.path.exists(target) else EXIT_FAILED) from exc
    if pruned is not None and _same_file(out, pruned):
        raise CLIError("-o and --pruned name the same file", EXIT_USAGE)
    return checkpoint, out, pruned


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise CLIError(f"--threads must be at least 1, got {threads}", EXIT_USAGE)
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _read_with_notes(path: Path):
    """read_checkpoint, with its notes (a legacy file read into memory, ...) printed as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointNote)
        checkpoint = read_checkpoint(path)
    for w in caught:
        if issubclass(w.category, CheckpointNote):
            print(f"{PROG}: note: {_printable(str(w.message))}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return checkpoint


@contextlib.contextmanager
def _progress(total: int, quiet: bool):
    bar = None
    if not quiet and sys.stderr.isatty():
        with contextlib.suppress(ImportError):  # the bar is a nicety; no tqdm, no bar
            from tqdm import tqdm

            bar = tqdm(total=total, unit="w", unit_scale=True, file=sys.stderr, desc="masking", leave=False,
                       dynamic_ncols=True)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


# ---- the report --------------------------------------------------------------------------------------
def _totals(rows: list[dict], check: bool) -> dict:
    kept_l1 = sum(r["kept_l1"] for r in rows)
    total_l1 = sum(r["total_l1"] for r in rows)
    numel = sum(math.prod(r["shape"]) for r in rows)
    return {
        "numel": numel, "kept_l1": kept_l1, "total_l1": total_l1,
        "kept_fraction_l1": kept_l1 / total_l1 if total_l1 > 0 else 1.0,
        "density": sum(r["kept"] for r in rows) / numel,
        "valid": all(r["valid"] for r in rows) if check else None, "time_s": sum(r["time_s"] for r in rows),
    }


def _skipped_counts(skipped) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s.category] = counts.get(s.category, 0) + 1
    return counts


def _print_mask_json(args, checkpoint, out, pruned, solve: _Solver, rows, skipped) -> None:
    json.dump({
        "checkpoint": str(checkpoint.path), "output": str(out), "pruned": str(pruned) if pruned else None,
        "n": solve.n, "m": solve.m, "transposable": solve.transposable, "method": solve.metadata["method"],
        "keep": solve.metadata["keep"], "tensors": rows, "total": _totals(rows, solve.check),
        "skipped": [{"name": s.name, "category": s.category, "reason": s.reason} for s in skipped],
        "skipped_counts": _skipped_counts(skipped),  # category -> count; the categories' meanings:
        "skipped_categories": {c: CATEGORY_LABELS[c] for c in _skipped_counts(skipped)},
    }, sys.stdout, indent=2)
    print()


def _print_mask_report(args, checkpoint, out, pruned, solve: _Solver, rows, skipped) -> None:
    how = f"method={args.method}, keep={args.keep}" if solve.transposable else "nm_mask"
    print(f"{checkpoint.path.name}: {solve.pattern} masks ({how}) for {len(rows)} of {len(checkpoint.tensors)} tensors")
    _print_table(rows, _totals(rows, solve.check), sys.stdout)
    if skipped:
        print(f"skipped {len(skipped)} tensor(s)" + (":" if args.verbose else " (-v lists them):"))
        for category, count in _skipped_counts(skipped).items():
            note = " (--include-embeddings masks them)" if category in ("embedding", "tied") else ""
            print(f"  {count:>5}  {CATEGORY_LABELS[category]}{note}")
        if args.verbose:
            width = max(len(_printable(s.name)) for s in skipped)
            for s in skipped:
                print(f"  {_printable(s.name).ljust(width)}  {s.reason}")
    print(f"masks written to {out}" + (f"; pruned checkpoint written to {pruned}" if pruned else ""))


def _printable(text: str) -> str:
    """``text`` with control characters (a NUL or newline in a tensor name) escaped, so it prints on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_valid(valid) -> str:
    return "-" if valid is None else ("yes" if valid else "NO")


def _print_table(rows: list[dict], total: dict, file) -> None:
    header = ("tensor", "shape", "kept L1", "density", "valid", "time")
    lines = [
        (_printable(r["name"]),
         _fmt_shape(r["shape"]) + (f" ({_fmt_shape(r['view_shape'])})" if r["view_shape"] != r["shape"] else ""),
         f"{100 * r['kept_fraction_l1']:.2f}%", f"{r['density']:.4f}", _fmt_valid(r["valid"]), _fmt_time(r["time_s"]))
        for r in rows
    ]
    lines.append(
        ("total", f"{total['numel']:,} weights", f"{100 * total['kept_fraction_l1']:.2f}%", f"{total['density']:.4f}",
         _fmt_valid(total["valid"]), _fmt_time(total["time_s"]))
    )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    right = (False, False, True, True, False, True)

    def fmt(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    print(fmt(header), file=file)
    print(rule, file=file)
    for line in lines[:-1]:
        print(fmt(line), file=file)
    print(rule, file=file)
    print(fmt(lines[-1]), file=file)


# --------------------------------------------------------------------------------------
# `transmask diversity`
# --------------------------------------------------------------------------------------
def add_diversity_parser(subparsers) -> argparse.ArgumentParser:
    d = subparsers.add_parser(
        "diversity", help="print the mask diversity of unstructured, N:M and transposable N:M masks",
        description="Mask diversity (Hubara et al. 2021): the number of masks a structure allows at the same "
                    "sparsity, printed as log10, for unstructured, row-wise N:M and transposable N:M masks.",
    )
    d.add_argument("-n", type=int, default=4, help="weights kept of every m (default 4)")
    d.add_argument("-m", type=int, default=8, help="group size and tile side (default 8)")
    d.add_argument("--size", type=int, nargs=2, default=(4096, 4096), metavar=("ROWS", "COLS"),
                   help="matrix size (default 4096 4096)")
    d.add_argument("--json", action="store_true", help="print the rows of transmask.diversity.md_table as JSON")
    d.set_defaults(func=cmd_diversity)
    return d


def cmd_diversity(args) -> int:
    n, m = _checked_nm(args.n, args.m)
    rows, cols = args.size
    if rows < 1 or cols < 1:
        raise CLIError(f"--size must be positive, got {rows} {cols}", EXIT_USAGE)
    from . import diversity

    try:
        table = diversity.md_table((rows, cols), ((n, m),), structures=("unstructured", "nm", "transposable"),
                                   block_sizes=())
    except (ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: CountTooExpensiveError
        raise CLIError(f"diversity: {one_line(exc)}", EXIT_USAGE) from exc
    if args.json:
        json.dump({"n": n, "m": m, "size": [rows, cols], "rows": table}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    print(f"mask diversity of a {rows} x {cols} matrix keeping {n} of every {m} (density {n / m:.4g}):")
    labels = {"unstructured": "unstructured", "nm": f"{n}:{m}", "transposable": f"{n}:{m} transposable"}
    cells = [(labels[r["structure"]], ("~" if not r["exact_log10"] else "") + f"{r['log10_md']:,.1f}",
              f"{r['log10_md_per_weight']:.4f}") for r in table]
    header = ("structure", "log10 MD", "per weight")
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join((h.ljust if i == 0 else h.rjust)(w) for i, (h, w) in enumerate(zip(header, widths))))
    for c in cells:
        print("  ".join((x.ljust if i == 0 else x.rjust)(w) for i, (x, w) in enumerate(zip(c, widths))))
    if any(not r["exact_log10"] for r in table):
        print("~ log10 K(m, n) from the Canfield-McKay asymptotic formula (the exact count is too costly)")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# `transmask bench` and `transmask demo`: their arguments go to another program untouched
# --------------------------------------------------------------------------------------
# name -> function of the argument list; filled by _add_passthrough
_PASSTHROUGH: dict[str, Callable[[list[str]], int]] = {}

_BENCH_NEEDS_CHECKOUT = (
    "transmask bench runs bench/solvers.py, which ships with the source repository, not with the installed "
    "package (it times peers such as OR-tools and writes tables into the checkout): clone the repository, "
    "pip install -e '.[bench]', and run 'transmask bench' or 'python bench/solvers.py' there"
)


def _add_passthrough(subparsers, name: str, func: Callable[[list[str]], int], help: str) -> None:
    subparsers.add_parser(name, help=help, add_help=False)
    _PASSTHROUGH[name] = func


def _bench_script() -> Path | None:
    """bench/solvers.py of the checkout this package runs from (editable install), or of the working directory."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        script = root / "bench" / "solvers.py"
        if script.is_file() and (root / "transmask" / "__init__.py").is_file():
            return script
    return None


def cmd_bench(argv: list[str]) -> int:
    script = _bench_script()
    if script is None:
        raise CLIError(_BENCH_NEEDS_CHECKOUT)
    env = dict(os.environ)
    root = str(script.parent.parent)  # so the bench imports this very transmask
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.call([sys.executable, str(script), *argv], env=env)


def add_bench_parser(subparsers) -> None:
    _add_passthrough(subparsers, "bench", cmd_bench,
                     "run the solver bench (bench/solvers.py; needs a source checkout), e.g. --quick")


def cmd_demo(argv: list[str]) -> int:
    import importlib

    demo = importlib.import_module(f"{__package__}.demo")
    rc = demo.main(list(argv))
    return int(rc) if isinstance(rc, int) else EXIT_OK


def add_demo_parser(subparsers) -> None:
    _add_passthrough(subparsers, "demo", cmd_demo, "the README's demo: every method on a random matrix")


# --------------------------------------------------------------------------------------
# Argument parsing and main
# --------------------------------------------------------------------------------------
def add_prune_parser(subparsers) -> argparse.ArgumentParser:
    """``transmask prune``: its parser and command live with the pruning code (torch loads only when it runs)."""
    from .prune.cli import add_prune_parser as add

    return add(subparsers)


SUBCOMMANDS: list[Callable] = [add_mask_parser, add_diversity_parser, add_bench_parser, add_demo_parser,
                               add_prune_parser]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (``transmask mask: error: ...``) with exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_printable(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog=PROG,
        description="Exact and approximate N:M transposable sparsity masks (n = number kept of every m).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _signals_handled():
    """SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated while ``main`` runs (main thread only).

    A signal the parent told us to ignore (SIG_IGN, e.g. under nohup) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for sig, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, _raise_terminated)):
        current = signal.getsignal(sig)
        if current is signal.SIG_IGN or current is None:
            continue
        saved[sig] = current
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {_printable(message)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``transmask`` command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with _signals_handled():
        try:
            parser = build_parser()
            if argv and argv[0] in _PASSTHROUGH:
                return _PASSTHROUGH[argv[0]](argv[1:])
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help(sys.stderr)
                return EXIT_USAGE
            return args.func(args)
        except CLIError as exc:
            return _fail(f"error: {exc}", exc.code)
        except CheckpointError as exc:
            return _fail(f"error: {exc}", EXIT_FAILED)
        except ImportError as exc:  # a missing optional dependency, with its install hint
            return _fail(f"error: {one_line(exc)}", EXIT_FAILED)
        except SystemExit as exc:  # argparse's --help/--version/usage errors, sys.exit in the demo
            if exc.code is None or isinstance(exc.code, int):
                return exc.code or EXIT_OK
            print(exc.code, file=sys.stderr)  # SystemExit("message"), as the interpreter would
            return EXIT_FAILED
        except KeyboardInterrupt:
            return _fail("interrupted", EXIT_INTERRUPTED)
        except Terminated:
            return _fail("terminated (SIGTERM)", EXIT_TERMINATED)
        except (OSError, MemoryError) as exc:
            return _fail(f"error: {one_line(exc)}", EXIT_FAILED)
