"""The model registry: build a model by name with checked settings.

================  ==============================================================================
name              model
================  ==============================================================================
``mlp``           :class:`~flipless.models.vision.MLP`: flatten, then Linear-ReLU(-Dropout) layers
``cnn``           :class:`~flipless.models.vision.SmallCNN`: two conv-BN-ReLU-maxpool blocks
``resnet``        :class:`~flipless.models.vision.ResNet`: a small ResNet (stages, widths, stem)
``resnet18``      :class:`~flipless.models.vision.ResNet18`: CIFAR ResNet-18 (He et al., 2016)
``resnet34``      :class:`~flipless.models.resnet.ResNet34`: torchvision-layout ResNet-34
``resnet50``      :class:`~flipless.models.resnet.ResNet50`: torchvision-layout ResNet-50 (bottleneck)
``resnet101``     :class:`~flipless.models.resnet.ResNet101`: torchvision-layout ResNet-101
``wide-resnet``   :class:`~flipless.models.wide_resnet.WideResNet`: CIFAR WRN-28-10 (depth, width)
``vit``           :class:`~flipless.models.vit.VisionTransformer`: torchvision-layout ViT
``text``          :func:`flipless.models.text.pretrained_text_classifier` (extra ``[hf]``)
``hf``            :func:`flipless.models.hf.hf_classifier`: a local HF text or image classifier
``encoder-head``  :class:`flipless.models.encoder_head.EncoderHead`: frozen encoder, MLP head
``target``        :func:`flipless.models.user.target_model`: ``package.module:function``
================  ==============================================================================

A user's own model class joins with ``@register_model("name")``; configs may also name any
importable factory as ``target = "package.module:function"``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from flipless.errors import InputError

#: Model factories by name; fill it with :func:`register_model`.
MODELS: dict[str, Callable[..., nn.Module]] = {}

#: Built-in names and the module that registers each; a module is imported when one of its
#: names is first asked for (so the Hugging Face models import transformers only when used).
_LAZY_MODELS = {
    "mlp": "flipless.models.vision",
    "cnn": "flipless.models.vision",
    "resnet": "flipless.models.vision",
    "resnet18": "flipless.models.vision",
    "resnet34": "flipless.models.resnet",
    "resnet50": "flipless.models.resnet",
    "resnet101": "flipless.models.resnet",
    "wide-resnet": "flipless.models.wide_resnet",
    "vit": "flipless.models.vit",
    "text": "flipless.models.text",
    "hf": "flipless.models.hf",
    "encoder-head": "flipless.models.encoder_head",
    "target": "flipless.models.user",
}

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Register a model class (or a function returning a model) under ``name``.

    A registered class gets ``architecture = name``, which :func:`save_model` records.
    """

    def add(factory: Factory) -> Factory:
        if name in MODELS:
            raise InputError(f"A model named {name!r} is already registered; choose another name.")
        MODELS[name] = factory
        if isinstance(factory, type):
            factory.architecture = name
        return factory

    return add


def model_names() -> list[str]:
    """Every name :func:`build_model` accepts, including those registered on demand."""
    return sorted(set(MODELS) | set(_LAZY_MODELS))


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The class or function registered as ``name`` (a built-in's module imported first)."""
    if name not in MODELS and name in _LAZY_MODELS:
        importlib.import_module(_LAZY_MODELS[name])
    if name not in MODELS:
        raise InputError(
            f"Unknown model {name!r}; expected one of {', '.join(map(repr, model_names()))}."
        )
    return MODELS[name]


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """The model registered as ``name``, built with ``kwargs`` (checked against its signature).

    ``build_model("cnn", in_channels=1, num_classes=10, image_size=28)``. The ``"text"`` model
    is registered when first asked for (its module imports transformers lazily).
    """
    factory = model_factory(name)
    signature = inspect.signature(factory)
    try:
        signature.bind(**kwargs)
    except TypeError:
        accepted = list(signature.parameters)
        required = [
            p.name for p in signature.parameters.values() if p.default is inspect.Parameter.empty
        ]
        unknown = sorted(set(kwargs) - set(accepted))
        missing = [key for key in required if key not in kwargs]
        problems = []
        if unknown:
            problems.append(f"unknown {', '.join(map(repr, unknown))}")
        if missing:
            problems.append(f"missing {', '.join(map(repr, missing))}")
        raise InputError(
            f"Model {name!r} got wrong settings ({'; '.join(problems)}); it accepts "
            f"{', '.join(map(repr, accepted))} (required: {', '.join(map(repr, required))})."
        ) from None
    return factory(**kwargs)
