"""transmask.prune.rotate: changes of basis of a Llama-style model that keep its function."""
from __future__ import annotations

import copy

import pytest

import transmask as tm  # first, so OpenMP's passive wait policy is set before torch loads libgomp

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
from transmask.prune import prune_model  # noqa: E402
from transmask.prune.rotate import (fold_norms, orthogonal_matrix, rotate_model, rotate_residual,  # noqa: E402
                                    rotate_values)

VOCAB = 96


def tiny_llama(seed: int = 0, tie: bool = True, outlier: float = 1.0):
    """Tied tiny Llama (GQA) with non-trivial norm gains; ``outlier`` scales three embedding channels."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   tie_word_embeddings=tie)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for mod in model.modules():
            if "RMSNorm" in type(mod).__name__:
                mod.weight.uniform_(0.5, 2.0)
        model.model.embed_tokens.weight[:, :3] *= outlier
    return model


def ids(seed: int, seqs: int = 3, length: int = 20):
    return torch.randint(0, VOCAB, (seqs, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind,values", [("random", None), ("hadamard", "random"), ("pca", "hadamard")])
def test_rotation_keeps_the_function_and_saves_as_a_plain_llama(tmp_path, kind, values):
    model = tiny_llama()
    x = ids(1)
    ref = model(x).logits.detach()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    info = rotate_model(model, kind, seed=3, values=values, calib_ids=ids(2, 4, 16))
    out = model(x).logits.detach()
    assert torch.allclose(out, ref, atol=2e-5, rtol=1e-4)
    assert info.untied_head and info.max_logit_change < 1e-4
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert not model.config.tie_word_embeddings
    for name, mod in model.named_modules():
        if "RMSNorm" in type(mod).__name__:
            assert torch.all(mod.weight == 1), name
    # the weights did change (a rotation, not a no-op)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(dict(model.named_parameters())[q], before[q])
    model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.allclose(again(x).logits.detach(), ref, atol=2e-5, rtol=1e-4)


def test_value_rotation_alone_keeps_the_function():
    model = tiny_llama(tie=False)
    x = ids(3)
    ref = model(x).logits.detach()
    Wo = model.model.layers[0].self_attn.o_proj.weight.detach().clone()
    rotate_values(model, "random", seed=1)
    assert torch.allclose(model(x).logits.detach(), ref, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(model.model.layers[0].self_attn.o_proj.weight, Wo)


@pytest.mark.parametrize("d", [1, 7, 12, 64, 96])
@pytest.mark.parametrize("kind", ["random", "hadamard"])
def test_orthogonal_matrices(d, kind):
    Q = orthogonal_matrix(d, kind, seed=5)
    assert Q.shape == (d, d) and Q.dtype == torch.float64
    assert torch.allclose(Q.T @ Q, torch.eye(d, dtype=torch.float64), atol=1e-10)
    assert torch.equal(Q, orthogonal_matrix(d, kind, seed=5))  # seeded
    if kind == "hadamard" and d & (d - 1) == 0:  # a power of two: a signed Hadamard matrix, entries +-1/sqrt(d)
        assert torch.allclose(Q.abs(), torch.full((d, d), d ** -0.5, dtype=torch.float64))


def test_clear_errors():
    with pytest.raises(ValueError, match="rotation kind"):
        rotate_model(tiny_llama(), "givens")
    with pytest.raises(ValueError, match="needs calib_ids"):
        rotate_model(tiny_llama(), "pca")
    with pytest.raises(ValueError, match="fold_norms"):
        rotate_residual(tiny_llama(), orthogonal_matrix(64))
    model = tiny_llama()
    fold_norms(model)
    with pytest.raises(ValueError, match="not orthogonal"):
        rotate_residual(model, torch.ones(64, 64))
    with pytest.raises(ValueError, match="must be 64x64"):
        rotate_residual(model, orthogonal_matrix(32))
    seq = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="Llama-style"):
        rotate_model(seq)
    with pytest.raises(ValueError, match="stats"):
        from transmask.prune import collect_stats

        stats = collect_stats(tiny_llama(), ids(4), progress=False)
        prune_model(tiny_llama(), None, "2:4", "sparsegpt", stats=stats, rotate="random", progress=False)


def test_a_model_that_is_not_plain_llama_is_refused_by_the_check():
    model = tiny_llama()
    # an extra residual scale on one block: folding/rotating the stream no longer commutes with the block
    block = model.model.layers[1]
    orig_forward = block.forward

    def scaled(hidden_states, *args, **kwargs):
        out = orig_forward(hidden_states * torch.linspace(0.5, 1.5, hidden_states.shape[-1]), *args, **kwargs)
        return out

    block.forward = scaled
    with pytest.raises(RuntimeError, match="changed the logits"):
        rotate_model(model, "random")


def test_prune_model_with_rotation_keeps_valid_masks_and_reports_it():
    model = tiny_llama()
    res = prune_model(model, ids(5, 6, 24), "2:4-T", "sparsegpt", rotate="hadamard", rotate_seed=2, progress=False)
    assert res.report.settings["rotation"]["kind"] == "hadamard"
    params = dict(model.named_parameters())
    assert len(res.masks) == 14
    for name, mask in res.masks.items():
        assert tm.is_transposable(mask.numpy(), 2, 4, keep="exactly"), name
        assert torch.all(params[name + ".weight"][~mask] == 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_helps_transposable_pruning_of_a_model_with_outlier_features(seed):
    # three residual channels 20x larger than the rest: after the norm they dominate every reader's input, and a
    # transposable mask must drop half of their weights in every tile; a rotation spreads them over all channels
    base = tiny_llama(seed, tie=False, outlier=20.0)
    calib, test = ids(seed, 8, 32), ids(100 + seed, 8, 32)
    ref = base(test).logits.detach()

    def error(rotate):
        model = copy.deepcopy(base)
        prune_model(model, calib, "2:4-T", "sparsegpt", rotate=rotate, progress=False)
        return float(((model(test).logits.detach() - ref) ** 2).mean() / (ref**2).mean())

    assert error("random") < 0.8 * error(None)
