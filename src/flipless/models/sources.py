"""Where a run's models come from: the ``[model]`` and ``[old]`` sections, checkpoints, HF folders.

* :func:`load_model_source`: a flipless checkpoint file (:func:`~flipless.models.save_model`)
  or a local Hugging Face folder (``build_model("hf", path=…)``), in eval mode.
* :func:`load_old_model`: the old model of an ``[old]`` section given as ``checkpoint`` (a
  file or a folder) or ``target``, with the names of its head's rows when the source says.
* :func:`build_new_model`: the new model of a ``[model]`` section: a registry model
  (``name`` + settings, sizes filled in from the data), a user's ``target``, or, with
  ``init = "old"``, a copy of the old model whose head is matched to the data's classes by
  name (:func:`start_from_old`).

The configs are plain dataclasses here, so that ``models/`` never imports ``train/``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flipless import remote
from flipless.data.labeled import LabeledData
from flipless.errors import FileFormatError, InputError, MismatchError, MissingFileError
from flipless.models.files import load_model, read_model_info
from flipless.models.registry import build_model

#: How a new model starts: freshly initialised, or from the old model's weights.
INITS = ("scratch", "old")
#: Registry models whose input sizes come from the data: name → the settings filled in.
_IMAGE_MODELS = (
    "cnn",
    "resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "wide-resnet",
    "vit",
)
#: Offset of the old model's seed when it is trained here: seed + 2³¹, so that it never
#: equals a new model's seed (sweep seeds lie in [0, 2³¹)).
OLD_SEED_OFFSET = 2**31


@dataclass(frozen=True)
class ModelConfig:
    """The ``[model]`` section: which new model to build.

    Attributes:
        name: a registry name (:func:`~flipless.models.model_names`), e.g. ``mlp``, ``hf``,
            ``encoder-head``.
        path: a local folder for the models that read one (``hf``, ``encoder-head``, ``text``).
        target: ``"package.module:function"``: a user's own model class or factory, called with
            ``args`` (instead of ``name``).
        args: the keyword arguments of ``target``.
        init: ``"scratch"`` (a freshly initialised model) or ``"old"`` (a copy of the old
            model, its head matched to the data's classes by name).
        settings: the registry model's other settings (every key of the section not above).
    """

    name: str = "mlp"
    path: str | None = None
    target: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    init: str = "scratch"
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise InputError(
                f"init={self.init!r}; expected 'scratch' (a freshly initialised model) or 'old' "
                "(start from the old model's weights)."
            )
        if self.target is None and self.args:
            raise InputError(
                f"args={self.args!r} without target; args are the keyword arguments of "
                "target = 'package.module:function'. Put a registry model's settings in the "
                "section itself."
            )
        if self.target is not None and (self.settings or self.path is not None):
            given = sorted(self.settings) + (["path"] if self.path is not None else [])
            raise InputError(
                f"target={self.target!r} with {given}: a target model takes its settings in "
                "args = { … }; move them there."
            )


@dataclass(frozen=True)
class OldConfig:
    """The ``[old]`` section: the old model, loaded or trained here (exactly one of these).

    Attributes:
        checkpoint: a flipless model file (``save_model``) or a local Hugging Face folder.
        target: ``"package.module:function"`` returning the old model (called with ``args``).
        args: the keyword arguments of ``target``.
        train_epochs: train the old model (the ``[model]`` architecture) on the old split.
    """

    checkpoint: str | None = None
    target: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    train_epochs: int | None = None

    def __post_init__(self) -> None:
        given = [
            key
            for key in ("checkpoint", "target", "train_epochs")
            if getattr(self, key) is not None
        ]
        if len(given) > 1:
            raise InputError(
                f"{given} are all set; give one old model: either checkpoint or train_epochs, "
                "or a target."
            )
        if self.target is None and self.args:
            raise InputError(f"args={self.args!r} without target; args are target's arguments.")


@dataclass(frozen=True)
class OldModel:
    """An old model and the class names of its head's rows (None when its source is silent)."""

    model: nn.Module
    class_names: tuple[str, ...] | None


def old_model_seed(seed: int) -> int:
    """The seed an old model trained here gets: ``seed + 2³¹`` (never a new model's seed)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < OLD_SEED_OFFSET:
        raise InputError(f"seed={seed!r}; expected an integer in [0, 2³¹).")
    return seed + OLD_SEED_OFFSET


def local_source(source: str | os.PathLike[str]) -> Path:
    """The local file or folder of a model source; a URL's is downloaded once per process."""
    return remote.downloaded(source) if remote.is_remote(source) else Path(source).expanduser()


def load_model_source(
    source: str | os.PathLike[str], num_classes: int | None = None, device: str = "cpu"
) -> nn.Module:
    """The model in ``source``, in eval mode on ``device``.

    ``source`` is a flipless checkpoint file (rebuilt by :func:`~flipless.models.load_model`)
    or a local Hugging Face folder (``build_model("hf", path=source, num_classes=…)``; with
    ``num_classes`` None the folder's own head is kept). A URL (a file or a folder) is
    downloaded once per process (:func:`flipless.remote.downloaded`).
    """
    path = local_source(source)
    if path.is_dir():
        model = build_model("hf", path=str(path), num_classes=num_classes)
        return model.to(device).eval()
    if path.is_file():
        model = load_model(path, device=device)
        if num_classes is not None and getattr(model, "num_classes", num_classes) != num_classes:
            raise MismatchError(
                f"{path} holds a model with {model.num_classes} classes; expected {num_classes}."
            )
        return model
    error = FileFormatError if path.exists() else MissingFileError
    raise error(
        f"no model at {path}: expected a flipless checkpoint file (.safetensors, written by "
        "save_model or flipless train) or a local Hugging Face model folder."
    )


def source_class_names(source: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The class names of a model source's head rows, when it records them.

    A flipless checkpoint records them in its metadata (``class_names``, written by
    ``flipless train``); a Hugging Face folder in ``config.json``'s ``id2label`` (unless
    those are the placeholders ``LABEL_0``, ``LABEL_1``, …).
    """
    path = local_source(source)
    if path.is_dir():
        config = path / "config.json"
        try:
            labels = json.loads(config.read_text(encoding="utf-8")).get("id2label") or {}
        except (OSError, json.JSONDecodeError) as error:
            raise FileFormatError(f"cannot read {config}: {error}") from error
        names = [str(labels[key]) for key in sorted(labels, key=int)]
        if not names or names == [f"LABEL_{i}" for i in range(len(names))]:
            return None
        return tuple(names)
    names = read_model_info(path).metadata.get("class_names")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise FileFormatError(f"{path}: metadata class_names={names!r}; expected a list of names.")
    return tuple(names)


def load_old_model(old: OldConfig, device: str = "cpu") -> OldModel:
    """The old model of ``old.checkpoint`` or ``old.target``, in eval mode."""
    if old.checkpoint is not None:
        model = load_model_source(old.checkpoint, device=device)
        return OldModel(model, source_class_names(old.checkpoint))
    if old.target is not None:
        model = build_model("target", target=old.target, args=dict(old.args))
        names = getattr(model, "class_names", None)
        return OldModel(model.to(device).eval(), None if names is None else tuple(names))
    raise InputError(
        "old: nothing to load; set old.checkpoint (a flipless model file or a Hugging Face "
        "folder) or old.target (train_epochs trains it instead)."
    )


def model_settings(config: ModelConfig, sample: LabeledData) -> dict[str, Any]:
    """The registry model's settings, with what the data decides filled in when not given:
    ``num_classes``, ``path`` (a URL's folder downloaded once per process), and the input
    sizes of ``mlp`` / ``cnn`` / ``resnet*``."""
    settings = dict(config.settings)
    settings.setdefault("num_classes", sample.num_classes)
    if config.path is not None:
        remote_path = remote.is_remote(config.path)
        settings.setdefault("path", str(local_source(config.path)) if remote_path else config.path)
    if isinstance(sample.inputs, torch.Tensor):
        shape = tuple(sample.inputs.shape[1:])
        if config.name == "mlp":
            settings.setdefault("in_features", int(np.prod(shape)))
        elif config.name in _IMAGE_MODELS:
            settings.setdefault("in_channels", shape[0])
            settings.setdefault("image_size", list(shape[1:]) if shape[1] != shape[2] else shape[1])
    return settings


def build_new_model(
    config: ModelConfig,
    sample: LabeledData,
    old_model: nn.Module | None = None,
    old_class_names: tuple[str, ...] | None = None,
) -> nn.Module:
    """The new model of a ``[model]`` section, for data like ``sample`` (its classes, sizes).

    ``init = "old"`` needs ``old_model``: the result is :func:`start_from_old` of it.
    Otherwise the model is built freshly (seed torch first for a repeatable initialisation).
    """
    if config.init == "old":
        if old_model is None:
            raise InputError('model.init = "old" needs the old model; none was given.')
        return start_from_old(old_model, sample.class_names, old_class_names)
    if config.target is not None:
        return build_model(
            "target", target=config.target, args=dict(config.args), num_classes=sample.num_classes
        )
    return build_model(config.name, **model_settings(config, sample))


def precompute_features(models: Iterable[nn.Module], splits: Iterable[LabeledData]) -> None:
    """Fill the feature caches of the models that keep one (``encoder-head``) with every text
    of ``splits`` in one pass, so that training and evaluation only read them."""
    texts = [text for data in splits if data.is_text for text in data.inputs]
    for model in models:
        precompute = getattr(model, "precompute", None)
        if texts and callable(precompute):
            precompute(texts)


def start_from_old(
    old_model: nn.Module,
    class_names: tuple[str, ...] | list[str],
    old_class_names: tuple[str, ...] | list[str] | None = None,
) -> nn.Module:
    """A trainable deep copy of ``old_model`` whose head predicts ``class_names``.

    The old head's row for a class moves to that class's position among ``class_names``
    (matched by name); rows of classes the old model did not have are freshly initialised
    (``nn.Linear``'s default, from torch's global generator). With ``old_class_names`` None
    the old head must already have one row per class, in order. Every parameter of the copy
    trains (a teacher freezes the old model; the copy does not inherit that).
    """
    head = getattr(old_model, "head", None)
    if not isinstance(head, nn.Linear):
        raise InputError(
            f'model.init = "old" needs an old model with a linear head (model.head, the '
            f"flipless model contract); a {type(old_model).__name__} has "
            f"{type(head).__name__ if head is not None else 'none'}."
        )
    names = tuple(class_names)
    if old_class_names is None:
        if head.out_features != len(names):
            raise MismatchError(
                f"the old model has {head.out_features} outputs and the data {len(names)} "
                "classes, and nothing says which old output is which class. Save the old model "
                "with its class names (flipless train records them), use a Hugging Face folder "
                "with id2label, or set data.old_classes."
            )
        old_class_names = names
    old_names = tuple(old_class_names)
    if len(old_names) != head.out_features:
        raise MismatchError(
            f"the old model has {head.out_features} outputs but {len(old_names)} class names."
        )
    missing = [name for name in old_names if name not in names]
    if missing or len(set(old_names)) != len(old_names):
        raise MismatchError(
            f"the old model's classes {missing or list(old_names)} are not (distinct) classes of "
            f"the data {list(names)[:10]}; the new model must know every old class by name."
        )
    model = copy.deepcopy(old_model).requires_grad_(True)
    if old_names == names:
        return model
    new_head = nn.Linear(head.in_features, len(names), bias=head.bias is not None).to(
        device=head.weight.device, dtype=head.weight.dtype
    )
    positions = torch.tensor([names.index(name) for name in old_names], device=head.weight.device)
    with torch.no_grad():
        new_head.weight[positions] = head.weight
        if head.bias is not None:
            new_head.bias[positions] = head.bias
    model.head = new_head
    model.num_classes = len(names)
    kwargs = getattr(model, "build_kwargs", None)
    if isinstance(kwargs, dict) and "num_classes" in kwargs:
        model.build_kwargs = {**kwargs, "num_classes": len(names)}
    return model
