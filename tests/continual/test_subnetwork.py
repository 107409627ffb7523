"""Sub-network layers: frozen signed constants, popup scores per task, straight-through
gradients, score transfer and per-task inference; soft-masking and importance on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flipless.continual import (
    PopupLinear,
    SoftMask,
    SoftMasker,
    add_task,
    compute_importance,
    popup_layers,
    select_layers,
    set_task,
    to_subnetwork,
    use_task,
)
from flipless.data.loaders import load_digits
from flipless.errors import InputError
from flipless.train import MLP, LabeledData, TrainSettings, fit


def _layer(out_features: int = 3, in_features: int = 4, seed: int = 0) -> PopupLinear:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator, dtype=torch.float64)
    return PopupLinear(weight, gain=1.5, generator=generator)


def test_weight_is_a_frozen_signed_constant() -> None:
    source = torch.tensor([[0.3, -2.0, 0.0], [-0.1, 5.0, 1.0]], dtype=torch.float64)
    layer = PopupLinear(source, gain=2.0)
    expected = np.array([[1, -1, 1], [-1, 1, 1]]) * 2.0 / math.sqrt(3)
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected, rtol=0, atol=1e-15)
    assert not layer.weight.requires_grad
    assert layer.active_scores.requires_grad
    assert layer.active_scores.shape == source.shape
    assert float(layer.active_scores.detach().abs().max()) <= 1 / math.sqrt(3)


def test_forward_and_straight_through_gradient_by_hand() -> None:
    layer = _layer()
    inputs = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    upstream = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    output = layer(inputs)
    (output * upstream).sum().backward()
    weight = layer.weight.detach().numpy()
    scores = layer.active_scores.detach().numpy()
    x, g = inputs.numpy(), upstream.numpy()
    effective = weight * (scores >= 0)
    np.testing.assert_allclose(output.detach().numpy(), x @ effective.T, rtol=1e-13)
    # Straight-through: the threshold counts as the identity, so dL/ds = (gᵀ x) ⊙ W.
    np.testing.assert_allclose(layer.active_scores.grad.numpy(), (g.T @ x) * weight, rtol=1e-12)
    assert layer.weight.grad is None


def test_add_task_copies_scores_and_freezes_the_earlier_ones() -> None:
    layer = _layer()
    first = layer.active_scores.detach().clone()
    assert layer.add_task() == 1
    assert layer.task_count == 2 and layer.active_task == 1
    torch.testing.assert_close(layer.scores[1].detach(), first, rtol=0, atol=0)
    assert not layer.scores[0].requires_grad and layer.scores[1].requires_grad
    with torch.no_grad():
        layer.scores[1].neg_()
    torch.testing.assert_close(layer.mask(0), (first >= 0).double(), rtol=0, atol=0)
    torch.testing.assert_close(layer.mask(1), (-first >= 0).double(), rtol=0, atol=0)


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="2-D"):
        PopupLinear(torch.zeros(3))
    with pytest.raises(InputError, match="gain"):
        PopupLinear(torch.zeros(2, 2), gain=0)
    layer = _layer()
    with pytest.raises(InputError, match=r"task=2; expected an integer in \[0, 0\]"):
        layer.mask(2)
    model = MLP(4, 3, hidden=(5,))
    with pytest.raises(InputError, match="no PopupLinear"):
        add_task(model)
    with pytest.raises(InputError, match=r"only nn\.Linear"):
        to_subnetwork(model, {"body.1": model.body[1]})
    with pytest.raises(InputError, match="layers is empty"):
        to_subnetwork(model, {})


def _subnetwork_mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    model = MLP(4, 3, hidden=(6,)).double()
    to_subnetwork(model, select_layers(model), seed=seed)
    return model


def test_to_subnetwork_replaces_every_selected_linear_layer() -> None:
    model = _subnetwork_mlp()
    assert sorted(popup_layers(model)) == ["body.0", "head"]
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.endswith("weight"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["body.0.scores.0", "head.scores.0"]


def test_use_task_switches_and_restores() -> None:
    model = _subnetwork_mlp()
    add_task(model)
    with torch.no_grad():
        for layer in popup_layers(model).values():
            layer.scores[1].neg_()
    inputs = torch.randn(3, 4, dtype=torch.float64)
    with use_task(model, 0):
        first = model(inputs)
    second = model(inputs)
    assert all(layer.active_task == 1 for layer in popup_layers(model).values())
    assert not torch.allclose(first, second)
    set_task(model, 0)
    torch.testing.assert_close(model(inputs), first, rtol=0, atol=0)
    with pytest.raises(InputError, match="task=5"):
        set_task(model, 5)


def test_soft_mask_masks_the_active_scores() -> None:
    model = _subnetwork_mlp()
    add_task(model)
    importance = {"body.0": torch.ones(6, dtype=torch.float64), "head": torch.zeros(3).double()}
    hook = SoftMask(importance)
    hook.bind(model)
    parameters = [p for p, _ in hook.keep_factors()]
    assert parameters[0] is model.body[0].scores[1] and parameters[1] is model.head.scores[1]
    before = model.body[0].scores[1].detach().clone()
    settings = TrainSettings(epochs=2, batch_size=4, progress="none", device="cpu")
    data = LabeledData(
        inputs=torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)),
        labels=torch.arange(8) % 3,
        ids=torch.arange(8),
        class_names=("a", "b", "c"),
    )
    optimizer = lambda p: torch.optim.SGD(p, lr=0.5)  # noqa: E731
    fit(model, data, optimizer=optimizer, settings=settings, hooks=[hook], resume=False)
    torch.testing.assert_close(model.body[0].scores[1].detach(), before, rtol=0, atol=0)
    assert hook.steps == 4


def test_importance_of_a_subnetwork_layer_uses_its_effective_weight() -> None:
    """g = Σ ∂L/∂a with W_eff = a ⊙ W ⊙ mask: at a = 1, (∂L/∂W_eff) ⊙ W_eff."""
    model = _subnetwork_mlp()
    data = LabeledData(
        inputs=torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4)),
        labels=torch.tensor([0, 1, 2, 0, 1, 2]),
        ids=torch.arange(6),
        class_names=("a", "b", "c"),
    )
    importance = compute_importance(model, data, ["head"], batch_size=6, granularity="parameter")
    head = model.head
    effective = (head.weight * head.mask()).detach().requires_grad_(True)
    hidden = model.body(data.inputs).detach()
    F.cross_entropy(hidden @ effective.T, data.labels).backward()
    g = (effective.grad * effective).detach().numpy()
    z = (g - g.mean(1, keepdims=True)) / g.std(1, keepdims=True)
    np.testing.assert_allclose(importance["head"].numpy(), np.abs(np.tanh(z)), rtol=1e-10)
    assert model.head.active_scores.grad is None


@pytest.mark.slow
def test_each_task_keeps_its_subnetwork_exactly_on_digits() -> None:
    """Two digits tasks; after the second, the first task's predictions are unchanged (its
    scores are frozen) and both tasks are learned well with task ids at inference."""
    digits = load_digits(seed=0)
    tasks = [(0, 1), (2, 3)]

    def task(split: str, classes: tuple[int, int]) -> LabeledData:
        labels = digits[split].labels.numpy()
        return digits[split].subset(np.flatnonzero(np.isin(labels, classes)))

    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(256,))
    to_subnetwork(model, select_layers(model), seed=0)
    settings = TrainSettings(epochs=6, batch_size=32, progress="none", device="cpu", seed=0)
    masker = SoftMasker(model, mode="update")
    for number, classes in enumerate(tasks):
        if number:
            add_task(model)
        hooks = [masker.hook()] if number else []
        optimizer = lambda p: torch.optim.Adam(p, lr=0.01)  # noqa: E731
        fit(
            model,
            task("train", classes),
            optimizer=optimizer,
            settings=settings,
            hooks=hooks,
            resume=False,
        )
        masker.learn(task("train", classes))
        if number == 0:
            with torch.no_grad():
                first_logits = model(task("test", tasks[0]).inputs)
    model.eval()
    with torch.no_grad(), use_task(model, 0):
        torch.testing.assert_close(model(task("test", tasks[0]).inputs), first_logits)
    for number, classes in enumerate(tasks):
        test = task("test", classes)
        with torch.no_grad(), use_task(model, number):
            logits = model(test.inputs)[:, list(classes)]
        predicted = torch.tensor(classes)[logits.argmax(1)]
        assert float((predicted == test.labels).double().mean()) > 0.9
