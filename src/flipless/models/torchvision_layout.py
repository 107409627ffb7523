"""Models laid out like torchvision's, and loading a torchvision state dict into them.

The ImageNet-style ResNets (:mod:`flipless.models.resnet`) and the ViT
(:mod:`flipless.models.vit`) name every weight as torchvision does (``conv1.weight``,
``layer1.0.downsample.0.weight``, ``encoder.layers.encoder_layer_0.ln_1.weight``, …), so a
checkpoint saved from a torchvision model loads into them unchanged. Their final layer keeps
torchvision's name (``fc``, ``heads.head``); :class:`TorchvisionHead` makes ``model.head``
(the flipless model contract) another name for it, without a second key in ``state_dict``.

:func:`load_torchvision_state_dict` loads such a checkpoint (a state dict, a ``.pth`` file read
with ``weights_only=True``, or a ``.safetensors`` file) and says exactly which keys are
missing, unexpected or of the wrong shape when it does not fit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from flipless import remote
from flipless.errors import FileFormatError, MismatchError, MissingFileError
from flipless.models.base import FeatureModel

#: Buffers a torchvision checkpoint may lack (weights saved before torch 0.4.1 have no batch
#: counts); an absent count is loaded as 0.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
#: How many names of each kind an error lists before it says "and N more".
_LISTED = 8


class TorchvisionHead(FeatureModel):
    """A :class:`FeatureModel` whose classifier lives under torchvision's name ``head_name``.

    ``model.head`` reads, and ``model.head = nn.Linear(…)`` replaces, the submodule at
    ``head_name`` (``"fc"`` or ``"heads.head"``); the state dict holds it once, under that name.
    """

    head_name: ClassVar[str]

    @property
    def head(self) -> nn.Linear:  # type: ignore[override]
        """The classifier layer ``head_name``: ``forward = head(features(inputs))``."""
        return self.get_submodule(self.head_name)  # type: ignore[return-value]

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module.__setattr__ files a module under its own name and ignores properties, so an
        # assignment to ``head`` is redirected here to the torchvision-named layer.
        if name == "head":
            parent, _, leaf = self.head_name.rpartition(".")
            owner = self.get_submodule(parent) if parent else self
            nn.Module.__setattr__(owner, leaf, value)
            return
        super().__setattr__(name, value)


def load_torchvision_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor] | str | os.PathLike[str],
    include_head: bool = True,
) -> nn.Module:
    """Load a torchvision-layout checkpoint into ``model`` strictly; returns ``model``.

    ``state_dict`` is a mapping of names to tensors (``torchvision_model.state_dict()``) or the
    path (or URL) of one: ``.safetensors``, else a ``torch.save`` file read with
    ``weights_only=True`` (never an arbitrary pickle). A ``module.`` prefix on every key (a
    model saved inside DistributedDataParallel) is removed. Every weight and buffer of the
    model must be there with its shape, and nothing else (``*.num_batches_tracked`` may be
    absent: the count is then 0), else a :class:`MismatchError` lists the missing,
    unexpected and wrongly shaped keys. ``include_head=False`` ignores the classifier
    (``model.head_name``, e.g. ``fc.*`` of an ImageNet checkpoint) and keeps the model's own
    head: a pretrained backbone for a new set of classes.
    """
    given = _strip_ddp_prefix(_read_state_dict(state_dict))
    expected = model.state_dict()
    if not include_head:
        prefix = getattr(type(model), "head_name", "head") + "."
        given = {key: value for key, value in given.items() if not key.startswith(prefix)}
        expected = {key: value for key, value in expected.items() if not key.startswith(prefix)}
    missing = [key for key in expected if key not in given and not key.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [key for key in given if key not in expected]
    wrong_shapes = [
        f"{key}: model {list(expected[key].shape)}, checkpoint {list(given[key].shape)}"
        for key in expected
        if key in given and tuple(given[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or wrong_shapes:
        raise MismatchError(_mismatch_message(model, missing, unexpected, wrong_shapes))
    counts = {key: torch.zeros_like(expected[key]) for key in expected if key not in given}
    model.load_state_dict({**given, **counts}, strict=include_head)
    return model


def _read_state_dict(
    source: Mapping[str, torch.Tensor] | str | os.PathLike[str],
) -> dict[str, torch.Tensor]:
    """``source`` as a dict of tensors, read from its file when it is a path."""
    if isinstance(source, Mapping):
        state, origin = dict(source), "the state dict"
    elif isinstance(source, (str, os.PathLike)):
        path = remote.as_path(source)
        if not remote.is_file(path):
            raise MissingFileError(f"no checkpoint at {path}: the file does not exist.")
        with remote.local_copy(path) as local:
            state, origin = _read_file(local, path), str(path)
    else:
        raise MismatchError(
            f"expected a state dict (a mapping of names to tensors) or the path of a checkpoint "
            f"file; got {type(source).__name__}."
        )
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        nested = [key for key in not_tensors if isinstance(state[key], Mapping)]
        hint = (
            f" Its entry {nested[0]!r} is a mapping: pass that entry (e.g. "
            f"checkpoint[{nested[0]!r}]) instead."
            if nested
            else ""
        )
        raise FileFormatError(
            f"{origin} is not a state dict: {_listed(not_tensors)} are not tensors.{hint}"
        )
    return state


def _read_file(local: Path, path: str | Path) -> dict[str, Any]:
    """The tensors of the local file ``local``; messages name ``path``."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(str(local))
        except Exception as exc:  # safetensors raises its own and OS errors
            raise FileFormatError(f"cannot read {path} as a safetensors file: {exc}") from exc
    try:
        loaded = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise FileFormatError(
            f"cannot read {path} as a torch state dict with weights_only=True ({exc}); expected "
            "a file written by torch.save(model.state_dict(), path), or a .safetensors file."
        ) from exc
    if not isinstance(loaded, Mapping):
        raise FileFormatError(
            f"{path} holds a {type(loaded).__name__}, not a state dict; save "
            "model.state_dict(), not the model."
        )
    return dict(loaded)


def _strip_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the ``module.`` prefix that DistributedDataParallel adds to every key."""
    prefix = "module."
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _listed(names: list[str]) -> str:
    """At most :data:`_LISTED` of ``names``, and how many more there are."""
    shown = ", ".join(names[:_LISTED])
    more = len(names) - _LISTED
    return f"[{shown}{f', and {more} more' if more > 0 else ''}]"


def _mismatch_message(
    model: nn.Module, missing: list[str], unexpected: list[str], wrong_shapes: list[str]
) -> str:
    """What does not fit, and how to build a model that it fits."""
    settings = getattr(model, "build_kwargs", None)
    built = f"{type(model).__name__}({settings or ''})"
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys {_listed(unexpected)}")
    if wrong_shapes:
        problems.append(f"wrong shapes {_listed(wrong_shapes)}")
    return (
        f"the checkpoint does not fit {built}: {'; '.join(problems)}. Build the model with the "
        "checkpoint's architecture and settings (a torchvision ImageNet checkpoint: "
        "num_classes=1000, image_size=224 and that model's default sizes), or pass "
        "include_head=False to keep the model's own classifier for different classes."
    )
