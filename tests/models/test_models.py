"""Tests of flipless.models: the shipped models, the registry and model checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from flipless.errors import FileFormatError, InputError, MismatchError
from flipless.models import (
    CHECKPOINT_FORMAT,
    MLP,
    MODELS,
    FeatureModel,
    ResNet,
    ResNet18,
    SmallCNN,
    build_model,
    load_model,
    model_names,
    read_model_info,
    register_model,
    save_model,
)


def images(shape: tuple[int, ...], n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def seeded(factory, *args, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return factory(*args, **kwargs)


def conv_params(kernel: int, channels_in: int, channels_out: int) -> int:
    return kernel * kernel * channels_in * channels_out  # no bias: a batch norm follows


def bn_params(channels: int) -> int:
    return 2 * channels  # weight and bias; running statistics are buffers


def resnet18_hand_count(in_channels: int, num_classes: int) -> int:
    """ResNet-18 (CIFAR stem) parameters, layer by layer from the layer shapes."""
    total = conv_params(3, in_channels, 64) + bn_params(64)  # stem
    channels_in = 64
    for channels_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        # first block: two 3x3 convs + BNs, projection shortcut when the shape changes
        total += conv_params(3, channels_in, channels_out) + bn_params(channels_out)
        total += conv_params(3, channels_out, channels_out) + bn_params(channels_out)
        if stride != 1 or channels_in != channels_out:
            total += conv_params(1, channels_in, channels_out) + bn_params(channels_out)
        # second block: identity shortcut
        total += 2 * (conv_params(3, channels_out, channels_out) + bn_params(channels_out))
        channels_in = channels_out
    return total + 512 * num_classes + num_classes  # head


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# (name, kwargs, input shape, feature_dim)
CASES = [
    ("mlp", {"in_features": 64, "num_classes": 10}, (1, 8, 8), 256),
    ("mlp", {"in_features": 64, "num_classes": 3, "hidden": (32, 16)}, (64,), 16),
    ("cnn", {"in_channels": 1, "num_classes": 10, "image_size": 8}, (1, 8, 8), 128),
    ("cnn", {"in_channels": 1, "num_classes": 10, "image_size": 28}, (1, 28, 28), 128),
    ("cnn", {"in_channels": 3, "num_classes": 7, "image_size": 32, "width": 8}, (3, 32, 32), 128),
    ("resnet18", {"in_channels": 1, "num_classes": 10, "image_size": 28}, (1, 28, 28), 512),
    ("resnet18", {"in_channels": 3, "num_classes": 10, "image_size": 32}, (3, 32, 32), 512),
    ("resnet", {"in_channels": 1, "num_classes": 10, "image_size": 28}, (1, 28, 28), 64),
    (
        "resnet",
        {"in_channels": 3, "num_classes": 5, "image_size": 9, "widths": [8, 12], "blocks": 2},
        (3, 9, 9),
        12,
    ),
]
IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, _, shape, _ in CASES]


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(("name", "kwargs", "shape", "feature_dim"), CASES, ids=IDS)
def test_shapes_and_forward_is_head_of_features(name, kwargs, shape, feature_dim):
    model = seeded(build_model, name, **kwargs).eval()
    x = images(shape)
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
        assert features.shape == (2, feature_dim)
        assert logits.shape == (2, kwargs["num_classes"])
        assert torch.equal(logits, model.head(features))
    assert isinstance(model, FeatureModel)
    assert model.feature_dim == feature_dim
    assert model.num_classes == kwargs["num_classes"]
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (feature_dim, model.num_classes)


def test_resnet_parameter_count_and_strides_equal_the_hand_computation():
    # ResNet-8: stem 1→16 (stride 2), stages 16, 32, 64 of one block each
    total = conv_params(3, 1, 16) + bn_params(16)
    total += 2 * (conv_params(3, 16, 16) + bn_params(16))  # identity shortcut
    for channels_in, channels_out in ((16, 32), (32, 64)):
        total += conv_params(3, channels_in, channels_out) + conv_params(
            3, channels_out, channels_out
        )
        total += conv_params(1, channels_in, channels_out) + 3 * bn_params(channels_out)
    total += 64 * 10 + 10
    model = ResNet(1, 10, 28)
    assert parameter_count(model) == total == 77_754
    strides = [m.stride for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert strides[0] == (2, 2)  # the stem halves 28×28 to 14×14, the stages give 7×7, 4×4
    activations = model.stages(model.stem(images((1, 28, 28))))
    assert activations.shape == (2, 64, 4, 4)
    two_blocks = ResNet(1, 10, 28, widths=(16, 32), blocks=2, stem_stride=1)
    assert [len(stage) for stage in two_blocks.stages] == [2, 2]
    assert two_blocks.build_kwargs == {
        "in_channels": 1,
        "num_classes": 10,
        "image_size": 28,
        "widths": [16, 32],
        "blocks": 2,
        "stem_stride": 1,
    }


def test_resnet18_parameter_count_equals_the_hand_count():
    model = ResNet18(3, 10, 32)
    assert resnet18_hand_count(3, 10) == 11_173_962  # the ≈11.17 M of the CIFAR ResNet-18
    assert parameter_count(model) == 11_173_962
    assert parameter_count(ResNet18(1, 100, 28)) == resnet18_hand_count(1, 100)
    # projection shortcuts only where the shape changes: stages 2, 3, 4
    projections = [
        m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    assert [(m.in_channels, m.out_channels, m.stride) for m in projections] == [
        (64, 128, (2, 2)),
        (128, 256, (2, 2)),
        (256, 512, (2, 2)),
    ]


@pytest.mark.parametrize(
    ("image_size", "pooled"), [(8, (2, 2)), (28, (7, 7)), (32, (8, 8)), ((30, 13), (7, 3))]
)
def test_small_cnn_flattened_size_from_image_size(image_size, pooled):
    model = SmallCNN(2, 3, image_size, width=4, feature_dim=16)
    linear = model.embed[1]
    assert linear.in_features == 8 * pooled[0] * pooled[1]
    hand = (
        conv_params(3, 2, 4)
        + bn_params(4)
        + conv_params(3, 4, 8)
        + bn_params(8)
        + (8 * pooled[0] * pooled[1] * 16 + 16)
        + (16 * 3 + 3)
    )
    assert parameter_count(model) == hand
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert model.eval()(images((2, height, width))).shape == (2, 3)


def test_mlp_matches_a_float64_hand_computation():
    model = MLP(6, 3, hidden=(5, 4)).double().eval()
    x = images((2, 3)).double()  # [2, 2, 3] flattens to 6 features
    w1, b1 = (t.detach().numpy() for t in (model.body[0].weight, model.body[0].bias))
    w2, b2 = (t.detach().numpy() for t in (model.body[2].weight, model.body[2].bias))
    w3, b3 = (t.detach().numpy() for t in (model.head.weight, model.head.bias))
    flat = x.numpy().reshape(2, 6)
    hidden = np.maximum(np.maximum(flat @ w1.T + b1, 0) @ w2.T + b2, 0)
    with torch.no_grad():
        np.testing.assert_allclose(model.features(x).numpy(), hidden, rtol=1e-12)
        np.testing.assert_allclose(model(x).numpy(), hidden @ w3.T + b3, rtol=1e-12)


def test_mlp_without_hidden_layers_is_logistic_regression():
    model = MLP(4, 3, hidden=()).double()
    x = images((4,)).double()
    assert model.feature_dim == 4
    assert torch.equal(model.features(x), x)
    assert torch.allclose(model(x), x @ model.head.weight.T + model.head.bias)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("mlp", {"in_features": 64, "num_classes": 10, "hidden": (16, 8), "dropout": 0.2}, (64,)),
        ("cnn", {"in_channels": 1, "num_classes": 10, "image_size": 8, "width": 4}, (1, 8, 8)),
        ("resnet18", {"in_channels": 3, "num_classes": 10, "image_size": 8}, (3, 8, 8)),
        ("resnet", {"in_channels": 1, "num_classes": 10, "image_size": 8, "blocks": 2}, (1, 8, 8)),
    ],
    ids=["mlp", "cnn", "resnet18", "resnet"],
)
def test_gradients_reach_every_parameter(name, kwargs, shape):
    model = seeded(build_model, name, **kwargs).train()
    loss = nn.functional.cross_entropy(model(images(shape)), torch.tensor([1, 7]))
    loss.backward()
    without = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert without == []


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    mlp = seeded(MLP, 64, 10, hidden=(64,), dropout=0.5)
    x = images((64,), n=4)
    assert not torch.equal(mlp.train()(x), mlp(x))  # dropout draws differ: the check can fail
    with torch.no_grad():
        assert torch.equal(mlp.eval()(x), mlp(x))
    cnn = seeded(SmallCNN, 1, 10, 8, width=4).eval()
    stats = cnn.blocks[0][1].running_mean.clone()
    x = images((1, 8, 8), n=4)
    with torch.no_grad():
        assert torch.equal(cnn(x), cnn(x))
    assert torch.equal(cnn.blocks[0][1].running_mean, stats)  # eval leaves BN statistics alone
    # ResNet18 in eval mode: test_shapes_and_forward_is_head_of_features runs it twice


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (MLP, {"in_features": 0, "num_classes": 3}, r"in_features=0; expected a whole number"),
        (MLP, {"in_features": 4, "num_classes": 1}, r"num_classes=1; .* ≥ 2"),
        (MLP, {"in_features": 4, "num_classes": 3, "hidden": 8}, r"hidden=8; expected a sequence"),
        (MLP, {"in_features": 4, "num_classes": 3, "hidden": (8, 0)}, r"each hidden width=0"),
        (MLP, {"in_features": 4, "num_classes": 3, "dropout": 1.0}, r"dropout=1.0; .*\[0, 1\)"),
        (SmallCNN, {"in_channels": 1, "num_classes": 3, "image_size": 3}, r"at least 4×4"),
        (SmallCNN, {"in_channels": 1, "num_classes": 3, "image_size": (8,)}, r"\(height, width\)"),
        (SmallCNN, {"in_channels": 1, "num_classes": 3, "image_size": 8.0}, r"image_size=8.0"),
        (SmallCNN, {"in_channels": 1, "num_classes": 3, "image_size": 0}, r"image_size=0; .*int"),
        (SmallCNN, {"in_channels": 1, "num_classes": 3, "image_size": True}, r"image_size=True"),
        (ResNet18, {"in_channels": 3, "num_classes": 10, "image_size": 4}, r"at least 8×8"),
        (ResNet18, {"in_channels": True, "num_classes": 10, "image_size": 32}, r"in_channels=True"),
        (ResNet, {"in_channels": 1, "num_classes": 10, "image_size": 7}, r"stem stride of 2 .*8×8"),
        (ResNet, {"in_channels": 1, "num_classes": 10, "image_size": 28, "widths": ()}, r"widths"),
        (
            ResNet,
            {"in_channels": 1, "num_classes": 10, "image_size": 28, "widths": "16"},
            r"widths",
        ),
        (
            ResNet,
            {"in_channels": 1, "num_classes": 10, "image_size": 28, "widths": (8, 0)},
            r"width=0",
        ),
        (ResNet, {"in_channels": 1, "num_classes": 10, "image_size": 28, "blocks": 0}, r"blocks=0"),
        (
            ResNet,
            {"in_channels": 1, "num_classes": 10, "image_size": 28, "stem_stride": 0},
            r"stride",
        ),
    ],
)
def test_bad_constructor_arguments(factory, kwargs, match):
    with pytest.raises(InputError, match=match):
        factory(**kwargs)


def test_inputs_of_the_wrong_shape():
    with pytest.raises(MismatchError, match=r"built for 64 input features.*flattens to 784"):
        MLP(64, 10)(images((1, 28, 28)))
    with pytest.raises(InputError, match=r"batch tensor \[N, \.\.\.\]; got \(5,\)"):
        MLP(5, 2)(torch.zeros(5))
    with pytest.raises(MismatchError, match=r"images \[N, 1, 28, 28\]; got \(2, 1, 32, 32\)"):
        SmallCNN(1, 10, 28)(images((1, 32, 32)))
    with pytest.raises(MismatchError, match=r"images \[N, 3, 32, 32\]; got \(2, 1, 32, 32\)"):
        ResNet18(3, 10, 32).features(images((1, 32, 32)))


# --------------------------------------------------------------------------- registry


def test_build_model_by_name():
    assert {"mlp", "cnn", "resnet", "resnet18", "text"} <= set(model_names())
    assert {MODELS["mlp"], MODELS["cnn"], MODELS["resnet"], MODELS["resnet18"]} == {
        MLP,
        SmallCNN,
        ResNet,
        ResNet18,
    }
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=[28, 28], width=8)
    assert isinstance(model, SmallCNN) and model.architecture == "cnn"
    assert model.image_size == (28, 28)
    assert isinstance(build_model("mlp", in_features=4, num_classes=2, hidden=[3]), MLP)


def test_build_model_errors_list_what_is_accepted():
    with pytest.raises(
        InputError,
        match=r"Unknown model 'vgg'; expected one of 'cnn', 'encoder-head', 'hf', 'mlp', "
        r"'resnet', 'resnet101', 'resnet18', 'resnet34', 'resnet50', 'target', 'text', 'vit', "
        r"'wide-resnet'\.",
    ):
        build_model("vgg", num_classes=10)
    with pytest.raises(
        InputError,
        match=r"Model 'mlp' got wrong settings \(unknown 'depth'\); it accepts 'in_features', "
        r"'num_classes', 'hidden', 'dropout' \(required: 'in_features', 'num_classes'\)",
    ):
        build_model("mlp", in_features=4, num_classes=2, depth=3)
    with pytest.raises(InputError, match=r"unknown 'colour'; missing 'num_classes', 'image_size'"):
        build_model("cnn", in_channels=1, colour=True)


def test_register_model_refuses_a_taken_name():
    with pytest.raises(InputError, match=r"'mlp' is already registered"):
        register_model("mlp")(MLP)
    assert MODELS["mlp"] is MLP


# --------------------------------------------------------------------------- checkpoints


def trained_cnn() -> SmallCNN:
    """A CNN after one training step, so weights and BN statistics differ from a fresh one."""
    model = seeded(SmallCNN, 1, 10, 8, width=4).train()
    nn.functional.cross_entropy(model(images((1, 8, 8), n=8)), torch.arange(8)).backward()
    with torch.no_grad():  # one SGD step by hand (torch.optim's first use costs seconds)
        for parameter in model.parameters():
            parameter -= 0.1 * parameter.grad
    return model.eval()


@pytest.mark.parametrize(
    ("model_fn", "shape"),
    [
        (lambda: seeded(MLP, 64, 10, hidden=(16, 8), dropout=0.3).eval(), (1, 8, 8)),
        (trained_cnn, (1, 8, 8)),
        (lambda: seeded(ResNet18, 1, 10, 8).eval(), (1, 8, 8)),  # every layer; small inputs
        (lambda: seeded(ResNet, 1, 10, 8, widths=(4, 8), blocks=2).eval(), (1, 8, 8)),
    ],
    ids=["mlp", "cnn", "resnet18", "resnet"],
)
def test_save_load_round_trip(tmp_path, model_fn, shape):
    model = model_fn()
    path = save_model(model, tmp_path / "old.safetensors", {"epoch": 3, "data": "digits"})
    assert path == tmp_path / "old.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["old.safetensors"]  # no temporary left
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.build_kwargs == model.build_kwargs
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[key], loaded_state[key]) for key in state)
    x = images(shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    info = read_model_info(path)
    assert info.architecture == model.architecture
    assert info.kwargs == json.loads(json.dumps(model.build_kwargs))
    assert info.metadata == {"epoch": 3, "data": "digits"}


def test_round_trip_keeps_batch_norm_statistics(tmp_path):
    model = trained_cnn()
    fresh_mean = SmallCNN(1, 10, 8, width=4).blocks[0][1].running_mean
    assert not torch.equal(model.blocks[0][1].running_mean, fresh_mean)  # the step moved them
    loaded = load_model(save_model(model, tmp_path / "cnn.safetensors"))
    assert torch.equal(loaded.blocks[0][1].running_mean, model.blocks[0][1].running_mean)
    assert loaded.blocks[1][1].num_batches_tracked.item() == 1


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(seeded(MLP, 4, 2, seed=1), path)
    second = seeded(MLP, 4, 2, seed=2)
    save_model(second, path)
    assert torch.equal(load_model(path).head.weight, second.head.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_save_model_errors(tmp_path):
    with pytest.raises(InputError, match=r"a Linear does not record how to rebuild it"):
        save_model(nn.Linear(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(InputError, match=r"must be JSON-serialisable"):
        save_model(MLP(4, 2), tmp_path / "x.safetensors", {"when": object()})
    with pytest.raises(InputError, match=r"the folder .*missing does not exist"):
        save_model(MLP(4, 2), tmp_path / "missing" / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def header(architecture: str = "mlp", **kwargs) -> dict[str, str]:
    kwargs = kwargs or {"in_features": 4, "num_classes": 2, "hidden": [3], "dropout": 0.0}
    return {"format": CHECKPOINT_FORMAT, "architecture": architecture, "kwargs": json.dumps(kwargs)}


def mlp_tensors() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in MLP(4, 2, hidden=(3,)).state_dict().items()}


def test_load_model_rejects_files_that_are_not_flipless_models(tmp_path):
    with pytest.raises(FileFormatError, match=r"no model checkpoint at .*absent.safetensors"):
        load_model(tmp_path / "absent.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(
        FileFormatError, match=r"cannot read .*garbage.safetensors as a safetensors"
    ):
        load_model(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file(mlp_tensors(), foreign)  # real weights, but no flipless metadata
    with pytest.raises(FileFormatError, match=r"not a flipless model checkpoint .*format=None"):
        load_model(foreign)
    truncated = tmp_path / "truncated.safetensors"
    save_model(MLP(4, 2), truncated)
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(FileFormatError, match=r"cannot read .*truncated.safetensors"):
        load_model(truncated)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t, h: t.pop("head.bias"), r"missing \['head.bias'\], unexpected \[\]"),
        (lambda t, h: t.update(extra=torch.zeros(1)), r"missing \[\], unexpected \['extra'\]"),
        (
            lambda t, h: h.update(header(in_features=4, num_classes=2, hidden=[5])),
            r"(?s)do not fit a 'mlp' model .*size mismatch for body.0.weight",
        ),
        (lambda t, h: h.update(architecture="vgg"), r"cannot rebuild .*Unknown model 'vgg'"),
        (lambda t, h: h.update(kwargs="{oops"), r"kwargs or metadata are not JSON"),
        (lambda t, h: h.update(kwargs="[1, 2]"), r"must be JSON objects; got list"),
    ],
    ids=["missing-key", "extra-key", "wrong-shape", "unknown-architecture", "bad-json", "list"],
)
def test_load_model_is_strict(tmp_path, edit, match):
    tensors, meta = mlp_tensors(), header()
    edit(tensors, meta)
    path = tmp_path / "edited.safetensors"
    save_file(tensors, path, metadata=meta)
    with pytest.raises(FileFormatError, match=match):
        load_model(path)


def test_load_model_onto_a_device(tmp_path):
    path = save_model(MLP(4, 2), tmp_path / "m.safetensors")
    model = load_model(path, device=torch.device("cpu"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert isinstance(path, Path)
