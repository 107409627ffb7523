"""A local Hugging Face model folder as a flipless model: ``[model] name = "hf"``.

``build_model("hf", path=folder, num_classes=C)`` reads a folder written by
``save_pretrained`` (``local_files_only``: flipless never downloads) and returns

* for a sequence classifier (``config.architectures`` ends in ``ForSequenceClassification``)
  and its tokenizer: an :class:`HFClassifier` over ``list[str]``;
* for an image classifier (``…ForImageClassification``) and its image processor, if any: an
  :class:`HFClassifier` over float images [N, C, H, W] in [0, 1] (the scale of flipless's
  image loaders), resized bilinearly to the processor's height × width and normalised with
  its ``image_mean`` / ``image_std``, as the processor does after rescaling bytes by 1/255;
* for a bare text encoder without a head (e.g. all-MiniLM-L6-v2, ``BertModel``): a
  :class:`~flipless.models.text.TextClassifier` (pooled last hidden states, a new head).

The classifier's last linear layer with ``num_labels`` outputs becomes ``head``; the model
with that layer replaced by the identity computes ``features`` (BERT: the dropout of the
pooled [CLS] state; ViT: the final [CLS] state), so ``model(x) = head(features(x))`` equals
the Hugging Face logits and BCT, CNA and merging see the usual contract. When the folder's
head has another size than ``num_classes`` (or ``num_classes`` is new), the head is a fresh
``nn.Linear`` (PyTorch's default initialisation, from torch's global generator).
The folder path is recorded, so ``save_model`` / ``load_model`` store and rebuild it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from flipless.errors import FileFormatError, InputError, MismatchError, MissingFileError
from flipless.models.base import FeatureModel, check_num_classes, positive_int
from flipless.models.registry import register_model
from flipless.models.text import TextClassifier, _transformers, text_batch

KINDS = ("text", "image")
_SUFFIXES = {"ForSequenceClassification": "text", "ForImageClassification": "image"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


class HFClassifier(FeatureModel):
    """A Hugging Face classifier split into ``features`` (all but its last linear layer)
    and ``head`` (that layer, or a fresh one of ``num_classes`` rows); see the module
    docstring. ``preprocessor`` is the tokenizer (text) or image processor (images; may be
    None)."""

    architecture: ClassVar[str] = "hf"

    def __init__(
        self,
        model: nn.Module,
        preprocessor: Any,
        kind: str,
        num_classes: int | None = None,
        max_length: int = 64,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise InputError(f"kind={kind!r}; expected one of {', '.join(KINDS)}.")
        labels = getattr(getattr(model, "config", None), "num_labels", None)
        if not isinstance(model, nn.Module) or not isinstance(labels, int):
            raise InputError(
                "model must be a Hugging Face classifier with config.num_labels (e.g. "
                f"AutoModelForSequenceClassification.from_pretrained(folder)); got "
                f"{type(model).__name__}."
            )
        old_head = _detach_head(model, labels)
        self.model = model
        self.preprocessor = preprocessor
        self.kind = kind
        self.max_length = positive_int(max_length, "max_length")
        self.num_classes = check_num_classes(labels if num_classes is None else num_classes)
        self.feature_dim = old_head.in_features
        if old_head.out_features == self.num_classes:
            self.head = old_head
        else:
            self.head = nn.Linear(self.feature_dim, self.num_classes)
        self.build_kwargs = None

    def _image_batch(self, images: Any) -> dict[str, torch.Tensor]:
        config = self.model.config
        channels = getattr(config, "num_channels", None)
        if (
            not isinstance(images, torch.Tensor)
            or images.ndim != 4
            or (channels is not None and images.shape[1] != channels)
        ):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise MismatchError(
                f"this Hugging Face image classifier reads images [N, {channels}, H, W] "
                f"(floats in [0, 1]); got {got}."
            )
        pixels = images.to(self.head.weight.device, self.head.weight.dtype)
        size = _processor_size(self.preprocessor, config)
        if size is not None and tuple(pixels.shape[2:]) != size:
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        if self.preprocessor is not None and getattr(self.preprocessor, "do_normalize", False):
            mean = torch.as_tensor(self.preprocessor.image_mean, dtype=pixels.dtype)
            std = torch.as_tensor(self.preprocessor.image_std, dtype=pixels.dtype)
            shape = (1, -1, 1, 1)
            pixels = (pixels - mean.to(pixels.device).view(shape)) / std.to(pixels.device).view(
                shape
            )
        return {"pixel_values": pixels}

    def features(self, inputs: Sequence[str] | Mapping[str, Any] | torch.Tensor) -> torch.Tensor:
        """The input of the classifier's last linear layer [N, feature_dim]."""
        if self.kind == "image":
            batch = self._image_batch(inputs)
        else:
            batch = text_batch(self.preprocessor, inputs, self.max_length, self.head.weight.device)
        return self.model(**batch).logits


def _detach_head(model: nn.Module, num_labels: int) -> nn.Linear:
    """Replace the model's last ``nn.Linear`` with ``num_labels`` outputs by the identity and
    return it; :class:`InputError` when there is none."""
    found = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == num_labels
    ]
    if not found:
        raise InputError(
            f"{type(model).__name__} has no linear layer with num_labels={num_labels} outputs, "
            "so its classification head cannot be found; pass a folder of a "
            "…ForSequenceClassification or …ForImageClassification model."
        )
    parent_name, _, child_name = found[-1].rpartition(".")
    parent = model.get_submodule(parent_name)
    head = getattr(parent, child_name)
    setattr(parent, child_name, nn.Identity())
    return head


def _processor_size(processor: Any, config: Any) -> tuple[int, int] | None:
    """The height × width images are resized to: the processor's, else the config's."""
    size = getattr(processor, "size", None)
    if size is not None:  # a dict, or transformers 5's SizeDict
        get = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
        if get("height") and get("width"):
            return int(get("height")), int(get("width"))
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, int):
        return image_size, image_size
    return None


def folder_kind(folder: Path) -> str:
    """``"text"``, ``"image"`` (classifier folders) or ``"encoder"`` (a bare text encoder)."""
    config = folder / "config.json"
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, json.JSONDecodeError) as error:
        raise FileFormatError(
            f"cannot read {config} ({error}); expected a Hugging Face model folder written by "
            "save_pretrained."
        ) from error
    for architecture in architectures:
        for suffix, kind in _SUFFIXES.items():
            if str(architecture).endswith(suffix):
                return kind
    if any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return "encoder"
    raise FileFormatError(
        f"{folder} holds a {architectures or 'model'} that is neither a sequence or image "
        "classifier nor a text encoder with a tokenizer; flipless cannot tell what it reads."
    )


@register_model("hf")
def hf_classifier(
    path: str | os.PathLike[str],
    num_classes: int | None = None,
    max_length: int = 64,
    pooling: str = "mean",
) -> FeatureModel:
    """``build_model("hf", path=…, num_classes=…)``: the model of a local Hugging Face folder
    (see the module docstring), in eval mode. ``max_length`` caps the tokens of a text;
    ``pooling`` (``mean`` | ``cls``) applies to bare text encoders only."""
    transformers = _transformers()
    folder = Path(path).expanduser()
    if not folder.is_dir():
        error = FileFormatError if folder.exists() else MissingFileError
        raise error(
            f"no Hugging Face model folder at {folder}; expected a local folder written by "
            "save_pretrained (flipless never downloads)."
        )
    kind = folder_kind(folder)
    if kind == "encoder":
        if num_classes is None:
            raise InputError(
                f"{folder} is a bare encoder without a classification head; give num_classes."
            )
        return TextClassifier.from_pretrained(folder, num_classes, max_length, pooling)
    if pooling != "mean":
        raise InputError(
            f"pooling={pooling!r}: {folder} is a classifier, which pools as it was trained; "
            "pooling applies to bare text encoders only. Drop it."
        )
    auto = (
        transformers.AutoModelForSequenceClassification
        if kind == "text"
        else transformers.AutoModelForImageClassification
    )
    try:
        model = auto.from_pretrained(str(folder), local_files_only=True)
        preprocessor = (
            transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            if kind == "text"
            else _image_processor(transformers, folder)
        )
    except (OSError, ValueError) as error:
        raise FileFormatError(
            f"cannot load the Hugging Face {kind} model in {folder}: {error}"
        ) from error
    classifier = HFClassifier(model, preprocessor, kind, num_classes, max_length)
    classifier.build_kwargs = {
        "path": str(folder.resolve()),
        "num_classes": classifier.num_classes,
        "max_length": classifier.max_length,
    }
    return classifier.eval()


def _image_processor(transformers: Any, folder: Path) -> Any:
    """The folder's image processor, or None when it has none (no preprocessor_config.json)."""
    if not (folder / "preprocessor_config.json").is_file():
        return None
    return transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
