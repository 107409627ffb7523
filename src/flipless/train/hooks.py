"""Hooks: where plugins (soft-masking, logging, custom schedules) attach to the training loop.

A hook is an object with any of these methods; the loop calls those it has, in order:

* ``on_fit_start(trainer)``: once, after a resume has been applied;
* ``before_backward(trainer, loss) -> loss``: may return a changed loss (or None to keep it);
* ``after_backward(trainer)``: after each micro-batch's backward;
* ``before_optimizer_step(trainer)``: once per optimizer step, after gradients are unscaled
  (mixed precision) and clipped — the place to rescale or mask gradients;
* ``on_epoch_end(trainer, record)``: with the epoch's :class:`~flipless.train.loop.EpochRecord`;
* ``state_dict()`` / ``load_state_dict(state)``: kept in the training checkpoint, so a hook
  with state resumes where it was.

Hooks run on every process; only rank 0 writes files.
"""

from __future__ import annotations

from typing import Any

HOOK_METHODS = (
    "on_fit_start",
    "before_backward",
    "after_backward",
    "before_optimizer_step",
    "on_epoch_end",
)


class Hook:
    """A base class with every method a no-op; subclass and override what you need."""

    def on_fit_start(self, trainer: Any) -> None:
        """Called once before the first (or the resumed) step."""

    def before_backward(self, trainer: Any, loss: Any) -> Any:
        """Return the loss to backpropagate (None keeps it)."""
        return None

    def after_backward(self, trainer: Any) -> None:
        """Called after each micro-batch's backward pass."""

    def before_optimizer_step(self, trainer: Any) -> None:
        """Called once per optimizer step with unscaled, clipped gradients."""

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        """Called after each epoch's validation."""

    def state_dict(self) -> dict[str, Any]:
        """State to keep in the training checkpoint (tensors and plain containers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
