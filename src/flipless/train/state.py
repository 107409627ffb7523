"""Checkpoints for resumable training: the complete state, written atomically, read safely.

A checkpoint holds everything that decides what happens next: model, optimizer, scheduler and
gradient-scaler state, the random number generators (python, numpy, torch CPU and CUDA) of
every process, the epoch, the optimizer step, how many steps of the current epoch are done,
the history and the best epoch so far. Restoring it and going on gives the same numbers as
never having stopped (the batch order of an epoch depends only on the seed and the epoch).

Files are written to a temporary name and renamed, so a process killed at any moment leaves
either the previous checkpoint or the new one, never half of one; they are read with
``torch.load(weights_only=True)``: only tensors and plain containers, never arbitrary pickles.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flipless.errors import FileFormatError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "flipless.train.checkpoint"
VERSION = 1


def capture_rng() -> dict[str, Any]:
    """The generators' states as tensors, lists and numbers (loadable with weights_only)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(python_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` took."""
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    """A state dict as safetensors, atomically (temporary file + rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        save_file({k: v.contiguous() for k, v in weights.items()}, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (from the training loop) as the folder's checkpoint, atomically."""
    path = folder / CHECKPOINT_NAME
    atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, path)
    return path


def read_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The folder's checkpoint, or None when there is none yet."""
    path = folder / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise FileFormatError(
            f"cannot read the checkpoint {path} with weights_only=True ({error}); it is not a "
            "flipless training checkpoint, or it is damaged: remove it to start afresh."
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FileFormatError(f"{path} is not a flipless training checkpoint.")
    if state.get("version") != VERSION:
        raise FileFormatError(
            f"{path} has checkpoint version {state.get('version')}; this flipless reads {VERSION}."
        )
    return state
