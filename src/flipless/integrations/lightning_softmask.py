"""Soft-masking in PyTorch Lightning: a ``Callback`` around a
:class:`~flipless.continual.softmask.SoftMask` hook (Ke et al., Findings of EMNLP 2023).

Lightning calls ``on_before_optimizer_step`` once per optimizer step, after the
accumulation micro-batches' backward passes and after unscaling (16-bit mixed precision),
before gradient clipping and ``optimizer.step()``: there the callback masks the gradients by
``1 − importance`` ("gradient" mode) or remembers the masked parameters ("update" mode,
blended back by a post-step hook on the optimizer, so a skipped step changes nothing)::

    trainer = pl.Trainer(callbacks=[SoftMaskCallback(masker.hook())], ...)

The hook's step count is saved in Lightning checkpoints. One optimizer only.
PyTorch Lightning is the optional extra ``[lightning]``.
"""

from __future__ import annotations

from typing import Any

from flipless.continual.softmask import SoftMask, checked_soft_mask
from flipless.errors import InputError
from flipless.integrations.lightning import pl


class SoftMaskCallback(pl.Callback):
    """Apply ``soft_mask`` once per optimizer step of a Lightning ``Trainer``."""

    def __init__(self, soft_mask: SoftMask) -> None:
        self.soft_mask = checked_soft_mask(soft_mask)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if len(trainer.optimizers) != 1:
            raise InputError(
                f"the LightningModule has {len(trainer.optimizers)} optimizers; SoftMaskCallback "
                "supports exactly one."
            )
        self.soft_mask.bind(pl_module)
        self.soft_mask.attach(trainer.optimizers[0])

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.soft_mask.before_optimizer_step()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.soft_mask.remove()

    def state_dict(self) -> dict[str, Any]:
        return self.soft_mask.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.soft_mask.load_state_dict(state_dict)
