"""prune_model(permute=...): rule-aware function-preserving permutations before pruning (tiny Llama, no files)."""
from __future__ import annotations

import numpy as np
import pytest

import transmask as tm  # first, so OpenMP's passive wait policy is set before torch loads libgomp

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
from transmask.prune.permute import parse_permute, permute_for_pruning, rule_saliency  # noqa: E402
from transmask.prune import Structure, collect_stats, prune_model  # noqa: E402

VOCAB = 96


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # uneven channel scales, as in trained models, so that permutations matter
        g = torch.Generator().manual_seed(seed + 7)
        for layer in model.model.layers:
            for lin in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.self_attn.v_proj):
                lin.weight.mul_(torch.exp(torch.randn(lin.weight.shape[0], 1, generator=g)))
    return model


def calib(seqs: int = 4, length: int = 16, seed: int = 1):
    return torch.randint(0, VOCAB, (seqs, length), generator=torch.Generator().manual_seed(seed))


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("rule", ["magnitude", "wanda", "sparsegpt"])
def test_function_unchanged_and_statistics_follow(rule):
    model = tiny_llama()
    ids = calib(seed=5)
    before = logits(model, ids)
    stats = collect_stats(model, calib(), progress=False)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    record, new_stats = permute_for_pruning(model, Structure.parse("2:4-T"), rule, True, stats=stats)
    assert torch.allclose(logits(model, ids), before, atol=1e-5, rtol=1e-4)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])]
    assert changed, "nothing was permuted"
    assert record["kept"] >= record["kept_identity"]
    # the permuted statistics are the statistics of the permuted model
    fresh = collect_stats(model, calib(), progress=False)
    for name, H in fresh.hessians.items():
        assert torch.allclose(new_stats.hessian(name), H, atol=1e-4, rtol=1e-4), name
    # the record holds valid permutations; applying them to the original weights gives the model's
    for axis, entry in record["permutations"].items():
        p = np.asarray(entry["perm"])
        assert sorted(p) == list(range(len(p))), axis
        if axis.endswith(".mlp"):
            W0 = weights[axis + ".down_proj.weight"]
            assert torch.equal(model.state_dict()[axis + ".down_proj.weight"], W0[:, p])


def test_kept_saliency_objective_is_what_the_masks_keep():
    """The record's 'kept' is the summed kept fraction of the rule's saliency under the optimal masks."""
    model = tiny_llama(seed=2)
    stats = collect_stats(model, calib(), progress=False)
    record, new_stats = permute_for_pruning(model, Structure.parse("2:4-T"), "wanda", {"axes": "mlp"}, stats=stats)
    total = 0.0
    for i, layer in enumerate(model.model.layers):
        for part in ("gate_proj", "up_proj", "down_proj"):
            name = f"model.layers.{i}.mlp.{part}"
            sal = rule_saliency(getattr(layer.mlp, part).weight, new_stats.hessian(name), "wanda")
            mask = tm.optimal_mask(sal, 2, 4)
            total += sal[mask].sum() / sal.sum()
    assert np.isclose(record["kept"], total, rtol=1e-9)
    assert record["kept"] > record["kept_identity"]


@pytest.mark.parametrize("structure", ["2:4-T", "4:8-T"])
def test_prune_model_permute_streaming(structure):
    model = tiny_llama(seed=1)
    ids = calib(seed=9)
    res = prune_model(model, calib(), structure, "sparsegpt", permute=True, progress=False, batch_size=2)
    perm = res.report.settings["permute"]
    assert perm["axes"] == "mlp+values" and perm["structure"] == structure
    assert len(perm["permutations"]) == 2 * (1 + 2)  # per block: the MLP and 2 KV heads
    assert perm["matrices"] == 2 * 5  # gate, up, down, v, o per block
    st = Structure.parse(structure)
    params = dict(model.named_parameters())
    for name, mask in res.masks.items():
        assert tm.is_transposable(mask.numpy(), st.n, st.m), name
        assert torch.all(params[name + ".weight"][~mask] == 0), name
    assert torch.isfinite(logits(model, ids)).all()
    assert res.report.to_json()  # JSON-ready


def test_prune_model_permute_stats_matches_streaming_statistics():
    """With dense statistics the pruned layers see permuted Gram matrices: same result as collecting them afterwards."""
    dense = tiny_llama(seed=3)
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    stats = collect_stats(dense, calib(), progress=False)
    res = prune_model(dense, None, "2:4-T", "sparsegpt", permute="mlp+values", stats=stats, progress=False)
    # the same permutations applied by hand, statistics collected on the permuted model, then pruned
    other = tiny_llama(seed=3)
    other.load_state_dict(state)
    permute_for_pruning(other, Structure.parse("2:4-T"), "sparsegpt", True, stats=collect_stats(other, calib(), progress=False))
    res2 = prune_model(other, None, "2:4-T", "sparsegpt", stats=collect_stats(other, calib(), progress=False),
                       progress=False)
    for name in res.masks:
        agree = (res.masks[name] == res2.masks[name]).float().mean()
        assert agree > 0.99, name


def test_bad_options():
    with pytest.raises(ValueError, match="axes"):
        parse_permute("residual")
    with pytest.raises(ValueError, match="unknown"):
        parse_permute({"sweep": 2})
    with pytest.raises(TypeError):
        parse_permute(3)
    model = tiny_llama()
    with pytest.raises(ValueError, match="transposable"):
        prune_model(model, calib(), "2:4", "magnitude", permute=True, progress=False)


def test_cli_permute(tmp_path, capsys):
    """``transmask prune --permute``: the saved model is the permuted, pruned one; the report holds the permutations."""
    import json

    pytest.importorskip("safetensors")
    from test_prune_cli import save_tiny_model, write_text

    from transmask.prune.cli import main

    model_dir = save_tiny_model(tmp_path / "tiny")
    text = write_text(tmp_path / "calib.txt")
    out = tmp_path / "pruned"
    rc = main(["prune", str(model_dir), str(out), "--structure", "2:4-T", "--rule", "wanda", "--text", str(text),
               "--nsamples", "4", "--seq-len", "16", "--quiet", "--permute"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "prune_report.json").read_text())
    perms = report["settings"]["permute"]["permutations"]
    assert set(perms) == {f"model.layers.{i}.{a}" for i in range(2) for a in ("mlp", "self_attn.values.0",
                                                                               "self_attn.values.1")}
    dense = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    pruned = transformers.AutoModelForCausalLM.from_pretrained(out)
    p = np.asarray(perms["model.layers.0.mlp"]["perm"])
    W0 = dense.model.layers[0].mlp.up_proj.weight.detach()[p]
    W1 = pruned.model.layers[0].mlp.up_proj.weight.detach()
    assert torch.equal(W1[W1 != 0], W0[W1 != 0])  # kept weights are the permuted dense ones (Wanda: no update)
    assert tm.is_transposable((W1 != 0).numpy(), 2, 4)
