"""The embedded demo: a real model update measured on data that ships with scikit-learn.

The old model is a logistic regression trained on a stratified 15 % of the digits training
split (8×8 images of handwritten digits); the new one is the same model trained on all of it.
The new model is more accurate, yet it gets some digits wrong that the old one got right: the
negative flips this library is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flipless.metrics.comparison import Comparison, compare

OLD_TRAIN_SHARE = 0.15


@dataclass(frozen=True)
class DemoUpdate:
    """The measured update and how it was made."""

    comparison: Comparison
    old_train_size: int
    new_train_size: int
    test_size: int


def _classifier(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def run_demo(seed: int = 0) -> DemoUpdate:
    """Train the old and new digit classifiers and compare them on the held-out split."""
    digits = load_digits()
    sample_ids = np.arange(len(digits.target))
    x_train, x_test, y_train, y_test, _, ids_test = train_test_split(
        digits.data,
        digits.target,
        sample_ids,
        test_size=0.5,
        stratify=digits.target,
        random_state=seed,
    )
    x_old, _, y_old, _ = train_test_split(
        x_train, y_train, train_size=OLD_TRAIN_SHARE, stratify=y_train, random_state=seed
    )
    old_model = _classifier(seed).fit(x_old, y_old)
    new_model = _classifier(seed).fit(x_train, y_train)
    # A slice a user might gate on: is the digit drawn with little ink (a faint image)?
    ink = x_test.sum(axis=1)
    faint = np.where(ink < np.median(ink), "faint", "bold")
    comparison = compare(
        old_model.predict_proba(x_test),
        new_model.predict_proba(x_test),
        y_test,
        ids=ids_test,
        class_names=[str(name) for name in digits.target_names],
        slices={"ink": faint},
        seed=seed,
    )
    return DemoUpdate(comparison, len(y_old), len(y_train), len(y_test))
