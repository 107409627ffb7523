"""Model checkpoints: one safetensors file with the weights and how to rebuild the model.

A checkpoint (:func:`save_model`) holds the weights (``state_dict``, batch-norm statistics
included) and, in its metadata, the architecture's registry name and the keyword arguments that
build it, so :func:`load_model` rebuilds the model through
:func:`~flipless.models.registry.build_model` and loads the weights strictly. This is how an
old model is stored for compatible training.

Every path may be a URL (``s3://bucket/old.safetensors``; see :mod:`flipless.remote`): a save
is uploaded only once the file is complete, and a load downloads the file to a temporary
folder first (safetensors maps a local file into memory).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flipless import remote
from flipless.errors import FileFormatError, InputError, MissingFileError
from flipless.models.registry import build_model

CHECKPOINT_FORMAT = "flipless.model"


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint's metadata says: how to rebuild the model, and the user's metadata."""

    architecture: str
    kwargs: dict[str, Any]
    metadata: dict[str, Any]


def save_model(
    model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> str | Path:
    """Write ``model``'s weights and how to rebuild it to one safetensors file, atomically.

    The safetensors metadata holds ``format`` (``flipless.model``), ``architecture`` (the
    registry name), ``kwargs`` (JSON) and ``metadata`` (the JSON of the caller's ``metadata``,
    e.g. the epoch or the data version). The file is written to a temporary name in the same
    folder and renamed over ``path`` (for a URL: uploaded once complete), so a crash never
    leaves a half-written checkpoint. Tensors shared between two names are stored once.
    Returns the path (a URL stays a string).
    """
    from safetensors.torch import save_model as save_weights

    architecture = getattr(model, "architecture", None)
    kwargs = getattr(model, "build_kwargs", None)
    if architecture is None or kwargs is None:
        raise InputError(
            f"save_model needs a model built by flipless (build_model or a registered class such "
            f"as MLP); a {type(model).__name__} does not record how to rebuild it. "
            "Build it through flipless.models.build_model, or save its state_dict yourself."
        )
    try:
        header = {
            "format": CHECKPOINT_FORMAT,
            "architecture": architecture,
            "kwargs": json.dumps(kwargs),
            "metadata": json.dumps(dict(metadata or {})),
        }
    except TypeError as exc:
        raise InputError(
            f"the checkpoint metadata must be JSON-serialisable (str, numbers, lists, dicts): "
            f"{exc}. Convert the offending values, e.g. with str()."
        ) from exc
    path = remote.as_path(path)
    if isinstance(path, Path) and not path.parent.is_dir():
        raise InputError(
            f"cannot save {path}: the folder {path.parent} does not exist; create it first."
        )
    with remote.atomic_local_file(path) as temporary:
        save_weights(model, str(temporary), metadata=header)
    return path


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The architecture, build kwargs and user metadata of a checkpoint from :func:`save_model`."""
    path = remote.as_path(path)
    with _checkpoint_copy(path) as local:
        return _read_info(local, path)


def _checkpoint_copy(path: str | Path) -> contextlib.AbstractContextManager[Path]:
    """A local file with the checkpoint's content (the file itself when it is local)."""
    if not remote.is_file(path):
        raise MissingFileError(f"no model checkpoint at {path}: the file does not exist.")
    return remote.local_copy(path)


def _read_info(local: Path, path: str | Path) -> ModelInfo:
    """What :func:`read_model_info` returns, read from ``local``; messages name ``path``."""
    from safetensors import safe_open

    try:
        with safe_open(str(local), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:
        raise FileFormatError(
            f"cannot read {path} as a safetensors file ({exc}); expected a checkpoint written "
            "by flipless.models.save_model."
        ) from exc
    if header.get("format") != CHECKPOINT_FORMAT or "architecture" not in header:
        raise FileFormatError(
            f"{path} is a safetensors file but not a flipless model checkpoint (its metadata "
            f"has format={header.get('format')!r}, expected {CHECKPOINT_FORMAT!r}). Write "
            "checkpoints with flipless.models.save_model."
        )
    try:
        kwargs = json.loads(header.get("kwargs", ""))
        metadata = json.loads(header.get("metadata", "{}"))
    except json.JSONDecodeError as exc:
        raise FileFormatError(
            f"{path}: the checkpoint's kwargs or metadata are not JSON ({exc}); the file was "
            "changed after save_model wrote it. Save the model again."
        ) from exc
    if not isinstance(kwargs, dict) or not isinstance(metadata, dict):
        raise FileFormatError(
            f"{path}: the checkpoint's kwargs and metadata must be JSON objects; got "
            f"{type(kwargs).__name__} and {type(metadata).__name__}."
        )
    return ModelInfo(header["architecture"], kwargs, metadata)


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_model` and load its weights strictly.

    The model is built through :func:`build_model` from the recorded architecture and kwargs;
    every weight and buffer must be in the file and every tensor in the file must belong to the
    model, with the same shape, else :class:`FileFormatError`. Returned in eval mode (call
    ``.train()`` to fine-tune) on ``device``.
    """
    path = remote.as_path(path)
    with _checkpoint_copy(path) as local:
        return _load(local, path).to(device).eval()


def _load(local: Path, path: str | Path) -> nn.Module:
    """The model of the checkpoint ``local``; messages name ``path``."""
    from safetensors.torch import load_model as load_weights

    info = _read_info(local, path)
    try:
        model = build_model(info.architecture, **info.kwargs)
    except InputError as exc:
        raise FileFormatError(f"{path}: cannot rebuild the saved model: {exc}") from exc
    try:
        missing, unexpected = load_weights(model, str(local), strict=False)
    except Exception as exc:
        raise FileFormatError(
            f"{path}: the weights do not fit a {info.architecture!r} model built with "
            f"{info.kwargs}: {exc}"
        ) from exc
    if missing or unexpected:
        raise FileFormatError(
            f"{path}: the weights do not match a {info.architecture!r} model built with "
            f"{info.kwargs}: missing {sorted(missing)}, unexpected {sorted(unexpected)}. "
            "The file was changed after save_model wrote it, or written by other code."
        )
    return model
