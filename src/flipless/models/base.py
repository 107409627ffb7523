"""The contract every flipless model follows, and the checks their constructors share.

The compatibility losses need features as well as logits (BCT passes the new model's features
through the old model's classifier head; CNA aligns features), so every model has::

    model.features(inputs) -> Tensor [N, feature_dim]    # the penultimate representation
    model.head                                          # nn.Linear(feature_dim, num_classes)
    model(inputs) == model.head(model.features(inputs))
    model.num_classes, model.feature_dim
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from flipless.errors import InputError, MismatchError


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int, or an :class:`InputError` unless it is a whole number ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r}; expected a whole number ≥ 1.")
    return value


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` as an int, or an :class:`InputError` unless it is ≥ 2."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(
            f"num_classes={num_classes!r}; a classifier needs a whole number of classes ≥ 2."
        )
    return num_classes


class FeatureModel(nn.Module):
    """Base of every flipless model: ``forward(inputs) = head(features(inputs))``.

    Subclasses set ``num_classes``, ``feature_dim``, ``head`` and ``build_kwargs`` (the
    JSON-serialisable keyword arguments that rebuild the model through :func:`build_model`,
    or None when it cannot be rebuilt by name), and implement :meth:`features`.
    """

    architecture: ClassVar[str]
    num_classes: int
    feature_dim: int
    head: nn.Linear
    build_kwargs: dict[str, Any] | None

    def features(self, inputs: Any) -> torch.Tensor:
        """The penultimate representation [N, feature_dim]."""
        raise NotImplementedError(f"{type(self).__name__} must implement features().")

    def forward(self, inputs: Any) -> torch.Tensor:
        """Logits [N, num_classes] = head(features(inputs))."""
        return self.head(self.features(inputs))


def _image_size(value: Any) -> tuple[int, int]:
    """An ``image_size`` of ``s`` or ``(h, w)`` as ``(h, w)``."""
    size = (value, value) if isinstance(value, int) else value
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise InputError(
            f"image_size={value!r}; expected a positive int (square images) or (height, width)."
        )
    return int(size[0]), int(size[1])


def _image_size_kwarg(size: tuple[int, int]) -> int | list[int]:
    """How ``image_size`` is recorded in ``build_kwargs`` (JSON: an int when square)."""
    return size[0] if size[0] == size[1] else list(size)


def _check_images(
    model: nn.Module, inputs: torch.Tensor, channels: int, size: tuple[int, int]
) -> None:
    """Raise a :class:`MismatchError` unless ``inputs`` is [N, channels, height, width]."""
    expected = (channels, *size)
    if (
        not isinstance(inputs, torch.Tensor)
        or inputs.ndim != 4
        or tuple(inputs.shape[1:]) != expected
    ):
        got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise MismatchError(
            f"{type(model).__name__} was built for images [N, {channels}, {size[0]}, {size[1]}]; "
            f"got {got}. Reshape the batch or build the model with matching in_channels and "
            "image_size."
        )


def set_image_shape(model: nn.Module, in_channels: Any, num_classes: Any, image_size: Any) -> None:
    """Check and set an image model's ``in_channels``, ``num_classes`` and ``image_size``."""
    model.in_channels = positive_int(in_channels, "in_channels")
    model.num_classes = check_num_classes(num_classes)
    model.image_size = _image_size(image_size)


def image_build_kwargs(model: nn.Module, **settings: Any) -> dict[str, Any]:
    """An image model's ``build_kwargs``: its shape (as :func:`set_image_shape` set it) and
    the architecture's own ``settings``."""
    return {
        "in_channels": model.in_channels,
        "num_classes": model.num_classes,
        "image_size": _image_size_kwarg(model.image_size),
        **settings,
    }


def init_residual_weights(model: nn.Module) -> None:
    """He initialisation for residual networks (He et al., ICCV 2015 and CVPR 2016): every
    convolution ~ N(0, 2 / fan_out), every batch norm weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
