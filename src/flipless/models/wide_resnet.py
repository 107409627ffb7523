"""Wide residual networks for small images (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

WRN-``depth``-``k``: a 3×3 convolution with 16 channels, then three stages of
``n = (depth − 4) / 6`` pre-activation blocks with ``16k``, ``32k`` and ``64k`` channels
(strides 1, 2, 2), a last BN (``bn1``) → ReLU, global average pooling and ``fc``; WRN-28-10 is the
usual CIFAR model (36,479,194 parameters for 3 channels and 10 classes). The weights are named
like torchvision's ResNets (``conv1``, ``layer1.0.bn1``, ``fc``); ``model.head`` is ``model.fc``.
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

#: Channels of the stem; stage ``i`` has ``STEM_CHANNELS · 2^i · widen_factor``.
STEM_CHANNELS = 16


class WideBlock(nn.Module):
    """Pre-activation block: ``conv2(dropout(relu(bn2(conv1(a))))) + shortcut``, ``a = relu(bn1(x))``.

    ``conv1`` (3×3) has the block's stride, ``conv2`` (3×3) stride 1. The shortcut is ``x``
    when the shape stays, else ``shortcut(a)``: a 1×1 convolution with the stride applied to
    the pre-activated input, as in the paper's code.
    """

    def __init__(self, channels_in: int, channels_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Conv2d(channels_in, channels_out, 1, stride, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn1(inputs))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + (inputs if self.shortcut is None else self.shortcut(activated))


@register_model("wide-resnet")
class WideResNet(TorchvisionHead):
    """WRN-``depth``-``widen_factor`` (default WRN-28-10); ``dropout`` between a block's convs.

    ``depth`` must be ``6n + 4`` (10, 16, 22, 28, 40, …); ``feature_dim = 64 · widen_factor``;
    images of at least 4×4 (two stride-2 stages). Convolutions start from He normal
    (fan-out), batch norms from weight 1 and bias 0, ``fc`` from PyTorch's default.
    """

    head_name = "fc"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        set_image_shape(self, in_channels, num_classes, image_size)
        depth = positive_int(depth, "depth")
        widen_factor = positive_int(widen_factor, "widen_factor")
        if depth < 10 or (depth - 4) % 6:
            raise InputError(
                f"depth={depth}; a wide ResNet has depth 6n + 4 with n ≥ 1 blocks per stage "
                "(10, 16, 22, 28, 40, …)."
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise InputError(f"dropout={dropout!r}; expected a probability in [0, 1).")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout={dropout!r}; expected a probability in [0, 1).")
        if min(self.image_size) < 4:
            raise InputError(
                f"image_size={image_size!r} is too small for WideResNet: its two stride-2 "
                "stages need images of at least 4×4."
            )
        blocks_per_stage = (depth - 4) // 6
        self.conv1 = nn.Conv2d(self.in_channels, STEM_CHANNELS, 3, 1, padding=1, bias=False)
        channels_in = STEM_CHANNELS
        for index in range(3):
            channels_out, stride = STEM_CHANNELS * 2**index * widen_factor, 1 if index == 0 else 2
            blocks = [WideBlock(channels_in, channels_out, stride, float(dropout))]
            blocks += [
                WideBlock(channels_out, channels_out, 1, float(dropout))
                for _ in range(blocks_per_stage - 1)
            ]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            channels_in = channels_out
        self.bn1 = nn.BatchNorm2d(channels_in)
        self.feature_dim = channels_in
        self.fc = nn.Linear(channels_in, self.num_classes)
        init_residual_weights(self)
        self.build_kwargs = image_build_kwargs(
            self,
            depth=depth,
            widen_factor=widen_factor,
            dropout=float(dropout),
        )

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """relu(bn1(last stage)), globally average-pooled: [N, 64 · widen_factor]."""
        _check_images(self, inputs, self.in_channels, self.image_size)
        out = self.layer3(self.layer2(self.layer1(self.conv1(inputs))))
        return torch.relu(self.bn1(out)).mean(dim=(2, 3))
