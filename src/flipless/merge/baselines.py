"""Post-hoc baselines users compare weight interpolation against (METHODS.md §5).

**Output ensemble of old and new.** With ``old_weight`` w weighting the old model,

    p(y | x) = w · softmax(z_old)_y + (1 − w) · softmax(z_new)_y,

w = 0 is the new model, w = 1 the old one. It costs two forward passes per prediction, which is
what interpolating the weights (:mod:`flipless.merge.selection`) avoids.
:func:`output_ensemble` mixes logits; :class:`OutputEnsemble` wraps two models and returns
log p, so that argmax, :func:`flipless.compare` and :func:`~flipless.merge.selection.
select_old_weight` treat it like any classifier.

**Model soups** (Wortsman et al., "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time", ICML 2022). The uniform soup
averages the weights of M models fine-tuned from the same start, θ = (1/M) Σ_m θ_m
(:func:`uniform_soup`). The greedy soup (:func:`greedy_soup`, the paper's Recipe 1) sorts the
models by held-out (dev) score, best first, starts the soup with the best, and adds each next
model when the soup with it scores at least as well on dev as the soup without it.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from flipless.errors import InputError, MismatchError
from flipless.merge.interpolate import interpolate
from flipless.merge.selection import LabeledSplit, predict_labels, split_labels
from flipless.merge.tensors import check_old_weight
from flipless.validation import to_numpy

#: Score functions of :func:`greedy_soup` by name: (dev predictions, dev labels) → score.
SOUP_SCORES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda predicted, labels: float(np.mean(predicted == labels)),
}


def output_ensemble(
    old_logits: Any, new_logits: Any, old_weight: float, *, log: bool = False
) -> torch.Tensor:
    """p = w · softmax(old_logits) + (1 − w) · softmax(new_logits), row by row.

    Args:
        old_logits, new_logits: logits [N, C] of the same shape (tensors on one device, or
            arrays).
        old_weight: w ∈ [0, 1].
        log: return log p, computed stably as logaddexp(log w + log_softmax(z_old),
            log(1 − w) + log_softmax(z_new)) (exactly log_softmax(z_new) at w = 0).

    Computed in float64 when either input is float64, else in float32.
    """
    weight = check_old_weight(old_weight)
    old = _logits(old_logits, "old_logits")
    new = _logits(new_logits, "new_logits")
    if old.shape != new.shape:
        raise MismatchError(
            f"old_logits has shape {tuple(old.shape)} but new_logits {tuple(new.shape)}; "
            "expected the same [N, C]: both models scoring the same samples and classes."
        )
    if old.device != new.device:
        raise MismatchError(
            f"old_logits is on {old.device} but new_logits on {new.device}; move both to one "
            "device."
        )
    work = torch.float64 if torch.float64 in (old.dtype, new.dtype) else torch.float32
    old, new = old.to(work), new.to(work)
    if log:
        old_part = F.log_softmax(old, dim=1) + torch.log(torch.tensor(weight, dtype=work))
        new_part = F.log_softmax(new, dim=1) + torch.log(torch.tensor(1.0 - weight, dtype=work))
        return torch.logaddexp(old_part, new_part)
    return weight * F.softmax(old, dim=1) + (1.0 - weight) * F.softmax(new, dim=1)


class OutputEnsemble(nn.Module):
    """Two models whose outputs are mixed: ``forward(x)`` returns log p with
    p = w · softmax(old_model(x)) + (1 − w) · softmax(new_model(x)).

    Log-probabilities have the ensemble's argmax, so the module can be measured and selected
    like any classifier (for example ``select_old_weight(lambda w: OutputEnsemble(old, new,
    w), dev, old_model=old)``). Put it in eval mode to evaluate; it trains nothing itself.
    """

    def __init__(self, old_model: nn.Module, new_model: nn.Module, old_weight: float) -> None:
        super().__init__()
        for what, model in (("old_model", old_model), ("new_model", new_model)):
            if not isinstance(model, nn.Module):
                raise InputError(f"{what} is {type(model).__name__}; expected a torch.nn.Module.")
        self.old_model = old_model
        self.new_model = new_model
        self.old_weight = check_old_weight(old_weight)

    def forward(self, inputs: Any) -> torch.Tensor:
        """log p [N, C] for a batch of inputs."""
        return output_ensemble(
            self.old_model(inputs), self.new_model(inputs), self.old_weight, log=True
        )


def uniform_soup(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """The state dict θ = (1/M) Σ_m θ_m of models with the same architecture.

    Floating-point tensors are averaged (in float32, or float64 for float64 tensors, and
    stored in the first model's dtype); other tensors come from the first model. Load it into
    a copy of one of the models: ``soup = copy.deepcopy(models[0]); soup.load_state_dict(…)``.
    """
    models = _check_models(models)
    states = [model.state_dict() for model in models]
    # the soup is the interpolation at old-weight 0: the old side contributes nothing
    return interpolate(states[0], states, 0.0)  # θ̄ = (1/M) Σ_m θ_m


@dataclass(frozen=True)
class SoupStep:
    """One model tried for the greedy soup.

    Attributes:
        index: the model's position in the list given to :func:`greedy_soup`.
        model_score: the model's own dev score (the sort key).
        soup_score: the dev score of the soup with this model added.
        added: whether it was kept (``soup_score`` ≥ the soup's score before).
    """

    index: int
    model_score: float
    soup_score: float
    added: bool


@dataclass(frozen=True)
class GreedySoup:
    """The greedy soup: its model, which models it holds, and every step tried.

    Attributes:
        model: a copy of the best model holding the soup's weights.
        chosen: the positions of the models in the soup, in the order they were added.
        steps: one :class:`SoupStep` per model, best model first.
        score: the name of the dev score ("accuracy", or the score function's name).
    """

    model: nn.Module
    chosen: tuple[int, ...]
    steps: tuple[SoupStep, ...]
    score: str

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The soup's weights."""
        return self.model.state_dict()

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values: the score's name, the chosen positions and the steps."""
        return {
            "score": self.score,
            "chosen": list(self.chosen),
            "steps": [asdict(step) for step in self.steps],
        }

    def to_frame(self) -> pd.DataFrame:
        """The steps as a table, one row per model in the order tried."""
        return pd.DataFrame([asdict(step) for step in self.steps])


def greedy_soup(
    models: Sequence[nn.Module],
    dev: LabeledSplit,
    *,
    evaluate: str | Callable[[np.ndarray], float] = "accuracy",
    batch_size: int = 256,
) -> GreedySoup:
    """The greedy soup of Wortsman et al. (ICML 2022), chosen on ``dev`` (never the test split).

    Args:
        models: fine-tuned models of one architecture (typically from the same start).
        dev: the held-out split (a LabeledData: ``inputs`` and ``labels``).
        evaluate: ``"accuracy"``, or a function from the dev predictions (int64 labels [N])
            to a score where higher is better, e.g. ``lambda predicted: -compare(old_dev,
            predicted, dev.labels).negative_flip_rate`` for a compatibility-aware soup.
        batch_size: samples per forward pass.

    The models are sorted by their own score (ties: earlier position first); the soup starts
    as the best one, and each next model is added when the uniform soup with it scores at least
    as high as without it.
    """
    models = _check_models(models)
    labels = split_labels(dev)
    if isinstance(evaluate, str):
        if evaluate not in SOUP_SCORES:
            raise InputError(
                f"evaluate={evaluate!r} is unknown; expected one of {sorted(SOUP_SCORES)} or a "
                "function from the dev predictions to a score (higher is better)."
            )
        name, measure = evaluate, functools.partial(SOUP_SCORES[evaluate], labels=labels)
    elif callable(evaluate):
        name, measure = getattr(evaluate, "__name__", "custom"), evaluate
    else:
        raise InputError(f"evaluate is {type(evaluate).__name__}; expected a name or a function.")

    def score(model: nn.Module) -> float:
        value = float(measure(predict_labels(model, dev, batch_size)))
        if not math.isfinite(value):
            raise InputError(f"the soup score {name!r} is {value}; expected a finite number.")
        return value

    own = [score(model) for model in models]
    order = sorted(range(len(models)), key=lambda i: (-own[i], i))
    chosen = [order[0]]
    soup = copy.deepcopy(models[order[0]])
    best = own[order[0]]
    steps = [SoupStep(order[0], own[order[0]], best, True)]
    for index in order[1:]:
        trial = copy.deepcopy(models[order[0]])
        trial.load_state_dict(uniform_soup([models[i] for i in [*chosen, index]]))
        trial_score = score(trial)
        added = trial_score >= best
        steps.append(SoupStep(index, own[index], trial_score, added))
        if added:
            chosen.append(index)
            soup, best = trial, trial_score
    return GreedySoup(model=soup, chosen=tuple(chosen), steps=tuple(steps), score=name)


def _check_models(models: Sequence[nn.Module]) -> list[nn.Module]:
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or not models:
        raise InputError(
            f"models is {type(models).__name__}; expected a non-empty list of torch.nn.Module."
        )
    for index, model in enumerate(models):
        if not isinstance(model, nn.Module):
            raise InputError(
                f"models[{index}] is {type(model).__name__}; expected a torch.nn.Module."
            )
    return list(models)


def _logits(values: Any, name: str) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(to_numpy(values, name))
    if tensor.ndim != 2 or not tensor.is_floating_point():
        raise InputError(
            f"{name} is a {tensor.dtype} tensor of shape {tuple(tensor.shape)}; expected "
            "floating logits [N, C]."
        )
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(
            f"{name} holds NaN or infinite values; expected finite logits (mask a class with a "
            "large negative logit, not -inf)."
        )
    return tensor
