"""ResNet-34, -50 and -101 with torchvision's layout (He et al., "Deep Residual Learning", CVPR 2016).

The weights are named as in ``torchvision.models.resnet`` (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``), so a torchvision checkpoint loads
with :func:`~flipless.models.torchvision_layout.load_torchvision_state_dict`; ``model.head``
is ``model.fc``. The bottleneck puts its stride on the 3×3 convolution (torchvision's
"ResNet v1.5"). ``stem="cifar"`` swaps the 7×7 stride-2 convolution and max-pool for one 3×3
stride-1 convolution, for 32×32 images (the keys stay the same; ``conv1``'s shape changes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flipless.errors import InputError
from flipless.models.base import (
    _check_images,
    image_build_kwargs,
    init_residual_weights,
    positive_int,
    set_image_shape,
)
from flipless.models.registry import register_model
from flipless.models.torchvision_layout import TorchvisionHead

#: The stems: ``imagenet`` (conv7×7 stride 2 → BN → ReLU → max-pool 3×3 stride 2) and
#: ``cifar`` (conv3×3 stride 1 → BN → ReLU); with the three stride-2 stages the image shrinks
#: by this factor, and it must be at least that large on each side.
STEM_STRIDES = {"imagenet": 32, "cifar": 8}


def _downsample(channels_in: int, channels_out: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut (conv1×1 with ``stride`` → BN) where the shape changes, else None."""
    if stride == 1 and channels_in == channels_out:
        return None
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
    )


class ResidualBlock(nn.Module):
    """Basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)), two 3×3 convolutions.

    ``conv1`` has the block's stride; the output has ``planes`` channels (expansion 1).
    """

    expansion = 1

    def __init__(self, channels_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(channels_in, planes, stride)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(inputs)))
        out = self.bn2(self.conv2(out))
        shortcut = inputs if self.downsample is None else self.downsample(inputs)
        return torch.relu(out + shortcut)


class BottleneckBlock(nn.Module):
    """Bottleneck: conv1×1 (``planes``) → conv3×3 (``planes``, the stride) → conv1×1 (4·``planes``).

    Each convolution is followed by BN, the first two by ReLU; the sum with the shortcut
    (identity, or ``downsample``) goes through a last ReLU. Output: ``4 · planes`` channels.
    """

    expansion = 4

    def __init__(self, channels_in: int, planes: int, stride: int) -> None:
        super().__init__()
        channels_out = planes * self.expansion
        self.conv1 = nn.Conv2d(channels_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, channels_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels_out)
        self.downsample = _downsample(channels_in, channels_out, stride)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(inputs)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = inputs if self.downsample is None else self.downsample(inputs)
        return torch.relu(out + shortcut)


class ImageNetResNet(TorchvisionHead):
    """A ResNet of four stages in torchvision's layout; ResNet-34/50/101 choose the blocks.

    Stem (see :data:`STEM_STRIDES`) with ``width`` channels, then stages ``layer1`` …
    ``layer4`` of ``stage_blocks`` blocks with ``width · 2^i`` planes (strides 1, 2, 2, 2;
    projection shortcuts where the shape changes), global average pooling, and ``fc``.
    ``feature_dim = 8 · width · expansion`` (512 for ResNet-34, 2048 for ResNet-50/101 at
    the default ``width=64``). Convolutions start from He normal (fan-out), batch norms from
    weight 1 and bias 0, ``fc`` from PyTorch's default, as in torchvision.
    """

    head_name = "fc"

    def __init__(
        self,
        block: type[ResidualBlock | BottleneckBlock],
        stage_blocks: tuple[int, int, int, int],
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        width: int = 64,
        stem: str = "imagenet",
    ) -> None:
        super().__init__()
        set_image_shape(self, in_channels, num_classes, image_size)
        width = positive_int(width, "width")
        if not isinstance(stem, str) or stem not in STEM_STRIDES:
            raise InputError(
                f"stem={stem!r}; expected one of {', '.join(map(repr, STEM_STRIDES))} "
                '("imagenet": conv 7×7 stride 2 and max-pool, for 224×224; "cifar": conv 3×3 '
                "stride 1, for 32×32)."
            )
        smallest = STEM_STRIDES[stem]
        if min(self.image_size) < smallest:
            raise InputError(
                f"image_size={image_size!r} is too small for {type(self).__name__} with "
                f'stem="{stem}": it shrinks images {smallest}-fold, so they must be at least '
                f"{smallest}×{smallest}. Use "
                + ('stem="cifar" (8×8 and up) or ' if stem == "imagenet" else "")
                + "a smaller model such as resnet."
            )
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(self.in_channels, width, 7, 2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, padding=1)
        else:
            self.conv1 = nn.Conv2d(self.in_channels, width, 3, 1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        channels_in = width
        for index, count in enumerate(stage_blocks):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            blocks = [block(channels_in, planes, stride)]
            channels_in = planes * block.expansion
            blocks += [block(channels_in, planes, 1) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.feature_dim = channels_in
        self.fc = nn.Linear(channels_in, self.num_classes)
        init_residual_weights(self)
        self.build_kwargs = image_build_kwargs(
            self,
            width=width,
            stem=stem,
        )

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled ``layer4`` activations [N, feature_dim]."""
        _check_images(self, inputs, self.in_channels, self.image_size)
        out = self.maxpool(torch.relu(self.bn1(self.conv1(inputs))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return out.mean(dim=(2, 3))


@register_model("resnet34")
class ResNet34(ImageNetResNet):
    """ResNet-34: basic blocks, 3/4/6/3 per stage; 512 features at ``width=64``.

    21,797,672 parameters for 3 input channels and 1,000 classes (torchvision's ``resnet34``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        width: int = 64,
        stem: str = "imagenet",
    ) -> None:
        super().__init__(
            ResidualBlock, (3, 4, 6, 3), in_channels, num_classes, image_size, width, stem
        )


@register_model("resnet50")
class ResNet50(ImageNetResNet):
    """ResNet-50: bottleneck blocks, 3/4/6/3 per stage; 2,048 features at ``width=64``.

    25,557,032 parameters for 3 input channels and 1,000 classes (torchvision's ``resnet50``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        width: int = 64,
        stem: str = "imagenet",
    ) -> None:
        super().__init__(
            BottleneckBlock, (3, 4, 6, 3), in_channels, num_classes, image_size, width, stem
        )


@register_model("resnet101")
class ResNet101(ImageNetResNet):
    """ResNet-101: bottleneck blocks, 3/4/23/3 per stage; 2,048 features at ``width=64``.

    44,549,160 parameters for 3 input channels and 1,000 classes (torchvision's ``resnet101``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        width: int = 64,
        stem: str = "imagenet",
    ) -> None:
        super().__init__(
            BottleneckBlock, (3, 4, 23, 3), in_channels, num_classes, image_size, width, stem
        )
