"""Hugging Face sharded checkpoints (``model.safetensors.index.json``) and model directories (issue 13)."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

import transmask as tm
from transmask import cli
from transmask.io import CheckpointError, read_checkpoint

safetensors_numpy = pytest.importorskip("safetensors.numpy")

from _hf_state_dicts import LLAMA_MATMUL, llama_state_dict  # noqa: E402


def write_sharded(d: Path, sd: dict, shards: int = 3, config: dict | None = None) -> Path:
    """Split a state dict into shards the way save_pretrained does, with its index (and a config.json)."""
    d.mkdir(parents=True, exist_ok=True)
    names = list(sd)
    weight_map, total = {}, 0
    for i, part in enumerate(np.array_split(np.arange(len(names)), shards)):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {names[j]: sd[names[j]] for j in part}
        safetensors_numpy.save_file(tensors, str(d / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in tensors})
        total += sum(v.nbytes for v in tensors.values())
    index = d / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (d / "config.json").write_text(json.dumps(config or {"model_type": "llama", "tie_word_embeddings": False}))
    return index


@pytest.fixture
def sharded(tmp_path) -> Path:
    return write_sharded(tmp_path / "llama", llama_state_dict())


def test_index_reads_every_shard(sharded):
    sd = llama_state_dict()
    ckpt = read_checkpoint(sharded)
    assert ckpt.format == "index" and ckpt.config["tie_word_embeddings"] is False
    assert sorted(t.name for t in ckpt.tensors) == sorted(sd)  # the weight map's names
    shards = [ckpt.files.index(Path(t.source)) for t in ckpt.tensors]
    assert shards == sorted(shards)  # shard by shard (and in file order within each)
    assert len(ckpt.files) == 4 and ckpt.files[0] == sharded
    for t in ckpt.tensors:
        assert t.shape == sd[t.name].shape and t.dtype == "F32" and "model-0000" in t.source
        np.testing.assert_array_equal(t.load(), sd[t.name])


def test_directory_with_an_index_or_a_single_file(sharded, tmp_path):
    assert sorted(t.name for t in read_checkpoint(sharded.parent).tensors) == sorted(llama_state_dict())
    single = tmp_path / "single"
    single.mkdir()
    safetensors_numpy.save_file({"w": np.ones((8, 8), np.float32)}, str(single / "model.safetensors"))
    ckpt = read_checkpoint(single)
    assert ckpt.path == single / "model.safetensors" and [t.name for t in ckpt.tensors] == ["w"]
    with pytest.raises(CheckpointError, match="directory without a model file"):
        read_checkpoint(tmp_path / "llama" / ".." / "single" / "..")


@pytest.mark.parametrize("damage, message", [
    (lambda idx, m: m.update({"model.norm.weight": "model-00009-of-00009.safetensors"}), "does not exist"),
    (lambda idx, m: m.update({"ghost.weight": "model-00001-of-00003.safetensors"}), "'ghost.weight' is not in"),
    (lambda idx, m: m.pop("model.norm.weight"), "which the index does not list"),
    (lambda idx, m: m.update({"model.norm.weight": "../elsewhere.safetensors"}), "not a file beside the index"),
    (lambda idx, m: m.update({"model.norm.weight": "/abs.safetensors"}), "not a file beside the index"),
    (lambda idx, m: idx.pop("weight_map"), "no \"weight_map\""),
])
def test_index_and_shards_must_agree(sharded, damage, message):
    index = json.loads(sharded.read_text())
    damage(index, index.get("weight_map", {}))
    sharded.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(sharded)


@pytest.mark.parametrize("text", ["not json", '{"weight_map": {"a": "x", "a": "y"}}', "[" * 5000 + "]" * 5000])
def test_malformed_index(tmp_path, text):
    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(CheckpointError, match="sharded checkpoint index"):
        read_checkpoint(tmp_path)


def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("target", ["index", "directory"])
def test_cli_masks_a_sharded_checkpoint(sharded, tmp_path, target):
    sd = llama_state_dict()
    out, pruned = tmp_path / "masks.safetensors", tmp_path / "pruned.safetensors"
    rc, stdout, err = run(["mask", sharded if target == "index" else sharded.parent, "--min-numel", 1,
                           "-o", out, "--pruned", pruned])
    assert rc == 0, err
    masks = safetensors_numpy.load_file(str(out))
    assert set(masks) == LLAMA_MATMUL | {"lm_head.weight"}  # untied head: a Linear layer
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, tm.optimal_mask(sd[name], 2, 4), err_msg=name)
    pr = safetensors_numpy.load_file(str(pruned))
    assert set(pr) == set(sd)
    np.testing.assert_array_equal(pr["model.embed_tokens.weight"], sd["model.embed_tokens.weight"])
    assert "embedding tables" in stdout


def test_cli_refuses_to_overwrite_a_shard(sharded):
    shard = sharded.parent / "model-00002-of-00003.safetensors"
    before = shard.read_bytes()
    rc, _, err = run(["mask", sharded, "--min-numel", 1, "-o", shard])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "overwrite a file of the checkpoint" in err
    assert shard.read_bytes() == before
