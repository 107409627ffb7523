"""A real Keras ``fit()``: the compatible model breaks fewer old-correct digits than a plain one.

The update scenario of tests/losses/test_training_digits.py with Keras (torch backend):
scikit-learn's digits, an old MLP trained on 30 % of the training split, new MLPs on all of
it, three seeds, SGD with momentum for 20 epochs. The plain model is a Keras model compiled
with cross-entropy; the compatible one is ``CompatibleModel(…, "fd-kl")`` from the same
initial weights and batch order, so a term that had stopped working would give the same
flips. Measured when written (negative flips on the 719 test digits summed over the seeds,
mean accuracy): plain 13 / 0.972, fd-kl 3 / 0.956.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

keras = pytest.importorskip("keras")

from flipless import compare  # noqa: E402
from flipless.keras import CompatibleModel  # noqa: E402

SEEDS = (0, 1, 2)
EPOCHS, BATCH = 20, 64


def mlp(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)]
    )


def train(model: keras.Model, x: np.ndarray, y: np.ndarray, seed: int, plain: bool) -> None:
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9, clipnorm=2.0)
    if plain:
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    else:
        model.compile(optimizer)
    keras.utils.set_random_seed(seed)  # the same batch order for the plain and compatible fit
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fd_kl_fit_gives_fewer_negative_flips_than_plain_cross_entropy():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest (torch backend, conftest.py)
    try:
        images, labels = load_digits(return_X_y=True)
        x = (images / 16.0).astype("float32")
        rows = np.arange(len(labels))
        train_rows, test_rows = train_test_split(
            rows, test_size=0.4, stratify=labels, random_state=0
        )
        predictions: list[tuple[str, np.ndarray, np.ndarray]] = []  # (model, old, new)
        for seed in SEEDS:
            old_rows = np.random.default_rng(seed).choice(
                train_rows, int(0.3 * len(train_rows)), replace=False
            )
            old = mlp(100 + seed)
            train(old, x[old_rows], labels[old_rows], seed, plain=True)
            old_predictions = old.predict(x[test_rows], verbose=0)
            plain = mlp(seed)
            train(plain, x[train_rows], labels[train_rows], seed, plain=True)
            compatible = CompatibleModel(mlp(seed), old, objective="fd-kl", flip_metrics=False)
            train(compatible, x[train_rows], labels[train_rows], seed, plain=False)
            for name, model in (("plain", plain), ("fd-kl", compatible)):
                predictions.append((name, old_predictions, model.predict(x[test_rows], verbose=0)))
    finally:
        torch.set_num_threads(threads)
    # compared after training: numba's OpenMP pool, started by compare(), slows torch's
    # backward passes in the same process
    flips = {"plain": 0, "fd-kl": 0}
    accuracy: dict[str, list[float]] = {"plain": [], "fd-kl": []}
    for name, old_predictions, new_predictions in predictions:
        comparison = compare(old_predictions, new_predictions, labels[test_rows])
        flips[name] += comparison.counts.negative_flips
        accuracy[name].append(comparison.accuracy_new)
    assert flips["plain"] >= 6, flips  # the plain update really breaks digits
    assert flips["fd-kl"] <= flips["plain"] / 2, flips
    assert np.mean(accuracy["fd-kl"]) > np.mean(accuracy["plain"]) - 0.03, accuracy
