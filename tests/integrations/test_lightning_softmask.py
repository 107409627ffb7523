"""Tests of flipless.integrations.lightning_softmask.SoftMaskCallback in real (short) Lightning
runs on CPU: an MLP on 32 random samples, batches of 4 with 2 accumulated per optimizer step
(4 optimizer steps an epoch)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("pytorch_lightning")

from flipless.continual import SoftMask  # noqa: E402
from flipless.errors import InputError  # noqa: E402
from flipless.integrations.lightning_softmask import SoftMaskCallback  # noqa: E402
from flipless.models import MLP  # noqa: E402

SAMPLES, BATCH, ACCUMULATION = 32, 4, 2
STEPS_PER_EPOCH = SAMPLES // BATCH // ACCUMULATION


class Classifier(pl.LightningModule):
    """An MLP (4 → 5 → 3) trained with cross-entropy by ``optimizer(parameters)``."""

    def __init__(self, optimizer=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = MLP(4, 3, hidden=(5,))
        self.make_optimizer = optimizer or (
            lambda parameters: torch.optim.AdamW(parameters, lr=0.05, weight_decay=0.1)
        )
        self.micro_batches = 0

    def training_step(self, batch, batch_idx):
        self.micro_batches += 1
        inputs, labels = batch
        return F.cross_entropy(self.model(inputs), labels)

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())


class TwoOptimizers(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        body = torch.optim.SGD(self.model.body.parameters(), lr=0.1)
        return body, torch.optim.SGD(self.model.head.parameters(), lr=0.1)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(SAMPLES, 4, generator=generator)
    labels = torch.randint(3, (SAMPLES,), generator=generator)
    return DataLoader(TensorDataset(inputs, labels), batch_size=BATCH)


def fit(module, callback, epochs=1, ckpt_path=None, root=None, accumulation=ACCUMULATION):
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        accumulate_grad_batches=accumulation,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, loader(), ckpt_path=ckpt_path)
    return trainer


def importance() -> dict[str, torch.Tensor]:
    """Unit importance: 1 on hidden units 0, 1 and on class 2; 0.5 on hidden unit 4."""
    return {
        "model.body.0": torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5]),
        "model.head": torch.tensor([0.0, 0.0, 1.0]),
    }


def assert_protected_kept(module: Classifier, before: Classifier) -> None:
    body, old_body = module.model.body[0], before.model.body[0]
    head, old_head = module.model.head, before.model.head
    assert torch.equal(body.weight[:2], old_body.weight[:2])
    assert torch.equal(body.bias[:2], old_body.bias[:2])
    assert torch.equal(head.weight[2], old_head.weight[2])
    assert torch.equal(head.bias[2], old_head.bias[2])
    assert not torch.allclose(body.weight[2:], old_body.weight[2:])
    assert not torch.allclose(head.weight[:2], old_head.weight[:2])


def test_update_mode_keeps_important_units_under_adamw_once_per_optimizer_step() -> None:
    module = Classifier()
    before = copy.deepcopy(module)
    mask = SoftMask(importance(), mode="update")
    trainer = fit(module, SoftMaskCallback(mask))
    assert module.micro_batches == STEPS_PER_EPOCH * ACCUMULATION
    assert trainer.global_step == STEPS_PER_EPOCH
    assert mask.steps == trainer.global_step
    assert_protected_kept(module, before)
    # on_train_end detached the post-step hook from the optimizer
    assert len(trainer.optimizers[0]._optimizer_step_post_hooks) == 0


def test_gradient_mode_without_weight_decay_keeps_important_units_under_sgd() -> None:
    module = Classifier(optimizer=lambda parameters: torch.optim.SGD(parameters, lr=0.2))
    before = copy.deepcopy(module)
    mask = SoftMask(importance(), mode="gradient")
    trainer = fit(module, SoftMaskCallback(mask))
    assert mask.steps == trainer.global_step == STEPS_PER_EPOCH
    assert_protected_kept(module, before)


def test_gradient_mode_under_adamw_weight_decay_moves_important_units() -> None:
    """Why update mode exists: the gradient is masked to 0, decoupled decay still moves it."""
    module = Classifier()
    before = copy.deepcopy(module)
    fit(module, SoftMaskCallback(SoftMask(importance(), mode="gradient")))
    assert not torch.equal(module.model.body[0].weight[:2], before.model.body[0].weight[:2])


def test_steps_are_kept_in_the_checkpoint_and_resumed(tmp_path) -> None:
    callback = SoftMaskCallback(SoftMask(importance(), mode="update"))
    trainer = fit(Classifier(), callback, root=tmp_path)
    path = tmp_path / "checkpoint.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert saved["callbacks"][callback.state_key] == {"steps": STEPS_PER_EPOCH}

    fresh = SoftMaskCallback(SoftMask(importance(), mode="update"))
    assert fresh.state_key == callback.state_key
    resumed = fit(Classifier(), fresh, epochs=2, ckpt_path=path, root=tmp_path)
    assert resumed.global_step == 2 * STEPS_PER_EPOCH
    assert fresh.soft_mask.steps == resumed.global_step  # restored 4, then 4 more

    plain = SoftMaskCallback(SoftMask(importance()))
    plain.load_state_dict(callback.state_dict())
    assert plain.soft_mask.steps == STEPS_PER_EPOCH


def test_rejects_two_optimizers_and_a_non_softmask() -> None:
    with pytest.raises(InputError, match="has 2 optimizers; SoftMaskCallback supports exactly one"):
        # manual optimization (Lightning's only way to two optimizers) has no accumulation
        fit(TwoOptimizers(), SoftMaskCallback(SoftMask(importance())), accumulation=1)
    with pytest.raises(InputError, match="soft_mask is a str; expected a SoftMask"):
        SoftMaskCallback("mask")  # type: ignore[arg-type]
