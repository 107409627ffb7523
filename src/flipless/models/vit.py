"""A Vision Transformer in torchvision's layout (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

``patches = conv_proj(x)`` (a ``patch_size`` convolution with stride ``patch_size``: one
``hidden_dim`` token per patch, row by row); with ``pooling="token"`` the learned
``class_token`` is put first; ``encoder.pos_embedding`` is added; then ``num_layers`` pre-norm
blocks, each::

    x = x + dropout(self_attention(ln_1(x)))         # multi-head, nn.MultiheadAttention
    x = x + mlp(ln_2(x))                             # Linear → GELU → Dropout → Linear → Dropout

and ``encoder.ln`` (LayerNorm, ε = 10⁻⁶ everywhere). The features are the class token's row
(``pooling="token"``, as torchvision) or the mean over the patch tokens (``pooling="mean"``,
no class token then); ``heads.head`` maps them to logits, and ``model.head`` is that layer.

With ``pooling="token"`` the weights are named and shaped as torchvision's
``VisionTransformer`` of the same sizes (``vit_b_16``: ``patch_size=16, hidden_dim=768,
num_layers=12, num_heads=12, mlp_dim=3072`` at ``image_size=224``), so its checkpoints load
with :func:`~flipless.models.torchvision_layout.load_torchvision_state_dict`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from flipless.errors import InputError
from flipless.models.base import (
    _check_images,
    image_build_kwargs,
    positive_int,
    set_image_shape,
)
from flipless.models.registry import register_model
from flipless.models.torchvision_layout import TorchvisionHead

#: How the token sequence becomes one feature vector.
POOLINGS = ("token", "mean")
#: LayerNorm's ε, torchvision's.
LAYER_NORM_EPS = 1e-6


def _probability(value: object, name: str) -> float:
    """``value`` as a float in [0, 1), or an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise InputError(f"{name}={value!r}; expected a probability in [0, 1).")
    return float(value)


class EncoderBlock(nn.Module):
    """One pre-norm transformer block (see the module docstring), batch-first [N, S, D]."""

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS)
        self.self_attention = nn.MultiheadAttention(
            hidden_dim, num_heads, dropout=attention_dropout, batch_first=True
        )
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, hidden_dim),
            nn.Dropout(dropout),
        )
        for layer in (self.mlp[0], self.mlp[3]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=1e-6)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        normed = self.ln_1(tokens)
        attended, _ = self.self_attention(normed, normed, normed, need_weights=False)
        tokens = tokens + self.dropout(attended)
        return tokens + self.mlp(self.ln_2(tokens))


class Encoder(nn.Module):
    """Position embedding, dropout, ``layers`` (``encoder_layer_0`` …) and the final ``ln``."""

    def __init__(
        self,
        sequence_length: int,
        num_layers: int,
        hidden_dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, sequence_length, hidden_dim))
        nn.init.normal_(self.pos_embedding, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(
            OrderedDict(
                (
                    f"encoder_layer_{index}",
                    EncoderBlock(hidden_dim, num_heads, mlp_dim, dropout, attention_dropout),
                )
                for index in range(num_layers)
            )
        )
        self.ln = nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(tokens + self.pos_embedding)))


@register_model("vit")
class VisionTransformer(TorchvisionHead):
    """A ViT; the defaults (patch 4, 6 layers of width 192, 3 heads) suit 32×32 images.

    ``image_size`` must be a multiple of ``patch_size`` on each side and ``hidden_dim`` of
    ``num_heads``. Initialisation as torchvision's: ``conv_proj`` truncated normal with
    std √(1 / fan-in) and bias 0, ``class_token`` 0, ``pos_embedding`` normal(0, 0.02), MLP
    layers Xavier uniform with bias normal(0, 10⁻⁶); except ``heads.head``, which torchvision
    sets to 0 and which starts here from PyTorch's default, so that the first step's gradient
    reaches the encoder.
    """

    head_name = "heads.head"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        patch_size: int = 4,
        hidden_dim: int = 192,
        num_layers: int = 6,
        num_heads: int = 3,
        mlp_dim: int = 768,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        pooling: str = "token",
    ) -> None:
        super().__init__()
        set_image_shape(self, in_channels, num_classes, image_size)
        patch_size = positive_int(patch_size, "patch_size")
        hidden_dim = positive_int(hidden_dim, "hidden_dim")
        num_layers = positive_int(num_layers, "num_layers")
        num_heads = positive_int(num_heads, "num_heads")
        mlp_dim = positive_int(mlp_dim, "mlp_dim")
        dropout = _probability(dropout, "dropout")
        attention_dropout = _probability(attention_dropout, "attention_dropout")
        if pooling not in POOLINGS:
            raise InputError(
                f"pooling={pooling!r}; expected 'token' (the class token's features, as "
                "torchvision) or 'mean' (the mean over the patch tokens, no class token)."
            )
        if any(side % patch_size for side in self.image_size):
            raise InputError(
                f"image_size={image_size!r} is not a multiple of patch_size={patch_size}; the "
                "patches must tile the image. Resize the images or choose a patch size that "
                "divides both sides."
            )
        if hidden_dim % num_heads:
            raise InputError(
                f"hidden_dim={hidden_dim} is not a multiple of num_heads={num_heads}; every "
                "attention head gets hidden_dim / num_heads dimensions."
            )
        self.pooling = pooling
        self.conv_proj = nn.Conv2d(self.in_channels, hidden_dim, patch_size, patch_size)
        fan_in = self.in_channels * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        patches = (self.image_size[0] // patch_size) * (self.image_size[1] // patch_size)
        class_tokens = 1 if pooling == "token" else 0
        if class_tokens:
            self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.encoder = Encoder(
            patches + class_tokens,
            num_layers,
            hidden_dim,
            num_heads,
            mlp_dim,
            dropout,
            attention_dropout,
        )
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, self.num_classes)))
        self.feature_dim = hidden_dim
        self.build_kwargs = image_build_kwargs(
            self,
            patch_size=patch_size,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            pooling=pooling,
        )

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The class token's (or the mean patch token's) row of ``encoder``'s output [N, D]."""
        _check_images(self, inputs, self.in_channels, self.image_size)
        tokens = self.conv_proj(inputs).flatten(2).transpose(1, 2)  # [N, patches, D]
        if self.pooling == "token":
            class_tokens = self.class_token.expand(tokens.shape[0], -1, -1)
            return self.encoder(torch.cat([class_tokens, tokens], dim=1))[:, 0]
        return self.encoder(tokens).mean(dim=1)
