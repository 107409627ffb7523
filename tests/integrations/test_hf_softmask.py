"""Tests of flipless.integrations.hf_softmask.SoftMaskCallback in real (short) runs of
``transformers.Trainer`` on CPU: a tiny BERT (hidden 16, 2 layers) on random token ids, 6
optimizer steps of 2 accumulated micro-batches each."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers.Trainer needs it

from flipless.continual import SoftMask  # noqa: E402
from flipless.errors import InputError  # noqa: E402
from flipless.integrations.hf_softmask import SoftMaskCallback  # noqa: E402

VOCAB, LENGTH, CLASSES = 40, 8, 3
PROTECTED = "bert.encoder.layer.0.attention.self.query"
STEPS, ACCUMULATION = 6, 2


pytestmark = pytest.mark.usefixtures("one_thread")


class TokenData(Dataset):
    """Random token ids and labels, as the dict samples the Trainer's default collator takes."""

    def __init__(self, count: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(VOCAB, (count, LENGTH), generator=generator)
        self.labels = torch.randint(CLASSES, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[index], "labels": self.labels[index]}


class CountMicroBatches(transformers.TrainerCallback):
    """Counts the Trainer's micro-batches (``on_step_end`` is per optimizer step)."""

    def __init__(self) -> None:
        self.micro_batches = 0

    def on_substep_end(self, args, state, control, **kwargs) -> None:
        self.micro_batches += 1

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.micro_batches += 1


def train(model, tmp_path: Path, mask: SoftMask, weight_decay: float):
    """Train ``model`` (a tiny BERT) with ``mask``; return (weights before, the model after,
    trainer, micro-batch count)."""
    before = copy.deepcopy(model.state_dict())
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=ACCUMULATION,
        max_steps=STEPS,
        learning_rate=1e-2,
        weight_decay=weight_decay,
        seed=0,
    )
    counter = CountMicroBatches()
    trainer = transformers.Trainer(
        model=model,
        args=arguments,
        train_dataset=TokenData(),
        callbacks=[SoftMaskCallback(mask), counter],
    )
    trainer.train()
    return before, trainer.model, trainer, counter.micro_batches


def protected_mask(mode: str) -> SoftMask:
    """Unit importance 1 on every output unit of layer 0's query projection."""
    return SoftMask({PROTECTED: torch.ones(16)}, mode=mode)


def moved(before: dict, model, name: str) -> bool:
    return not torch.equal(model.state_dict()[name], before[name])


def test_gradient_mode_without_weight_decay_keeps_the_layer_and_masks_once_per_step(
    tiny_bert, tmp_path
) -> None:
    mask = protected_mask("gradient")
    before, model, trainer, micro_batches = train(
        tiny_bert(VOCAB, LENGTH, CLASSES), tmp_path, mask, weight_decay=0.0
    )
    assert trainer.state.global_step == STEPS
    assert micro_batches == STEPS * ACCUMULATION  # the accumulation really ran
    assert mask.steps == trainer.state.global_step  # masked per optimizer step, not per micro-batch
    for kind in ("weight", "bias"):
        assert not moved(before, model, f"{PROTECTED}.{kind}")
        assert moved(before, model, f"bert.encoder.layer.0.attention.self.key.{kind}")
        assert moved(before, model, f"bert.encoder.layer.1.attention.self.query.{kind}")
    assert moved(before, model, "classifier.weight")


def test_update_mode_keeps_the_layer_under_weight_decay_gradient_mode_does_not(
    tiny_bert, tmp_path
) -> None:
    update = protected_mask("update")
    before, model, trainer, _ = train(
        tiny_bert(VOCAB, LENGTH, CLASSES), tmp_path / "update", update, weight_decay=0.1
    )
    assert update.steps == trainer.state.global_step == STEPS
    assert not moved(before, model, f"{PROTECTED}.weight")
    assert not moved(before, model, f"{PROTECTED}.bias")
    assert moved(before, model, "bert.encoder.layer.0.attention.self.key.weight")
    # on_train_end removed the post-step hook from the optimizer
    optimizer = trainer.optimizer.optimizer  # accelerate's wrapper → torch.optim.AdamW
    assert isinstance(optimizer, torch.optim.AdamW)
    assert len(optimizer._optimizer_step_post_hooks) == 0

    gradient = protected_mask("gradient")
    before, model, _, _ = train(
        tiny_bert(VOCAB, LENGTH, CLASSES), tmp_path / "gradient", gradient, weight_decay=0.1
    )
    # zero gradient, but AdamW's decoupled decay θ ← θ − lr·λ·θ still shrinks the weight
    # (the Trainer exempts biases from decay, so the bias stays)
    assert moved(before, model, f"{PROTECTED}.weight")
    decayed = model.state_dict()[f"{PROTECTED}.weight"].abs()
    assert bool((decayed < before[f"{PROTECTED}.weight"].abs()).all())
    assert not moved(before, model, f"{PROTECTED}.bias")


def test_rejects_a_non_softmask() -> None:
    with pytest.raises(InputError, match=r"soft_mask is a dict; expected a SoftMask"):
        SoftMaskCallback({PROTECTED: torch.ones(16)})  # type: ignore[arg-type]
