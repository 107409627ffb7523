"""BackwardCompatibilityML's TensorFlow names: float64 hand computations, and where BCML erred.

BCML's own TensorFlow code is not run here (it needs TensorFlow 2.x's compat.v1 API); what
it computes is written out from its source, as numpy, next to each test that shows the
difference (PEERS.md, METHODS.md §2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

from flipless.errors import FliplessWarning, InputError, MismatchError  # noqa: E402
from flipless.keras import bcml  # noqa: E402

X = np.array([[1.0, 0.2], [0.1, 0.9], [-1.0, -0.5], [0.4, 0.5], [0.3, -0.8]], dtype="float32")
OLD_W, OLD_B = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]), np.array([0.0, 0.0, 0.2])
NEW_W, NEW_B = np.array([[0.5, 0.3, -0.4], [-0.5, 1.2, 0.1]]), np.array([0.1, -0.2, 0.0])
# old logits (1, .2, -1), (.1, .9, -.8), (-1, -.5, 1.7), (.4, .5, -.7), (.3, -.8, .7):
# argmax 0, 1, 2, 1, 2; with these labels the old model is right on samples 0, 2, 3.
LABELS = np.array([0, 2, 2, 1, 0])
SUPPORT = np.array([True, False, True, True, False])
LAMBDA = 0.7


def linear(weight, bias, activation="softmax") -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation=activation)])
    model.set_weights([weight.astype("float32"), bias.astype("float32")])
    return model


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def value(tensor) -> float:
    return float(keras.ops.convert_to_numpy(tensor))


P_OLD = softmax(X.astype(np.float64) @ OLD_W + OLD_B)
P_NEW = softmax(X.astype(np.float64) @ NEW_W + NEW_B)
CE = -np.log(P_NEW[np.arange(5), LABELS])


@pytest.fixture
def models() -> tuple[keras.Model, keras.Model]:
    return linear(OLD_W, OLD_B), linear(NEW_W, NEW_B)


def test_the_old_model_is_right_where_the_comments_say():
    np.testing.assert_array_equal(P_OLD.argmax(axis=1) == LABELS, SUPPORT)


@pytest.mark.parametrize("name", ["BCCrossEntropyLoss", "BCNLLLoss", "BCKLDivLoss"])
def test_new_error_losses_are_the_batch_mean_by_hand(models, name):
    h1, h2 = models
    loss = getattr(bcml, name)(h1, h2, lambda_c=LAMBDA)
    expected = np.mean(CE + LAMBDA * SUPPORT * CE)
    assert value(loss(X, LABELS)) == pytest.approx(expected, rel=1e-5)
    one_hot = np.eye(3)[LABELS]  # BCML's KL and strict-imitation classes take one-hot labels
    assert value(loss(X, one_hot)) == pytest.approx(expected, rel=1e-5)


def test_bcml_tf_cross_entropy_and_kl_sum_over_the_batch_n_times_ours(models):
    h1, h2 = models
    # BCML TF: SparseCategoricalCrossentropy(reduction=SUM)(y, h2(x)) + λ · the same on S
    published = CE.sum() + LAMBDA * CE[SUPPORT].sum()
    ours = value(bcml.BCCrossEntropyLoss(h1, h2, LAMBDA)(X, LABELS))
    assert published == pytest.approx(len(X) * ours, rel=1e-5)


def test_bcml_tf_nll_gathered_every_pair_of_the_batch_ours_is_the_nll(models):
    h1, h2 = models

    def published_nll(p: np.ndarray, labels: np.ndarray) -> float:
        # tf.gather(p, y, axis=1) is p[:, y], an [N, N] matrix p_i[y_j]; then −mean(log(clip))
        return -np.mean(np.log(np.clip(p[:, labels], 1e-10, 4.0)))

    published = published_nll(P_NEW, LABELS) + LAMBDA * published_nll(
        P_NEW[SUPPORT], LABELS[SUPPORT]
    )
    true_nll = CE.mean() + LAMBDA * CE[SUPPORT].mean()  # the pairs (i, y_i) only
    ours = value(bcml.BCNLLLoss(h1, h2, LAMBDA)(X, LABELS))
    assert abs(published - true_nll) > 0.1  # the [N, N] gather is not the NLL
    assert ours == pytest.approx(CE.mean() + LAMBDA * np.mean(SUPPORT * CE), rel=1e-5)


def published_strict_imitation_dissonance(p_new: np.ndarray) -> float:
    """BCML TF: tf1.losses.log_loss(one-hot y on S, h2(x_S)): h1 only chooses S."""
    targets = np.eye(3)[LABELS][SUPPORT]
    p = p_new[SUPPORT]
    eps = 1e-7
    return float(np.mean(-(targets * np.log(p + eps) + (1 - targets) * np.log(1 - p + eps))))


def test_strict_imitation_imitates_h1s_probabilities_bcml_tf_compared_with_the_labels(models):
    h1, h2 = models
    # a second old model with the same answers (argmax) but other probabilities
    sharper = linear(3.0 * OLD_W, 3.0 * OLD_B)
    p_sharper = softmax(X.astype(np.float64) @ (3 * OLD_W) + 3 * OLD_B)
    # BCML's dissonance reads only h2's probabilities and the labels on S, and S is the same
    # for both old models: it cannot tell them apart
    assert (p_sharper.argmax(axis=1) == P_OLD.argmax(axis=1)).all()
    published = np.mean(CE) + LAMBDA * published_strict_imitation_dissonance(P_NEW)
    for old, p_old in ((h1, P_OLD), (sharper, p_sharper)):
        soft_ce = -(p_old * np.log(P_NEW)).sum(axis=1)
        expected = np.mean(CE + LAMBDA * SUPPORT * soft_ce)
        for name in ("BCStrictImitationCrossEntropyLoss", "BCStrictImitationNLLLoss"):
            got = value(getattr(bcml, name)(old, h2, LAMBDA)(X, np.eye(3)[LABELS]))
            assert got == pytest.approx(expected, rel=1e-5)
    first = value(bcml.BCStrictImitationCrossEntropyLoss(h1, h2, LAMBDA)(X, LABELS))
    second = value(bcml.BCStrictImitationCrossEntropyLoss(sharper, h2, LAMBDA)(X, LABELS))
    assert abs(first - second) > 0.01
    assert abs(first - published) > 0.01 and abs(second - published) > 0.01
    # and strict imitation is not the new-error loss (it is in BCML's PyTorch code)
    assert abs(first - value(bcml.BCCrossEntropyLoss(h1, h2, LAMBDA)(X, LABELS))) > 0.01


def test_strict_imitation_kl_by_hand(models):
    h1, h2 = models
    kl = (P_OLD * (np.log(P_OLD) - np.log(P_NEW))).sum(axis=1)
    expected = np.mean(CE + LAMBDA * SUPPORT * kl)
    got = value(bcml.BCStrictImitationKLDivLoss(h1, h2, LAMBDA)(X, LABELS))
    assert got == pytest.approx(expected, rel=1e-5)


def test_logit_models_with_from_logits(models):
    h1 = linear(OLD_W, OLD_B, activation=None)
    h2 = linear(NEW_W, NEW_B, activation=None)
    got = value(bcml.BCCrossEntropyLoss(h1, h2, LAMBDA, from_logits=True)(X, LABELS))
    assert got == pytest.approx(np.mean(CE + LAMBDA * SUPPORT * CE), rel=1e-5)


def test_only_h2_receives_gradients(models):
    h1, h2 = models  # on the torch backend (conftest.py) Keras variables wrap torch tensors
    bcml.BCStrictImitationCrossEntropyLoss(h1, h2, LAMBDA)(X, LABELS).backward()
    assert all(variable.value.grad is None for variable in h1.weights)
    assert all(
        isinstance(variable.value.grad, torch.Tensor) and variable.value.grad.abs().sum() > 0
        for variable in h2.weights
    )


def test_bad_loss_arguments(models):
    h1, h2 = models
    for bad in (-0.1, float("nan"), True, "0.5"):
        with pytest.raises(InputError, match="expected a finite number ≥ 0"):
            bcml.BCCrossEntropyLoss(h1, h2, bad)
    with pytest.raises(InputError, match="h1 and h2 are the same model"):
        bcml.BCCrossEntropyLoss(h1, h1, 0.5)
    with pytest.raises(InputError, match=r"h2 \(the new model\) must be a Keras model"):
        bcml.BCCrossEntropyLoss(h1, lambda x: x, 0.5)
    with pytest.warns(FliplessWarning, match=r"ignores the keyword arguments \['clip_value_min'\]"):
        bcml.BCNLLLoss(h1, h2, 0.5, clip_value_min=1e-10)
    with pytest.raises(MismatchError, match=r"expected class indices \[N\] or one-hot labels"):
        bcml.BCCrossEntropyLoss(h1, h2, 0.5)(X, np.zeros((5, 4)))


# ---------------------------------------------------------------- the model class
def test_new_error_model_divides_the_dissonance_by_n_bcml_by_the_support(models):
    h1, _ = models
    model = bcml.BCNewErrorCompatibilityModel(
        [keras.Input((2,)), keras.layers.Dense(3, activation="softmax")], h1=h1, lambda_c=LAMBDA
    )
    model.new_model.set_weights([NEW_W.astype("float32"), NEW_B.astype("float32")])
    model.compile("sgd", loss="sparse_categorical_crossentropy")
    assert model.from_logits is False and model.h1 is h1 and model.lambda_c == LAMBDA
    ours = value(model.compute_loss(X, LABELS, model(X), training=False))
    assert ours == pytest.approx(CE.mean() + LAMBDA * CE[SUPPORT].sum() / len(X), rel=1e-5)
    published = CE.mean() + LAMBDA * CE[SUPPORT].mean()  # compiled loss averaged over S
    assert abs(published - ours) > 0.05


def test_new_error_model_fits_and_reads_from_logits_from_the_compiled_loss(models):
    h1, _ = models
    before = [np.array(w) for w in h1.get_weights()]
    model = bcml.BCNewErrorCompatibilityModel(
        [keras.Input((2,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(3)],
        h1=linear(OLD_W, OLD_B, activation=None),
        lambda_c=0.5,
    )
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert model.from_logits is True
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    history = model.fit(x, (x @ OLD_W).argmax(axis=1), epochs=2, verbose=0).history
    assert {"loss", "negative_flip_rate", "new_error"} <= set(history)
    assert all(np.array_equal(a, b) for a, b in zip(before, h1.get_weights(), strict=True))
    with pytest.raises(InputError, match="trains with the sparse categorical cross-entropy"):
        model.compile("adam", loss="mse")


def test_new_error_model_takes_a_model_and_round_trips_through_a_file(models, tmp_path):
    h1, h2 = models
    model = bcml.BCNewErrorCompatibilityModel(h2, h1=h1, lambda_c=0.3)
    model.compile("sgd", loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "bc.keras")
    loaded = keras.saving.load_model(tmp_path / "bc.keras")
    assert isinstance(loaded, bcml.BCNewErrorCompatibilityModel)
    assert (loaded.lambda_c, loaded.from_logits) == (0.3, False)
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert loaded.compiled  # compiled again from the saved settings
    assert loaded.evaluate(X, LABELS, verbose=0) == pytest.approx(
        model.evaluate(X, LABELS, verbose=0), rel=1e-6
    )


def test_new_error_model_needs_h1_and_layers(models):
    h1, _ = models
    with pytest.raises(InputError, match=r"h1 .* is required"):
        bcml.BCNewErrorCompatibilityModel([keras.layers.Dense(3)], lambda_c=0.5)
    with pytest.raises(InputError, match="layers is required"):
        bcml.BCNewErrorCompatibilityModel(h1=h1, lambda_c=0.5)
    with pytest.raises(InputError, match="expected a finite number ≥ 0"):
        bcml.BCNewErrorCompatibilityModel([keras.layers.Dense(3)], h1=h1, lambda_c=-1)
