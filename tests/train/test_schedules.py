"""Learning-rate schedules: lr sequences by hand, bad settings, the loop's stepping and resume."""

from __future__ import annotations

import math

import pytest
import torch

from flipless.errors import InputError
from flipless.train import MLP, Hook, LabeledData, TrainSettings, fit
from flipless.train.check import check_run_config, check_train_schedule
from flipless.train.config import parse_config
from flipless.train.schedules import build_schedule


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=lr)


def _lrs(name: str, total: int, per_epoch: int, ticks: int, **settings) -> list[float]:
    """The lr of each of ``ticks`` ticks, stepping the schedule after each."""
    optimizer = _optimizer()
    schedule = build_schedule(name, optimizer, total, per_epoch, **settings)
    lrs = []
    for _ in range(ticks):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


def test_warmup_cosine_by_hand():
    # W = 2, T = 6, r = 0.1: (t+1)/3 for t < 2, then 0.1 + 0.45 (1 + cos(π (t−2)/4))
    lrs = _lrs("warmup-cosine", 6, 2, 7, warmup_steps=2, min_lr_ratio=0.1)
    half_root = math.sqrt(0.5)
    expected = [1 / 3, 2 / 3, 1.0, 0.1 + 0.45 * (1 + half_root), 0.55]
    expected += [0.1 + 0.45 * (1 - half_root), 0.1]
    assert lrs == pytest.approx(expected, rel=1e-12)
    # warmup_epochs counts epochs of 2 steps: the same sequence
    assert _lrs("warmup-cosine", 6, 2, 6, warmup_epochs=1, min_lr_ratio=0.1) == pytest.approx(
        expected[:6], rel=1e-12
    )
    # per epoch: T = 3 epoch ticks, no warm-up: 1, ½(1 + cos(π/3)) = 0.75, ½(1 + cos(2π/3)) = 0.25
    per_epoch = _lrs("warmup-cosine", 6, 2, 3, interval="epoch")
    assert per_epoch == pytest.approx([1.0, 0.75, 0.25], rel=1e-12)


def test_step_and_constant_by_hand():
    lrs = _lrs("step", 8, 2, 8, step_epochs=2, gamma=0.5)  # × 0.5 every 4 steps
    assert lrs == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5], rel=1e-12)
    lrs = _lrs("step", 8, 2, 4, step_epochs=1, gamma=0.5, interval="epoch")
    assert lrs == pytest.approx([1, 0.5, 0.25, 0.125], rel=1e-12)
    assert _lrs("constant", 4, 2, 4) == [1.0] * 4


def test_one_cycle_by_hand():
    # T = 10, pct 0.3: rises over steps 0..2 from 1/10 to 1, falls over 2..9 to 1/10/100
    lrs = _lrs("one-cycle", 10, 5, 10, div_factor=10, final_div_factor=100)
    assert lrs[:3] == pytest.approx([0.1, 0.1 + 0.45, 1.0], rel=1e-12)
    assert lrs[9] == pytest.approx(0.001, rel=1e-12)
    # the fall is ½-cosine: step 2 + 7/2 would be the midpoint; steps 5 and 6 straddle it
    falling = [0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * (t - 2) / 7)) for t in range(3, 9)]
    assert lrs[3:9] == pytest.approx(falling, rel=1e-12)
    assert lrs[5] + lrs[6] == pytest.approx(1.001, rel=1e-12)  # symmetric about the midpoint


@pytest.mark.parametrize(
    ("name", "settings", "key"),
    [
        ("cosine", {}, "schedule"),
        ("constant", {"warmup_steps": 1}, "warmup_steps"),
        ("warmup-cosine", {"interval": "batch"}, "interval"),
        ("warmup-cosine", {"warmup_steps": 1, "warmup_epochs": 1}, "warmup_epochs and"),
        ("warmup-cosine", {"warmup_steps": -1}, "warmup_steps"),
        ("warmup-cosine", {"warmup_steps": 1, "interval": "epoch"}, "warmup_steps"),
        ("warmup-cosine", {"min_lr_ratio": 1.5}, "min_lr_ratio"),
        ("step", {}, "step_epochs"),
        ("step", {"step_epochs": 0}, "step_epochs"),
        ("step", {"step_epochs": 1, "gamma": 0}, "gamma"),
        ("one-cycle", {"pct_start": 1.0}, "pct_start"),
        ("one-cycle", {"max_lr": -1}, "max_lr"),
        ("one-cycle", {"anneal_strategy": "cosine"}, "anneal_strategy"),
    ],
)
def test_bad_settings_name_the_key(name, settings, key):
    with pytest.raises(InputError, match=key):
        TrainSettings(schedule=name, schedule_settings=settings)


def test_settings_that_do_not_fit_the_run():
    with pytest.raises(InputError, match="warm-up of 6 steps"):
        build_schedule("warmup-cosine", _optimizer(), 6, 2, warmup_steps=6)
    with pytest.raises(InputError, match="pct_start"):
        build_schedule("one-cycle", _optimizer(), 6, 2, interval="epoch")  # 0.3 × 3 epochs
    with pytest.raises(InputError, match="warmup_epochs"):
        check_train_schedule(
            TrainSettings(
                epochs=2, schedule="warmup-cosine", schedule_settings={"warmup_epochs": 2}
            )
        )


def test_the_run_check_refuses_a_warmup_longer_than_the_old_models_run(tmp_path):
    train = {"epochs": 3, "schedule": "warmup-cosine", "schedule_settings": {"warmup_epochs": 1}}
    document = {"output_dir": str(tmp_path / "run"), "data": {"name": "digits"}, "train": train}
    check_run_config(parse_config({**document, "old": {"train_epochs": 2}}))
    with pytest.raises(InputError, match=r"expected fewer than old\.train_epochs = 1"):
        check_run_config(parse_config({**document, "old": {"train_epochs": 1}}))


def test_config_takes_a_schedule_table():
    document = {"output_dir": "out", "old": {"train_epochs": 1}}
    train = {"schedule": "step", "schedule_settings": {"step_epochs": 3, "interval": "epoch"}}
    config = parse_config({**document, "train": train})
    assert config.train.schedule == "step"
    assert config.train.schedule_settings == {"step_epochs": 3, "interval": "epoch"}
    bad = {"schedule": "step", "schedule_settings": {"step_epochs": 3, "decay": 2}}
    with pytest.raises(InputError, match=r"train: schedule_settings\.decay: unknown key"):
        parse_config({**document, "train": bad})


class _LrRecorder(Hook):
    """Records the lr of every optimizer step; raises once at step ``stop`` (a killed run)."""

    def __init__(self, stop: int | None = None) -> None:
        self.lrs: list[float] = []
        self.stop = stop

    def before_optimizer_step(self, trainer):
        if trainer.step == self.stop:
            raise KeyboardInterrupt
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def _tiny_data() -> LabeledData:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(24, 4, generator=generator)
    return LabeledData(inputs, (inputs[:, 0] > 0).long(), torch.arange(24), ("no", "yes"))


def _run(where, hook, schedule, schedule_settings, accumulation_steps=1):
    torch.manual_seed(0)
    settings = TrainSettings(
        epochs=4,
        batch_size=8,
        accumulation_steps=accumulation_steps,
        checkpoint_every=1,
        progress="none",
        schedule=schedule,
        schedule_settings=schedule_settings,
    )
    sgd = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)  # noqa: E731
    return fit(
        MLP(4, 2, hidden=(8,)),
        _tiny_data(),
        optimizer=sgd,
        settings=settings,
        hooks=[hook],
        output_dir=where,
    )


@pytest.mark.parametrize(
    ("schedule", "schedule_settings", "stop"),
    [
        ("warmup-cosine", {"warmup_epochs": 1, "min_lr_ratio": 0.1}, 5),
        ("step", {"step_epochs": 1, "gamma": 0.5, "interval": "epoch"}, 7),
        ("one-cycle", {}, 6),
    ],
)
def test_the_loop_steps_and_resumes_the_schedule(tmp_path, schedule, schedule_settings, stop):
    straight = _LrRecorder()
    reference = _run(tmp_path / "straight", straight, schedule, schedule_settings)
    killed = _LrRecorder(stop=stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", killed, schedule, schedule_settings)
    resumed_hook = _LrRecorder()
    resumed = _run(tmp_path / "resumed", resumed_hook, schedule, schedule_settings)
    assert len(straight.lrs) == 12  # 4 epochs of 3 steps
    assert killed.lrs + resumed_hook.lrs == straight.lrs
    per_epoch = schedule_settings.get("interval") == "epoch"
    factors = _lrs(schedule, 12, 3, 4 if per_epoch else 12, **schedule_settings)  # at lr 1
    expected = [factor for factor in factors for _ in range(3)] if per_epoch else factors
    assert straight.lrs == pytest.approx([0.1 * factor for factor in expected], rel=1e-6)
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)


def test_accumulation_steps_the_schedule_per_optimizer_step(tmp_path):
    settings = {"warmup_steps": 2}
    plain, accumulated = _LrRecorder(), _LrRecorder()
    _run(tmp_path / "plain", plain, "warmup-cosine", settings)
    _run(tmp_path / "accumulated", accumulated, "warmup-cosine", settings, accumulation_steps=2)
    assert accumulated.lrs == plain.lrs
    assert len(plain.lrs) == 12


def test_a_scheduler_factory_and_a_named_schedule_are_refused_together():
    settings = TrainSettings(
        epochs=1,
        batch_size=8,
        progress="none",
        schedule="step",
        schedule_settings={"step_epochs": 1},
    )
    with pytest.raises(InputError, match="pass one of them"):
        fit(
            MLP(4, 2, hidden=(8,)),
            _tiny_data(),
            settings=settings,
            scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1),
        )
