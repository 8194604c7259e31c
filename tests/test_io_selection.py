"""Which tensors `transmask mask` masks by default: matmul weights, not embeddings, norms or tied heads (issue 12 #10).

State dicts with the names real Hugging Face models use (BERT, Llama, GPT-2,
ViT, ELECTRA, GPT-NeoX), scaled down.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

import transmask as tm
from transmask import cli
from transmask.io import SelectionRules, TensorRef, read_checkpoint, select_weights

from _hf_state_dicts import BERT_MATMUL, FFN, HIDDEN, LLAMA_MATMUL, VOCAB, bert_state_dict, llama_state_dict

def refs_of(sd: dict[str, np.ndarray]) -> list[TensorRef]:
    tags = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    return [TensorRef(k, v.shape, tags[v.dtype], "test", lambda v=v: v) for k, v in sd.items()]


def categories(skipped) -> dict[str, str]:
    return {s.name: s.category for s in skipped}


# ------------------------------------------------------------------------------ the rules
def test_bert_selects_linear_weights_only():
    selected, skipped = select_weights(refs_of(bert_state_dict()), SelectionRules(min_numel=1))
    assert {r.name for r in selected} == BERT_MATMUL
    cats = categories(skipped)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        assert cats[f"bert.embeddings.{name}.weight"] == "embedding"
    assert cats["cls.predictions.decoder.weight"] == "tied"  # byte-equal to the word embeddings
    assert cats["bert.embeddings.LayerNorm.weight"] == "ndim" and cats["cls.predictions.bias"] == "ndim"
    assert cats["bert.embeddings.position_ids"] == "dtype"
    reason = {s.name: s.reason for s in skipped}["cls.predictions.decoder.weight"]
    assert "bert.embeddings.word_embeddings.weight" in reason and "--include-embeddings" in reason


def test_include_embeddings_masks_them_too():
    sd = bert_state_dict()
    selected, skipped = select_weights(refs_of(sd), SelectionRules(min_numel=1, include_embeddings=True))
    extra = {"bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
             "bert.embeddings.token_type_embeddings.weight", "cls.predictions.decoder.weight"}
    assert {r.name for r in selected} == BERT_MATMUL | extra
    assert not {"embedding", "tied"} & set(categories(skipped).values())


def test_llama_untied_head_is_a_linear_layer():
    selected, skipped = select_weights(refs_of(llama_state_dict(untied_head=True)), SelectionRules(min_numel=1),
                                       config={"tie_word_embeddings": False})
    assert {r.name for r in selected} == LLAMA_MATMUL | {"lm_head.weight"}
    cats = categories(skipped)
    assert cats["model.embed_tokens.weight"] == "embedding"
    assert cats["model.layers.0.self_attn.rotary_emb.inv_freq"] == "ndim"


@pytest.mark.parametrize("config, tied", [
    ({"tie_word_embeddings": True}, True),
    ({"model_type": "gpt2"}, True),                        # Hugging Face's default is tied
    ({"text_config": {"tie_word_embeddings": True}}, True),
    ({"tie_word_embeddings": False}, False),
    (None, False),                                         # no config: only the data decides (it differs here)
])
def test_tie_declared_in_the_config(config, tied):
    _, skipped = select_weights(refs_of(llama_state_dict(untied_head=True)), SelectionRules(min_numel=1),
                                config=config)
    assert (categories(skipped).get("lm_head.weight") == "tied") == tied


def test_tied_by_equal_data_without_config():
    _, skipped = select_weights(refs_of(llama_state_dict(untied_head=False)), SelectionRules(min_numel=1))
    assert categories(skipped)["lm_head.weight"] == "tied"


def test_other_architectures():
    g = np.random.default_rng(0)
    f = lambda *s: g.standard_normal(s).astype(np.float32)  # noqa: E731
    wte = f(VOCAB, HIDDEN)
    sd = {
        # GPT-2: Conv1D weights (in, out), a 4-D causal-mask buffer named bias, tied head
        "transformer.wte.weight": wte, "transformer.wpe.weight": f(128, HIDDEN),
        "transformer.h.0.attn.c_attn.weight": f(HIDDEN, 3 * HIDDEN),
        "transformer.h.0.attn.bias": np.tril(np.ones((1, 1, 16, 16), np.float32)),
        "transformer.h.0.mlp.c_fc.weight": f(HIDDEN, FFN), "lm_head.weight": wte.copy(),
        # ViT: the patch embedding is a conv (masked); cls token and position table are parameters
        "vit.embeddings.patch_embeddings.projection.weight": f(HIDDEN, 3, 4, 4),
        "vit.embeddings.cls_token": f(1, 1, HIDDEN), "vit.embeddings.position_embeddings": f(1, 17, HIDDEN),
        # ELECTRA's and ALBERT's embedding projections are Linear layers; GPT-NeoX's head is embed_out
        "electra.embeddings_project.weight": f(HIDDEN, 32),
        "albert.encoder.embedding_hidden_mapping_in.weight": f(HIDDEN, 32),
        "gpt_neox.embed_in.weight": f(VOCAB, HIDDEN), "embed_out.weight": f(VOCAB, HIDDEN),
        # T5: the shared embedding and the relative position bias table
        "shared.weight": f(VOCAB, HIDDEN),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": f(32, 8),
        # CLIP
        "text_model.embeddings.token_embedding.weight": f(VOCAB, HIDDEN),
        "text_model.embeddings.position_embedding.weight": f(77, HIDDEN),
    }
    selected, skipped = select_weights(refs_of(sd), SelectionRules(min_numel=1))
    assert {r.name for r in selected} == {
        "transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight",
        "vit.embeddings.patch_embeddings.projection.weight", "electra.embeddings_project.weight",
        "albert.encoder.embedding_hidden_mapping_in.weight", "embed_out.weight"}
    cats = categories(skipped)
    assert cats["lm_head.weight"] == "tied" and cats["transformer.h.0.attn.bias"] == "not-weight"
    assert cats["vit.embeddings.cls_token"] == "not-weight"
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "gpt_neox.embed_in.weight", "shared.weight",
                 "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 "text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight"):
        assert cats[name] == "embedding", name


def test_plain_arrays_are_still_masked():
    """Names without dots (a .npy file, np.savez(a=..., b=...)) follow no state-dict convention: all are weights."""
    sd = {"a": np.ones((8, 8), np.float32), "conv": np.ones((4, 4, 3, 3), np.float32)}
    selected, _ = select_weights(refs_of(sd), SelectionRules(min_numel=1))
    assert [r.name for r in selected] == ["a", "conv"]


def test_tied_by_shared_torch_storage(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {k: torch.from_numpy(v) for k, v in llama_state_dict().items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # tied: saved once, loaded as one storage
    torch.save(sd, tmp_path / "pytorch_model.bin")
    ckpt = read_checkpoint(tmp_path / "pytorch_model.bin")
    refs = {r.name: r for r in ckpt.tensors}
    assert refs["lm_head.weight"].storage == refs["model.embed_tokens.weight"].storage
    assert refs["model.layers.0.mlp.up_proj.weight"].storage != refs["model.layers.0.mlp.gate_proj.weight"].storage
    _, skipped = select_weights(ckpt.tensors, SelectionRules(min_numel=1))
    assert categories(skipped)["lm_head.weight"] == "tied"


# ------------------------------------------------------------------------------ the command line
def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def bert_dir(tmp_path) -> Path:
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    d = tmp_path / "bert"
    d.mkdir()
    save_file(bert_state_dict(), str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": VOCAB}))
    return d


def test_cli_on_a_bert_checkpoint(bert_dir, tmp_path):
    out = tmp_path / "masks.safetensors"
    rc, stdout, err = run(["mask", bert_dir, "--min-numel", 1, "-o", out])
    assert rc == 0, err
    from safetensors.numpy import load_file

    masks = load_file(str(out))
    assert set(masks) == BERT_MATMUL
    sd = bert_state_dict()
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, tm.optimal_mask(sd[name], 2, 4), err_msg=name)
    summary = stdout.split("skipped", 1)[1]
    assert "3  embedding tables (--include-embeddings masks them)" in summary
    assert "1  output heads tied to an embedding (--include-embeddings masks them)" in summary


def test_cli_json_says_what_was_skipped_and_why(bert_dir, tmp_path):
    rc, stdout, err = run(["mask", bert_dir, "--min-numel", 1, "--json", "-o", tmp_path / "m.safetensors"])
    assert rc == 0, err
    report = json.loads(stdout)
    skipped = {s["name"]: s for s in report["skipped"]}
    assert skipped["bert.embeddings.word_embeddings.weight"]["category"] == "embedding"
    assert "looked up, not multiplied" in skipped["bert.embeddings.word_embeddings.weight"]["reason"]
    assert skipped["cls.predictions.decoder.weight"]["category"] == "tied"
    assert report["skipped_counts"]["embedding"] == 3 and report["skipped_counts"]["tied"] == 1
    assert report["skipped_categories"]["tied"] == "output heads tied to an embedding"
    assert {t["name"] for t in report["tensors"]} == BERT_MATMUL


def test_cli_include_embeddings(bert_dir, tmp_path):
    rc, stdout, err = run(["mask", bert_dir, "--min-numel", 1, "--include-embeddings", "--json",
                           "-o", tmp_path / "m.safetensors"])
    assert rc == 0, err
    names = {t["name"] for t in json.loads(stdout)["tensors"]}
    assert "bert.embeddings.word_embeddings.weight" in names and "cls.predictions.decoder.weight" in names
