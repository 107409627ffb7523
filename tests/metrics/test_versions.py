"""Pairwise NFR matrix and cumulative flips along a chain of versions, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from flipless import FliplessError, flip_chain, pairwise_negative_flip_rates

LABELS = np.array([0, 1, 2, 0, 1, 2])
# correct:            1  1  1  0  1  0
V1 = np.array([0, 1, 2, 1, 1, 0])
# correct:            1  0  1  1  1  0
V2 = np.array([0, 0, 2, 0, 1, 1])
# correct:            0  1  1  1  0  1
V3 = np.array([1, 1, 2, 0, 0, 2])


def test_pairwise_matrix_by_hand():
    matrix = pairwise_negative_flip_rates({"v1": V1, "v2": V2, "v3": V3}, LABELS)
    # v1→v2 breaks sample 1; v1→v3 breaks 0 and 4; v2→v1 breaks 3; v2→v3 breaks 0 and 4;
    # v3→v1 breaks 3 and 5; v3→v2 breaks 1 and 5.
    expected = np.array([[0, 1, 2], [1, 0, 2], [2, 2, 0]]) / 6
    np.testing.assert_allclose(matrix.to_numpy(), expected, rtol=0, atol=1e-15)
    assert list(matrix.index) == ["v1", "v2", "v3"] and matrix.index.name == "old"


def test_chain_by_hand():
    chain = flip_chain({"v1": V1, "v2": V2, "v3": V3}, LABELS, ids=list("abcdef"))
    table = chain.table
    assert table["negative_flips"].tolist() == [0, 1, 2]
    assert table["positive_flips"].tolist() == [0, 1, 2]
    # correct at v1 and wrong at v_k: v2 loses sample 1, v3 loses samples 0 and 4
    assert table["regressed_since_first"].tolist() == [0, 1, 2]
    # union of step negative flips: {1}, then {1} ∪ {0, 4}
    assert table["ever_negatively_flipped"].tolist() == [0, 1, 3]
    # wrong now although some earlier version was right: v2 → {1}; v3 → {0, 4}
    assert table["lost_ever_correct"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(table["accuracy"], [4 / 6, 4 / 6, 4 / 6])
    assert chain.ever_negatively_flipped_ids.tolist() == ["a", "b", "e"]


def test_chain_with_logits_uses_argmax():
    logits = np.eye(3)[V2] * 5.0
    chain = flip_chain({"v1": V1, "v2": logits}, LABELS)
    assert chain.table["negative_flips"].tolist() == [0, 1]


def test_versions_need_two_and_agree_in_length():
    with pytest.raises(FliplessError, match="at least two"):
        pairwise_negative_flip_rates({"v1": V1}, LABELS)
    with pytest.raises(FliplessError, match="different lengths"):
        flip_chain({"v1": V1, "v2": V2[:5]}, LABELS)
    with pytest.raises(FliplessError, match="one id per sample"):
        flip_chain({"v1": V1, "v2": V2}, LABELS, ids=[1, 2])
