"""Coupled layers found from tensor names, searched and permuted (the command line's ``--permute``).

A checkpoint is a mapping of names to tensors. Where the names show an MLP
whose hidden units are the rows of one or two matrices and the columns of the
next, those hidden units can be permuted freely (the element-wise activation
and gate act unit by unit), so :func:`permute_named` searches one permutation
per MLP with :func:`transmask.permute.search_coupled` and applies it, biases of
the producing layers included. Recognised (``<p>`` any common prefix,
``.weight`` optional):

==========================  ==============================  ======================
family                      rows of (produce the units)     columns of (read them)
==========================  ==============================  ======================
Llama / Mistral / Qwen      ``<p>mlp.gate_proj``,            ``<p>mlp.down_proj``
                            ``<p>mlp.up_proj``
GPT / ViT-style ``fc1/fc2``  ``<p>mlp.fc1``                  ``<p>mlp.fc2``
BERT                        ``<p>intermediate.dense``        ``<p>output.dense``
==========================  ==============================  ======================

A group is used only when all its matrices are present, 2-D, and agree on the
hidden size. Everything else passes through unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .search import CoupledPermutationResult, search_coupled

__all__ = ["permute_named", "find_coupled_groups", "CoupledGroup", "NAME_PATTERNS"]

# family -> (producers' module suffixes, consumers' module suffixes)
NAME_PATTERNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llama_mlp": (("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",)),
    "fc_mlp": (("mlp.fc1",), ("mlp.fc2",)),
    "bert_mlp": (("intermediate.dense",), ("output.dense",)),
}


@dataclass(frozen=True)
class CoupledGroup:
    """Tensors that share one permutable hidden axis: rows of ``rows_of``, columns of ``columns_of``.

    ``biases`` are the 1-D biases of the producers (their entries follow the rows).
    """

    prefix: str
    family: str
    rows_of: tuple[str, ...]
    columns_of: tuple[str, ...]
    biases: tuple[str, ...]


def _module_and_kind(name: str) -> tuple[str, str]:
    """``("<module path>", "weight" | "bias" | "")`` of a tensor name."""
    for kind in ("weight", "bias"):
        if name.endswith("." + kind):
            return name[: -len(kind) - 1], kind
    return name, ""


def find_coupled_groups(tensors: Mapping[str, object]) -> list[CoupledGroup]:
    """The coupled MLP groups visible from the names (and shapes) of ``tensors``, in name order.

    Examples
    --------
    >>> import numpy as np
    >>> t = {"layers.0.mlp.up_proj.weight": np.zeros((8, 4)), "layers.0.mlp.gate_proj.weight": np.zeros((8, 4)),
    ...      "layers.0.mlp.down_proj.weight": np.zeros((4, 8))}
    >>> [(g.prefix, g.rows_of, g.columns_of) for g in find_coupled_groups(t)]
    [('layers.0.', ('layers.0.mlp.gate_proj.weight', 'layers.0.mlp.up_proj.weight'), ('layers.0.mlp.down_proj.weight',))]
    """
    weights: dict[str, str] = {}  # module path -> tensor name of its 2-D weight
    biases: dict[str, str] = {}
    for name, value in tensors.items():
        module, kind = _module_and_kind(name)
        ndim = len(getattr(value, "shape", ()))
        if kind in ("weight", "") and ndim == 2:
            weights.setdefault(module, name)
        elif kind == "bias" and ndim == 1:
            biases[module] = name
    groups = []
    for family, (producers, consumers) in NAME_PATTERNS.items():
        anchor = consumers[0]
        pattern = re.compile(r"^(.*?)" + re.escape(anchor) + r"$")
        for module in sorted(weights):
            match = pattern.match(module)
            if not match or (match.group(1) and not match.group(1).endswith(".")):
                continue
            prefix = match.group(1)
            rows = [prefix + p for p in producers]
            cols = [prefix + c for c in consumers]
            if not all(p in weights for p in rows + cols):
                continue
            hidden = {tensors[weights[p]].shape[0] for p in rows} | {tensors[weights[c]].shape[1] for c in cols}
            if len(hidden) != 1:
                continue
            size = hidden.pop()
            bias_names = tuple(biases[p] for p in rows if p in biases and tensors[biases[p]].shape[0] == size)
            groups.append(CoupledGroup(prefix, family, tuple(weights[p] for p in rows), tuple(weights[c] for c in cols),
                                       bias_names))
    return sorted(groups, key=lambda g: g.prefix)


def _take(tensor, perm: np.ndarray, axis: int):
    """``tensor`` with ``perm`` applied along ``axis`` (numpy array or torch tensor), a new array."""
    if type(tensor).__module__.startswith("torch"):
        import torch

        return tensor.index_select(axis, torch.as_tensor(perm, device=tensor.device))
    return np.take(np.asarray(tensor), perm, axis=axis)


def _as_numpy(tensor) -> np.ndarray:
    if type(tensor).__module__.startswith("torch"):
        t = tensor.detach().cpu()
        return (t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy()
    return np.asarray(tensor)


def permute_named(tensors: Mapping[str, object], n: int, m: int, *, sweeps: int = 6, seed: int = 0,
                  progress: bool = False) -> tuple[dict, dict[str, CoupledPermutationResult]]:
    """Search and apply one hidden-unit permutation per coupled MLP found in ``tensors``' names.

    Parameters
    ----------
    tensors : mapping of str to 2-D/1-D arrays (numpy or torch)
        E.g. a ``state_dict`` or the tensors of a safetensors file.
    n, m, sweeps, seed, progress
        As in :func:`transmask.permute.search_coupled`.

    Returns
    -------
    permuted : dict
        Same keys as ``tensors``; the tensors of every group permuted (new arrays of
        the same type), all others passed through.
    results : dict of str to CoupledPermutationResult
        Per group (keyed by its module prefix, e.g. ``"model.layers.0."``): the
        permutation ``perm`` (new hidden unit ``i`` is old unit ``perm[i]``) and the
        kept magnitudes before/after. Masks computed on the permuted tensors keep
        ``results[k].kept``; the un-permuted model is recovered with ``argsort(perm)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> t = {"h.mlp.fc1.weight": rng.standard_normal((16, 8)), "h.mlp.fc1.bias": rng.standard_normal(16),
    ...      "h.mlp.fc2.weight": rng.standard_normal((8, 16))}
    >>> new, res = permute_named(t, 2, 4)
    >>> p = res["h."].perm
    >>> bool((new["h.mlp.fc1.bias"] == t["h.mlp.fc1.bias"][p]).all() and (new["h.mlp.fc2.weight"] == t["h.mlp.fc2.weight"][:, p]).all())
    True
    """
    permuted = dict(tensors)
    results: dict[str, CoupledPermutationResult] = {}
    for group in find_coupled_groups(tensors):
        if progress:
            import sys

            print(f"permute {group.prefix or '(root)'} ({group.family}): searching", file=sys.stderr, flush=True)
        res = search_coupled([_as_numpy(tensors[k]) for k in group.rows_of], [_as_numpy(tensors[k]) for k in group.columns_of],
                             n=n, m=m, sweeps=sweeps, seed=seed, progress=progress)
        for k in group.rows_of + group.biases:
            permuted[k] = _take(tensors[k], res.perm, 0)
        for k in group.columns_of:
            permuted[k] = _take(tensors[k], res.perm, 1)
        results[group.prefix] = res
    return permuted, results
