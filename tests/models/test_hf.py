"""Tests of flipless.models.hf: local Hugging Face text and image classifier folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from flipless.errors import FileFormatError, InputError, MismatchError  # noqa: E402
from flipless.models import build_model, load_model, save_model  # noqa: E402
from flipless.models.hf import HFClassifier  # noqa: E402
from flipless.models.sources import (  # noqa: E402
    load_model_source,
    source_class_names,
    start_from_old,
)
from flipless.models.text import TextClassifier  # noqa: E402

WORDS = [
    "my",
    "card",
    "was",
    "stolen",
    "how",
    "do",
    "i",
    "reset",
    "password",
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "send",
    "money",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["my card was stolen", "how do i reset my password", "the cat sat on the mat"]
CLASS_NAMES = ["card", "password", "other"]


def write_tokenizer(folder: Path) -> object:
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory, tiny_bert) -> Path:
    """A tiny BERT sequence classifier (3 labels with names) and its tokenizer."""
    folder = tmp_path_factory.mktemp("hf-text")
    write_tokenizer(folder)
    model = tiny_bert(len(SPECIAL) + len(WORDS), 32, 3)
    model.config.id2label = dict(enumerate(CLASS_NAMES))
    model.config.label2id = {name: i for i, name in enumerate(CLASS_NAMES)}
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory, tiny_bert) -> Path:
    """A bare tiny BERT encoder (no head), as all-MiniLM-L6-v2 is."""
    folder = tmp_path_factory.mktemp("hf-encoder")
    write_tokenizer(folder)
    tiny_bert(len(SPECIAL) + len(WORDS), 32, 2).bert.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """A tiny ViT image classifier (1 channel, 8×8, patches 4×4) and its image processor."""
    folder = tmp_path_factory.mktemp("hf-image")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    processor = transformers.ViTImageProcessor(
        size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.25]
    )
    processor.save_pretrained(folder)
    return folder


def reference(folder: Path, kind: str):
    auto = (
        transformers.AutoModelForSequenceClassification
        if kind == "text"
        else transformers.AutoModelForImageClassification
    )
    return auto.from_pretrained(str(folder), local_files_only=True).eval()


def test_a_text_classifier_folder_keeps_its_head_and_its_logits(text_folder):
    model = build_model("hf", path=str(text_folder))
    assert isinstance(model, HFClassifier) and model.kind == "text"
    assert model.num_classes == 3 and model.feature_dim == 16 and not model.training
    hf = reference(text_folder, "text")
    tokens = transformers.AutoTokenizer.from_pretrained(str(text_folder))(
        TEXTS, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = hf(**tokens).logits
        features = model.features(TEXTS)
        assert torch.equal(model.head.weight, hf.classifier.weight)
        torch.testing.assert_close(model(TEXTS), expected, rtol=0, atol=1e-6)
        # features are the pooled [CLS] state the classifier reads (dropout off in eval)
        torch.testing.assert_close(features, hf.bert(**tokens).pooler_output, rtol=0, atol=0)
        assert torch.equal(model(TEXTS), model.head(features))
        assert torch.equal(model(dict(tokens)), model(TEXTS))


def test_another_number_of_classes_gets_a_fresh_head_over_the_same_features(text_folder):
    three = build_model("hf", path=str(text_folder))
    torch.manual_seed(5)
    five = build_model("hf", path=str(text_folder), num_classes=5)
    torch.manual_seed(5)
    expected_head = torch.nn.Linear(16, 5)
    assert five.num_classes == 5 and five.build_kwargs["num_classes"] == 5
    assert torch.equal(five.head.weight, expected_head.weight)
    with torch.no_grad():
        assert torch.equal(five.features(TEXTS), three.features(TEXTS))
        assert five(TEXTS).shape == (3, 5)


def test_save_and_load_round_trip_rebuilds_from_the_folder(text_folder, tmp_path):
    torch.manual_seed(1)
    model = build_model("hf", path=str(text_folder), num_classes=4, max_length=8).train()
    with torch.no_grad():  # "fine-tuned": differs from the folder everywhere
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    assert model.build_kwargs == {
        "path": str(text_folder.resolve()),
        "num_classes": 4,
        "max_length": 8,
    }
    path = save_model(model, tmp_path / "hf.safetensors", {"class_names": list("abcd")})
    loaded = load_model(path)
    assert isinstance(loaded, HFClassifier) and loaded.max_length == 8
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(TEXTS), model(TEXTS))
        assert not torch.equal(
            build_model("hf", path=str(text_folder), num_classes=4)(TEXTS), model(TEXTS)
        )
    assert source_class_names(path) == ("a", "b", "c", "d")
    assert torch.equal(load_model_source(path)(TEXTS), loaded(TEXTS))


def test_a_bare_encoder_folder_becomes_a_mean_pooled_text_classifier(encoder_folder):
    torch.manual_seed(2)
    model = build_model("hf", path=str(encoder_folder), num_classes=3)
    torch.manual_seed(2)
    expected = TextClassifier.from_pretrained(encoder_folder, 3)
    assert isinstance(model, TextClassifier) and model.architecture == "text"
    with torch.no_grad():
        assert torch.equal(model(TEXTS), expected(TEXTS))
    with pytest.raises(InputError, match=r"bare encoder without a classification head"):
        build_model("hf", path=str(encoder_folder))
    assert source_class_names(encoder_folder) is None  # LABEL_0, LABEL_1 are placeholders


def test_an_image_classifier_normalises_and_resizes_as_its_processor_says(image_folder):
    model = build_model("hf", path=str(image_folder))
    assert model.kind == "image" and model.num_classes == 4
    hf = reference(image_folder, "image")
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    small = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(pixel_values=(images - 0.5) / 0.25).logits
        torch.testing.assert_close(model(images), expected, rtol=0, atol=1e-6)
        resized = torch.nn.functional.interpolate(small, size=(8, 8), mode="bilinear")
        torch.testing.assert_close(
            model(small), hf(pixel_values=(resized - 0.5) / 0.25).logits, rtol=0, atol=1e-6
        )
    with pytest.raises(MismatchError, match=r"reads images \[N, 1, H, W\].*got \(3, 3, 8, 8\)"):
        model(torch.rand(3, 3, 8, 8))


def test_load_model_source_reads_folders_and_class_names(text_folder, image_folder):
    model = load_model_source(text_folder)
    assert isinstance(model, HFClassifier) and model.num_classes == 3
    assert source_class_names(text_folder) == tuple(CLASS_NAMES)
    assert load_model_source(image_folder, num_classes=2).num_classes == 2


def test_bad_folders_and_settings(tmp_path, text_folder):
    with pytest.raises(FileFormatError, match=r"no Hugging Face model folder"):
        build_model("hf", path=str(tmp_path / "missing"))
    with pytest.raises(FileFormatError, match=r"cannot read .*config.json"):
        build_model("hf", path=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(FileFormatError, match=r"neither a sequence or image classifier"):
        build_model("hf", path=str(tmp_path))
    with pytest.raises(InputError, match=r"pooling applies to bare text encoders only"):
        build_model("hf", path=str(text_folder), pooling="cls")
    with pytest.raises(FileFormatError, match=r"no model at .*nothing"):
        load_model_source(tmp_path / "nothing")


def test_init_old_widens_a_hf_classifier_by_its_label_names(text_folder, tmp_path):
    old = load_model_source(text_folder)
    names = ("other", "refund", "card", "password")  # the folder's id2label: card, password, other
    torch.manual_seed(4)
    new = start_from_old(old, names, source_class_names(text_folder))
    assert new.num_classes == 4 and new.build_kwargs["num_classes"] == 4
    for old_row, new_row in ((0, 2), (1, 3), (2, 0)):
        assert torch.equal(new.head.weight[new_row], old.head.weight[old_row])
    with torch.no_grad():
        assert torch.equal(new.features(TEXTS), old.features(TEXTS))
        loaded = load_model(save_model(new, tmp_path / "widened.safetensors"))
        assert torch.equal(loaded(TEXTS), new(TEXTS))
