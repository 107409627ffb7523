"""A model's logits over a labelled split: batched, without gradients, in eval mode.

:func:`predict` runs ``model(inputs)`` over a :class:`~flipless.data.labeled.LabeledData`
in batches of ``batch_size`` samples, in the split's order, under ``torch.no_grad()`` with the
model in eval mode (its previous mode is restored afterwards), and returns the sample ids, the
true labels and the logits as numpy arrays in a :class:`Predictions`. The predicted class is
the argmax of the logits (the first maximum on ties, as ``numpy.argmax``); probabilities are
the softmax ``p_c = exp(z_c − max z) / Σ_k exp(z_k − max z)`` computed in float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flipless.data.labeled import LabeledData
from flipless.errors import InputError, MismatchError
from flipless.models.base import positive_int
from flipless.validation import first_few

#: The names :func:`resolve_device` accepts (besides a ``torch.device`` or ``"cuda:N"``).
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True, eq=False)
class Predictions:
    """One model's outputs over one split, row by row in the split's order.

    Attributes:
        ids: int64 [N] sample ids.
        labels: int64 [N] true class indices, None when the data has none.
        logits: float [N, C] model outputs (float32 from most models).
        class_names: the C class names, in index order.
    """

    ids: np.ndarray
    labels: np.ndarray | None
    logits: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def predicted(self) -> np.ndarray:
        """int64 [N]: the argmax of the logits (the lowest class index on ties)."""
        return self.logits.argmax(axis=1).astype(np.int64)

    def probabilities(self) -> np.ndarray:
        """float64 [N, C]: the softmax of the logits (see the module docstring)."""
        return softmax(self.logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row maximum so no exponent overflows."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"`` (or ``"cuda:N"``, a ``torch.device``), or ``"auto"``: CUDA when
    available, else the CPU. Asking for CUDA where none is available is an error."""
    if isinstance(device, torch.device):
        chosen = device
    elif not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
        raise InputError(
            f"device={device!r}; expected one of {', '.join(DEVICES)} (or cuda:N). Pass "
            "--device cpu to run on the processor."
        )
    elif device == "auto":
        chosen = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        chosen = torch.device(device)
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {str(chosen)!r} asked for, but CUDA is not available here (torch "
                f"{torch.__version__}, no GPU or a CPU-only build); pass --device cpu, or "
                "--device auto to use a GPU only where there is one."
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise InputError(
                f"device {str(chosen)!r} asked for, but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible; pass --device cuda for the first one."
            )
    elif chosen.type != "cpu":
        raise InputError(f"device {str(chosen)!r}; expected cpu or cuda.")
    return chosen


def predict(
    model: nn.Module,
    data: LabeledData,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Predictions:
    """The logits of ``model`` over ``data``, in order (see the module docstring).

    Args:
        model: any module mapping a batch of inputs (a tensor slice, or a list of texts) to
            logits [B, C]; a tuple or list output gives its first element.
        data: the split; its inputs are sliced into batches, never copied whole.
        batch_size: samples per forward pass.
        device: where the model runs (see :func:`resolve_device`); the model is moved there.
            None: where its parameters already are (the CPU for a model without any).
        on_batch: called with the number of samples of each batch once it is done (progress).

    Raises:
        InputError: a bad batch size or device, or an output that is not [B, C] logits.
        MismatchError: the model's classes and the data's class names differ in number.
    """
    if not isinstance(data, LabeledData):
        raise InputError(
            f"data is {type(data).__name__}; expected a flipless LabeledData split (from "
            "flipless.data loaders or LabeledData.from_arrays)."
        )
    batch_size = positive_int(batch_size, "batch_size")
    if device is None:
        target = next((p.device for p in model.parameters()), torch.device("cpu"))
    else:
        target = resolve_device(device)
        model.to(target)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for positions in torch.arange(len(data)).split(batch_size):
                chunks.append(_batch_logits(model, data, positions, target))
                if on_batch is not None:
                    on_batch(int(positions.numel()))
    finally:
        model.train(was_training)
    width = chunks[0].shape[1] if chunks else data.num_classes
    logits = np.concatenate(chunks) if chunks else np.empty((0, width), dtype=np.float32)
    if width != data.num_classes:
        raise MismatchError(
            f"the model gives {width} logits per sample but {data.name} has "
            f"{data.num_classes} classes ({first_few(data.class_names)}); expected a model "
            "trained on the same label space. Check that the model and the data belong together."
        )
    return Predictions(
        ids=data.ids.numpy().copy(),
        labels=data.labels.numpy().copy(),
        logits=logits,
        class_names=data.class_names,
    )


def _batch_logits(
    model: nn.Module, data: LabeledData, positions: torch.Tensor, device: torch.device
) -> np.ndarray:
    """The logits [B, C] of the samples at ``positions``, as a CPU numpy array."""
    if isinstance(data.inputs, torch.Tensor):
        inputs = data.inputs[positions].to(device)
    else:
        inputs = [data.inputs[i] for i in positions.tolist()]
    output = model(inputs)
    if isinstance(output, (tuple, list)):
        output = output[0]
    if (
        not isinstance(output, torch.Tensor)
        or output.ndim != 2
        or output.shape[0] != len(positions)
    ):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(
            f"the model returned {shape} for a batch of {len(positions)} samples; expected "
            "logits [batch, classes]."
        )
    output = output.detach().cpu()
    if output.dtype not in (torch.float32, torch.float64):  # half precision, bfloat16
        output = output.float()
    return output.numpy()


def in_data_order(predictions: Predictions, model_classes: Sequence[str] | None) -> Predictions:
    """The logits with their columns put in the data's class order, by class name.

    ``model_classes`` names the model's output rows (as its checkpoint or Hugging Face folder
    records them); None means they are the data's classes in the data's order. When the model
    names the same classes in another order, column ``k`` of the result is the model's output
    for ``predictions.class_names[k]``, so two models' files share one class order.

    Raises:
        MismatchError: the model and the data name different classes.
    """
    if model_classes is None or tuple(model_classes) == predictions.class_names:
        return predictions
    model_classes = tuple(str(name) for name in model_classes)
    data_classes = predictions.class_names
    only_model = [name for name in model_classes if name not in data_classes]
    only_data = [name for name in data_classes if name not in model_classes]
    if only_model or only_data or len(model_classes) != len(data_classes):
        raise MismatchError(
            f"the model's classes are not the data's: {len(only_model)} only in the model "
            f"({first_few(only_model)}) and {len(only_data)} only in the data "
            f"({first_few(only_data)}); expected the same class names. Check that the model "
            "and the data belong together, or name the data's classes (classes = [...])."
        )
    columns = [model_classes.index(name) for name in data_classes]
    return dataclasses.replace(predictions, logits=predictions.logits[:, columns])


def predicted_classes(model: nn.Module, data: LabeledData, batch_size: int = 512) -> np.ndarray:
    """int64 [N]: the class ``model`` predicts for each sample of ``data``, in order."""
    return predict(model, data, batch_size=batch_size).predicted
