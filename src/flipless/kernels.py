"""Compiled loops (numba) for the passes over the data that every count comes from.

* :func:`largest_unsigned`: the range check of an index array in one parallel reduction;
* :func:`count_outcomes`: one fused loop that reads old, new and labels once and writes the
  outcome code and the per-class counts, where numpy would need a temporary array and a
  pass per step.

Work is split into blocks, one per thread, each with its own result, combined at the end.
Indices must have been range-checked before counting (numba does not check bounds).

Threads come from numba's "workqueue" layer unless ``NUMBA_THREADING_LAYER`` says otherwise:
once numba's OpenMP pool has run in a process, every later PyTorch backward pass there was
measured 40–70× slower (OpenMP threads of the two runtimes competing for the cores; a small
MLP's forward and backward went from 0.3 ms to 24 ms), which would slow every training epoch
after its first validation comparison. The workqueue layer runs one parallel launch at a
time, so launches go through a lock and concurrent callers from several threads wait.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_LAUNCH = threading.Lock()

#: Outcome codes have 3 bits (old correct, new correct, same answer): see flipless.metrics.outcomes.
NUM_OUTCOMES = 8


def largest_unsigned(values: np.ndarray, blocks: int) -> int:
    """max(values) read as unsigned 64-bit integers (see :func:`_largest_unsigned`)."""
    with _LAUNCH:
        return int(_largest_unsigned(values, blocks))


def count_outcomes(
    old_pred: np.ndarray,
    new_pred: np.ndarray,
    labels: np.ndarray,
    old_correct: np.ndarray,
    new_correct: np.ndarray,
    use_given_correctness: bool,
    num_classes: int,
    codes: np.ndarray,
    blocks: int,
) -> np.ndarray:
    """Outcome codes into ``codes`` and the [K · 8] per-class counts (see
    :func:`_count_outcomes`)."""
    with _LAUNCH:
        return _count_outcomes(
            old_pred,
            new_pred,
            labels,
            old_correct,
            new_correct,
            use_given_correctness,
            num_classes,
            codes,
            blocks,
        )


@numba.njit(cache=True, nogil=True, parallel=True)
def _largest_unsigned(values: np.ndarray, blocks: int) -> int:
    """max(values) read as unsigned 64-bit integers: a negative value shows up as ≥ 2⁶³."""
    size = values.shape[0]
    per_block = (size + blocks - 1) // blocks
    largest = np.zeros(blocks, dtype=np.uint64)
    for block in numba.prange(blocks):
        found = np.uint64(0)
        for i in range(block * per_block, min(size, (block + 1) * per_block)):
            value = np.uint64(values[i])
            if value > found:
                found = value
        largest[block] = found
    return largest.max()


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_outcomes(
    old_pred: np.ndarray,
    new_pred: np.ndarray,
    labels: np.ndarray,
    old_correct: np.ndarray,
    new_correct: np.ndarray,
    use_given_correctness: bool,
    num_classes: int,
    codes: np.ndarray,
    blocks: int,
) -> np.ndarray:
    """Write each sample's outcome code into ``codes``; return the [K · 8] per-class counts.

    Correctness is ``pred == label``, or ``old_correct`` / ``new_correct`` when
    ``use_given_correctness`` (top-k). ``blocks`` is the number of parallel blocks.
    """
    size = labels.shape[0]
    per_block = (size + blocks - 1) // blocks
    counts = np.zeros((blocks, num_classes * NUM_OUTCOMES), dtype=np.int64)
    for block in numba.prange(blocks):
        for i in range(block * per_block, min(size, (block + 1) * per_block)):
            label = labels[i]
            old = old_pred[i]
            new = new_pred[i]
            if use_given_correctness:
                code = np.uint8(old_correct[i]) | (np.uint8(new_correct[i]) << 1)
            else:
                code = np.uint8(old == label) | (np.uint8(new == label) << 1)
            code |= np.uint8(old == new) << 2
            codes[i] = code
            counts[block, label * NUM_OUTCOMES + code] += 1
    return counts.sum(axis=0)
