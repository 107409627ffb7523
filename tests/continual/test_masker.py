"""Tests of flipless.continual.masker.SoftMasker: importance over a task sequence, the hook it
hands to a training loop (one's own loop here, with and without a gradient scaler), its file
round trip and its report. Exact checks in float64."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from flipless.continual import (
    SoftMask,
    SoftMasker,
    accumulate,
    compute_importance,
    save_importance,
)
from flipless.errors import FileFormatError, InputError, MismatchError
from flipless.train import MLP, LabeledData


def _data(seed: int = 0, count: int = 24, features: int = 4, classes: int = 3) -> LabeledData:
    generator = torch.Generator().manual_seed(seed)
    return LabeledData(
        inputs=torch.randn(count, features, generator=generator, dtype=torch.float64),
        labels=torch.randint(classes, (count,), generator=generator),
        ids=torch.arange(count),
        class_names=tuple(str(c) for c in range(classes)),
    )


def _model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(4, 3, hidden=(5,)).double()


def _known_importance() -> dict[str, torch.Tensor]:
    """Unit importance: body.0 (5 units) 1 on units 0 and 1, head (3 units) 1 on unit 2."""
    return {
        "body.0": torch.tensor([1.0, 1.0, 0.2, 0.0, 0.5], dtype=torch.float64),
        "head": torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64),
    }


def _masker_with(importance, tmp_path, mode="gradient", model=None, **kwargs) -> SoftMasker:
    """A SoftMasker holding ``importance`` (unit granularity), read back from a file."""
    masker = SoftMasker(model if model is not None else _model(), mode=mode, **kwargs)
    path = tmp_path / "known.safetensors"
    save_importance(importance, path, granularity="unit")
    masker.load(path)
    return masker


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("granularity", ["unit", "parameter"])
def test_learn_accumulates_the_elementwise_maximum_over_tasks(granularity: str) -> None:
    model = _model()
    masker = SoftMasker(model, granularity=granularity)
    assert masker.layer_names == ["body.0", "head"] and masker.tasks_learned == 0
    assert masker.importance is None
    first_data, second_data = _data(seed=0), _data(seed=1)

    first = masker.learn(first_data, batch_size=8)
    expected_first = compute_importance(model, first_data, batch_size=8, granularity=granularity)
    assert masker.tasks_learned == 1
    for name in expected_first:
        assert torch.equal(first[name], expected_first[name])
        assert torch.equal(masker.importance[name], expected_first[name])

    with torch.no_grad():  # stands for training on the second task
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    second = masker.learn(second_data, batch_size=8)
    expected_second = compute_importance(model, second_data, batch_size=8, granularity=granularity)
    assert masker.tasks_learned == 2
    by_hand = accumulate(expected_first, expected_second)
    for name in ("body.0", "head"):
        assert torch.equal(second[name], expected_second[name])
        merged = masker.importance[name]
        assert torch.equal(merged, by_hand[name])
        assert torch.equal(merged, torch.maximum(expected_first[name], expected_second[name]))
        # the first task's own result is not overwritten by the merge
        assert torch.equal(first[name], expected_first[name])
    # the maximum takes entries from both tasks (else the test could not tell max from either)
    stacked = {name: (expected_first[name], expected_second[name]) for name in by_hand}
    assert any(bool((a > b).any()) for a, b in stacked.values())
    assert any(bool((b > a).any()) for a, b in stacked.values())


def test_learn_passes_layers_loss_and_seed_through() -> None:
    torch.manual_seed(0)
    model = MLP(4, 3, hidden=(5,), dropout=0.5).double()
    data = _data()
    masker = SoftMasker(model, layers="head")
    assert masker.layer_names == ["head"]
    learned = masker.learn(data, loss="self-kl", seed=7)
    expected = compute_importance(model, data, "head", loss="self-kl", seed=7)
    assert set(learned) == {"head"}
    assert torch.equal(learned["head"], expected["head"])


def test_rejects_bad_arguments_and_use_before_learning(tmp_path) -> None:
    with pytest.raises(InputError, match="granularity='row'; expected one of"):
        SoftMasker(_model(), granularity="row")
    with pytest.raises(InputError, match="mode='soft'; expected one of"):
        SoftMasker(_model(), mode="soft")
    with pytest.raises(InputError, match="no layer of MLP matches preset 'hf-attention'"):
        SoftMasker(_model(), layers="hf-attention")
    masker = SoftMasker(_model())
    for use in (
        masker.hook,
        masker.protected_share,
        masker.report,
        lambda: masker.save(tmp_path / "x.safetensors"),
    ):
        with pytest.raises(InputError, match=r"no importance yet: call learn\(task_data\)"):
            use()


# --------------------------------------------------------------------------- the hook


@pytest.mark.parametrize("mode", ["gradient", "update"])
def test_hook_carries_the_accumulated_importance_and_the_mode(mode: str) -> None:
    masker = SoftMasker(_model(), mode=mode)
    masker.learn(_data(seed=0))
    masker.learn(_data(seed=1))
    hook = masker.hook()
    assert isinstance(hook, SoftMask)
    assert hook.mode == mode and hook.steps == 0
    assert set(hook.importance) == set(masker.importance)
    for name, values in masker.importance.items():
        assert torch.equal(hook.importance[name], values)
    assert masker.hook() is not hook  # a fresh hook (step count 0) for every new task
    assert repr(masker) == (
        f"SoftMasker(layers=2, granularity='unit', mode={mode!r}, tasks_learned=2)"
    )


@pytest.mark.parametrize("mode", ["gradient", "update"])
def test_own_loop_with_sgd_keeps_importance_one_units_fixed(tmp_path, mode: str) -> None:
    model = _model()
    before = copy.deepcopy(model)
    masker = _masker_with(_known_importance(), tmp_path, mode=mode, model=model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    hook = masker.hook()
    hook.bind(model)
    hook.attach(optimizer)
    data = _data()
    for start in range(0, len(data), 8):
        optimizer.zero_grad()
        loss = F.cross_entropy(
            model(data.inputs[start : start + 8]), data.labels[start : start + 8]
        )
        loss.backward()
        hook.before_optimizer_step()
        optimizer.step()
    assert hook.steps == 3
    body, head = model.body[0], model.head
    assert torch.equal(body.weight[:2], before.body[0].weight[:2])
    assert torch.equal(body.bias[:2], before.body[0].bias[:2])
    assert torch.equal(head.weight[2], before.head.weight[2])
    assert torch.equal(head.bias[2], before.head.bias[2])
    # the other units train (importance 0, 0.2 and 0.5 rows of body.0; head units 0 and 1)
    assert not torch.allclose(body.weight[2:], before.body[0].weight[2:])
    assert not torch.allclose(head.weight[:2], before.head.weight[:2])
    hook.remove()


def test_hook_must_be_bound_before_masking(tmp_path) -> None:
    hook = _masker_with(_known_importance(), tmp_path).hook()
    with pytest.raises(InputError, match=r"not bound to a model; call bind\(model\)"):
        hook.before_optimizer_step()
    with pytest.raises(MismatchError, match=r"names layers \['body.0'"):
        hook.bind(torch.nn.Sequential(torch.nn.Linear(4, 3)))


def test_gradient_scaler_skipped_step_changes_and_counts_nothing_in_update_mode(tmp_path) -> None:
    """torch.amp.GradScaler("cpu") (torch 2.13): a step whose gradients hold inf is skipped
    (optimizer.step is not called), so the update-mode hook neither blends nor counts; the next
    step blends ``θ = θ_before + (1 − m)(θ_after_plain − θ_before)``, where θ_after_plain is
    the same AdamW step on an unmasked copy."""
    importance = {"head": torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)}
    model = _model()
    masker = _masker_with(importance, tmp_path, mode="update", model=model, layers="head")

    def adamw(parameters):
        return torch.optim.AdamW(parameters, lr=0.05, weight_decay=0.5)

    optimizer = adamw(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0)
    assert scaler.is_enabled()
    hook = masker.hook()
    hook.bind(model)
    hook.attach(optimizer)
    data = _data()

    def backward(network) -> None:
        loss = F.cross_entropy(network(data.inputs), data.labels)
        scaler.scale(loss).backward()

    # step 1: an inf gradient; the scaler skips the step
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.zero_grad()
    backward(model)
    model.body[0].weight.grad[0, 0] = float("inf")
    scaler.unscale_(optimizer)
    hook.before_optimizer_step()
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 8.0  # the scaler saw the inf and halved its scale
    assert len(optimizer.state) == 0  # AdamW never stepped
    assert hook.steps == 0
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, start[name])

    # step 2: a normal step, against the same step taken by an unmasked copy
    optimizer.zero_grad()
    plain = copy.deepcopy(model)  # no .grad (zero_grad set them to None)
    plain_optimizer = adamw(plain.parameters())
    backward(model)
    scaler.unscale_(optimizer)
    hook.before_optimizer_step()
    scaler.step(optimizer)
    scaler.update()
    # float64 and a power-of-two scale: the unscaled gradient is exactly the plain one
    plain_loss = F.cross_entropy(plain(data.inputs), data.labels)
    plain_loss.backward()
    plain_optimizer.step()
    assert hook.steps == 1
    keep = 1 - importance["head"]
    for name, shape in (("weight", (-1, 1)), ("bias", (-1,))):
        before = start[f"head.{name}"]
        after_plain = getattr(plain.head, name).detach()
        expected = before + keep.reshape(shape) * (after_plain - before)
        masked = getattr(model.head, name).detach()
        torch.testing.assert_close(masked, expected, rtol=0, atol=1e-15)
        assert torch.equal(masked[2], before[2])  # importance 1: exactly kept
        assert not torch.equal(masked[0], before[0])
    assert torch.equal(model.body[0].weight, plain.body[0].weight)  # not masked
    assert torch.equal(model.body[0].bias, plain.body[0].bias)


# --------------------------------------------------------------------------- files and report


def test_save_load_round_trip_is_exact(tmp_path) -> None:
    masker = SoftMasker(_model(), granularity="parameter", mode="update")
    masker.learn(_data(seed=0))
    masker.learn(_data(seed=1))
    path = tmp_path / "importance.safetensors"
    masker.save(path)
    fresh = SoftMasker(_model(seed=5), granularity="parameter", mode="update")
    fresh.load(path, tasks_learned=2)
    assert fresh.tasks_learned == 2
    assert set(fresh.importance) == {"body.0", "head"}
    for name, values in masker.importance.items():
        assert fresh.importance[name].dtype == torch.float64
        assert torch.equal(fresh.importance[name], values)
    assert torch.equal(fresh.hook().importance["head"], masker.importance["head"])


def test_load_rejects_other_granularity_other_layers_and_bad_files(tmp_path) -> None:
    masker = SoftMasker(_model(), granularity="unit")
    masker.learn(_data())
    path = tmp_path / "importance.safetensors"
    masker.save(path)
    with pytest.raises(
        MismatchError, match="holds 'unit' importance; this masker uses 'parameter'"
    ):
        SoftMasker(_model(), granularity="parameter").load(path)
    with pytest.raises(MismatchError, match=r"covers layers \['body.0', 'head'\]"):
        SoftMasker(_model(), layers="head").load(path)
    with pytest.raises(MismatchError, match=r"covers layers"):
        SoftMasker(MLP(4, 3, hidden=(5, 5)).double()).load(path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    with pytest.raises(FileFormatError, match="cannot read it"):
        masker.load(broken)
    assert masker.tasks_learned == 1  # a failed load leaves the masker as it was


def test_report_prints_a_table_and_returns_the_shares(tmp_path) -> None:
    masker = _masker_with(_known_importance(), tmp_path)
    console = Console(file=io.StringIO(), width=120)
    shares = masker.report(console=console)
    # > 0.5: body.0 units 0, 1 (2 of 5); head unit 2 (1 of 3)
    assert shares == {"body.0": 2 / 5, "head": 1 / 3}
    assert masker.protected_share() == shares
    text = console.file.getvalue()
    assert "Protected share" in text and "importance > 0.5" in text
    assert "body.0" in text and "40.0%" in text
    assert "head" in text and "33.3%" in text
    recorded = Console(record=True, width=120, file=io.StringIO())
    # ≥ 0.2 is not > 0.2: body.0 keeps units 0, 1, 4 (3 of 5); head units 1, 2 (2 of 3)
    assert masker.report(threshold=0.2, console=recorded) == {"body.0": 3 / 5, "head": 2 / 3}
    exported = recorded.export_text()
    assert "60.0%" in exported and "66.7%" in exported and "importance > 0.2" in exported
    with pytest.raises(InputError, match=r"threshold=1\.5"):
        masker.report(threshold=1.5, console=recorded)
