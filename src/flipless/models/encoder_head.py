"""A frozen Hugging Face text encoder whose features are cached on disk, and heads over them.

``[model] name = "encoder-head"`` (:class:`EncoderHead`): the encoder of a local folder (e.g.
:func:`flipless.models.text.minilm_path`) never trains, so a text's pooled features
(:class:`~flipless.models.text.TextClassifier`'s ``mean`` or ``cls`` pooling) are computed
once, kept in a :class:`~flipless.data.feature_cache.TextFeatureCache` keyed by the SHA-256
of the encoder folder, the pooling and the maximum length, and read back by every later
epoch, run and sweep point; only the head trains: a linear layer, or an MLP (``hidden``
widths, ReLU, optional dropout) and a linear layer. The checkpoint holds the head alone and
records the folder; interpolating two such models mixes their heads over the same encoder.

For fine-tuning the top layers of an encoder on cached lower-layer states (the benchmarks'
text scenarios): :func:`hidden_states` (cached per list of texts) and
:class:`TopLayersClassifier`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from flipless.data.feature_cache import (
    TextFeatureCache,
    cache_folder,
    cached_tensors,
    content_key,
    path_sha256,
)
from flipless.errors import FileFormatError, InputError, MissingFileError
from flipless.models.base import FeatureModel, check_num_classes, positive_int
from flipless.models.registry import register_model
from flipless.models.text import POOLINGS, TextClassifier

#: Texts per encoder forward pass when features are computed.
ENCODE_BATCH = 64


def encoder_key(path: str | os.PathLike[str], pooling: str, max_length: int) -> str:
    """The cache key of an encoder setting: SHA-256 of the folder's files, pooling, length."""
    return content_key(path_sha256(path), pooling, str(max_length))


def _frozen_encoder(path: str | os.PathLike[str], max_length: int, pooling: str) -> TextClassifier:
    """The folder's encoder and tokenizer (its head unused), frozen, in eval mode; loaded once
    per process, setting and content of the folder."""
    return _load_frozen_encoder(str(path), path_sha256(path), max_length, pooling)


@functools.lru_cache(maxsize=2)
def _load_frozen_encoder(path: str, digest: str, max_length: int, pooling: str) -> TextClassifier:
    """:func:`_frozen_encoder`'s loader; ``digest`` (the folder's content) is part of the
    memo's key only, so a folder changed in place is loaded again."""
    model = TextClassifier.from_pretrained(path, 2, max_length=max_length, pooling=pooling)
    return model.requires_grad_(False).eval()


@functools.lru_cache(maxsize=16)
def _text_cache(folder: Path) -> TextFeatureCache:
    """One in-memory view of each cache folder per process (rows read once, then kept)."""
    return TextFeatureCache(folder)


def _encode(encoder: TextClassifier, texts: list[str], device: str | torch.device) -> torch.Tensor:
    """Pooled features [N, hidden] (float32, CPU) of ``texts``, ``ENCODE_BATCH`` at a time."""
    encoder = encoder.to(device)
    with torch.no_grad():
        parts = [
            encoder.features(texts[start : start + ENCODE_BATCH]).float().cpu()
            for start in range(0, len(texts), ENCODE_BATCH)
        ]
    return torch.cat(parts)


def embed_texts(
    texts: Sequence[str],
    path: str | os.PathLike[str],
    *,
    pooling: str = "mean",
    max_length: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> torch.Tensor:
    """The encoder's pooled features [N, hidden] of ``texts`` (float32, CPU), cached per text
    in ``cache_dir`` (default: see :func:`~flipless.data.feature_cache.cache_folder`)."""
    folder = cache_folder(cache_dir) / encoder_key(path, pooling, max_length)[:32]

    def compute(unseen: list[str]) -> torch.Tensor:
        return _encode(_frozen_encoder(path, max_length, pooling), unseen, device)

    return _text_cache(folder.resolve()).get(list(texts), compute)


def hidden_states(
    texts: Sequence[str],
    path: str | os.PathLike[str],
    layer: int,
    *,
    max_length: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    name: str = "hidden-states",
) -> torch.Tensor:
    """The encoder's hidden states after ``layer`` (0: the embeddings) and the attention mask.

    Returns [N, L, hidden + 1] float32 on the CPU: the hidden units, then the mask (1 for a
    token, 0 for padding), padded on the right to L, the longest text's token count (at most
    ``max_length``). Cached as one file ``<name>-<key>.safetensors``, the key being the
    SHA-256 of the encoder folder, ``layer``, ``max_length`` and the texts in order.
    """
    texts = list(texts)
    key = content_key(path_sha256(path), str(layer), str(max_length), *texts)[:24]
    target = cache_folder(cache_dir) / f"{name}-{key}.safetensors"

    def compute() -> dict[str, torch.Tensor]:
        model = _frozen_encoder(path, max_length, "mean").to(device)
        length = max(len(ids) for ids in model.tokenize(texts)["input_ids"].tolist())
        parts = []
        with torch.no_grad():
            for start in range(0, len(texts), ENCODE_BATCH):
                batch = model.tokenizer(
                    texts[start : start + ENCODE_BATCH],
                    padding="max_length",
                    truncation=True,
                    max_length=length,
                    return_tensors="pt",
                )
                batch = {k: value.to(device) for k, value in batch.items()}
                states = model.encoder(**batch, output_hidden_states=True).hidden_states[layer]
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                parts.append(torch.cat([states, mask], dim=-1).float().cpu())
        return {"states": torch.cat(parts)}

    return cached_tensors(target, compute)["states"]


def _hidden_size(path: str | os.PathLike[str]) -> int:
    """``hidden_size`` from the folder's config.json."""
    config = Path(path) / "config.json"
    try:
        size = json.loads(config.read_text(encoding="utf-8")).get("hidden_size")
    except (OSError, json.JSONDecodeError) as error:
        raise FileFormatError(
            f"cannot read {config} ({error}); expected a local Hugging Face encoder folder "
            "written by save_pretrained."
        ) from error
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise FileFormatError(f"{config} has no hidden_size; is {path} a text encoder?")
    return size


@register_model("encoder-head")
class EncoderHead(FeatureModel):
    """A head trained over a frozen encoder's cached features (see the module docstring).

    ``features(texts)`` = the MLP body (identity without ``hidden``) of the cached pooled
    encoder features; ``forward`` = ``head(features)``. Inputs are ``list[str]``: the texts
    themselves are the cache keys. ``cache_dir`` (default ``$FLIPLESS_CACHE`` or
    ``~/.cache/flipless/features``) changes where the features live, never their values.
    """

    architecture: ClassVar[str] = "encoder-head"

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_classes: int,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        pooling: str = "mean",
        max_length: int = 64,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        folder = Path(path).expanduser()
        if not folder.is_dir():
            error = FileFormatError if folder.exists() else MissingFileError
            raise error(
                f"no encoder folder at {folder}; expected a local Hugging Face folder written "
                "by save_pretrained, e.g. flipless.models.text.minilm_path()."
            )
        if pooling not in POOLINGS:
            raise InputError(f"pooling={pooling!r}; expected one of {', '.join(POOLINGS)}.")
        if isinstance(hidden, (int, str)) or not isinstance(hidden, Sequence):
            raise InputError(f"hidden={hidden!r}; expected a list of widths, e.g. [256].")
        widths = [positive_int(width, "each hidden width") for width in hidden]
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise InputError(f"dropout={dropout!r}; expected a probability in [0, 1).")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout={dropout!r}; expected a probability in [0, 1).")
        self.path = folder.resolve()
        self.pooling = pooling
        self.max_length = positive_int(max_length, "max_length")
        self.num_classes = check_num_classes(num_classes)
        self.cache_dir = cache_dir
        self.encoder_dim = _hidden_size(folder)
        layers: list[nn.Module] = []
        width_in = self.encoder_dim
        for width in widths:
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = width_in
        self.head = nn.Linear(width_in, self.num_classes)
        self.build_kwargs = {
            "path": str(self.path),
            "num_classes": self.num_classes,
            "hidden": widths,
            "dropout": float(dropout),
            "pooling": pooling,
            "max_length": self.max_length,
        }
        if cache_dir is not None:
            self.build_kwargs["cache_dir"] = str(cache_dir)

    def encoded(self, texts: Sequence[str]) -> torch.Tensor:
        """The frozen encoder's pooled features [N, encoder_dim] (float32, CPU), cached."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InputError(
                f"{type(self).__name__} reads a list of texts (the cache is keyed by them); got "
                f"{type(texts).__name__}."
            )
        device = self.head.weight.device
        return embed_texts(
            texts,
            self.path,
            pooling=self.pooling,
            max_length=self.max_length,
            device=device,
            cache_dir=self.cache_dir,
        )

    def precompute(self, texts: Sequence[str]) -> None:
        """Encode ``texts`` now (the unseen ones, in one pass), so that training only reads."""
        if len(texts):
            self.encoded(list(dict.fromkeys(texts)))

    def features(self, inputs: Sequence[str]) -> torch.Tensor:
        """``body(encoded(texts))`` [N, feature_dim]."""
        weight = self.head.weight
        return self.body(self.encoded(inputs).to(weight.device, weight.dtype))


class TopLayersClassifier(FeatureModel):
    """Copies of an encoder's top transformer layers, mean pooling and a linear head, run on
    cached :func:`hidden_states` of the layer below them.

    ``inputs`` [N, L, hidden_size + 1] are hidden states and the attention mask. Each batch is
    cut to its longest text (padding is on the right and masked: an additive mask of the
    dtype's minimum gives padded keys zero attention), the layers run in turn, and the features
    are the mean of the last hidden states over the text's tokens, so the whole equals the
    encoder's mean-pooled output on the texts. Not rebuildable by name (``build_kwargs`` None).
    """

    def __init__(self, layers: nn.ModuleList, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.layers = copy.deepcopy(layers).requires_grad_(True)
        self.num_classes = check_num_classes(num_classes)
        self.feature_dim = positive_int(hidden_size, "hidden_size")
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        self.build_kwargs: dict[str, Any] | None = None

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Mean-pooled output of the top layers [N, hidden_size]."""
        size = self.feature_dim
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 3 or inputs.shape[2] != size + 1:
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise InputError(
                f"expected hidden states and mask [N, L, {size + 1}] (hidden_states()); got {got}."
            )
        hidden, mask = inputs[..., :size], inputs[..., size]
        length = int(mask.sum(dim=1).max())
        hidden, mask = hidden[:, :length], mask[:, :length]
        additive = (1.0 - mask)[:, None, None, :] * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=additive)
        weights = mask.unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
