"""The image and table models that ship with flipless: MLP, a small CNN and ResNets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from flipless.errors import InputError, MismatchError
from flipless.models.base import (
    FeatureModel,
    _check_images,
    check_num_classes,
    image_build_kwargs,
    init_residual_weights,
    positive_int,
    set_image_shape,
)
from flipless.models.registry import register_model


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
        set_image_shape(self, in_channels, num_classes, image_size)
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
        self.build_kwargs = image_build_kwargs(
            self,
            width=width,
            feature_dim=self.feature_dim,
        )

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
        set_image_shape(self, in_channels, num_classes, image_size)
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
        init_residual_weights(self)
        self.build_kwargs = image_build_kwargs(
            self,
            widths=list(widths),
            blocks=blocks,
            stem_stride=stem_stride,
        )

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
        self.build_kwargs = image_build_kwargs(self)
