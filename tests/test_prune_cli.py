"""``transmask prune`` (transmask.prune.cli) end to end on a tiny Llama saved to a temp dir."""
from __future__ import annotations

import json

import pytest

import transmask as tm  # first: OpenMP's passive wait policy before torch loads libgomp

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
torch.set_num_threads(1)

from transmask.prune.cli import main  # noqa: E402

WORDS = ("the king and queen of a castle by sea with crown sword night day love war "
         "ghost father son lord lady speak come go hear see know").split()


def save_tiny_model(folder, inter=128):
    """A tiny random Llama plus a word-level tokenizer, saved like any HF checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=inter, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def write_text(path, words=2000):
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(WORDS), (words,), generator=g).tolist()
    path.write_text(" ".join(WORDS[i] for i in idx))
    return path


@pytest.mark.parametrize("rule,extra", [("sparsegpt", []), ("sparsegpt", ["--refit", "--rotate", "hadamard"]),
                                        ("admm", [])])
def test_cli_round_trip(tmp_path, capsys, rule, extra):
    model_dir = save_tiny_model(tmp_path / "tiny")
    text = write_text(tmp_path / "calib.txt")
    out = tmp_path / "pruned"
    rc = main(["prune", str(model_dir), str(out), "--structure", "4:8-T", "--rule", rule, "--text", str(text),
               "--nsamples", "8", "--seq-len", "32", "--quiet", *extra])
    assert rc == 0, capsys.readouterr().err
    assert "pruned 14 layers to 4:8-T exact" in capsys.readouterr().out
    for f in ("config.json", "model.safetensors", "masks.safetensors", "prune_report.json", "prune_report.md"):
        assert (out / f).is_file(), f
    from safetensors.torch import load_file

    masks = load_file(str(out / "masks.safetensors"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    params = dict(reloaded.named_parameters())
    assert len(masks) == 14
    for name, mask in masks.items():
        W = params[name + ".weight"].detach()
        assert mask.dtype == torch.bool and torch.equal(W != 0, mask), name  # zeros exactly off the mask
        assert tm.is_transposable(mask.numpy(), 4, 8, keep="exactly"), name
    report = json.loads((out / "prune_report.json").read_text())
    assert report["structure"] == "4:8-T exact" and report["calibration_tokens"] == 8 * 32
    assert report["rule"] == rule and report["settings"]["refit"] is ("--refit" in extra)
    assert (report["settings"]["rotation"] or {}).get("kind") == ("hadamard" if "--rotate" in extra else None)
    assert len(report["layers"]) == 14 and report["calibration"]["nsamples"] == 8
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("the king")["input_ids"] == [1, 2]
    # the written model runs
    with torch.no_grad():
        assert torch.isfinite(reloaded(torch.tensor([[1, 2, 3]])).logits).all()


def test_cli_clear_errors(tmp_path, capsys):
    text = write_text(tmp_path / "calib.txt", words=100)
    rc = main(["prune", str(tmp_path / "missing"), str(tmp_path / "o1"), "--text", str(text), "--quiet"])
    assert rc == 2 and "model not found" in capsys.readouterr().err
    model_dir = save_tiny_model(tmp_path / "tiny")
    rc = main(["prune", str(model_dir), str(tmp_path / "o2"), "--text", str(text), "--nsamples", "64", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "calibration text too short" in err
    odd = save_tiny_model(tmp_path / "odd", inter=120)
    rc = main(["prune", str(odd), str(tmp_path / "o3"), "--structure", "16:32-T", "--text", str(text), "--nsamples", "2",
               "--seq-len", "16", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "model.layers.0.mlp.gate_proj" in err and "multiples of m=32" in err
    rc = main(["prune", str(model_dir), str(tmp_path / "o4"), "--structure", "3-4", "--text", str(text), "--quiet"])
    assert rc == 2 and "cannot parse structure" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    rc = main(["prune", str(model_dir), str(tmp_path / "full"), "--text", str(text), "--quiet"])
    assert rc == 2 and "not an empty directory" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
