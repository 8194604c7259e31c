"""transmask.prune on a tiny randomly initialised Llama (no files, no downloads)."""
from __future__ import annotations

import numpy as np
import pytest

import transmask as tm  # first, so OpenMP's passive wait policy is set before torch loads libgomp

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)  # tiny models; extra threads only contend on a shared 2-core machine
from transmask.prune import SequentialAdapter, Structure, prune_model  # noqa: E402
from transmask.prune.rules import obs_prune, relative_output_error, wanda_saliency  # noqa: E402
from transmask.prune.structures import select_mask  # noqa: E402

VOCAB = 96


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 64, inter: int = 128):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                                   num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128)
    return transformers.LlamaForCausalLM(cfg).eval()


def calib(seqs: int = 6, length: int = 24, seed: int = 1):
    return torch.randint(0, VOCAB, (seqs, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def dense_state():
    return {k: v.clone() for k, v in tiny_llama().state_dict().items()}


def fresh(dense_state):
    model = tiny_llama()
    model.load_state_dict(dense_state)
    return model


LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.mark.parametrize("rule, structure", [(rule, structure) for rule in ("magnitude", "wanda", "sparsegpt", "admm", "adaprune")
                                              for structure in ("2:4", "2:4-T", "4:8-T", "unstructured")
                                              if not (rule == "adaprune" and structure == "unstructured")])  # N:M only: an error below
def test_every_layer_has_the_structure_and_zeros_off_the_mask(dense_state, rule, structure):
    model = fresh(dense_state)
    res = prune_model(model, calib(), structure, rule, progress=False, batch_size=4)
    st = Structure.parse(structure)
    assert len(res.masks) == 2 * len(LINEARS)
    assert {name.rsplit(".", 1)[-1] for name in res.masks} == set(LINEARS)
    params = dict(model.named_parameters())
    for name, mask in res.masks.items():
        W = params[name + ".weight"].detach()
        assert mask.shape == W.shape and mask.dtype == torch.bool
        assert torch.all(W[~mask] == 0), name
        mk = mask.numpy()
        if st.kind == "transposable":
            assert tm.is_transposable(mk, st.n, st.m, keep="exactly"), name
        elif st.kind == "nm":
            assert tm.is_nm(mk, st.n, st.m, keep="exactly"), name
        else:
            assert mk.mean() == pytest.approx(0.5, abs=1.0 / mk.shape[1]), name
    rep = res.report
    assert len(rep.layers) == len(res.masks)
    assert all(0.0 <= r.rel_error < 1.5 and 0.0 < r.kept_l1 <= 1.0 for r in rep.layers)
    assert rep.density == pytest.approx(0.5, abs=0.02)
    md = rep.to_markdown()
    assert "model.layers.1.mlp.down_proj" in md and rep.to_dict()["layers"][0]["name"] == res.report.layers[0].name


def test_at_most_masks_are_transposable_with_at_most_n(dense_state):
    res = prune_model(fresh(dense_state), calib(), "2:4-T", "sparsegpt", keep="at_most", progress=False)
    for mask in res.masks.values():
        assert tm.is_transposable(mask.numpy(), 2, 4, keep="at_most")


@pytest.mark.parametrize("structure", ["2:4", "2:4-T", "8:16-T", "unstructured"])
def test_sparsegpt_reconstructs_better_than_magnitude(structure):
    # same layer, same inputs: OBS with its own mask beats the magnitude mask with no update
    g = torch.Generator().manual_seed(3)
    W = torch.randn(32, 64, generator=g)
    X = torch.randn(400, 64, generator=g) @ torch.randn(64, 64, generator=g)  # correlated inputs
    H = X.T @ X
    st = Structure.parse(structure)
    W_obs, mask_obs, _ = obs_prune(W, H, st, damp=0.01)
    mask_mag = select_mask(W.abs(), st)
    err_obs = relative_output_error(W, W_obs, H)
    err_mag = relative_output_error(W, W * mask_mag, H)
    assert err_obs <= err_mag
    assert torch.all(W_obs[~mask_obs] == 0)
    # direct check of the error formula against the outputs
    direct = float(torch.linalg.norm((W - W_obs) @ X.T) / torch.linalg.norm(W @ X.T))
    assert err_obs == pytest.approx(direct, rel=1e-4)


def test_sparsegpt_model_error_below_magnitude(dense_state):
    ids = calib(8, 32)
    errs = {}
    for rule in ("magnitude", "sparsegpt"):
        res = prune_model(fresh(dense_state), ids, "2:4-T", rule, progress=False)
        errs[rule] = np.array([r.rel_error for r in res.report.layers])
    assert np.all(errs["sparsegpt"] <= errs["magnitude"] + 1e-6)


def test_obs_layer_scope_and_stripe_scope_both_valid():
    g = torch.Generator().manual_seed(4)
    W = torch.randn(16, 32, generator=g)
    X = torch.randn(100, 32, generator=g)
    st = Structure.parse("2:4-T")
    for scope in ("stripe", "layer"):
        W_new, mask, _ = obs_prune(W, X.T @ X, st, mask_scope=scope)
        assert tm.is_transposable(mask.numpy(), 2, 4, keep="exactly")
        assert torch.all(W_new[~mask] == 0)


def test_wanda_equals_magnitude_when_input_norms_are_equal():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(16, 32, generator=g)
    H = torch.eye(32) * 7.0 + 0.0  # every input feature has the same norm
    for structure in ("2:4", "2:4-T", "unstructured"):
        st = Structure.parse(structure)
        mag = select_mask(W.abs(), st, per_row=True)
        wanda = select_mask(wanda_saliency(W, H), st, per_row=True)
        assert torch.equal(mag, wanda)


def test_wanda_differs_from_magnitude_with_an_outlier_feature():
    g = torch.Generator().manual_seed(6)
    W = torch.randn(16, 32, generator=g)
    H = torch.eye(32)
    H[3, 3] = 1e4
    st = Structure.parse("2:4")
    mask = select_mask(wanda_saliency(W, H), st)
    assert bool(mask[:, 3].all())  # the outlier input keeps all its weights in row-wise 2:4


def test_streaming_holds_one_blocks_activations(dense_state):
    model = fresh(dense_state)
    ids = calib(6, 24)
    res = prune_model(model, ids, "2:4", "sparsegpt", progress=False, batch_size=4)
    hidden = model.config.hidden_size
    one_block = ids.numel() * hidden * 4  # float32 hidden states of every calibration token, one block
    # inputs and outputs of one block at most, not one per block
    assert one_block <= res.report.activation_bytes_peak <= 2 * one_block
    deeper = tiny_llama(layers=4)
    res4 = prune_model(deeper, ids, "2:4", "sparsegpt", progress=False, batch_size=4)
    assert res4.report.activation_bytes_peak == res.report.activation_bytes_peak


def test_blocks_run_one_at_a_time_in_order(dense_state):
    model = fresh(dense_state)
    calls = []
    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(lambda mod, args, i=i: calls.append(i))
    prune_model(model, calib(4, 16), "2:4-T", "wanda", progress=False, batch_size=2)
    # every call to block 1 comes after the last call to block 0 (block 0 is done before block 1 starts)
    last0 = max(k for k, b in enumerate(calls) if b == 0)
    first1 = min(k for k, b in enumerate(calls) if b == 1)
    assert last0 < first1


def test_sequential_recapture_sees_pruned_attention(dense_state):
    ids = calib(6, 24)
    a = prune_model(fresh(dense_state), ids, "2:4-T", "sparsegpt", sequential=True, progress=False)
    b = prune_model(fresh(dense_state), ids, "2:4-T", "sparsegpt", sequential=False, progress=False)
    qa = a.masks["model.layers.0.self_attn.q_proj"]
    qb = b.masks["model.layers.0.self_attn.q_proj"]
    assert torch.equal(qa, qb)  # first group: same (dense) inputs either way
    ea = {r.name: r.rel_error for r in a.report.layers}
    eb = {r.name: r.rel_error for r in b.report.layers}
    assert ea["model.layers.0.mlp.gate_proj"] != eb["model.layers.0.mlp.gate_proj"]


class TinyBlockLM(torch.nn.Module):
    """A non-HF model: embed -> residual MLP blocks -> head, with its own adapter."""

    def __init__(self, d=32, blocks=3):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, d)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.GELU(), torch.nn.Linear(64, d)) for _ in range(blocks))
        self.head = torch.nn.Linear(d, VOCAB)

    def forward(self, ids):
        h = self.embed(ids)
        for b in self.blocks:
            h = h + b(h)
        return self.head(h)

    def block_adapter(self):
        return SequentialAdapter(self.embed, self.blocks, "blocks")


def test_any_module_with_an_adapter():
    model = TinyBlockLM()
    res = prune_model(model, calib(4, 16), "4:8-T", "sparsegpt", progress=False)
    assert sorted(res.masks) == [f"blocks.{i}.{j}" for i in range(3) for j in (0, 2)]
    for mask in res.masks.values():
        assert tm.is_transposable(mask.numpy(), 4, 8, keep="exactly")
    assert torch.count_nonzero(model.head.weight) == model.head.weight.numel()  # head untouched


def test_callable_method_is_used():
    seen = []

    def rowblock_mask(sal, n, m):
        seen.append(sal.shape)
        return tm.optimal_mask(sal, n, m, method="approx")

    model = TinyBlockLM()
    res = prune_model(model, calib(4, 16), Structure("transposable", 2, 4, method=rowblock_mask), "wanda",
                      progress=False)
    assert len(seen) == len(res.masks) and res.report.structure == "2:4-T rowblock_mask"


def test_exclude_and_clear_errors(dense_state):
    model = fresh(dense_state)
    res = prune_model(model, calib(), "2:4", "magnitude", exclude=["*.down_proj"], progress=False)
    assert not any(n.endswith("down_proj") for n in res.masks)
    with pytest.raises(ValueError, match="needs calibration"):
        prune_model(fresh(dense_state), None, "2:4", "sparsegpt", progress=False)
    with pytest.raises(ValueError, match="rule must be"):
        prune_model(fresh(dense_state), calib(), "2:4", "obs", progress=False)
    with pytest.raises(ValueError, match="cannot parse structure"):
        prune_model(fresh(dense_state), calib(), "2-4", "magnitude", progress=False)
    with pytest.raises(ValueError, match="m must be one of"):
        prune_model(fresh(dense_state), calib(), "2:6", "magnitude", progress=False)
    with pytest.raises(ValueError, match="N:M structures only"):
        prune_model(fresh(dense_state), calib(), "unstructured", "adaprune", progress=False)
    odd = tiny_llama(hidden=64, inter=120)  # 120 is not a multiple of 16
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj.*exclude"):
        prune_model(odd, calib(), "8:16-T", "magnitude", progress=False)
    with pytest.raises(ValueError, match="2-D"):
        prune_model(fresh(dense_state), torch.arange(10), "2:4", "wanda", progress=False)


def test_magnitude_without_data_matches_with_data(dense_state):
    a = prune_model(fresh(dense_state), None, "2:4-T", "magnitude", progress=False)
    b = prune_model(fresh(dense_state), calib(), "2:4-T", "magnitude", progress=False)
    for name in a.masks:
        assert torch.equal(a.masks[name], b.masks[name])
    assert np.isnan(a.report.mean_error) and not np.isnan(b.report.mean_error)


def test_dense_stats_are_shared_across_structures(dense_state):
    from transmask.prune import collect_stats

    ids = calib(6, 24)
    stats = collect_stats(fresh(dense_state), ids, progress=False)
    assert stats.tokens == ids.numel()
    # q, k, v read one input: one shared matrix
    assert stats.hessian("model.layers.0.self_attn.q_proj") is stats.hessian("model.layers.0.self_attn.v_proj")
    nonseq = prune_model(fresh(dense_state), ids, "2:4-T", "sparsegpt", sequential=False, progress=False)
    for structure in ("2:4-T", "4:8"):
        res = prune_model(fresh(dense_state), None, structure, "sparsegpt", stats=stats, progress=False)
        assert res.report.settings["calibration"] == "dense stats"
        assert len(res.masks) == 2 * len(LINEARS)
        if structure == "2:4-T":  # block 0 sees the dense inputs either way
            for name in res.masks:
                if ".layers.0." in name:
                    assert torch.equal(res.masks[name], nonseq.masks[name]), name
    with pytest.raises(ValueError, match="adaprune"):
        prune_model(fresh(dense_state), None, "2:4", "adaprune", stats=stats, progress=False)


def test_act_order_keeps_the_structure_and_reduces_to_natural_when_sorted():
    from transmask.prune.rules import column_order

    g = torch.Generator().manual_seed(7)
    W = torch.randn(16, 32, generator=g)
    scale = torch.ones(32)
    scale[[5, 17, 30]] = 20.0  # outlier input features
    X = torch.randn(300, 32, generator=g) * scale
    H = X.T @ X
    st = Structure.parse("2:4-T")
    perm = column_order(H, st)
    assert sorted(perm.tolist()) == list(range(32))
    assert all(perm[k] % 4 == k % 4 for k in range(32))  # whole stripes move together
    assert set(perm[:4].tolist()) == {28, 29, 30, 31}  # the stripe with the largest energy goes first
    W_act, mask, _ = obs_prune(W, H, st, order="act")
    assert tm.is_transposable(mask.numpy(), 2, 4, keep="exactly") and torch.all(W_act[~mask] == 0)
    # with the stripes already in descending energy, "act" is the natural order
    Hs = torch.diag(torch.linspace(40.0, 1.0, 32))
    assert torch.equal(column_order(Hs, st), torch.arange(32))
    a = obs_prune(W, Hs, st, order="act")[0]
    b = obs_prune(W, Hs, st, order="natural")[0]
    assert torch.equal(a, b)
    res = prune_model(TinyBlockLM(), calib(4, 16), "2:4-T", "sparsegpt", order="act", progress=False)
    assert res.report.settings["order"] == "act"
    for mask in res.masks.values():
        assert tm.is_transposable(mask.numpy(), 2, 4, keep="exactly")
    with pytest.raises(ValueError, match="order must be"):
        prune_model(TinyBlockLM(), calib(4, 16), "2:4-T", "sparsegpt", order="random", progress=False)
