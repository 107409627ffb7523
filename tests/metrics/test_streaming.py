"""The torchmetrics accumulator gives the one-shot numbers however the data is batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flipless import FliplessError, FlipMetric, compare


def _data(seed: int, size: int, classes: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size)
    old = rng.normal(size=(size, classes))
    new = rng.normal(size=(size, classes))
    # make the models mostly right so that every outcome occurs
    old[np.arange(size), labels] += 1.5
    new[np.arange(size), labels] += 2.0
    groups = rng.integers(0, 3, size)
    return old, new, labels, groups


def _assert_same_counts(streamed, one_shot) -> None:
    np.testing.assert_array_equal(streamed.class_outcomes, one_shot.class_outcomes)
    np.testing.assert_array_equal(streamed.flip_matrix, one_shot.flip_matrix)
    for name, table in one_shot.slices.items():
        # the stream declares every group; the one-shot table lists the groups it saw
        streamed_table = streamed.slices[name]
        seen = [streamed_table.groups.index(group) for group in table.groups]
        np.testing.assert_array_equal(streamed_table.outcomes[seen], table.outcomes)
        unseen = np.setdiff1d(np.arange(len(streamed_table.groups)), seen)
        assert streamed_table.outcomes[unseen].sum() == 0
    for name, rate in one_shot.counts.rates().items():
        assert streamed.rate(name).numerator == rate.numerator
        assert streamed.rate(name).denominator == rate.denominator


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 400),
    classes=st.integers(2, 9),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    as_labels=st.booleans(),
)
def test_random_batch_splits_equal_the_one_shot_comparison(seed, size, classes, cuts, as_labels):
    old, new, labels, groups = _data(seed, size, classes)
    if as_labels:
        old, new = old.argmax(1), new.argmax(1)
    metric = FlipMetric(num_classes=classes, slices={"group": 3})
    for part in np.split(np.arange(size), sorted(c for c in cuts if c < size)):
        metric.update(
            torch.as_tensor(old[part]),
            torch.as_tensor(new[part]),
            torch.as_tensor(labels[part]),
            slices={"group": torch.as_tensor(groups[part])},
        )
    one_shot = compare(old, new, labels, num_classes=classes, slices={"group": groups})
    _assert_same_counts(metric.compute(), one_shot)


def test_top_k_streaming_equals_one_shot():
    old, new, labels, _ = _data(3, 500, 7)
    metric = FlipMetric(num_classes=7, top_k=3)
    for part in np.array_split(np.arange(500), 6):
        metric.update(torch.tensor(old[part]), torch.tensor(new[part]), torch.tensor(labels[part]))
    _assert_same_counts(metric.compute(), compare(old, new, labels, top_k=3))


def test_forward_returns_the_batch_and_accumulates():
    old, new, labels, _ = _data(4, 100, 4)
    metric = FlipMetric(num_classes=4)
    batch = metric(torch.tensor(old[:40]), torch.tensor(new[:40]), torch.tensor(labels[:40]))
    metric(torch.tensor(old[40:]), torch.tensor(new[40:]), torch.tensor(labels[40:]))
    _assert_same_counts(batch, compare(old[:40], new[:40], labels[:40], num_classes=4))
    _assert_same_counts(metric.compute(), compare(old, new, labels))
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute().counts.total == 0


@pytest.mark.parametrize(
    ("old", "new", "target", "match"),
    [
        (torch.zeros(3, 5), torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), "columns"),
        (
            torch.full((3, 4), float("nan")),
            torch.zeros(3, 4),
            torch.zeros(3, dtype=torch.long),
            "NaN",
        ),
        (
            torch.zeros(3, dtype=torch.long),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            "Batch sizes",
        ),
        (
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            torch.tensor([0, 4, 1]),
            "outside",
        ),
        (
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            torch.tensor([0.0, 1.0, 1.0]),
            "dtype",
        ),
        (
            torch.tensor([0, -1, 1]),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            "outside",
        ),
    ],
)
def test_bad_batches_raise_clear_errors(old, new, target, match):
    with pytest.raises(FliplessError, match=match):
        FlipMetric(num_classes=4).update(old, new, target)


def test_constructor_rejects_a_one_class_problem_and_a_bad_top_k():
    with pytest.raises(FliplessError, match="at least 2"):
        FlipMetric(num_classes=1)
    with pytest.raises(FliplessError, match="top_k"):
        FlipMetric(num_classes=3, top_k=3)


def test_slices_must_match_the_declared_ones():
    metric = FlipMetric(num_classes=3, slices={"site": 2})
    y = torch.tensor([0, 1, 2])
    with pytest.raises(FliplessError, match="slices"):
        metric.update(y, y, y)
    with pytest.raises(FliplessError, match="outside"):
        metric.update(y, y, y, slices={"site": torch.tensor([0, 1, 2])})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_numbers():
    old, new, labels, _ = _data(5, 300, 6)
    metric = FlipMetric(num_classes=6).to("cuda")
    metric.update(torch.tensor(old).cuda(), torch.tensor(new).cuda(), torch.tensor(labels).cuda())
    _assert_same_counts(metric.compute(), compare(old, new, labels))
    # compare() itself accepts CUDA tensors too
    on_gpu = compare(
        torch.tensor(old).cuda(), torch.tensor(new).cuda(), torch.tensor(labels).cuda()
    )
    _assert_same_counts(on_gpu, compare(old, new, labels))
