"""Models that ship with flipless, a registry to build them by name, and their checkpoints.

Every model follows one contract, because the compatibility losses need features as well as
logits (BCT passes the new model's features through the old model's classifier head; CNA
aligns features)::

    model.features(inputs) -> Tensor [N, feature_dim]    # the penultimate representation
    model.head                                          # nn.Linear(feature_dim, num_classes)
    model(inputs) == model.head(model.features(inputs))
    model.num_classes, model.feature_dim

=============  ===============================================================================
name           model
=============  ===============================================================================
``mlp``        :class:`MLP`: flatten, then Linear-ReLU(-Dropout) hidden layers
``cnn``        :class:`SmallCNN`: two conv3x3-BN-ReLU-maxpool blocks, then a linear feature layer
``resnet``     :class:`ResNet`: a small ResNet (stages, widths and stem stride chosen)
``resnet18``   :class:`ResNet18`: CIFAR-style ResNet-18 (He et al., CVPR 2016)
``text``       :func:`flipless.train.text.pretrained_text_classifier` (extra ``[hf]``)
=============  ===============================================================================

A checkpoint (:func:`save_model`) is one safetensors file: the weights (``state_dict``,
batch-norm statistics included) and, in its metadata, the architecture's name and the keyword
arguments that build it, so :func:`load_model` rebuilds the model through :func:`build_model`
and loads the weights strictly. This is how an old model is stored for compatible training.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from flipless.errors import FileFormatError, InputError, MismatchError

CHECKPOINT_FORMAT = "flipless.model"

#: Model factories by name; fill it with :func:`register_model`.
MODELS: dict[str, Callable[..., nn.Module]] = {}

#: Names whose factory lives in a module imported only when the name is asked for.
_LAZY_MODELS = {"text": "flipless.train.text"}

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


@register_model("mlp")
class MLP(FeatureModel):
    """Multi-layer perceptron: flatten, then ``Linear → ReLU → Dropout`` per hidden width.

    Any input [N, ...] is flattened to [N, in_features], so images work. The features are the
    last hidden layer's activations (``feature_dim = hidden[-1]``); with ``hidden=()`` they are
    the flattened input and the model is multinomial logistic regression.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (256,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_features = positive_int(in_features, "in_features")
        self.num_classes = check_num_classes(num_classes)
        if isinstance(hidden, int) or not isinstance(hidden, Sequence):
            raise InputError(f"hidden={hidden!r}; expected a sequence of widths, e.g. (256, 128).")
        widths = [positive_int(width, "each hidden width") for width in hidden]
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise InputError(f"dropout={dropout!r}; expected a probability in [0, 1).")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout={dropout!r}; expected a probability in [0, 1).")
        self.in_features = in_features
        layers: list[nn.Module] = []
        width_in = in_features
        for width in widths:
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = width_in
        self.head = nn.Linear(width_in, self.num_classes)
        self.build_kwargs = {
            "in_features": in_features,
            "num_classes": self.num_classes,
            "hidden": widths,
            "dropout": float(dropout),
        }

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations [N, hidden[-1]] of the flattened inputs."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2:
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise InputError(f"MLP expects a batch tensor [N, ...]; got {got}.")
        flat = inputs.flatten(1)
        if flat.shape[1] != self.in_features:
            raise MismatchError(
                f"MLP was built for {self.in_features} input features; a batch of shape "
                f"{tuple(inputs.shape)} flattens to {flat.shape[1]}. Build it with "
                f"in_features={flat.shape[1]} or reshape the inputs."
            )
        return self.body(flat)


def _conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """conv3x3 (padding 1) → BatchNorm → ReLU → 2×2 max-pool: halves height and width."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


@register_model("cnn")
class SmallCNN(FeatureModel):
    """Two convolution blocks (``width`` and ``2·width`` channels), then a linear feature layer.

    Each block is conv3x3-BN-ReLU-maxpool2, so an H×W image leaves them as
    ``2·width × ⌊⌊H/2⌋/2⌋ × ⌊⌊W/2⌋/2⌋`` (8×8 → 2×2, 28×28 → 7×7, 32×32 → 8×8); that is
    flattened and mapped by ``Linear → ReLU`` to ``feature_dim`` features. Images smaller than
    4×4 would vanish in the pooling and are refused.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        width: int = 32,
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.num_classes = check_num_classes(num_classes)
        self.image_size = _image_size(image_size)
        width = positive_int(width, "width")
        self.feature_dim = positive_int(feature_dim, "feature_dim")
        pooled = (self.image_size[0] // 4, self.image_size[1] // 4)
        if min(pooled) < 1:
            raise InputError(
                f"image_size={image_size!r} is too small for SmallCNN: two 2×2 max-pools need "
                "images of at least 4×4. Use MLP for smaller inputs."
            )
        self.blocks = nn.Sequential(
            _conv_block(self.in_channels, width), _conv_block(width, 2 * width)
        )
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * pooled[0] * pooled[1], self.feature_dim), nn.ReLU()
        )
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        self.build_kwargs = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "image_size": _image_size_kwarg(self.image_size),
            "width": width,
            "feature_dim": self.feature_dim,
        }

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The feature layer's activations [N, feature_dim]."""
        _check_images(self, inputs, self.in_channels, self.image_size)
        return self.embed(self.blocks(inputs))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x)).

    The first convolution has the block's stride; when the stride or the channel count
    changes, the shortcut is a projection (1×1 conv with that stride, then BN), else identity.
    """

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                nn.BatchNorm2d(channels_out),
            )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(inputs)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(inputs))


def _widths(value: Any) -> tuple[int, ...]:
    """``widths`` as a non-empty tuple of whole numbers ≥ 1, or an :class:`InputError`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise InputError(
            f"widths={value!r}; expected a non-empty sequence of channel counts, one per stage, "
            "e.g. (16, 32, 64)."
        )
    return tuple(positive_int(width, "each stage width") for width in value)


@register_model("resnet")
class ResNet(FeatureModel):
    """A ResNet for small images (He et al., "Deep Residual Learning", CVPR 2016).

    Stem: one conv3x3 with stride ``stem_stride`` (``widths[0]`` channels) → BN → ReLU, no
    max-pool. Then one stage per entry of ``widths``, each of ``blocks`` :class:`BasicBlock`
    with that many channels; the first stage keeps the stem's resolution, every later one
    starts with stride 2 (projection shortcuts where the shape changes). Global average
    pooling gives ``widths[-1]`` features. Convolutions start from He (Kaiming) normal
    initialisation (fan-out), batch norms from weight 1, bias 0.

    The default ``widths=(16, 32, 64), blocks=1, stem_stride=2`` is a ResNet-8 that trains
    on 28×28 images at about 2,000 images/s on two CPU cores (ResNet-18: about 5); the image
    must be at least ``stem_stride · 2^(len(widths) − 1)`` pixels on each side.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        widths: Sequence[int] = (16, 32, 64),
        blocks: int = 1,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.num_classes = check_num_classes(num_classes)
        self.image_size = _image_size(image_size)
        widths = _widths(widths)
        blocks = positive_int(blocks, "blocks")
        stem_stride = positive_int(stem_stride, "stem_stride")
        smallest = stem_stride * 2 ** (len(widths) - 1)
        if min(self.image_size) < smallest:
            raise InputError(
                f"image_size={image_size!r} is too small for {type(self).__name__}: a stem stride "
                f"of {stem_stride} and {len(widths) - 1} stride-2 stages need images of at least "
                f"{smallest}×{smallest}. Use fewer stages, a stem stride of 1, or SmallCNN."
            )
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_channels, widths[0], 3, stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        channels_in = widths[0]
        for index, channels_out in enumerate(widths):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels_in, channels_out, stride)]
            stage += [BasicBlock(channels_out, channels_out, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels_in = channels_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = channels_in
        self.head = nn.Linear(channels_in, self.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.build_kwargs = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "image_size": _image_size_kwarg(self.image_size),
            "widths": list(widths),
            "blocks": blocks,
            "stem_stride": stem_stride,
        }

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled last-stage activations [N, widths[-1]]."""
        _check_images(self, inputs, self.in_channels, self.image_size)
        return self.pool(self.stages(self.stem(inputs)))


@register_model("resnet18")
class ResNet18(ResNet):
    """ResNet-18 for small images: :class:`ResNet` with the CIFAR-style settings.

    Stem stride 1 (64 channels), four stages of two blocks with 64/128/256/512 channels
    (strides 1/2/2/2); 512 features. With 3 input channels and 10 classes it has 11,173,962
    parameters. Built for 28×28 and 32×32 inputs; any size ≥ 8 works.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int | Sequence[int]) -> None:
        super().__init__(
            in_channels,
            num_classes,
            image_size,
            widths=(64, 128, 256, 512),
            blocks=2,
            stem_stride=1,
        )
        self.build_kwargs = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "image_size": _image_size_kwarg(self.image_size),
        }


def model_names() -> list[str]:
    """Every name :func:`build_model` accepts, including those registered on demand."""
    return sorted(set(MODELS) | set(_LAZY_MODELS))


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """The model registered as ``name``, built with ``kwargs`` (checked against its signature).

    ``build_model("cnn", in_channels=1, num_classes=10, image_size=28)``. The ``"text"`` model
    is registered when first asked for (its module imports transformers lazily).
    """
    if name not in MODELS and name in _LAZY_MODELS:
        importlib.import_module(_LAZY_MODELS[name])
    if name not in MODELS:
        raise InputError(
            f"Unknown model {name!r}; expected one of {', '.join(map(repr, model_names()))}."
        )
    factory = MODELS[name]
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


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint's metadata says: how to rebuild the model, and the user's metadata."""

    architecture: str
    kwargs: dict[str, Any]
    metadata: dict[str, Any]


def save_model(
    model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights and how to rebuild it to one safetensors file, atomically.

    The safetensors metadata holds ``format`` (``flipless.model``), ``architecture`` (the
    registry name), ``kwargs`` (JSON) and ``metadata`` (the JSON of the caller's ``metadata``,
    e.g. the epoch or the data version). The file is written to a temporary name in the same
    folder and renamed over ``path``, so a crash never leaves a half-written checkpoint.
    Tensors shared between two names are stored once. Returns the path.
    """
    from safetensors.torch import save_model as save_weights

    architecture = getattr(model, "architecture", None)
    kwargs = getattr(model, "build_kwargs", None)
    if architecture is None or kwargs is None:
        raise InputError(
            f"save_model needs a model built by flipless (build_model or a registered class such "
            f"as MLP); a {type(model).__name__} does not record how to rebuild it. "
            "Build it through flipless.train.models.build_model, or save its state_dict yourself."
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
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(
            f"cannot save {path}: the folder {path.parent} does not exist; create it first."
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_weights(model, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The architecture, build kwargs and user metadata of a checkpoint from :func:`save_model`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no model checkpoint at {path}: the file does not exist.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:
        raise FileFormatError(
            f"cannot read {path} as a safetensors file ({exc}); expected a checkpoint written "
            "by flipless.train.models.save_model."
        ) from exc
    if header.get("format") != CHECKPOINT_FORMAT or "architecture" not in header:
        raise FileFormatError(
            f"{path} is a safetensors file but not a flipless model checkpoint (its metadata "
            f"has format={header.get('format')!r}, expected {CHECKPOINT_FORMAT!r}). Write "
            "checkpoints with flipless.train.models.save_model."
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
    from safetensors.torch import load_model as load_weights

    info = read_model_info(path)
    try:
        model = build_model(info.architecture, **info.kwargs)
    except InputError as exc:
        raise FileFormatError(f"{path}: cannot rebuild the saved model: {exc}") from exc
    try:
        missing, unexpected = load_weights(model, str(path), strict=False)
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
    return model.to(device).eval()
