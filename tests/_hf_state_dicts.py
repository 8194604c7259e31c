"""Small state dicts with the tensor names of real Hugging Face models (BERT, Llama), for the I/O and CLI tests."""
from __future__ import annotations

import numpy as np

HIDDEN, VOCAB, FFN = 64, 300, 128


def _rng():
    return np.random.default_rng(0)


def bert_state_dict() -> dict[str, np.ndarray]:
    g = _rng()
    f = lambda *s: g.standard_normal(s).astype(np.float32)  # noqa: E731
    sd = {
        "bert.embeddings.word_embeddings.weight": f(VOCAB, HIDDEN),
        "bert.embeddings.position_embeddings.weight": f(128, HIDDEN),
        "bert.embeddings.token_type_embeddings.weight": f(2, HIDDEN),
        "bert.embeddings.LayerNorm.weight": f(HIDDEN),
        "bert.embeddings.LayerNorm.bias": f(HIDDEN),
        "bert.embeddings.position_ids": np.arange(128, dtype=np.int64)[None],
    }
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        for name, shape in (("attention.self.query", (HIDDEN, HIDDEN)), ("attention.self.key", (HIDDEN, HIDDEN)),
                            ("attention.self.value", (HIDDEN, HIDDEN)), ("attention.output.dense", (HIDDEN, HIDDEN)),
                            ("intermediate.dense", (FFN, HIDDEN)), ("output.dense", (HIDDEN, FFN))):
            sd[p + name + ".weight"] = f(*shape)
            sd[p + name + ".bias"] = f(shape[0])
        sd[p + "attention.output.LayerNorm.weight"] = f(HIDDEN)
        sd[p + "output.LayerNorm.weight"] = f(HIDDEN)
    sd["bert.pooler.dense.weight"] = f(HIDDEN, HIDDEN)
    sd["cls.predictions.transform.dense.weight"] = f(HIDDEN, HIDDEN)
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"].copy()  # tied: same data
    sd["cls.predictions.bias"] = f(VOCAB)
    return sd


BERT_MATMUL = {k for k in bert_state_dict() if k.endswith(".weight") and ("encoder.layer" in k or "dense" in k)
               and "LayerNorm" not in k}


def llama_state_dict(untied_head: bool = True) -> dict[str, np.ndarray]:
    g = _rng()
    f = lambda *s: g.standard_normal(s).astype(np.float32)  # noqa: E731
    sd = {"model.embed_tokens.weight": f(VOCAB, HIDDEN)}
    for i in range(2):
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (HIDDEN, HIDDEN)), ("self_attn.k_proj", (32, HIDDEN)),
                            ("self_attn.v_proj", (32, HIDDEN)), ("self_attn.o_proj", (HIDDEN, HIDDEN)),
                            ("mlp.gate_proj", (FFN, HIDDEN)), ("mlp.up_proj", (FFN, HIDDEN)),
                            ("mlp.down_proj", (HIDDEN, FFN))):
            sd[p + name + ".weight"] = f(*shape)
        sd[p + "input_layernorm.weight"] = f(HIDDEN)
        sd[p + "post_attention_layernorm.weight"] = f(HIDDEN)
        sd[p + "self_attn.rotary_emb.inv_freq"] = f(HIDDEN // 4)
    sd["model.norm.weight"] = f(HIDDEN)
    sd["lm_head.weight"] = f(VOCAB, HIDDEN) if untied_head else sd["model.embed_tokens.weight"].copy()
    return sd


LLAMA_MATMUL = {k for k in llama_state_dict() if k.endswith("_proj.weight")}
