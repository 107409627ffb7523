"""Tests of the bigger image models: ResNet-34/50/101, WideResNet, ViT, torchvision checkpoints.

torchvision cannot be installed here, so its layout is written down in this file from its
reference code (``torchvision/models/resnet.py``, ``vision_transformer.py``): every key and
shape of a checkpoint, and the forward pass in plain functional torch. A state dict of random
tensors in that layout must load strictly and give the reference function's logits.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from flipless.errors import FileFormatError, InputError, MismatchError, MissingFileError
from flipless.models import FeatureModel, build_model, load_model, model_names, save_model
from flipless.models.resnet import ResNet34, ResNet50, ResNet101
from flipless.models.sources import ModelConfig, model_settings, start_from_old
from flipless.models.torchvision_layout import load_torchvision_state_dict
from flipless.models.vit import VisionTransformer
from flipless.models.wide_resnet import WideResNet

Shapes = dict[str, tuple[int, ...]]

# ------------------------------------------------------------------- torchvision's layout

#: torchvision's ResNets: block kind and blocks per stage.
RESNET_LAYOUTS = {
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


def batch_norm_keys(prefix: str, channels: int) -> Shapes:
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def torchvision_resnet_keys(
    name: str, num_classes: int, in_channels: int = 3, width: int = 64, stem: str = "imagenet"
) -> Shapes:
    """Every key of torchvision's ``resnet34/50/101().state_dict()`` and its shape."""
    kind, stage_blocks = RESNET_LAYOUTS[name]
    expansion = 1 if kind == "basic" else 4
    kernel = 7 if stem == "imagenet" else 3
    keys: Shapes = {"conv1.weight": (width, in_channels, kernel, kernel)}
    keys |= batch_norm_keys("bn1", width)
    inplanes = width
    for stage, count in enumerate(stage_blocks):
        planes = width * 2**stage
        for index in range(count):
            prefix = f"layer{stage + 1}.{index}"
            if kind == "basic":
                keys[f"{prefix}.conv1.weight"] = (planes, inplanes, 3, 3)
                keys |= batch_norm_keys(f"{prefix}.bn1", planes)
                keys[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
                keys |= batch_norm_keys(f"{prefix}.bn2", planes)
            else:
                keys[f"{prefix}.conv1.weight"] = (planes, inplanes, 1, 1)
                keys |= batch_norm_keys(f"{prefix}.bn1", planes)
                keys[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
                keys |= batch_norm_keys(f"{prefix}.bn2", planes)
                keys[f"{prefix}.conv3.weight"] = (planes * 4, planes, 1, 1)
                keys |= batch_norm_keys(f"{prefix}.bn3", planes * 4)
            stride = 2 if stage > 0 and index == 0 else 1
            if stride != 1 or inplanes != planes * expansion:
                keys[f"{prefix}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                keys |= batch_norm_keys(f"{prefix}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    keys["fc.weight"] = (num_classes, inplanes)
    keys["fc.bias"] = (num_classes,)
    return keys


def torchvision_vit_keys(
    num_classes: int,
    image_size: int,
    patch_size: int,
    hidden_dim: int,
    num_layers: int,
    mlp_dim: int,
    in_channels: int = 3,
) -> Shapes:
    """Every key of torchvision's ``VisionTransformer(...).state_dict()`` and its shape."""
    sequence = (image_size // patch_size) ** 2 + 1
    keys: Shapes = {
        "class_token": (1, 1, hidden_dim),
        "conv_proj.weight": (hidden_dim, in_channels, patch_size, patch_size),
        "conv_proj.bias": (hidden_dim,),
        "encoder.pos_embedding": (1, sequence, hidden_dim),
    }
    for index in range(num_layers):
        prefix = f"encoder.layers.encoder_layer_{index}"
        keys |= {
            f"{prefix}.ln_1.weight": (hidden_dim,),
            f"{prefix}.ln_1.bias": (hidden_dim,),
            f"{prefix}.self_attention.in_proj_weight": (3 * hidden_dim, hidden_dim),
            f"{prefix}.self_attention.in_proj_bias": (3 * hidden_dim,),
            f"{prefix}.self_attention.out_proj.weight": (hidden_dim, hidden_dim),
            f"{prefix}.self_attention.out_proj.bias": (hidden_dim,),
            f"{prefix}.ln_2.weight": (hidden_dim,),
            f"{prefix}.ln_2.bias": (hidden_dim,),
            f"{prefix}.mlp.0.weight": (mlp_dim, hidden_dim),
            f"{prefix}.mlp.0.bias": (mlp_dim,),
            f"{prefix}.mlp.3.weight": (hidden_dim, mlp_dim),
            f"{prefix}.mlp.3.bias": (hidden_dim,),
        }
    keys |= {
        "encoder.ln.weight": (hidden_dim,),
        "encoder.ln.bias": (hidden_dim,),
        "heads.head.weight": (num_classes, hidden_dim),
        "heads.head.bias": (num_classes,),
    }
    return keys


def random_state(keys: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    """Float64 tensors of ``keys``' shapes: variances in [0.5, 1.5), batch counts 7."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
        else:
            state[key] = 0.3 * torch.randn(shape, generator=generator, dtype=torch.float64)
    return state


def shapes_of(model: nn.Module) -> Shapes:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


# ------------------------------------------------- torchvision's forward, written out in torch


def reference_batch_norm(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    mean, var = state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]
    scale = state[f"{prefix}.weight"] / torch.sqrt(var + 1e-5)
    return (x - mean[:, None, None]) * scale[:, None, None] + state[f"{prefix}.bias"][:, None, None]


def reference_resnet(
    name: str, state: dict, x: torch.Tensor, stem: str = "imagenet"
) -> torch.Tensor:
    """torchvision's ResNet forward in eval mode (stride on the bottleneck's 3×3 conv)."""
    kind, stage_blocks = RESNET_LAYOUTS[name]
    if stem == "imagenet":
        out = F.conv2d(x, state["conv1.weight"], stride=2, padding=3)
        out = F.max_pool2d(F.relu(reference_batch_norm(out, state, "bn1")), 3, 2, padding=1)
    else:
        out = F.relu(
            reference_batch_norm(F.conv2d(x, state["conv1.weight"], padding=1), state, "bn1")
        )
    for stage, count in enumerate(stage_blocks):
        for index in range(count):
            p = f"layer{stage + 1}.{index}"
            stride = 2 if stage > 0 and index == 0 else 1
            if kind == "basic":
                y = F.conv2d(out, state[f"{p}.conv1.weight"], stride=stride, padding=1)
                y = F.relu(reference_batch_norm(y, state, f"{p}.bn1"))
                y = reference_batch_norm(
                    F.conv2d(y, state[f"{p}.conv2.weight"], padding=1), state, f"{p}.bn2"
                )
            else:
                y = F.relu(
                    reference_batch_norm(
                        F.conv2d(out, state[f"{p}.conv1.weight"]), state, f"{p}.bn1"
                    )
                )
                y = F.conv2d(y, state[f"{p}.conv2.weight"], stride=stride, padding=1)
                y = F.relu(reference_batch_norm(y, state, f"{p}.bn2"))
                y = reference_batch_norm(F.conv2d(y, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in state:
                shortcut = F.conv2d(out, state[f"{p}.downsample.0.weight"], stride=stride)
                shortcut = reference_batch_norm(shortcut, state, f"{p}.downsample.1")
            else:
                shortcut = out
            out = F.relu(y + shortcut)
    features = out.mean(dim=(2, 3))
    return features @ state["fc.weight"].T + state["fc.bias"]


def reference_vit(
    state: dict, x: torch.Tensor, patch_size: int, num_heads: int, pooling: str = "token"
) -> torch.Tensor:
    """torchvision's ViT forward in eval mode, attention written out head by head."""
    n = x.shape[0]
    tokens = F.conv2d(x, state["conv_proj.weight"], state["conv_proj.bias"], stride=patch_size)
    hidden = tokens.shape[1]
    tokens = tokens.reshape(n, hidden, -1).permute(0, 2, 1)
    if pooling == "token":
        tokens = torch.cat([state["class_token"].expand(n, -1, -1), tokens], dim=1)
    tokens = tokens + state["encoder.pos_embedding"]
    head_dim = hidden // num_heads

    def layer_norm(values, prefix):
        return F.layer_norm(
            values, (hidden,), state[f"{prefix}.weight"], state[f"{prefix}.bias"], 1e-6
        )

    index = 0
    while f"encoder.layers.encoder_layer_{index}.ln_1.weight" in state:
        p = f"encoder.layers.encoder_layer_{index}"
        normed = layer_norm(tokens, f"{p}.ln_1")
        projected = normed @ state[f"{p}.self_attention.in_proj_weight"].T
        projected = projected + state[f"{p}.self_attention.in_proj_bias"]
        query, key, value = projected.split(hidden, dim=-1)
        heads = []
        for h in range(num_heads):
            part = slice(h * head_dim, (h + 1) * head_dim)
            scores = query[..., part] @ key[..., part].transpose(1, 2) / math.sqrt(head_dim)
            heads.append(torch.softmax(scores, dim=-1) @ value[..., part])
        attended = torch.cat(heads, dim=-1) @ state[f"{p}.self_attention.out_proj.weight"].T
        tokens = tokens + attended + state[f"{p}.self_attention.out_proj.bias"]
        hidden_mlp = F.gelu(
            layer_norm(tokens, f"{p}.ln_2") @ state[f"{p}.mlp.0.weight"].T
            + state[f"{p}.mlp.0.bias"]
        )
        tokens = tokens + hidden_mlp @ state[f"{p}.mlp.3.weight"].T + state[f"{p}.mlp.3.bias"]
        index += 1
    tokens = layer_norm(tokens, "encoder.ln")
    features = tokens[:, 0] if pooling == "token" else tokens.mean(dim=1)
    return features @ state["heads.head.weight"].T + state["heads.head.bias"]


# ---------------------------------------------------------------- parameter counts by hand


def conv(kernel: int, channels_in: int, channels_out: int) -> int:
    return kernel * kernel * channels_in * channels_out  # no bias: a batch norm follows


def bn(channels: int) -> int:
    return 2 * channels  # weight and bias; running statistics are buffers


def resnet_hand_count(name: str, num_classes: int) -> int:
    kind, stage_blocks = RESNET_LAYOUTS[name]
    total = conv(7, 3, 64) + bn(64)
    inplanes = 64
    for stage, count in enumerate(stage_blocks):
        planes = 64 * 2**stage
        out = planes if kind == "basic" else 4 * planes
        for index in range(count):
            if kind == "basic":
                total += conv(3, inplanes, planes) + conv(3, planes, planes) + 2 * bn(planes)
            else:
                total += conv(1, inplanes, planes) + conv(3, planes, planes) + conv(1, planes, out)
                total += 2 * bn(planes) + bn(out)
            if index == 0 and (stage > 0 or inplanes != out):
                total += conv(1, inplanes, out) + bn(out)
            inplanes = out
    return total + inplanes * num_classes + num_classes


def wide_resnet_hand_count(depth: int, k: int, num_classes: int) -> int:
    n = (depth - 4) // 6
    total = conv(3, 3, 16)
    channels_in = 16
    for stage in range(3):
        channels_out = 16 * 2**stage * k
        for _ in range(n):
            total += bn(channels_in) + conv(3, channels_in, channels_out)
            total += bn(channels_out) + conv(3, channels_out, channels_out)
            if channels_in != channels_out:  # the first block of each stage (16 → 16k too)
                total += conv(1, channels_in, channels_out)
            channels_in = channels_out
    return total + bn(channels_in) + channels_in * num_classes + num_classes


def vit_hand_count(image: int, patch: int, d: int, layers: int, mlp: int, num_classes: int) -> int:
    sequence = (image // patch) ** 2 + 1
    total = d + (3 * patch * patch * d + d) + sequence * d  # class token, conv_proj, positions
    per_layer = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * mlp + mlp) + (mlp * d + d)
    return total + layers * per_layer + 2 * d + d * num_classes + num_classes


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "published"),
    [("resnet34", 21_797_672), ("resnet50", 25_557_032), ("resnet101", 44_549_160)],
)
def test_resnet_parameter_counts_equal_the_hand_count_and_torchvision(name, published):
    with torch.device("meta"):
        model = build_model(name, in_channels=3, num_classes=1000, image_size=224)
    assert resnet_hand_count(name, 1000) == published
    assert parameter_count(model) == published
    assert model.feature_dim == (512 if name == "resnet34" else 2048)


def test_wide_resnet_28_10_parameter_count_equals_the_hand_count():
    with torch.device("meta"):
        model = build_model("wide-resnet", in_channels=3, num_classes=10, image_size=32)
    assert wide_resnet_hand_count(28, 10, 10) == 36_479_194
    assert parameter_count(model) == 36_479_194
    assert model.feature_dim == 640
    with torch.device("meta"):
        small = WideResNet(3, 100, 32, depth=16, widen_factor=4)
    assert parameter_count(small) == wide_resnet_hand_count(16, 4, 100)


def test_vit_b_16_parameter_count_equals_the_hand_count_and_torchvision():
    sizes = {
        "patch_size": 16,
        "hidden_dim": 768,
        "num_layers": 12,
        "num_heads": 12,
        "mlp_dim": 3072,
    }
    with torch.device("meta"):
        model = VisionTransformer(3, 1000, 224, **sizes)
    assert vit_hand_count(224, 16, 768, 12, 3072, 1000) == 86_567_656  # torchvision's vit_b_16
    assert parameter_count(model) == 86_567_656


# ------------------------------------------------------- torchvision checkpoints load strictly


@pytest.mark.parametrize("name", sorted(RESNET_LAYOUTS))
def test_resnet_keys_and_shapes_are_torchvisions(name):
    with torch.device("meta"):
        model = build_model(name, in_channels=3, num_classes=1000, image_size=224)
    assert shapes_of(model) == torchvision_resnet_keys(name, 1000)
    assert list(model.state_dict()) == list(torchvision_resnet_keys(name, 1000))  # same order


def test_vit_b_16_keys_and_shapes_are_torchvisions():
    with torch.device("meta"):
        model = VisionTransformer(
            3, 1000, 224, patch_size=16, hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072
        )
    assert shapes_of(model) == torchvision_vit_keys(1000, 224, 16, 768, 12, 3072)


@pytest.mark.parametrize(
    ("name", "stem", "size"),
    [("resnet34", "imagenet", 32), ("resnet50", "imagenet", 40), ("resnet50", "cifar", 8)],
)
def test_a_torchvision_resnet_state_dict_loads_and_gives_torchvisions_logits(name, stem, size):
    model = build_model(name, in_channels=3, num_classes=5, image_size=size, width=4, stem=stem)
    state = random_state(torchvision_resnet_keys(name, 5, width=4, stem=stem))
    model.double().load_state_dict(state, strict=True)
    x = torch.randn(
        3, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    with torch.no_grad():
        logits = model.eval()(x)
    expected = reference_resnet(name, state, x, stem)
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
    assert logits.std() > 0.01  # the logits differ between samples and classes: a real check

    fresh = build_model(name, in_channels=3, num_classes=5, image_size=size, width=4, stem=stem)
    assert load_torchvision_state_dict(fresh.double(), state) is fresh
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("pooling", "image_size"), [("token", 8), ("mean", (8, 12))])
def test_a_torchvision_vit_state_dict_loads_and_gives_torchvisions_logits(pooling, image_size):
    sizes = {"patch_size": 4, "hidden_dim": 12, "num_layers": 2, "num_heads": 3, "mlp_dim": 20}
    model = VisionTransformer(3, 4, image_size, pooling=pooling, **sizes).double()
    keys = torchvision_vit_keys(4, 8, 4, 12, 2, 20)
    if pooling == "mean":  # no class token; one position per patch of the 8×12 image (2 × 3)
        del keys["class_token"]
        keys["encoder.pos_embedding"] = (1, 6, 12)
    assert shapes_of(model) == keys
    state = random_state(keys)
    load_torchvision_state_dict(model, state)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.randn(
        3, 3, height, width, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    with torch.no_grad():
        logits = model.eval()(x)
    expected = reference_vit(state, x, patch_size=4, num_heads=3, pooling=pooling)
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
    assert logits.std() > 0.01


def tiny_resnet50(num_classes: int = 5) -> ResNet50:
    torch.manual_seed(0)
    return ResNet50(3, num_classes, 32, width=4)


def test_a_checkpoint_that_does_not_fit_names_every_missing_unexpected_and_misshaped_key():
    model = tiny_resnet50()
    state = random_state(torchvision_resnet_keys("resnet50", 1000, width=4))
    del state["layer2.0.conv2.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(MismatchError) as error:
        load_torchvision_state_dict(model, state)
    message = str(error.value)
    assert "missing 1 keys [layer2.0.conv2.weight]" in message
    assert "unexpected 1 keys [layer5.0.conv1.weight]" in message
    assert "fc.weight: model [5, 128], checkpoint [1000, 128]" in message
    assert "fc.bias: model [5], checkpoint [1000]" in message
    assert "include_head=False" in message
    # nothing was loaded: the weights that did fit (conv1, bn1, …) are still the model's own
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_many_missing_keys_are_counted_and_listed_in_part():
    keys = torchvision_resnet_keys("resnet50", 5, width=4)
    required = [key for key in keys if not key.endswith("num_batches_tracked")]
    listed = ", ".join(required[:8])
    with pytest.raises(MismatchError) as error:
        load_torchvision_state_dict(tiny_resnet50(), {})
    assert f"missing {len(required)} keys [{listed}, and {len(required) - 8} more]" in str(
        error.value
    )


def test_include_head_false_loads_the_backbone_of_an_imagenet_checkpoint_and_keeps_the_head():
    model = tiny_resnet50(num_classes=5)
    head_before = (model.fc.weight.clone(), model.fc.bias.clone())
    state = {
        key: value.float()
        for key, value in random_state(torchvision_resnet_keys("resnet50", 1000, width=4)).items()
    }
    load_torchvision_state_dict(model, state, include_head=False)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], state[key]) for key in state if not key.startswith("fc."))
    assert torch.equal(model.fc.weight, head_before[0]) and torch.equal(
        model.fc.bias, head_before[1]
    )


def test_ddp_prefixes_and_absent_batch_counts_are_accepted():
    model = tiny_resnet50()
    state = random_state(torchvision_resnet_keys("resnet50", 5, width=4))
    counts = [key for key in state if key.endswith("num_batches_tracked")]
    old_style = {f"module.{key}": value for key, value in state.items() if key not in counts}
    model.bn1.num_batches_tracked.fill_(5)
    load_torchvision_state_dict(model.double(), old_style)
    assert torch.equal(model.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])
    assert int(model.bn1.num_batches_tracked) == 0  # an absent count is 0, not the model's own


def test_checkpoint_files_load_from_pth_and_safetensors(tmp_path: Path):
    state = {
        key: value.float()
        for key, value in random_state(torchvision_resnet_keys("resnet50", 5, width=4)).items()
    }
    torch.save(state, tmp_path / "resnet50.pth")
    save_file(state, str(tmp_path / "resnet50.safetensors"))
    for file in ("resnet50.pth", "resnet50.safetensors"):
        model = load_torchvision_state_dict(tiny_resnet50(), tmp_path / file)
        loaded = model.state_dict()
        assert all(torch.equal(loaded[key], state[key]) for key in state)


class NotATensor:
    pass


def test_bad_checkpoint_files_are_file_format_errors(tmp_path: Path):
    model = tiny_resnet50()
    with pytest.raises(MissingFileError, match="does not exist"):
        load_torchvision_state_dict(model, tmp_path / "absent.pth")
    torch.save({"conv1.weight": NotATensor()}, tmp_path / "pickle.pth")
    with pytest.raises(FileFormatError, match="weights_only=True"):
        load_torchvision_state_dict(model, tmp_path / "pickle.pth")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    with pytest.raises(FileFormatError, match=r"entry 'state_dict' is a mapping"):
        load_torchvision_state_dict(model, tmp_path / "wrapped.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(FileFormatError, match="not a state dict"):
        load_torchvision_state_dict(model, tmp_path / "tensor.pth")
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(FileFormatError, match="safetensors"):
        load_torchvision_state_dict(model, tmp_path / "broken.safetensors")
    with pytest.raises(MismatchError, match="got int"):
        load_torchvision_state_dict(model, 3)  # type: ignore[arg-type]


# ------------------------------------------------------------------- the flipless contract

#: (name, settings, input shape) of tiny versions: every model runs forward in milliseconds.
#: ResNet-101 is ResNet-50's code with more blocks, and the CIFAR stem is checked against the
#: reference forward above.
TINY = [
    ("resnet34", {"width": 4}, (3, 32, 32)),
    ("resnet50", {"width": 4}, (3, 32, 32)),
    ("wide-resnet", {"depth": 10, "widen_factor": 1, "dropout": 0.3}, (1, 8, 8)),
    ("vit", {"hidden_dim": 8, "num_layers": 2, "num_heads": 2, "mlp_dim": 16}, (3, 8, 8)),
    (
        "vit",
        {
            "hidden_dim": 8,
            "num_layers": 1,
            "num_heads": 1,
            "mlp_dim": 8,
            "patch_size": 2,
            "pooling": "mean",
        },
        (1, 4, 6),
    ),
]
TINY_IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, _, shape in TINY]
#: Their feature_dim: 8 · width · expansion for the ResNets, 64 · widen_factor, hidden_dim.
FEATURE_DIMS = [8 * 4, 8 * 4 * 4, 64, 8, 8]


def build_tiny(
    name: str, settings: dict, shape: tuple[int, ...], num_classes: int = 3
) -> FeatureModel:
    torch.manual_seed(0)
    size = shape[1] if shape[1] == shape[2] else list(shape[1:])
    return build_model(
        name, in_channels=shape[0], num_classes=num_classes, image_size=size, **settings
    )


@pytest.mark.parametrize(
    ("name", "settings", "shape", "feature_dim"),
    [(*case, dim) for case, dim in zip(TINY, FEATURE_DIMS, strict=True)],
    ids=TINY_IDS,
)
def test_forward_is_head_of_features_with_the_documented_shapes(name, settings, shape, feature_dim):
    model = build_tiny(name, settings, shape).eval()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features, logits = model.features(x), model(x)
    assert features.shape == (2, feature_dim) == (2, model.feature_dim)
    assert logits.shape == (2, 3)
    assert torch.equal(logits, model.head(features))
    assert isinstance(model, FeatureModel) and model.architecture == name
    assert isinstance(model.head, nn.Linear) and model.head.out_features == model.num_classes == 3
    assert not any(key.startswith("head.") for key in model.state_dict())  # one name per tensor


@pytest.mark.parametrize(("name", "settings", "shape"), TINY, ids=TINY_IDS)
def test_every_parameter_gets_a_finite_gradient(name, settings, shape):
    model = build_tiny(name, settings, shape).train()
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None, key
        assert torch.isfinite(parameter.grad).all(), key
        assert parameter.grad.abs().sum() > 0, key


@pytest.mark.parametrize(("name", "settings", "shape"), TINY, ids=TINY_IDS)
def test_save_and_load_round_trip(name, settings, shape, tmp_path: Path):
    model = build_tiny(name, settings, shape).eval()
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.build_kwargs == model.build_kwargs
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.state_dict().keys() == model.state_dict().keys()


def test_assigning_head_replaces_the_torchvision_named_layer():
    model = tiny_resnet50(num_classes=5)
    replacement = nn.Linear(model.feature_dim, 7)
    model.head = replacement
    assert model.fc is replacement and model.head is replacement
    assert [key for key in model.state_dict() if key.startswith(("fc.", "head."))] == [
        "fc.weight",
        "fc.bias",
    ]
    vit = build_tiny(*TINY[3])
    vit.head = nn.Linear(8, 2)
    assert vit.heads.head is vit.head and vit.heads.head.out_features == 2
    assert "head.weight" not in vit.state_dict()


def test_start_from_old_adds_a_class_to_the_fc_head_and_the_copy_round_trips(tmp_path: Path):
    old = tiny_resnet50(num_classes=2).eval()
    new = start_from_old(old, ["cat", "bird", "dog"], old_class_names=["cat", "dog"])
    assert new.fc.out_features == 3 and new.head is new.fc and new.num_classes == 3
    assert torch.equal(new.fc.weight[[0, 2]], old.fc.weight)
    assert old.fc.out_features == 2  # the old model is untouched
    loaded = load_model(save_model(new, tmp_path / "new.safetensors"))
    assert loaded.fc.out_features == 3 and torch.equal(loaded.fc.weight, new.fc.weight)


def test_the_registry_knows_the_models_and_configs_fill_in_the_image_sizes():
    from flipless.data.labeled import LabeledData

    assert {"resnet34", "resnet50", "resnet101", "wide-resnet", "vit"} <= set(model_names())
    sample = LabeledData.from_arrays(torch.zeros(2, 3, 16, 24), [0, 1])
    for name in ("resnet34", "resnet50", "resnet101", "wide-resnet", "vit"):
        settings = model_settings(ModelConfig(name=name), sample)
        assert (settings["in_channels"], settings["image_size"], settings["num_classes"]) == (
            3,
            [16, 24],
            2,
        )
    assert (
        type(build_model("resnet34", in_channels=1, num_classes=2, image_size=32, width=2))
        is ResNet34
    )
    assert (
        type(
            build_model(
                "resnet101", in_channels=1, num_classes=2, image_size=8, width=1, stem="cifar"
            )
        )
        is ResNet101
    )


# ------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        (
            "resnet50",
            {"image_size": 32, "stem": "tiny"},
            "stem='tiny'; expected one of 'imagenet', 'cifar'",
        ),
        ("resnet50", {"image_size": 16}, 'too small for ResNet50 with stem="imagenet"'),
        ("resnet50", {"image_size": 32, "stem": ["cifar"]}, "stem=['cifar']; expected one of"),
        ("resnet34", {"image_size": 4, "stem": "cifar"}, "at least 8×8"),
        ("resnet101", {"image_size": 32, "width": 0}, "width=0"),
        ("resnet50", {"image_size": 32, "num_classes": 1}, "num_classes=1"),
        (
            "wide-resnet",
            {"image_size": 32, "depth": 27},
            "depth=27; a wide ResNet has depth 6n + 4",
        ),
        ("wide-resnet", {"image_size": 32, "depth": 4}, "depth=4"),
        ("wide-resnet", {"image_size": 32, "widen_factor": 0}, "widen_factor=0"),
        ("wide-resnet", {"image_size": 32, "dropout": 1.0}, "dropout=1.0"),
        ("wide-resnet", {"image_size": 2}, "at least 4×4"),
        ("vit", {"image_size": 30}, "not a multiple of patch_size=4"),
        (
            "vit",
            {"image_size": 32, "hidden_dim": 10, "num_heads": 3},
            "hidden_dim=10 is not a multiple of num_heads=3",
        ),
        ("vit", {"image_size": 32, "pooling": "max"}, "pooling='max'"),
        ("vit", {"image_size": 32, "attention_dropout": -0.1}, "attention_dropout=-0.1"),
        ("vit", {"image_size": 32, "num_layers": 0}, "num_layers=0"),
    ],
)
def test_bad_settings_are_input_errors_that_say_what_was_expected(name, settings, message):
    arguments = {"in_channels": 3, "num_classes": 10} | settings
    with pytest.raises(InputError) as error, torch.device("meta"):
        build_model(name, **arguments)
    assert message in str(error.value)


@pytest.mark.parametrize(("name", "settings", "shape"), TINY[::2], ids=TINY_IDS[::2])
def test_images_of_another_shape_are_mismatch_errors(name, settings, shape):
    model = build_tiny(name, settings, shape)
    wrong = torch.zeros(2, shape[0], shape[1] + 4, shape[2])
    with pytest.raises(MismatchError, match=r"was built for images"):
        model(wrong)
