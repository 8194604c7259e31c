"""Permutations applied to torch models leave their function unchanged (tiny Llama, small CNN, named tensors)."""
from __future__ import annotations

import numpy as np
import pytest

import transmask as tm

torch = pytest.importorskip("torch")
models = tm.permute.models


def _tiny_llama(seed=0, kv_heads=2):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16,
                                      max_position_embeddings=64, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random norm weights, so that a wrong norm permutation shows
        for mod in model.modules():
            if type(mod).__name__.endswith("RMSNorm"):
                mod.weight.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_llama_function_unchanged(kv_heads):
    model = _tiny_llama(kv_heads=kv_heads)
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids).logits
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    report = models.search_model(model, 2, 4, residual=True, sweeps=2, seed=0)
    with torch.no_grad():
        after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    names = [name for name, _ in report.entries]
    assert names[0] == "residual" and "layers.1.mlp" in names and f"layers.0.self_attn.values.{kv_heads - 1}" in names
    assert report.kept >= report.kept_identity
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, weights_before[k])]
    assert any("down_proj" in k for k in changed) and any("v_proj" in k for k in changed)
    # every reported value is what the exact solver keeps on the permuted weights
    res = dict(report.entries)["layers.0.mlp"]
    mlp = model.model.layers[0].mlp
    kept = sum(tm.permute.kept_magnitude(w.weight.detach().numpy(), 2, 4) for w in (mlp.gate_proj, mlp.up_proj))
    kept += tm.permute.kept_magnitude(mlp.down_proj.weight.detach().numpy(), 2, 4)
    assert kept == pytest.approx(res.kept, rel=1e-6)


def test_llama_each_permutation_alone():
    model = _tiny_llama(seed=3)
    ids = torch.randint(0, 96, (1, 10), generator=torch.Generator().manual_seed(2))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        before = model(ids).logits
        models.permute_residual(model, rng.permutation(64))
        models.permute_mlp(model.model.layers[1].mlp, rng.permutation(128))
        models.permute_attention_values(model.model.layers[0].self_attn, [rng.permutation(16) for _ in range(2)])
        after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="permutation"):
        models.permute_mlp(model.model.layers[0].mlp, np.zeros(128, dtype=int))
    with pytest.raises(ValueError, match="one per KV head"):
        models.permute_attention_values(model.model.layers[0].self_attn, [np.arange(16)])


class _SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 8, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_cnn_function_unchanged():
    torch.manual_seed(0)
    net = _SmallCNN()
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        net.bn1.running_mean.uniform_(-1, 1)
        net.bn1.running_var.uniform_(0.5, 2)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.5, 0.5)
    net.eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = net(x)
    res = models.search_conv_pair(net.conv1, net.conv2, 2, 4, bn=net.bn1, sweeps=3)
    assert sorted(res.perm) == list(range(16)) and res.kept >= res.kept_identity
    with torch.no_grad():
        after = net(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    grouped = torch.nn.Conv2d(16, 16, 3, groups=2)
    with pytest.raises(ValueError, match="groups"):
        models.permute_conv_pair(net.conv1, grouped, np.arange(16))


def test_permute_named_fc_and_llama_groups():
    rng = np.random.default_rng(0)
    t = {
        "model.layers.0.mlp.gate_proj.weight": rng.standard_normal((32, 16)),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((32, 16)),
        "model.layers.0.mlp.down_proj.weight": rng.standard_normal((16, 32)),
        "model.layers.0.self_attn.o_proj.weight": rng.standard_normal((16, 16)),
        "h.0.mlp.fc1.weight": torch.randn(24, 8),
        "h.0.mlp.fc1.bias": torch.randn(24),
        "h.0.mlp.fc2.weight": torch.randn(8, 24),
        "encoder.layer.0.attention.output.dense.weight": rng.standard_normal((8, 8)),  # not an MLP
        "lonely.mlp.fc1.weight": rng.standard_normal((8, 8)),  # no fc2: left alone
    }
    new, results = tm.permute.permute_named(t, 2, 4, sweeps=2)
    assert set(results) == {"model.layers.0.", "h.0."}
    p = results["model.layers.0."].perm
    assert np.array_equal(new["model.layers.0.mlp.gate_proj.weight"], t["model.layers.0.mlp.gate_proj.weight"][p])
    assert np.array_equal(new["model.layers.0.mlp.down_proj.weight"], t["model.layers.0.mlp.down_proj.weight"][:, p])
    q = results["h.0."].perm
    assert isinstance(new["h.0.mlp.fc1.bias"], torch.Tensor)
    assert torch.equal(new["h.0.mlp.fc1.bias"], t["h.0.mlp.fc1.bias"][torch.as_tensor(q)])
    assert torch.equal(new["h.0.mlp.fc2.weight"], t["h.0.mlp.fc2.weight"][:, torch.as_tensor(q)])
    for k in ("model.layers.0.self_attn.o_proj.weight", "encoder.layer.0.attention.output.dense.weight", "lonely.mlp.fc1.weight"):
        assert new[k] is t[k]
    # the MLP computes the same function
    x = torch.randn(5, 8)
    old = torch.relu(x @ t["h.0.mlp.fc1.weight"].T + t["h.0.mlp.fc1.bias"]) @ t["h.0.mlp.fc2.weight"].T
    mid = torch.relu(x @ new["h.0.mlp.fc1.weight"].T + new["h.0.mlp.fc1.bias"]) @ new["h.0.mlp.fc2.weight"].T
    torch.testing.assert_close(mid, old)


def test_find_groups_bert_names():
    from transmask.permute.named import find_coupled_groups

    t = {"bert.encoder.layer.3.intermediate.dense.weight": np.zeros((16, 4)),
         "bert.encoder.layer.3.intermediate.dense.bias": np.zeros(16),
         "bert.encoder.layer.3.output.dense.weight": np.zeros((4, 16)),
         "bert.encoder.layer.3.attention.output.dense.weight": np.zeros((4, 4))}
    (g,) = find_coupled_groups(t)
    assert g.family == "bert_mlp" and g.prefix == "bert.encoder.layer.3."
    assert g.biases == ("bert.encoder.layer.3.intermediate.dense.bias",)
