"""Soft-masking inside the Hugging Face ``Trainer``: a ``TrainerCallback`` around a
:class:`~flipless.continual.softmask.SoftMask` hook (Ke et al., Findings of EMNLP 2023).

The Trainer calls ``on_pre_optimizer_step`` once per optimizer step, after the gradients of
all accumulation micro-batches are summed and clipped and right before ``optimizer.step()``:
there the callback masks the gradients by ``1 − importance`` ("gradient" mode) or remembers
the masked parameters ("update" mode, blended back by a post-step hook on the optimizer, so a
step the gradient scaler skips changes and counts nothing)::

    masker = SoftMasker(model, layers="hf-encoder", mode="update")
    ...                                          # train task 1, then masker.learn(task_1)
    trainer = transformers.Trainer(model, args, train_dataset=task_2,
                                   callbacks=[SoftMaskCallback(masker.hook())])

transformers is the optional extra ``[hf]``.
"""

from __future__ import annotations

from typing import Any

import torch

from flipless.continual.softmask import SoftMask, checked_soft_mask
from flipless.errors import InputError, MissingExtraError

try:
    import transformers
except ImportError as exc:
    raise MissingExtraError(
        "flipless.integrations.hf_softmask needs transformers, which is not installed; "
        f"install the extra with: pip install 'flipless[hf]' ({exc})"
    ) from exc


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The ``torch.optim.Optimizer`` inside accelerate's wrapper (or the optimizer itself)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if not isinstance(inner, torch.optim.Optimizer):
        raise InputError(
            f"the Trainer's optimizer is a {type(optimizer).__name__}; expected a "
            "torch.optim.Optimizer (possibly wrapped by accelerate)."
        )
    return inner


class SoftMaskCallback(transformers.TrainerCallback):
    """Apply ``soft_mask`` once per optimizer step of a ``transformers.Trainer``."""

    def __init__(self, soft_mask: SoftMask) -> None:
        self.soft_mask = checked_soft_mask(soft_mask)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise InputError("the Trainer passed no model or optimizer to on_train_begin.")
        self.soft_mask.bind(model)
        self.soft_mask.attach(_torch_optimizer(optimizer))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.soft_mask.before_optimizer_step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.soft_mask.remove()
