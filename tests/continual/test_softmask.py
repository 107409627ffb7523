"""Tests of flipless.continual.softmask: exact checks in float64 through the real training loop."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from flipless.continual import (
    SoftMask,
    compute_importance,
    protected_share,
    protected_share_table,
)
from flipless.data.loaders import load_digits
from flipless.errors import InputError, MismatchError
from flipless.train import MLP, Hook, LabeledData, Trainer, TrainSettings, fit


def _data(count: int = 16, features: int = 4, classes: int = 3) -> LabeledData:
    generator = torch.Generator().manual_seed(0)
    return LabeledData(
        inputs=torch.randn(count, features, generator=generator, dtype=torch.float64),
        labels=torch.arange(count) % classes,
        ids=torch.arange(count),
        class_names=tuple(str(c) for c in range(classes)),
    )


def _model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(4, 3, hidden=(5,)).double()


def _sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.1)


def _adamw(parameters):
    return torch.optim.AdamW(parameters, lr=0.05, weight_decay=0.5)


def _train(model, hooks, optimizer=_sgd, epochs=2, batch_size=8, accumulation_steps=1, data=None):
    settings = TrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        accumulation_steps=accumulation_steps,
        progress="none",
        device="cpu",
    )
    return fit(
        model, data or _data(), optimizer=optimizer, settings=settings, hooks=hooks, resume=False
    )


def _half_protected() -> dict[str, torch.Tensor]:
    """Parameter importance of body.0 (5 × 4): exactly 1 on the first two rows, 0 elsewhere;
    unit importance of head (3): 1 for class 0."""
    body = torch.zeros(5, 4, dtype=torch.float64)
    body[:2] = 1.0
    return {"body.0": body, "head": torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)}


def test_rejects_bad_arguments() -> None:
    importance = _half_protected()
    with pytest.raises(InputError, match="mode='soft'"):
        SoftMask(importance, mode="soft")
    with pytest.raises(InputError, match="empty"):
        SoftMask({})
    with pytest.raises(InputError, match=r"values in \[-0.5, 1\]; expected \[0, 1\]"):
        SoftMask({"head": torch.tensor([-0.5, 1.0, 0.0])})
    with pytest.raises(InputError, match="not a floating tensor"):
        SoftMask({"head": torch.tensor([1, 0, 0])})
    with pytest.raises(MismatchError, match=r"names layers \['body.7'\]"):
        _train(_model(), [SoftMask({"body.7": torch.zeros(5)})], epochs=1)
    with pytest.raises(MismatchError, match=r"shape \(4,\); expected the weight's \(5, 4\)"):
        _train(_model(), [SoftMask({"body.0": torch.zeros(4, dtype=torch.float64)})], epochs=1)


def test_keep_factors_are_one_minus_importance_in_unit_range() -> None:
    mask = SoftMask({"body.0": torch.rand(5, 4, dtype=torch.float64), "head": torch.rand(3)})
    model = _model()
    trainer = Trainer(model, _data())
    mask.on_fit_start(trainer)  # gradient mode binds to the model only
    factors = mask.keep_factors()
    # body.0 weight, head weight (per row), head bias (per row)
    assert [tuple(p.shape) for p, _ in factors] == [(5, 4), (3, 5), (3,)]
    assert [tuple(k.shape) for _, k in factors] == [(5, 4), (3, 1), (3,)]
    for parameter, keep in factors:
        assert keep.dtype == parameter.dtype
        assert bool(((keep >= 0) & (keep <= 1)).all())
    assert torch.equal(factors[0][1], 1 - mask.importance["body.0"])


def test_sgd_keeps_exactly_important_parameters_fixed() -> None:
    model = _model()
    before = copy.deepcopy(model)
    result = _train(model, [SoftMask(_half_protected())])
    trained = result.model
    assert torch.equal(trained.body[0].weight[:2], before.body[0].weight[:2])
    assert torch.equal(trained.head.weight[0], before.head.weight[0])
    assert torch.equal(trained.head.bias[0], before.head.bias[0])
    assert not torch.allclose(trained.body[0].weight[2:], before.body[0].weight[2:])
    assert not torch.allclose(trained.head.weight[1:], before.head.weight[1:])
    assert not torch.allclose(trained.body[0].bias, before.body[0].bias)  # unmasked


def _gradient(model: nn.Module, data: LabeledData) -> dict[str, torch.Tensor]:
    copy_ = copy.deepcopy(model)
    loss = F.cross_entropy(copy_(data.inputs), data.labels)
    names = [name for name, _ in copy_.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(copy_.parameters())), strict=True))


def test_one_sgd_step_is_scaled_by_one_minus_importance() -> None:
    data, model = _data(), _model()
    importance = {
        "body.0": torch.rand(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64),
        "head": torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64),
    }
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    gradient = _gradient(model, data)
    trained = _train(model, [SoftMask(importance)], epochs=1, batch_size=len(data)).model
    keep_head = 1 - importance["head"]
    expected = {
        "body.0.weight": before["body.0.weight"]
        - 0.1 * (1 - importance["body.0"]) * gradient["body.0.weight"],
        "body.0.bias": before["body.0.bias"] - 0.1 * gradient["body.0.bias"],
        "head.weight": before["head.weight"] - 0.1 * keep_head[:, None] * gradient["head.weight"],
        "head.bias": before["head.bias"] - 0.1 * keep_head * gradient["head.bias"],
    }
    for name, parameter in trained.named_parameters():
        torch.testing.assert_close(parameter.detach(), expected[name], rtol=0, atol=1e-14)


class _CountSteps(Hook):
    def __init__(self) -> None:
        self.calls = 0

    def before_optimizer_step(self, trainer) -> None:
        self.calls += 1


def test_mask_applied_once_per_step_under_accumulation() -> None:
    importance = {"body.0": torch.full((5,), 0.5, dtype=torch.float64)}
    masks, counters, weights = {}, {}, {}
    for steps in (1, 4):
        masks[steps], counters[steps] = SoftMask(importance), _CountSteps()
        trained = _train(
            _model(), [masks[steps], counters[steps]], accumulation_steps=steps, batch_size=8
        ).model
        weights[steps] = {name: p.detach() for name, p in trained.named_parameters()}
    # 16 samples, 8 per step, 2 epochs: 4 optimizer steps whatever the accumulation
    assert masks[4].steps == counters[4].calls == masks[1].steps == 4
    for name in weights[1]:
        torch.testing.assert_close(weights[4][name], weights[1][name], rtol=0, atol=1e-13)


def test_masking_after_every_backward_would_differ() -> None:
    """The pitfall the loop's hook placement avoids: masking after each of 4 micro-batches
    multiplies the first micro-batch's gradient by 0.5⁴; the weights then differ."""

    class MaskEveryBackward(SoftMask):
        def after_backward(self, trainer) -> None:
            SoftMask.before_optimizer_step(self, trainer)

        def before_optimizer_step(self, trainer) -> None:
            pass

    importance = {"body.0": torch.full((5,), 0.5, dtype=torch.float64)}
    once = _train(_model(), [SoftMask(importance)], accumulation_steps=4).model
    every = _train(_model(), [MaskEveryBackward(importance)], accumulation_steps=4).model
    assert not torch.allclose(once.body[0].weight, every.body[0].weight, rtol=0, atol=1e-6)


def test_update_mode_keeps_protected_parameters_under_adamw_gradient_mode_does_not() -> None:
    importance = _half_protected()
    before = _model()
    gradient_mode = _train(_model(), [SoftMask(importance, "gradient")], optimizer=_adamw).model
    update_mode = _train(_model(), [SoftMask(importance, "update")], optimizer=_adamw).model
    # gradient mode: the gradient of protected rows is 0, but decoupled weight decay moves them
    assert not torch.allclose(gradient_mode.body[0].weight[:2], before.body[0].weight[:2])
    assert not torch.allclose(gradient_mode.head.bias[:1], before.head.bias[:1])
    # update mode: exactly unchanged; the rest trains
    assert torch.equal(update_mode.body[0].weight[:2], before.body[0].weight[:2])
    assert torch.equal(update_mode.head.weight[0], before.head.weight[0])
    assert torch.equal(update_mode.head.bias[0], before.head.bias[0])
    assert not torch.allclose(update_mode.body[0].weight[2:], before.body[0].weight[2:])


def test_update_mode_blends_one_adamw_step() -> None:
    data = _data()
    importance = {"head": torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)}
    reference = _train(_model(), [], optimizer=_adamw, epochs=1, batch_size=len(data)).model
    masked = _train(
        _model(), [SoftMask(importance, "update")], optimizer=_adamw, epochs=1, batch_size=16
    ).model
    start = _model()
    keep = 1 - importance["head"]
    for name, shape in (("weight", (-1, 1)), ("bias", (-1,))):
        old = getattr(start.head, name).detach()
        step = getattr(reference.head, name).detach() - old
        expected = old + keep.reshape(shape) * step
        torch.testing.assert_close(
            getattr(masked.head, name).detach(), expected, rtol=0, atol=1e-14
        )
    torch.testing.assert_close(masked.body[0].weight, reference.body[0].weight, rtol=0, atol=0)


def test_update_hook_is_idempotent_and_removable() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, _data())
    trainer.optimizer = optimizer  # as fit() sets it before on_fit_start
    mask = SoftMask({"head": torch.ones(3, dtype=torch.float64)}, mode="update")
    mask.on_fit_start(trainer)
    mask.on_fit_start(trainer)
    assert len(optimizer._optimizer_step_post_hooks) == 1
    head = model.head.weight.detach().clone()
    model.head.weight.grad = torch.ones_like(head)
    mask.before_optimizer_step(trainer)
    optimizer.step()
    assert torch.equal(model.head.weight, head) and mask.steps == 1
    optimizer.step()  # a step without before_optimizer_step is left alone
    assert torch.equal(model.head.weight, head - 1)
    mask.remove()
    mask.remove()
    assert len(optimizer._optimizer_step_post_hooks) == 0


def test_state_dict_round_trip() -> None:
    mask = SoftMask({"head": torch.zeros(3)})
    mask.steps = 7
    state = mask.state_dict()
    assert state == {"steps": 7}
    fresh = SoftMask({"head": torch.zeros(3)})
    fresh.load_state_dict(state)
    assert fresh.steps == 7


def test_protected_share_and_table() -> None:
    importance = {"a": torch.tensor([0.1, 0.6, 0.5, 0.9]), "b": torch.tensor([[0.7, 0.2]])}
    assert protected_share(importance) == {"a": 0.5, "b": 0.5}
    assert protected_share(importance, threshold=0.65) == {"a": 0.25, "b": 0.5}
    assert protected_share(importance, threshold=0.0) == {"a": 1.0, "b": 1.0}
    console = Console(file=io.StringIO(), width=120)
    console.print(protected_share_table(importance, 0.65))
    text = console.file.getvalue()
    assert "25.0%" in text and "50.0%" in text and "importance > 0.65" in text
    with pytest.raises(InputError, match="threshold=1"):
        protected_share(importance, threshold=1)


@pytest.mark.slow
def test_soft_masking_protects_the_old_task_on_digits() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digits = load_digits()
        train, test = digits["train"], digits["test"]

        def task(data: LabeledData, low: bool) -> LabeledData:
            labels = data.labels.numpy()
            return data.subset(np.flatnonzero((labels < 5) == low))

        settings = TrainSettings(epochs=5, batch_size=32, progress="none", device="cpu", seed=0)

        def adamw(parameters):
            return torch.optim.AdamW(parameters, lr=3e-3)

        def accuracy(model: nn.Module, data: LabeledData) -> float:
            model.eval()
            with torch.no_grad():
                return float((model(data.inputs).argmax(1) == data.labels).double().mean())

        torch.manual_seed(0)
        old_task, new_task = task(test, True), task(test, False)
        model_a = fit(
            MLP(64, 10, hidden=(64,)),
            task(train, True),
            old_task,
            optimizer=adamw,
            settings=settings,
            resume=False,
        ).model
        assert accuracy(model_a, old_task) > 0.9
        importance = compute_importance(model_a, task(train, True), granularity="unit")
        after = {}
        for label, hooks in (("plain", []), ("masked", [SoftMask(importance, "update")])):
            model_b = fit(
                copy.deepcopy(model_a),
                task(train, False),
                new_task,
                optimizer=adamw,
                settings=settings,
                hooks=hooks,
                resume=False,
            ).model
            after[label] = (accuracy(model_b, old_task), accuracy(model_b, new_task))
        # measured: plain (0.0, 0.90), masked (0.34, 0.80): a shared head forgets task A
        # completely under plain fine-tuning; the mask keeps part of it and still learns B
        assert after["plain"][0] < 0.05
        assert after["masked"][0] > after["plain"][0] + 0.2
        assert after["masked"][1] > 0.7
    finally:
        torch.set_num_threads(threads)
