"""transmask.prune.admm: ADMM pruning with the exact projection, and the least-squares refit on a mask."""
from __future__ import annotations

import pytest

import transmask as tm  # first, so OpenMP's passive wait policy is set before torch loads libgomp

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
from transmask.prune import Structure, prune_model  # noqa: E402
from transmask.prune.admm import admm_prune, refit_on_mask  # noqa: E402
from transmask.prune.rules import obs_prune, relative_output_error  # noqa: E402


def layer(seed: int, rows: int = 32, cols: int = 64, samples: int = 400):
    """A weight and the Gram matrix of correlated inputs with a few strong channels (like a transformer layer's)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    X = torch.randn(samples, cols, generator=g) @ mix
    X[:, :4] *= 6.0
    return W, X.T @ X


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("structure", ["2:4", "2:4-T", "4:8-T"])
def test_admm_masks_have_the_structure_and_beat_sparsegpt(seed, structure):
    W, H = layer(seed)
    st = Structure.parse(structure)
    W_new, mask, sal = admm_prune(W, H, st)
    n, m = st.n, st.m
    M = mask.numpy()
    assert tm.is_nm(M, n, m) and (st.kind != "transposable" or tm.is_transposable(M, n, m))
    assert torch.all(W_new[~mask] == 0) and sal.shape == W.shape
    W_obs, _, _ = obs_prune(W, H, st)
    # ADMM optimises mask and weights jointly on the full quadratic loss; OBS fixes them column by column
    assert relative_output_error(W, W_new, H) < relative_output_error(W, W_obs, H)


@pytest.mark.parametrize("seed", range(4))
def test_refit_is_the_least_squares_optimum_on_the_mask(seed):
    W, H = layer(seed, rows=6, cols=16, samples=100)
    mask = torch.from_numpy(tm.optimal_mask((W**2).numpy(), 2, 4))
    Wr = refit_on_mask(W, H, mask, damp=0.0, iters=200, rtol=1e-12).double()
    Hd, Wd = H.double(), W.double()
    for i in range(W.shape[0]):  # normal equations per row on its kept columns: H_KK w_K = (H w0)_K
        k = mask[i]
        exact = torch.linalg.solve(Hd[k][:, k], (Hd @ Wd[i])[k])
        assert torch.allclose(Wr[i, k], exact, rtol=1e-4, atol=1e-4)
    assert torch.all(Wr[~mask] == 0)
    # never worse than the weights it starts from (plain masking, and SparseGPT's update)
    W_obs, m_obs, _ = obs_prune(W, H, Structure.parse("2:4-T"))
    assert relative_output_error(W, refit_on_mask(W, H, m_obs, W_obs), H) <= relative_output_error(W, W_obs, H) + 1e-6
    assert relative_output_error(W, Wr.float(), H) <= relative_output_error(W, W * mask, H) + 1e-6


def test_prune_model_admm_and_refit_on_a_tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    ids = torch.randint(0, 96, (6, 24), generator=torch.Generator().manual_seed(1))
    errors = {}
    for rule, refit in (("sparsegpt", False), ("sparsegpt", True), ("admm", False)):
        model = transformers.LlamaForCausalLM(cfg).eval()
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(cfg).eval()
        res = prune_model(model, ids, "2:4-T", rule, refit=refit, progress=False)
        params = dict(model.named_parameters())
        assert len(res.masks) == 14 and res.report.settings["refit"] is refit
        for name, mask in res.masks.items():
            assert tm.is_transposable(mask.numpy(), 2, 4), name
            assert torch.all(params[name + ".weight"][~mask] == 0)
        errors[rule, refit] = res.report.mean_error
    assert errors["sparsegpt", True] <= errors["sparsegpt", False] + 1e-6
    assert errors["admm", False] < errors["sparsegpt", False]


def test_refit_needs_data():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(ValueError, match="refit=True needs calibration data"):
        prune_model(transformers.LlamaForCausalLM(cfg), None, "2:4-T", "magnitude", refit=True, progress=False)
