r"""One-shot pruning of a causal LM, streamed block by block.

For each block, in forward order:

1. the block's inputs for every calibration sequence are already in memory (from
   the previous block's pruned output; for the first block, from the model's own
   embedding step);
2. its ``nn.Linear`` layers are pruned group by group, where a *group* is a run of
   layers that read the same input (for a Llama block: ``q/k/v``, ``o``,
   ``gate/up``, ``down``). With ``sequential=True`` each group's inputs are
   re-captured from the block after the groups before it were pruned (so the
   MLP is fitted to the pruned attention's output); the capture stops as soon as
   the group's last layer is reached. With ``sequential=False`` one pass over the
   dense block captures every group.
3. the pruned block is run on all calibration sequences to give the next block's
   inputs (so later blocks see, and with reconstruction correct, earlier errors).

Only one block's calibration activations (its inputs and, during step 3, its
outputs) are held at once, plus per group the Gram matrix ``X^T X`` of its input
(``cols x cols``).

References: E. Frantar, D. Alistarh, "SparseGPT: Massive Language Models Can Be
Accurately Pruned in One-Shot", ICML 2023; M. Sun et al., "A Simple and Effective
Pruning Approach for Large Language Models" (Wanda), ICLR 2024; I. Hubara et al.,
NeurIPS 2021 (transposable N:M, AdaPrune).
"""
from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import asdict, dataclass, field

from .._optional import require
from .adapters import _StopForward, get_adapter
from .rules import (NEEDS_DATA, ORDERS, check_rule, column_order, inverse_hessian_factor, kept_fraction, prune_weight,
                    relative_output_error)
from .structures import Structure

torch = require("torch", "transmask.prune")
nn = torch.nn

__all__ = ["prune_model", "collect_stats", "LayerStats", "PruneResult", "PruneReport", "LayerReport", "peak_rss_mb"]


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM) in MiB, or None where /proc is absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


@dataclass
class LayerReport:
    """Outcome for one pruned Linear layer."""

    name: str
    shape: tuple[int, int]
    structure: str
    rule: str
    density: float  # kept fraction of the weights
    kept_saliency: float  # share of the rule's saliency (on the dense weights) that the mask keeps
    kept_l1: float  # share of the dense |W| that the mask keeps
    rel_error: float  # ||W X - W' X|| / ||W X|| on the calibration inputs (nan without data)
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class PruneReport:
    """Per-layer report of :func:`prune_model`, with the settings that made it."""

    structure: str
    rule: str
    settings: dict
    layers: list[LayerReport] = field(default_factory=list)
    calibration_tokens: int = 0
    seconds: float = 0.0
    peak_rss_mb: float | None = None
    activation_bytes_peak: int = 0  # most calibration activation bytes held at once

    def _weighted(self, attr: str) -> float:
        total = sum(r.shape[0] * r.shape[1] for r in self.layers)
        if not total:
            return float("nan")
        return sum(getattr(r, attr) * r.shape[0] * r.shape[1] for r in self.layers) / total

    @property
    def density(self) -> float:
        """Kept fraction over all pruned layers (weighted by size)."""
        return self._weighted("density")

    @property
    def kept_l1(self) -> float:
        return self._weighted("kept_l1")

    @property
    def kept_saliency(self) -> float:
        return self._weighted("kept_saliency")

    @property
    def mean_error(self) -> float:
        errs = [r.rel_error for r in self.layers if r.rel_error == r.rel_error]
        return sum(errs) / len(errs) if errs else float("nan")

    def to_dict(self) -> dict:
        return {
            "structure": self.structure,
            "rule": self.rule,
            "settings": self.settings,
            "calibration_tokens": self.calibration_tokens,
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "activation_bytes_peak": self.activation_bytes_peak,
            "density": self.density,
            "kept_saliency": self.kept_saliency,
            "kept_l1": self.kept_l1,
            "mean_rel_error": self.mean_error,
            "layers": [r.to_dict() for r in self.layers],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), indent=kw.pop("indent", 1), **kw)

    def to_markdown(self) -> str:
        lines = [
            f"# Pruning report: {self.structure}, rule {self.rule}",
            "",
            f"{len(self.layers)} layers, density {self.density:.4f}, kept saliency {self.kept_saliency:.4f}, "
            f"kept |W| {self.kept_l1:.4f}, mean output error {self.mean_error:.4f}; "
            f"{self.calibration_tokens} calibration tokens; {self.seconds:.1f} s"
            + (f"; peak RSS {self.peak_rss_mb:.0f} MiB" if self.peak_rss_mb else ""),
            "",
            "| layer | shape | density | kept saliency | kept abs(W) | output error | s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.layers:
            lines.append(f"| {r.name} | {r.shape[0]}x{r.shape[1]} | {r.density:.4f} | {r.kept_saliency:.4f} | "
                         f"{r.kept_l1:.4f} | {r.rel_error:.4f} | {r.seconds:.2f} |")
        return "\n".join(lines) + "\n"


@dataclass
class PruneResult:
    """What :func:`prune_model` returns."""

    model: object
    report: PruneReport
    masks: dict  # layer name -> bool tensor (True = kept), on CPU


def _excluded(name: str, exclude) -> bool:
    return any(name == pat or fnmatch.fnmatchcase(name, pat) for pat in exclude)


def _block_linears(block, prefix: str, exclude) -> dict[str, nn.Linear]:
    out = {}
    for name, mod in block.named_modules():
        if isinstance(mod, nn.Linear):
            full = f"{prefix}.{name}"
            if not _excluded(full, exclude):
                out[full] = mod
    return out


def _input_groups(adapter, block, linears: dict, hidden, kwargs) -> list[list[str]]:
    """Linears in call order, grouped into runs that read the very same input tensor."""
    order: list[str] = []
    inputs: list = []  # strong references, so no address is reused during the pass
    handles = []
    for name, mod in linears.items():
        def hook(module, args, _name=name):
            if _name not in order:
                order.append(_name)
                inputs.append(args[0])
        handles.append(mod.register_forward_pre_hook(hook))
    try:
        adapter.run_block(block, hidden, kwargs)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    for i, name in enumerate(order):
        if groups and inputs[i] is inputs[i - 1]:
            groups[-1].append(name)
        else:
            groups.append([name])
    missing = [n for n in linears if n not in order]
    if missing:  # never called on this input: prune them with the last group, no data
        groups.append(missing)
    return groups


class _InputCapture:
    """Accumulates X^T X (and optionally X) of one group's shared input, from a hook on its first layer."""

    def __init__(self, first: nn.Linear, keep_inputs: bool):
        self.H = None
        self.tokens = 0
        self.inputs = [] if keep_inputs else None
        self.handle = first.register_forward_pre_hook(self._record)

    def _record(self, module, args):
        x = args[0].detach()
        x2 = x.reshape(-1, x.shape[-1]).to(torch.float32)
        if self.H is None:
            self.H = torch.zeros((x2.shape[1], x2.shape[1]), dtype=torch.float32, device=x2.device)
        self.H.addmm_(x2.T, x2)
        self.tokens += x2.shape[0]
        if self.inputs is not None:
            self.inputs.append(x2.cpu())

    def result(self):
        X = torch.cat(self.inputs) if self.inputs else None
        return self.H, X


def _raise_stop(module, args):
    raise _StopForward


def _capture(adapter, block, groups: list[list[nn.Linear]], inps, kws, keep_inputs: bool, stop_early: bool,
             want_outputs: bool = False):
    """Run ``block`` over all calibration batches, capturing each group's input statistics.

    ``stop_early``: stop every pass right before the last group's last layer runs
    (the rest of the block is not needed). ``want_outputs``: also return the
    block's outputs (then the passes run to the end).
    """
    caps = [_InputCapture(g[0], keep_inputs) for g in groups]
    handles = [c.handle for c in caps]
    if stop_early and not want_outputs:
        handles.append(groups[-1][-1].register_forward_pre_hook(_raise_stop))
    outs = []
    try:
        for hidden, kwargs in zip(inps, kws):
            try:
                out = adapter.run_block(block, hidden, kwargs)
                if want_outputs:
                    outs.append(out)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    return [c.result() for c in caps], outs


class LayerStats:
    """Per-layer input Gram matrices ``X^T X`` from one calibration pass, shared by many prunings.

    Made by :func:`collect_stats` (on the dense model). Layers that read the same
    input share one tensor, and :meth:`factor` caches SparseGPT's inverse-Hessian
    factor per distinct matrix and dampening, so pruning the same model to many
    structures costs the calibration pass once.
    """

    def __init__(self, hessians: dict, tokens: int):
        self.hessians = hessians
        self.tokens = tokens
        self._factors: dict = {}

    def hessian(self, name: str):
        try:
            return self.hessians[name]
        except KeyError:
            raise ValueError(f"no calibration statistics for layer {name!r}") from None

    def factor(self, name: str, damp: float, structure: Structure | None = None, order: str = "natural"):
        """Inverse-Hessian factor of the layer's input (permuted to ``order`` for ``structure``), cached."""
        H = self.hessian(name)
        key = (id(H), float(damp), order, None if order == "natural" else (structure.kind, structure.m))
        if key not in self._factors:
            self._factors[key] = _factor(H, damp, structure, order)
        return self._factors[key]

    def nbytes(self) -> int:
        seen = {id(h): h for h in self.hessians.values()}
        return sum(h.numel() * h.element_size() for h in seen.values())


@torch.no_grad()
def collect_stats(model, calib_ids, *, batch_size: int = 8, exclude=(), adapter=None,
                  progress: bool = True) -> LayerStats:
    """Gram matrices of every block Linear's inputs in the *dense* model, one pass, block by block.

    The result can be passed to :func:`prune_model` (``stats=``) any number of
    times: no forward passes are needed then, but every layer is pruned against
    the dense model's inputs (no correction of earlier layers' errors), unlike
    the default streaming mode.
    """
    calib_ids = _check_calib(calib_ids)
    adapter = get_adapter(model, adapter)
    blocks = adapter.blocks()
    prefix = getattr(adapter, "block_prefix", lambda i: f"blocks.{i}")
    batches = list(torch.split(calib_ids, batch_size))
    inps, kws = _block0_inputs(adapter, batches)
    hessians = {}
    bar = _bar(progress, len(blocks), "calibration statistics")
    try:
        for bi, block in enumerate(blocks):
            linears = _block_linears(block, prefix(bi), tuple(exclude))
            groups = _input_groups(adapter, block, linears, inps[0], kws[0]) if linears else []
            results, inps = _capture(adapter, block, [[linears[n] for n in g] for g in groups], inps, kws,
                                     keep_inputs=False, stop_early=False, want_outputs=True)
            for g, (H, _) in zip(groups, results):
                for name in g:
                    hessians[name] = H
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return LayerStats(hessians, int(calib_ids.numel()))


def _factor(H, damp, structure, order):
    if order != "natural":
        perm = column_order(H, structure)
        H = H[perm][:, perm]
    return inverse_hessian_factor(H, damp).to(torch.float32)


def _check_calib(calib_ids):
    calib_ids = torch.as_tensor(calib_ids)
    if calib_ids.ndim != 2 or calib_ids.numel() == 0:
        raise ValueError(f"calib_ids must be a non-empty 2-D (sequences, seq_len) tensor, "
                         f"got shape {tuple(calib_ids.shape)}")
    if calib_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"calib_ids must hold integer token ids, got {calib_ids.dtype}")
    return calib_ids


def _block0_inputs(adapter, batches):
    inps, kws = [], []
    for b in batches:
        h, kw = adapter.block_inputs(b)
        inps.append(h)
        kws.append(kw)
    return inps, kws


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    tqdm = require("tqdm", "progress=True").tqdm
    return tqdm(total=total, desc=desc, unit="block")


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


@torch.no_grad()
def prune_model(
    model,
    calib_ids=None,
    structure="2:4-T",
    rule: str = "sparsegpt",
    *,
    method="exact",
    keep: str = "exactly",
    sequential: bool = True,
    damp: float = 0.01,
    blocksize: int = 128,
    mask_scope: str = "stripe",
    order: str = "natural",
    refit: bool = False,
    rotate: str | None = None,
    rotate_seed: int = 0,
    permute=None,
    batch_size: int = 8,
    exclude=(),
    adapter=None,
    progress: bool = True,
    keep_masks: bool = True,
    stats: LayerStats | None = None,
) -> PruneResult:
    r"""Prune every ``nn.Linear`` inside a causal LM's blocks, one block at a time.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face causal LM (``LlamaForCausalLM`` and relatives) or any module
        with a block adapter (``adapter=`` or a ``block_adapter()`` method; see
        :mod:`transmask.prune.adapters`). Modified **in place** (pruned weights are
        set to zero); the embedding and the LM head are not pruned.
    calib_ids : LongTensor (sequences, seq_len), optional
        Calibration token ids (e.g. :func:`transmask.prune.data.calibration_ids`).
        Required by ``"wanda"``, ``"sparsegpt"`` and ``"adaprune"``; with
        ``"magnitude"`` it only feeds the error report.
    structure : str or Structure
        ``"2:4"`` (row-wise N:M), ``"2:4-T"`` (transposable), ``"unstructured"`` /
        ``"50%"``, or a :class:`~transmask.prune.structures.Structure`.
    rule : {"magnitude", "wanda", "sparsegpt", "admm", "adaprune"}
        Saliency and update rule (:mod:`transmask.prune.rules`; ``"admm"``:
        :func:`transmask.prune.admm.admm_prune`).
    method : str or callable
        Transposable solver (``"exact"``, ``"approx"``, ``"lp"``) or a callable
        ``(saliency2d, n, m) -> bool mask``; ignored if ``structure`` is a Structure.
    keep : {"exactly", "at_most"}
        Passed to the transposable solver; ignored if ``structure`` is a Structure.
    sequential : bool
        Re-capture each group's inputs after the earlier groups of the same block
        were pruned.
    damp : float
        SparseGPT dampening as a fraction of mean diag(X^T X) (default 1 %).
    blocksize : int
        SparseGPT lazy-update block (columns).
    mask_scope : {"stripe", "layer"}
        SparseGPT: choose each stripe's mask right before its update, or the whole
        layer's mask up front (see :func:`transmask.prune.rules.obs_prune`).
    order : {"natural", "act"}
        SparseGPT: visit columns left to right, or whole stripes of ``m`` columns by
        descending input energy (:func:`transmask.prune.rules.column_order`).
    refit : bool
        After each layer's mask is chosen, give its kept weights their least-squares
        optimum on the mask (:func:`transmask.prune.admm.refit_on_mask`); any rule with data.
    rotate : {None, "random", "hadamard", "pca"}
        First fold the norms and rotate the residual stream of a Llama-style model
        (:func:`transmask.prune.rotate.rotate_model`; the function is unchanged and the
        LM head is untied). Not with ``stats`` (they describe the unrotated model).
    rotate_seed : int
        Seed of the random rotation.
    permute : None, bool, str or dict
        Before pruning, permute the free channels of a Llama-style model (MLP hidden
        units, value dimensions per KV head; the function is unchanged) to maximise the
        kept saliency of ``rule`` under the transposable structure
        (:func:`transmask.prune.permute.permute_for_pruning`; ``True``, ``"mlp"``,
        ``"values"``, ``"mlp+values"`` or ``{"axes", "sweeps", "seed"}``). ``stats`` are
        permuted along; the permutations are in ``report.settings["permute"]``.
    batch_size : int
        Calibration sequences per forward pass.
    exclude : iterable of str
        Layer names or glob patterns not to prune (e.g. ``"*.down_proj"``).
    adapter : BlockAdapter, optional
        How to run the model block by block (default: built in for HF models).
    progress : bool
        A tqdm bar over blocks.
    keep_masks : bool
        Return the masks (bool, CPU).
    stats : LayerStats, optional
        Input statistics from :func:`collect_stats` on the dense model: then no
        forward pass runs and ``calib_ids`` is not needed (every layer is pruned
        against the dense model's inputs). For benchmarking many structures on one
        calibration pass.

    Returns
    -------
    PruneResult
        ``.model`` (the same object, pruned), ``.report`` (:class:`PruneReport`,
        with ``to_markdown()``/``to_dict()``) and ``.masks`` (name -> bool tensor).

    Raises
    ------
    ValueError
        A layer's shape is not divisible by ``m`` (the message names it: exclude it),
        a rule that needs data got none, bad settings.

    Examples
    --------
    >>> from transmask.prune import prune_model, load_causal_lm, smollm2_gguf_path   # doctest: +SKIP
    >>> from transmask.prune.data import calibration_ids, shakespeare_token_split     # doctest: +SKIP
    >>> model, tok = load_causal_lm(smollm2_gguf_path())                              # doctest: +SKIP
    >>> calib_stream, eval_stream = shakespeare_token_split(tok)                      # doctest: +SKIP
    >>> res = prune_model(model, calibration_ids(calib_stream, 64, 512), "2:4-T")     # doctest: +SKIP
    >>> print(res.report.to_markdown())                                               # doctest: +SKIP
    """
    t_start = time.perf_counter()
    rule = check_rule(rule)
    if not isinstance(structure, Structure):
        structure = Structure.parse(structure, method=method, keep=keep)
    if mask_scope not in ("stripe", "layer"):
        raise ValueError(f"mask_scope must be 'stripe' or 'layer', got {mask_scope!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if not 0.0 <= damp:
        raise ValueError(f"damp must be >= 0, got {damp}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if calib_ids is None and stats is None and rule in NEEDS_DATA:
        raise ValueError(f"rule={rule!r} needs calibration token ids (calib_ids)")
    if stats is not None and rule == "adaprune":
        raise ValueError("rule='adaprune' needs the inputs themselves, not stats; pass calib_ids")
    if refit and calib_ids is None and stats is None:
        raise ValueError("refit=True needs calibration data (calib_ids or stats)")
    if rotate is not None and stats is not None:
        raise ValueError("rotate= cannot be used with stats= (they were collected on the unrotated model); "
                         "rotate the model with transmask.prune.rotate.rotate_model before collect_stats")
    if calib_ids is not None:
        calib_ids = _check_calib(calib_ids)
    rotation = None
    if rotate is not None:
        from .rotate import rotate_model

        rotation = rotate_model(model, rotate, seed=rotate_seed, calib_ids=calib_ids).to_dict()
    exclude = tuple(exclude)
    adapter = get_adapter(model, adapter)
    blocks = adapter.blocks()
    prefix = getattr(adapter, "block_prefix", lambda i: f"blocks.{i}")
    all_linears = [_block_linears(b, prefix(i), exclude) for i, b in enumerate(blocks)]
    for linears in all_linears:  # fail before any work if a layer cannot take the structure
        for name, mod in linears.items():
            structure.check_shape(tuple(mod.weight.shape), name)
    permutation = None
    if permute is not None and permute is not False:
        from .permute import permute_for_pruning

        permutation, stats = permute_for_pruning(model, structure, rule, permute, stats=stats, calib_ids=calib_ids,
                                                 damp=damp, adapter=adapter, batch_size=batch_size, exclude=exclude,
                                                 progress=progress)

    calibration = "dense stats" if stats is not None else ("none" if calib_ids is None else "streaming")
    settings = {"method": structure.method_name, "keep": structure.keep, "calibration": calibration,
                "sequential": sequential and calibration == "streaming", "damp": damp, "blocksize": blocksize,
                "mask_scope": mask_scope, "order": order, "refit": refit, "rotation": rotation, "permute": permutation,
                "batch_size": batch_size, "exclude": list(exclude)}
    report = PruneReport(structure.label, rule, settings)
    masks: dict = {}
    bar = _bar(progress, len(blocks), f"prune {structure.label} {rule}")

    def prune_one(name, mod, H, X, U=None):
        t0 = time.perf_counter()
        W = mod.weight.detach().to(torch.float32)
        bias = mod.bias.detach() if mod.bias is not None else None
        W_new, mask, sal = prune_weight(W, H, structure, rule, damp=damp, blocksize=blocksize,
                                        mask_scope=mask_scope, X=X, bias=bias, U=U, order=order, refit=refit)
        err = relative_output_error(W, W_new, H) if H is not None else float("nan")
        absW = W.abs()
        rep = LayerReport(name, tuple(W.shape), structure.label, rule, float(mask.float().mean()),
                          kept_fraction(sal, mask), kept_fraction(absW, mask), err, 0.0)
        mod.weight.copy_(W_new.to(mod.weight.dtype))
        if keep_masks:
            masks[name] = mask.cpu()
        rep.seconds = time.perf_counter() - t0
        report.layers.append(rep)
        return rep

    def prune_group(names, linears, H, X, U):
        for name in names:
            rep = prune_one(name, linears[name], H, X, U)
            if bar is not None:
                bar.set_postfix_str(f"{name.rsplit('.', 1)[-1]} err {rep.rel_error:.3f}")

    try:
        if calib_ids is None or stats is not None:  # no forward passes at all
            if stats is not None:
                report.calibration_tokens = stats.tokens
            for linears in all_linears:
                for name, mod in linears.items():
                    H = stats.hessian(name) if stats is not None else None
                    U = stats.factor(name, damp, structure, order) if stats is not None and rule == "sparsegpt" \
                        else None
                    prune_group([name], linears, H, None, U)
                if bar is not None:
                    bar.update(1)
        else:
            batches = list(torch.split(calib_ids, batch_size))
            report.calibration_tokens = int(calib_ids.numel())
            inps, kws = _block0_inputs(adapter, batches)
            report.activation_bytes_peak = _nbytes(inps)
            keep_inputs = rule == "adaprune"
            for bi, block in enumerate(blocks):
                linears = all_linears[bi]
                groups = _input_groups(adapter, block, linears, inps[0], kws[0]) if linears else []
                mods = [[linears[n] for n in g] for g in groups]
                if groups and not sequential:  # one pass over the dense block captures every group
                    captured, _ = _capture(adapter, block, mods, inps, kws, keep_inputs, stop_early=True)
                for gi, g in enumerate(groups):
                    if sequential:  # this group's inputs, after the groups before it were pruned
                        (H, X), = _capture(adapter, block, [mods[gi]], inps, kws, keep_inputs, stop_early=True)[0]
                    else:
                        H, X = captured[gi]
                    # the layers of a group share their input, hence H and its inverse factor
                    U = _factor(H, damp, structure, order) if rule == "sparsegpt" and H is not None else None
                    prune_group(g, linears, H, X, U)
                    del H, X, U
                captured = None
                outs = []
                for h, kw in zip(inps, kws):
                    outs.append(adapter.run_block(block, h, kw))
                    report.activation_bytes_peak = max(report.activation_bytes_peak, _nbytes(inps) + _nbytes(outs))
                inps = outs
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    report.seconds = time.perf_counter() - t_start
    report.peak_rss_mb = peak_rss_mb()
    return PruneResult(model, report, masks)
