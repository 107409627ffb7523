"""Tests of flipless.models.encoder_head and flipless.data.feature_cache on a tiny BERT."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from flipless.data import feature_cache  # noqa: E402
from flipless.errors import FileFormatError, InputError  # noqa: E402
from flipless.models import build_model, load_model, save_model  # noqa: E402
from flipless.models import encoder_head as module  # noqa: E402
from flipless.models.encoder_head import (  # noqa: E402
    EncoderHead,
    TopLayersClassifier,
    hidden_states,
)
from flipless.models.text import TextClassifier  # noqa: E402

WORDS = ["my", "card", "was", "stolen", "how", "do", "i", "reset", "password", "the", "cat"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["my card was stolen", "how do i reset my password", "the cat", "i", "the card"]


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory, tiny_bert) -> Path:
    """A bare tiny BERT encoder (hidden 16, 2 layers) and its tokenizer."""
    folder = tmp_path_factory.mktemp("encoder")
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    tokenizer.save_pretrained(folder)
    tiny_bert(len(SPECIAL) + len(WORDS), 32, 2).bert.save_pretrained(folder)
    return folder


@pytest.fixture
def counted(monkeypatch):
    """Every text the encoder runs on, in order (the per-process caches emptied first)."""
    seen: list[str] = []
    encode = module._encode

    def counting(encoder, texts, device):
        seen.extend(texts)
        return encode(encoder, texts, device)

    monkeypatch.setattr(module, "_encode", counting)
    module._text_cache.cache_clear()
    yield seen
    module._text_cache.cache_clear()


def head(folder, cache, seed=0, **settings) -> EncoderHead:
    torch.manual_seed(seed)
    return build_model(
        "encoder-head", path=str(folder), num_classes=3, cache_dir=str(cache), **settings
    )


def test_features_are_the_frozen_encoders_pooled_features(encoder_folder, tmp_path, counted):
    model = head(encoder_folder, tmp_path)
    assert model.feature_dim == model.encoder_dim == 16
    reference = TextClassifier.from_pretrained(encoder_folder, 3)
    with torch.no_grad():
        torch.testing.assert_close(model.features(TEXTS), reference.features(TEXTS))
        assert torch.equal(model(TEXTS), model.head(model.features(TEXTS)))
    # only the head trains and only the head is stored
    assert {name for name, _ in model.named_parameters()} == {"head.weight", "head.bias"}
    mlp = head(encoder_folder, tmp_path, hidden=[7], dropout=0.1)
    assert mlp.feature_dim == 7 and mlp(TEXTS).shape == (5, 3)


def test_a_cache_hit_gives_exactly_the_uncached_logits(encoder_folder, tmp_path, counted):
    first = head(encoder_folder, tmp_path / "cache")
    with torch.no_grad():
        computed = first(TEXTS)
    assert counted == TEXTS  # a miss: every text encoded, once
    with torch.no_grad():
        assert torch.equal(first(TEXTS[::-1]), computed.flip(0))
        assert torch.equal(first(TEXTS[:2]), computed[:2])
    assert len(counted) == 5  # hits: nothing encoded again
    module._text_cache.cache_clear()  # another process: the rows come from disk
    second = head(encoder_folder, tmp_path / "cache")
    with torch.no_grad():
        assert torch.equal(second(TEXTS), computed)
    assert len(counted) == 5
    uncached = head(encoder_folder, tmp_path / "elsewhere")
    with torch.no_grad():
        assert torch.equal(uncached(TEXTS), computed)  # the cache never changes a number
    assert len(counted) == 10
    # only unseen texts are encoded, duplicates once
    with torch.no_grad():
        second(["the cat", "my card", "my card"])
    assert counted[10:] == ["my card"]


def test_the_key_follows_the_encoder_weights_pooling_and_length(encoder_folder, tmp_path, counted):
    head(encoder_folder, tmp_path).precompute(TEXTS + TEXTS)
    assert counted == TEXTS
    head(encoder_folder, tmp_path, pooling="cls").precompute(TEXTS)
    head(encoder_folder, tmp_path, max_length=4).precompute(TEXTS)
    assert len(counted) == 15
    changed = tmp_path / "changed"
    shutil.copytree(encoder_folder, changed)
    encoder = transformers.BertModel.from_pretrained(changed)
    with torch.no_grad():
        encoder.embeddings.word_embeddings.weight.mul_(2.0)
    encoder.save_pretrained(changed)
    head(changed, tmp_path).precompute(TEXTS)
    assert len(counted) == 20
    folders = sorted(p.name for p in tmp_path.iterdir() if p.name != "changed")
    assert len(folders) == 4 and all(len(name) == 32 for name in folders)
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically: no temporary file left


def test_cache_folder_default_environment_and_setting(monkeypatch, tmp_path):
    monkeypatch.delenv(feature_cache.CACHE_ENV, raising=False)
    default = Path.home() / ".cache" / "flipless" / "features"
    assert feature_cache.cache_folder() == default
    monkeypatch.setenv(feature_cache.CACHE_ENV, str(tmp_path / "env"))
    assert feature_cache.cache_folder() == tmp_path / "env"
    assert feature_cache.cache_folder(tmp_path / "given") == tmp_path / "given"
    assert feature_cache.content_key("ab", "c") != feature_cache.content_key("a", "bc")


def test_save_and_load_keep_the_head_and_the_setting(encoder_folder, tmp_path, counted):
    model = head(encoder_folder, tmp_path, hidden=[4], max_length=16)
    with torch.no_grad():
        model.head.weight.mul_(3.0)
        expected = model(TEXTS)
    path = save_model(model, tmp_path / "model.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == {"body.0.weight", "body.0.bias", "head.weight", "head.bias"}
    loaded = load_model(path)
    assert isinstance(loaded, EncoderHead) and loaded.max_length == 16
    with torch.no_grad():
        assert torch.equal(loaded(TEXTS), expected)


def test_refusals_and_a_damaged_cache(encoder_folder, tmp_path, counted):
    with pytest.raises(FileFormatError, match=r"no encoder folder"):
        EncoderHead(tmp_path / "missing", 3)
    with pytest.raises(InputError, match=r"pooling='max'"):
        EncoderHead(encoder_folder, 3, pooling="max")
    with pytest.raises(InputError, match=r"hidden=7; expected a list of widths"):
        EncoderHead(encoder_folder, 3, hidden=7)
    model = head(encoder_folder, tmp_path / "cache")
    with pytest.raises(InputError, match=r"reads a list of texts"):
        model(torch.zeros(2, 16))
    model.precompute(TEXTS)
    (shard,) = list((tmp_path / "cache").rglob("*.safetensors"))
    shard.write_bytes(b"not a safetensors file")
    module._text_cache.cache_clear()
    with pytest.raises(FileFormatError, match=r"cannot be read .*delete it and run again"):
        head(encoder_folder, tmp_path / "cache")(TEXTS)


@pytest.mark.parametrize("tuned_layers", [1, 2])
def test_top_layers_on_cached_states_equal_the_whole_encoder(
    encoder_folder, tmp_path, tuned_layers
):
    whole = TextClassifier.from_pretrained(encoder_folder, 3, max_length=32)
    states = hidden_states(
        TEXTS, encoder_folder, 2 - tuned_layers, max_length=32, cache_dir=tmp_path
    )
    (stored,) = list(tmp_path.iterdir())
    assert stored.name.startswith("hidden-states-") and stored.suffix == ".safetensors"
    assert torch.equal(
        hidden_states(TEXTS, encoder_folder, 2 - tuned_layers, max_length=32, cache_dir=tmp_path),
        states,
    )
    top = TopLayersClassifier(whole.encoder.encoder.layer[2 - tuned_layers :], 3, 16).eval()
    with torch.no_grad():
        torch.testing.assert_close(top.features(states), whole.features(TEXTS), rtol=0, atol=1e-5)
        # a batch is cut to its own longest text
        short = [2, 3]
        torch.testing.assert_close(
            top.features(states[short]), whole.features(TEXTS)[short], rtol=0, atol=1e-5
        )
    with pytest.raises(InputError, match=r"expected hidden states and mask \[N, L, 17\]"):
        top.features(torch.zeros(2, 16))
