"""Re-estimate BatchNorm running statistics on data, after interpolating weights.

An interpolated network's BatchNorm statistics are interpolated too, but the statistics of
the interpolated network's activations are not the interpolation of the two networks'
statistics, and without re-estimation the merged model can lose much of its accuracy.
Izmailov et al. ("Averaging Weights Leads to Wider Optima and Better Generalization", UAI
2018) recompute them after averaging weights; Jordan et al. ("REPAIR", ICLR 2023) study how
interpolation shifts them.

:func:`reestimate_batchnorm` resets the running mean and variance of every BatchNorm layer
(``nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``, any ``_BatchNorm``) that tracks them, sets its
``momentum`` to None (torch then keeps the cumulative average of the batch statistics), and
runs the data through the model without gradients, with **only the BatchNorm layers** in train
mode (dropout and everything else in eval mode, so the statistics are those of the network
used at inference). Afterwards, per BatchNorm layer with B batches b of n_b examples,

    running_mean = (1/B) Σ_b mean_b,     running_var = (1/B) Σ_b var_b (unbiased, n_b − 1),

an average over batches, not examples: a smaller last batch counts as much as a full one; one
batch covering all the data gives the exact mean and unbiased variance. Every module's
train/eval mode and each layer's momentum are restored; if the pass fails, so are the
previous statistics.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from flipless.errors import FliplessWarning, InputError
from flipless.merge.fisher import dict_batches, kept_modes, to_device


def reestimate_batchnorm(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int = 128,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Recompute ``model``'s BatchNorm running statistics on ``data``, in place; returns it.

    ``data``: a Dataset of dict items (``LabeledData``) read in order in batches of
    ``batch_size``, or a DataLoader of dict batches (only ``"inputs"`` is used).
    ``max_batches`` stops after that many batches. ``device``: where to run; the model is
    moved there (in place, as ``model.to`` does); default: where the model is. A model
    without BatchNorm layers is returned unchanged, with a FliplessWarning.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model is a {type(model).__name__}; expected an nn.Module.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r}; expected a whole number ≥ 1.")
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise InputError(f"max_batches={max_batches!r}; expected None or a whole number ≥ 1.")
    layers = [
        module
        for module in model.modules()
        if isinstance(module, _BatchNorm) and module.track_running_stats
    ]
    if not layers:
        warnings.warn(
            f"the {type(model).__name__} has no BatchNorm layer that tracks running statistics; "
            "nothing to re-estimate.",
            FliplessWarning,
            stacklevel=2,
        )
        return model
    if device is not None:
        model.to(device)
    where = layers[0].running_mean.device
    saved = [
        (layer, layer.momentum, {name: b.clone() for name, b in layer.named_buffers()})
        for layer in layers
    ]
    batches = 0
    try:
        with kept_modes(model), torch.no_grad():
            model.eval()
            for layer in layers:
                layer.reset_running_stats()
                layer.momentum = None
                layer.train()
            for batch in dict_batches(data, batch_size, "reestimate_batchnorm"):
                model(to_device(batch["inputs"], where))
                batches += 1
                if max_batches is not None and batches >= max_batches:
                    break
        if batches == 0:
            raise InputError("reestimate_batchnorm: the data yielded no batches.")
    except BaseException:
        for layer, _, buffers in saved:
            for name, value in buffers.items():
                getattr(layer, name).copy_(value)
        raise
    finally:
        for layer, momentum, _ in saved:
            layer.momentum = momentum
    return model
