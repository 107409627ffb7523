"""Tests of flipless.continual.importance against hand computations in numpy (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flipless.continual import (
    accumulate,
    compute_importance,
    load_importance,
    save_importance,
    select_layers,
)
from flipless.errors import FileFormatError, InputError, MismatchError
from flipless.train import MLP, LabeledData


def _data(count: int = 10, features: int = 4, classes: int = 3, seed: int = 0) -> LabeledData:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, features, generator=generator, dtype=torch.float64)
    return LabeledData(
        inputs=inputs,
        labels=torch.arange(count) % classes,
        ids=torch.arange(count),
        class_names=tuple(str(c) for c in range(classes)),
    )


def _linear(seed: int = 1) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3).double()


def _numpy_gradient(layer: nn.Linear, data: LabeledData, batch_size: int) -> np.ndarray:
    """Σ over batches of ∂L/∂a for y = (a ⊙ W) x + b, L = mean cross-entropy, at a = 1:
    (∂L/∂y)ᵀ x ⊙ W with ∂L/∂y = (softmax(y) − onehot) / n."""
    weight = layer.weight.detach().numpy()
    bias = layer.bias.detach().numpy()
    inputs = data.inputs.numpy()
    labels = data.labels.numpy()
    total = np.zeros_like(weight)
    for start in range(0, len(labels), batch_size):
        x = inputs[start : start + batch_size]
        y = x @ weight.T + bias
        p = np.exp(y - y.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(x)), labels[start : start + batch_size]] -= 1
        total += (p / len(x)).T @ x * weight
    return total


def _numpy_importance(g: np.ndarray, granularity: str) -> np.ndarray:
    values = g if granularity == "parameter" else g.sum(1)
    axis = -1
    z = (values - values.mean(axis, keepdims=True)) / values.std(axis, keepdims=True)
    return np.abs(np.tanh(z))


@pytest.mark.parametrize("granularity", ["parameter", "unit"])
def test_importance_equals_hand_computation(granularity: str) -> None:
    layer, data = _linear(), _data()
    importance = compute_importance(layer, data, batch_size=4, granularity=granularity)
    expected = _numpy_importance(_numpy_gradient(layer, data, 4), granularity)
    assert list(importance) == [""]  # the model itself is the layer
    (values,) = importance.values()
    assert values.dtype == torch.float64
    assert values.shape == ((3, 4) if granularity == "parameter" else (3,))
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_importance_names_layers_of_a_model_and_is_bounded() -> None:
    torch.manual_seed(0)
    model = MLP(4, 3, hidden=(8,)).double()
    importance = compute_importance(model, _data(count=40), granularity="parameter")
    assert set(importance) == {"body.0", "head"}
    assert importance["body.0"].shape == (8, 4) and importance["head"].shape == (3, 8)
    for values in importance.values():
        assert bool(((values >= 0) & (values <= 1)).all())
        assert values.max() > 0.5  # not all zero: the test can fail


def test_model_weights_grad_and_mode_unchanged() -> None:
    torch.manual_seed(0)
    model = MLP(4, 3, hidden=(8,), dropout=0.5).double()
    model.train()
    marker = {name: torch.full_like(p, 7.0) for name, p in model.named_parameters()}
    for name, parameter in model.named_parameters():
        parameter.grad = marker[name].clone()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    compute_importance(model, _data(count=20))
    assert model.training
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name])
        assert torch.equal(parameter.grad, marker[name])
        assert isinstance(parameter, nn.Parameter)
    assert {n for n, _ in model.named_parameters()} == set(before)


def test_eval_mode_during_the_pass_makes_it_deterministic() -> None:
    torch.manual_seed(0)
    model = MLP(4, 3, hidden=(8,), dropout=0.5).double().train()
    data = _data(count=30)
    first = compute_importance(model, data)
    second = compute_importance(model, data)
    for name in first:
        assert torch.equal(first[name], second[name])


def test_callable_loss_is_used() -> None:
    layer, data = _linear(), _data()
    flipped = compute_importance(
        layer,
        data,
        loss=lambda model, batch: -F.cross_entropy(model(batch["inputs"]), batch["labels"]),
        granularity="parameter",
        batch_size=4,
    )
    # negating the loss negates g, so z flips sign and |tanh z| is unchanged
    expected = _numpy_importance(-_numpy_gradient(layer, data, 4), "parameter")
    np.testing.assert_allclose(flipped[""].numpy(), expected, rtol=1e-10)
    squared = compute_importance(
        layer, data, loss=lambda model, batch: model(batch["inputs"]).pow(2).mean()
    )
    assert not torch.allclose(squared[""], compute_importance(layer, data)[""])


def test_constant_rows_give_zero_importance() -> None:
    layer = nn.Linear(4, 3).double()
    with torch.no_grad():
        layer.weight.zero_()  # g = ∂L/∂W ⊙ W = 0 everywhere
    importance = compute_importance(layer, _data(), granularity="parameter")
    assert torch.equal(importance[""], torch.zeros(3, 4, dtype=torch.float64))


def test_select_layers_by_type_and_name() -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Conv1d(1, 2, 3), nn.Linear(5, 2))
    assert list(select_layers(model)) == ["0", "3"]
    assert list(select_layers(model, include=nn.Conv1d)) == ["2"]
    assert list(select_layers(model, include=(nn.Linear, nn.Conv1d), names="[23]")) == ["2", "3"]
    assert list(select_layers(model, names=["0"])) == ["0"]
    mlp = MLP(4, 3, hidden=(8, 8)).double()
    assert set(compute_importance(mlp, _data(), layers="body.*")) == {"body.0", "body.2"}
    assert set(compute_importance(mlp, _data(), layers=nn.Linear)) == {"body.0", "body.2", "head"}


def test_select_layers_rejects_bad_arguments() -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    with pytest.raises(InputError, match="no layer of Sequential is a Conv2d"):
        select_layers(model, include=nn.Conv2d)
    with pytest.raises(InputError, match="matching"):
        select_layers(model, names="head*")
    with pytest.raises(InputError, match="expected a module type"):
        select_layers(model, include="Linear")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no weight parameter"):
        select_layers(model, include=nn.ReLU)
    with pytest.raises(InputError, match=r"torch\.nn\.Module"):
        select_layers("model")  # type: ignore[arg-type]


def test_compute_importance_rejects_bad_arguments() -> None:
    layer, data = _linear(), _data()
    with pytest.raises(InputError, match="granularity='row'"):
        compute_importance(layer, data, granularity="row")
    with pytest.raises(InputError, match="batch_size=0"):
        compute_importance(layer, data, batch_size=0)
    with pytest.raises(InputError, match="loss='kl'"):
        compute_importance(layer, data, loss="kl")
    with pytest.raises(InputError, match="non-empty map-style Dataset"):
        compute_importance(layer, [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="scalar"):
        compute_importance(layer, data, loss=lambda model, batch: model(batch["inputs"]))


def test_accumulate_is_the_elementwise_maximum() -> None:
    previous = {"a": torch.tensor([0.1, 0.9, 0.5]), "b": torch.tensor([0.3])}
    new = {"a": torch.tensor([0.2, 0.4, 0.5]), "c": torch.tensor([0.7])}
    merged = accumulate(previous, new)
    assert torch.equal(merged["a"], torch.tensor([0.2, 0.9, 0.5]))
    assert torch.equal(merged["b"], torch.tensor([0.3]))
    assert torch.equal(merged["c"], torch.tensor([0.7]))
    with pytest.raises(MismatchError, match=r"shape \(3,\) before and \(2,\) now"):
        accumulate(previous, {"a": torch.zeros(2)})


def test_save_load_round_trip(tmp_path) -> None:
    importance = {"body.0": torch.rand(8, 4, dtype=torch.float64), "head": torch.rand(3)}
    path = tmp_path / "importance.safetensors"
    save_importance(importance, path, granularity="parameter")
    loaded, granularity = load_importance(path)
    assert granularity == "parameter"
    assert set(loaded) == set(importance)
    for name in importance:
        assert torch.equal(loaded[name], importance[name])
    with pytest.raises(InputError, match="granularity='x'"):
        save_importance(importance, path, granularity="x")
    with pytest.raises(InputError, match="empty"):
        save_importance({}, path, granularity="unit")


def test_load_rejects_bad_files(tmp_path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(FileFormatError, match="cannot read it"):
        load_importance(broken)
    with pytest.raises(FileFormatError, match="cannot read it"):
        load_importance(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(FileFormatError, match="expected format='flipless-importance'"):
        load_importance(other)


def test_conv_layers_standardise_each_output_channel() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 2), nn.Flatten(), nn.Linear(9, 3)).double()
    data = _data(count=12, features=4)
    images = LabeledData(
        inputs=data.inputs[:, None, :],
        labels=data.labels,
        ids=data.ids,
        class_names=data.class_names,
    )
    per_parameter = compute_importance(model, images, nn.Conv1d, granularity="parameter")
    per_unit = compute_importance(model, images, nn.Conv1d, granularity="unit")
    assert per_parameter["0"].shape == (3, 1, 2) and per_unit["0"].shape == (3,)
    # two entries per row: z = ±1 whenever they differ, so |tanh z| = tanh 1
    np.testing.assert_allclose(per_parameter["0"].numpy(), np.tanh(1.0), rtol=1e-12)
    assert bool(((per_unit["0"] >= 0) & (per_unit["0"] <= 1)).all())
