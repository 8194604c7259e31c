r"""Function-preserving changes of basis of a Llama-style decoder, before pruning.

A transposable N:M mask makes every *input* channel of a layer keep ``n`` of
every ``m`` weights in every tile, so an outlier input feature (a channel with
large activations) cannot keep more of its weights, as a row-wise mask lets it
do. Expressing the residual stream in another orthonormal basis spreads such
outliers over many channels without changing what the model computes
(SliceGPT, Ashkboos et al., ICLR 2024; QuaRot, Ashkboos et al., NeurIPS 2024).

For a Llama-style decoder (pre-norm blocks with RMSNorm, residual stream of
width ``d``) and an orthogonal ``Q`` (``d x d``):

1. :func:`fold_norms`: every RMSNorm gain ``g`` moves into the Linears that read
   the norm's output (``W <- W diag(g)``; ``q/k/v`` for ``input_layernorm``,
   ``gate/up`` for ``post_attention_layernorm``, the LM head for the final norm)
   and the gain becomes 1. RMSNorm without a gain commutes with ``Q``:
   :math:`\mathrm{rms}(xQ) = \mathrm{rms}(x)`. A head tied to the embedding is
   untied first (it gets the final gain, the embedding does not).
2. :func:`rotate_residual`: the stream ``h`` becomes ``h Q``: embedding
   ``E <- E Q``; every Linear that reads the stream ``W <- W Q`` (columns,
   including the LM head); every Linear that writes it (``o_proj``, ``down_proj``)
   ``W <- Q^T W`` (rows, and ``b <- Q^T b``).
3. Optionally :func:`rotate_values`: inside each key/value head the value
   dimensions are free too (attention mixes whole value vectors): rows of
   ``v_proj`` in head ``h`` become ``R_h^T W``, the matching columns of ``o_proj``
   ``W R_h`` (one ``R_h`` per KV head, shared by its query heads under GQA).

The MLP's hidden units are *not* free to rotate (SiLU gating is element-wise;
only permutations, :mod:`transmask.permute`, keep its function), nor are the
query/key dimensions (RoPE pairs them).

The rotated model is still a plain Llama checkpoint (norm gains 1, LM head
untied), so it is saved and loaded like any other, and the pruned rotated
weights are the handoff.

Bases (``kind``):

* ``"random"``: a Haar-random orthogonal matrix (QR of a seeded Gaussian matrix
  with the signs of ``R``'s diagonal fixed), which spreads every channel over all
  others (QuaRot uses randomised Hadamard matrices to the same end);
* ``"hadamard"``: a randomised Hadamard matrix ``diag(s) H / sqrt(d)`` (``s``:
  seeded random signs) where ``d`` is a power of two; otherwise ``H_{2^k}``
  (Sylvester) Kronecker a random orthogonal matrix of the odd factor of ``d``;
* ``"pca"`` (residual stream only): the eigenvectors of the calibration
  activations' covariance, largest first (SliceGPT's basis, summed over all norm
  inputs), which *concentrates* energy instead of spreading it.

Example
-------
>>> from transmask.prune.rotate import rotate_model                # doctest: +SKIP
>>> info = rotate_model(model, "random", seed=0)                   # doctest: +SKIP
>>> prune_model(model, calib, "2:4-T", "sparsegpt")               # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .._optional import require
from ..permute.models import _attention_geometry

torch = require("torch", "transmask.prune.rotate")
nn = torch.nn

__all__ = ["rotate_model", "fold_norms", "rotate_residual", "rotate_values", "orthogonal_matrix", "Rotation",
           "ROTATIONS"]

#: Bases accepted by :func:`rotate_model` (``None``/``"none"``: no rotation).
ROTATIONS = ("random", "hadamard", "pca")


@dataclass
class Rotation:
    """What :func:`rotate_model` did (for reports)."""

    kind: str
    seed: int
    values: str | None
    dim: int
    untied_head: bool
    max_logit_change: float | None = None
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "values": self.values, "dim": self.dim,
                "untied_head": self.untied_head, "max_logit_change": self.max_logit_change}


def _parts(model):
    """(embedding, layers, final norm, LM head) of a Llama-style causal LM; ValueError otherwise."""
    owner = getattr(model, "model", None)
    layers = getattr(owner, "layers", None)
    embed = getattr(owner, "embed_tokens", None)
    final = getattr(owner, "norm", None)
    head = getattr(model, "lm_head", None)
    if layers is None or embed is None or final is None or head is None:
        raise ValueError(f"{type(model).__name__}: rotation supports Llama-style causal LMs (model.embed_tokens, "
                         "model.layers, model.norm, lm_head)")
    for i, layer in enumerate(layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        ok = (attn is not None and mlp is not None
              and all(isinstance(getattr(attn, k, None), nn.Linear) for k in ("q_proj", "k_proj", "v_proj", "o_proj"))
              and all(isinstance(getattr(mlp, k, None), nn.Linear) for k in ("gate_proj", "up_proj", "down_proj"))
              and all(_is_rms_norm(getattr(layer, k, None)) for k in ("input_layernorm", "post_attention_layernorm")))
        if not ok:
            raise ValueError(f"layer {i} ({type(layer).__name__}) is not a pre-norm Llama block with RMSNorm "
                             "(input_layernorm, self_attn.q/k/v/o_proj, post_attention_layernorm, mlp.gate/up/down_proj)")
        extra = [n for n, _ in layer.named_children()
                 if n not in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")]
        if extra:  # e.g. Gemma's extra norms around each sub-block: the stream is not the plain sum
            raise ValueError(f"layer {i} has modules {extra} besides attention, MLP and two norms; "
                             "rotation supports plain Llama-style blocks")
    if not _is_rms_norm(final):
        raise ValueError(f"final norm {type(final).__name__} is not an RMSNorm")
    return embed, list(layers), final, head


def _is_rms_norm(mod) -> bool:
    # an RMSNorm scales by its weight (Gemma's variant by 1 + weight, which folding would get wrong: refused)
    name = type(mod).__name__
    return (mod is not None and "RMSNorm" in name and "Gemma" not in name
            and isinstance(getattr(mod, "weight", None), torch.Tensor) and getattr(mod, "bias", None) is None)


def _readers(layer, which: str):
    if which == "attn":
        a = layer.self_attn
        return [a.q_proj, a.k_proj, a.v_proj]
    return [layer.mlp.gate_proj, layer.mlp.up_proj]


def _writers(layer):
    return [layer.self_attn.o_proj, layer.mlp.down_proj]


def _set(param, value):
    param.data = value.to(param.dtype).contiguous()


def _untie_head(model, embed, head) -> bool:
    """Give the LM head its own weight if it shares the embedding's; True if it did."""
    if head.weight.data_ptr() != embed.weight.data_ptr():
        return False
    head.weight = nn.Parameter(embed.weight.detach().clone(), requires_grad=embed.weight.requires_grad)
    config = getattr(model, "config", None)
    if config is not None:
        config.tie_word_embeddings = False
        text = getattr(config, "text_config", None)
        if text is not None and hasattr(text, "tie_word_embeddings"):
            text.tie_word_embeddings = False
    for attr in ("all_tied_weights_keys", "_tied_weights_keys"):  # transformers' record of tied parameters
        if isinstance(getattr(model, attr, None), dict):
            try:
                setattr(model, attr, {})
            except (AttributeError, TypeError):
                pass
    return True


@torch.no_grad()
def fold_norms(model) -> bool:
    """Move every RMSNorm gain of a Llama-style model into the Linears that read it (gains become 1).

    Unties a tied LM head (it takes the final norm's gain). Returns True if the
    head was untied. The model's function is unchanged.
    """
    embed, layers, final, head = _parts(model)
    untied = _untie_head(model, embed, head)
    pairs = [(layer.input_layernorm, _readers(layer, "attn")) for layer in layers]
    pairs += [(layer.post_attention_layernorm, _readers(layer, "mlp")) for layer in layers]
    pairs.append((final, [head]))
    for norm, readers in pairs:
        g = norm.weight.detach().double()
        for lin in readers:
            _set(lin.weight, lin.weight.detach().double() * g[None, :])
        norm.weight.data.fill_(1.0)
    return untied


@torch.no_grad()
def rotate_residual(model, Q) -> None:
    """Express the residual stream of a (norm-folded) Llama-style model in the basis ``Q`` (``h -> h Q``).

    Raises ValueError if a norm still has a gain other than 1 (call
    :func:`fold_norms` first) or ``Q`` is not a ``d x d`` orthogonal matrix.
    """
    embed, layers, final, head = _parts(model)
    d = embed.weight.shape[1]
    Q = torch.as_tensor(Q).double()
    _check_orthogonal(Q, d, "Q")
    norms = [final] + [n for layer in layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    if any(not torch.all(n.weight == 1) for n in norms):
        raise ValueError("rotate_residual needs unit norm gains: call fold_norms(model) first")
    if head.weight.data_ptr() == embed.weight.data_ptr():
        raise ValueError("the LM head is tied to the embedding: call fold_norms(model) first (it unties it)")
    _set(embed.weight, embed.weight.detach().double() @ Q)
    for layer in layers:
        for lin in _readers(layer, "attn") + _readers(layer, "mlp"):
            _set(lin.weight, lin.weight.detach().double() @ Q)
        for lin in _writers(layer):
            _set(lin.weight, Q.T @ lin.weight.detach().double())
            if lin.bias is not None:
                _set(lin.bias, Q.T @ lin.bias.detach().double())
    _set(head.weight, head.weight.detach().double() @ Q)


def _check_orthogonal(Q, d: int, what: str) -> None:
    if Q.shape != (d, d):
        raise ValueError(f"{what} must be {d}x{d}, got {tuple(Q.shape)}")
    err = float((Q.T @ Q - torch.eye(d, dtype=Q.dtype)).abs().max())
    if err > 1e-6:
        raise ValueError(f"{what} is not orthogonal (max |Q^T Q - I| = {err:.2e})")


@torch.no_grad()
def rotate_values(model, kind: str = "random", seed: int = 0) -> None:
    """Rotate the value dimensions inside every key/value head by its own orthogonal matrix.

    ``v_proj`` rows of KV head ``h``: ``W <- R_h^T W`` (and bias); ``o_proj``
    columns of every query head ``q`` reading KV head ``h`` (``q // (heads/kv_heads) == h``):
    ``W <- W R_h``. The attention output is unchanged.
    """
    _, layers, _, _ = _parts(model)
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    for layer in layers:
        attn = layer.self_attn
        head_dim, heads, kv_heads = _attention_geometry(attn)
        group = heads // kv_heads
        Wv = attn.v_proj.weight.detach().double().clone()
        Wo = attn.o_proj.weight.detach().double().clone()
        bv = attn.v_proj.bias.detach().double().clone() if attn.v_proj.bias is not None else None
        for h in range(kv_heads):
            R = orthogonal_matrix(head_dim, kind, generator=gen)
            rows = slice(h * head_dim, (h + 1) * head_dim)
            Wv[rows] = R.T @ Wv[rows]
            if bv is not None:
                bv[rows] = R.T @ bv[rows]
            for q in range(h * group, (h + 1) * group):
                cols = slice(q * head_dim, (q + 1) * head_dim)
                Wo[:, cols] = Wo[:, cols] @ R
        _set(attn.v_proj.weight, Wv)
        _set(attn.o_proj.weight, Wo)
        if bv is not None:
            _set(attn.v_proj.bias, bv)


def _sylvester(k: int):
    H = torch.ones((1, 1), dtype=torch.float64)
    for _ in range(k):
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def orthogonal_matrix(d: int, kind: str = "random", *, seed: int = 0, generator=None):
    """A ``d x d`` orthogonal matrix (float64): ``"random"`` (Haar) or ``"hadamard"`` (randomised).

    >>> Q = orthogonal_matrix(12, "hadamard", seed=1)
    >>> bool(torch.allclose(Q.T @ Q, torch.eye(12, dtype=Q.dtype)))
    True
    """
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    if kind == "random":
        A = torch.randn(d, d, generator=gen, dtype=torch.float64)
        Qm, R = torch.linalg.qr(A)
        return (Qm * torch.sign(torch.diagonal(R))[None, :]).contiguous()  # Haar measure (Mezzadri 2007)
    if kind == "hadamard":
        k = (d & -d).bit_length() - 1  # largest power of two dividing d
        odd = d >> k
        H = _sylvester(k) / (2.0 ** (k / 2.0))
        if odd > 1:
            H = torch.kron(orthogonal_matrix(odd, "random", generator=gen).contiguous(), H.contiguous())
        signs = torch.randint(0, 2, (d,), generator=gen, dtype=torch.int64).double() * 2 - 1
        return signs[:, None] * H
    raise ValueError(f"kind must be 'random' or 'hadamard' here, got {kind!r}")


@torch.no_grad()
def _pca_basis(model, calib_ids, batch_size: int = 8):
    """Eigenvectors (largest eigenvalue first) of the summed Gram matrix of every norm's RMS-normalised input."""
    embed, layers, final, _ = _parts(model)
    d = embed.weight.shape[1]
    C = torch.zeros((d, d), dtype=torch.float64)
    norms = [n for layer in layers for n in (layer.input_layernorm, layer.post_attention_layernorm)] + [final]

    def hook(module, args):
        x = args[0].detach().double().reshape(-1, d)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)
        C.addmm_(x.T, x)

    handles = [n.register_forward_pre_hook(hook) for n in norms]
    try:
        for batch in torch.split(torch.as_tensor(calib_ids), batch_size):
            model(input_ids=batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    evals, evecs = torch.linalg.eigh(C)
    return evecs[:, torch.argsort(evals, descending=True)]


@torch.no_grad()
def rotate_model(model, kind: str = "random", *, seed: int = 0, values: str | None = None, calib_ids=None,
                 check: bool = True, check_tol: float = 1e-3) -> Rotation:
    r"""Fold the norms and rotate the residual stream (and optionally the value heads) of a Llama-style LM, in place.

    Parameters
    ----------
    model : transformers Llama-style causal LM (``LlamaForCausalLM``, Mistral, Qwen2, SmolLM2, ...)
        Modified in place; its function is unchanged (up to rounding).
    kind : {"random", "hadamard", "pca"}
        Basis of the residual stream (see the module docstring).
    seed : int
        Seed of the random basis.
    values : {None, "random", "hadamard"}
        Also rotate the value dimensions inside each key/value head.
    calib_ids : LongTensor (sequences, seq_len), optional
        Needed by ``kind="pca"``; with ``check`` the first row's first 64 tokens
        check the function (random tokens otherwise).
    check : bool
        Compare the logits before and after on a short sequence and raise
        RuntimeError if the largest change exceeds ``check_tol`` times the logits'
        largest magnitude (an architecture this module does not know about).

    Returns
    -------
    Rotation
        What was done (kind, seed, untied head, the measured logit change).

    Examples
    --------
    >>> import transformers                                                       # doctest: +SKIP
    >>> model = transformers.LlamaForCausalLM(transformers.LlamaConfig(hidden_size=64, intermediate_size=128,
    ...     num_hidden_layers=2, num_attention_heads=4, vocab_size=100)).eval()  # doctest: +SKIP
    >>> rotate_model(model, "random").max_logit_change < 1e-4                      # doctest: +SKIP
    True
    """
    if kind not in ROTATIONS:
        raise ValueError(f"rotation kind must be one of {ROTATIONS}, got {kind!r}")
    if values not in (None, "random", "hadamard"):
        raise ValueError(f"values must be None, 'random' or 'hadamard', got {values!r}")
    if kind == "pca" and calib_ids is None:
        raise ValueError("kind='pca' needs calib_ids (the basis comes from calibration activations)")
    embed, _, _, _ = _parts(model)
    d = embed.weight.shape[1]
    probe = None
    if check:
        if calib_ids is not None:
            probe = torch.as_tensor(calib_ids)[:1, :64]
        else:
            probe = torch.randint(0, embed.weight.shape[0], (1, 32), generator=torch.Generator().manual_seed(0))
        before = model(input_ids=probe, use_cache=False).logits.double()
    untied = fold_norms(model)
    if kind == "pca":
        Q = _pca_basis(model, calib_ids)
    else:
        Q = orthogonal_matrix(d, kind, seed=seed)
    rotate_residual(model, Q)
    if values is not None:
        rotate_values(model, values, seed)
    info = Rotation(kind, int(seed), values, d, untied)
    if check:
        after = model(input_ids=probe, use_cache=False).logits.double()
        change = float((after - before).abs().max())
        info.max_logit_change = change
        scale = float(before.abs().max())
        if change > check_tol * max(scale, 1.0):
            raise RuntimeError(f"rotation changed the logits by {change:.3g} (scale {scale:.3g}): this model is not "
                               "a plain Llama-style decoder")
    return info
