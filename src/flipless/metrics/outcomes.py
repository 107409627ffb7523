"""Per-sample outcome codes and their counts: the one pass over the data that everything uses.

Each sample gets a 3-bit code::

    bit 0  the old model is correct        c_o = 1[ŷ_o = y]   (or y in the old top-k)
    bit 1  the new model is correct        c_n = 1[ŷ_n = y]
    bit 2  both models give the same answer     1[ŷ_o = ŷ_n]

so a negative flip is ``code & 3 == 1``, a positive flip ``code & 3 == 2``, and both wrong
with the same wrong answer is ``code == 4``. Counting the codes per true class (a [K, 8]
table) is enough to derive every dataset-level, per-class and per-slice rate; the flip
matrix counts (ŷ_o, ŷ_n) over negative flips.

The pass is a compiled loop (:mod:`flipless.kernels`) that reads the inputs once.
"""

from __future__ import annotations

import numpy as np

from flipless.kernels import NUM_OUTCOMES

OLD_CORRECT = 1
NEW_CORRECT = 2
SAME_ANSWER = 4

#: Samples per chunk of the numpy passes: 64 Ki samples keep the temporaries in L2 cache.
CHUNK = 1 << 16


def tally(
    old_pred: np.ndarray,
    new_pred: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    old_correct: np.ndarray | None = None,
    new_correct: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Count outcomes per true class in one fused pass (indices already range-checked).

    ``old_correct`` / ``new_correct`` override ``pred == labels`` (top-k correctness).
    Returns ``(codes [N] uint8, class_outcomes [K, 8] int64)``.
    """
    import numba

    from flipless.kernels import count_outcomes

    size = labels.shape[0]
    codes = np.empty(size, dtype=np.uint8)
    given = old_correct is not None
    if not given:
        old_correct = new_correct = np.zeros(0, dtype=np.bool_)
    counts = count_outcomes(
        *(np.ascontiguousarray(a, dtype=np.int64) for a in (old_pred, new_pred, labels)),
        np.ascontiguousarray(old_correct, dtype=np.bool_),
        np.ascontiguousarray(new_correct, dtype=np.bool_),
        given,
        num_classes,
        codes,
        numba.get_num_threads(),
    )
    return codes, counts.reshape(num_classes, NUM_OUTCOMES)


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
