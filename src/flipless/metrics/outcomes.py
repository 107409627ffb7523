"""Per-sample outcome codes and their counts: the one pass over the data that everything uses.

Each sample gets a 3-bit code::

    bit 0  the old model is correct        c_o = 1[ŷ_o = y]   (or y in the old top-k)
    bit 1  the new model is correct        c_n = 1[ŷ_n = y]
    bit 2  both models give the same answer     1[ŷ_o = ŷ_n]

so a negative flip is ``code & 3 == 1``, a positive flip ``code & 3 == 2``, and both wrong
with the same wrong answer is ``code == 4``. Counting the codes per true class (a [K, 8]
table) is enough to derive every dataset-level, per-class and per-slice rate; the flip
matrix counts (ŷ_o, ŷ_n) over negative flips.

The pass runs in chunks that fit in the CPU cache, so that its several element-wise steps
read the inputs from memory once.
"""

from __future__ import annotations

import numpy as np

OLD_CORRECT = 1
NEW_CORRECT = 2
SAME_ANSWER = 4
NUM_OUTCOMES = 8

#: Samples per chunk: 64 Ki samples keep the inputs and temporaries inside L2 cache.
CHUNK = 1 << 16


def outcome_code(old_correct: np.ndarray, new_correct: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Combine three boolean arrays into the uint8 outcome code."""
    code = old_correct.view(np.uint8) | (new_correct.view(np.uint8) << 1)
    code |= same.view(np.uint8) << 2
    return code


def tally(
    old_pred: np.ndarray,
    new_pred: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    old_correct: np.ndarray | None = None,
    new_correct: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Count outcomes per true class in one chunked pass.

    ``old_correct`` / ``new_correct`` override ``pred == labels`` (top-k correctness).
    Returns ``(codes [N] uint8, class_outcomes [K, 8] int64)``.
    """
    size = labels.shape[0]
    codes = np.empty(size, dtype=np.uint8)
    class_outcomes = np.zeros(num_classes * NUM_OUTCOMES, dtype=np.int64)
    keys = np.empty(min(size, CHUNK), dtype=np.int64)
    for start in range(0, size, CHUNK):
        part = slice(start, start + CHUNK)
        label, old, new = labels[part], old_pred[part], new_pred[part]
        old_ok = old == label if old_correct is None else old_correct[part]
        new_ok = new == label if new_correct is None else new_correct[part]
        code = codes[part]
        code[:] = outcome_code(old_ok, new_ok, old == new)
        key = keys[: label.shape[0]]
        np.left_shift(label, 3, out=key)  # label · NUM_OUTCOMES
        np.bitwise_or(key, code, out=key)
        class_outcomes += np.bincount(key, minlength=class_outcomes.size)
    return codes, class_outcomes.reshape(num_classes, NUM_OUTCOMES)


def flip_pairs(
    old_pred: np.ndarray, new_pred: np.ndarray, codes: np.ndarray, num_classes: int
) -> np.ndarray:
    """The [K, K] flip matrix: negative flips counted by (old answer, new answer), chunked."""
    flips = np.zeros(num_classes * num_classes, dtype=np.int64)
    for start in range(0, codes.shape[0], CHUNK):
        part = slice(start, start + CHUNK)
        negative = negative_flip_mask(codes[part])
        pairs = old_pred[part][negative] * num_classes + new_pred[part][negative]
        flips += np.bincount(pairs, minlength=flips.size)
    return flips.reshape(num_classes, num_classes)


def group_outcomes(codes: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """Count outcome codes per group: a [G, 8] table from group indices in ``[0, G)``."""
    keys = groups.astype(np.int64) * NUM_OUTCOMES + codes
    return np.bincount(keys, minlength=num_groups * NUM_OUTCOMES).reshape(num_groups, NUM_OUTCOMES)


def negative_flip_mask(codes: np.ndarray) -> np.ndarray:
    """True where the old model was right and the new one is wrong."""
    return (codes & (OLD_CORRECT | NEW_CORRECT)) == OLD_CORRECT


def positive_flip_mask(codes: np.ndarray) -> np.ndarray:
    """True where the old model was wrong and the new one is right."""
    return (codes & (OLD_CORRECT | NEW_CORRECT)) == NEW_CORRECT
