"""CompatibleModel: compile / fit / evaluate / predict / save with the compatibility objective."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

keras = pytest.importorskip("keras")

import flipless  # noqa: E402
from flipless.errors import InputError, MismatchError  # noqa: E402
from flipless.keras import CompatibilityLoss, CompatibleModel, build_loss  # noqa: E402
from flipless.losses import Term  # noqa: E402

IMAGES, LABELS = load_digits(return_X_y=True)
X = (IMAGES[:400] / 16.0).astype("float32")
Y = LABELS[:400]
X_VAL, Y_VAL = (IMAGES[400:600] / 16.0).astype("float32"), LABELS[400:600]


def mlp(seed: int, activation: str | None = None, regularizer=None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", kernel_regularizer=regularizer),
            keras.layers.Dense(10, activation=activation),
        ]
    )


@pytest.fixture(scope="module")
def old_model() -> keras.Model:
    """An old model trained briefly on the first 150 digits (right on most, not all)."""
    model = mlp(0)
    model.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(X[:150], Y[:150], epochs=15, batch_size=32, verbose=0)
    return model


def numpy(tensor) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor)


def weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def test_fit_trains_the_new_model_never_the_old_one_and_logs_everything(old_model):
    before_old = weights(old_model)
    new = mlp(1)
    before_new = weights(new)
    model = CompatibleModel(new, old_model, objective="fd-kl")
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    history = model.fit(
        X, Y, epochs=2, batch_size=64, validation_data=(X_VAL, Y_VAL), verbose=0
    ).history
    assert all(np.array_equal(a, b) for a, b in zip(before_old, weights(old_model), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(before_new, weights(new), strict=True))
    assert not old_model.trainable
    expected = {
        "loss",
        "accuracy",
        "cross_entropy",
        "kl",
        "negative_flip_rate",
        "positive_flip_rate",
        "backward_trust_compatibility",
        "backward_error_compatibility",
    }
    assert set(history) == expected | {f"val_{name}" for name in expected}
    assert history["loss"][1] < history["loss"][0]
    assert all(np.isfinite(history[name]).all() for name in history)


def test_evaluated_flip_metrics_equal_compare_on_the_predictions(old_model):
    model = CompatibleModel(mlp(2), old_model)
    model.compile("adam")
    model.fit(X, Y, epochs=1, batch_size=50, verbose=0)
    logs = model.evaluate(X_VAL, Y_VAL, batch_size=37, verbose=0, return_dict=True)
    comparison = flipless.compare(
        old_model.predict(X_VAL, verbose=0), model.predict(X_VAL, verbose=0), Y_VAL
    )
    for name in (
        "negative_flip_rate",
        "positive_flip_rate",
        "backward_trust_compatibility",
        "backward_error_compatibility",
    ):
        assert logs[name] == pytest.approx(getattr(comparison, name), rel=1e-6), name


def test_compute_loss_is_the_objective_plus_the_layers_regularisation(old_model):
    new = mlp(3, regularizer=keras.regularizers.L2(0.01))
    model = CompatibleModel(new, old_model, objective="ldi")
    x, y = X[:64], Y[:64]
    total = numpy(model.compute_loss(x, y, model(x), training=False))
    objective, _ = build_loss("ldi")(model(x), y, old_model(x))
    kernel = np.array(new.layers[0].kernel)
    np.testing.assert_allclose(total, numpy(objective) + 0.01 * (kernel**2).sum(), rtol=1e-5)


def test_cached_old_logits_give_the_numbers_of_the_live_old_model(old_model):
    new = mlp(4)
    live = CompatibleModel(new, old_model, objective="fd-kl")
    cached = CompatibleModel(new, None, objective="fd-kl")  # shares the new model's weights
    live.compile("sgd")
    cached.compile("sgd")
    old_logits = old_model.predict(X_VAL, verbose=0)
    from_model = live.evaluate(X_VAL, Y_VAL, batch_size=200, verbose=0, return_dict=True)
    from_cache = cached.evaluate(
        {"inputs": X_VAL, "old_logits": old_logits},
        Y_VAL,
        batch_size=200,
        verbose=0,
        return_dict=True,
    )
    assert from_cache == pytest.approx(from_model, rel=1e-6)
    np.testing.assert_array_equal(
        cached.predict({"inputs": X_VAL, "old_logits": old_logits}, verbose=0),
        cached.predict(X_VAL, verbose=0),
    )
    history = cached.fit(
        {"inputs": X, "old_logits": old_model.predict(X, verbose=0)}, Y, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()


def test_sample_weights_weight_every_part_of_the_objective(old_model):
    model = CompatibleModel(mlp(5), old_model, objective="new-error")
    model.compile("sgd")
    sample_weight = np.linspace(0.0, 2.0, len(Y_VAL)).astype("float32")
    logs = model.evaluate(
        X_VAL, Y_VAL, sample_weight=sample_weight, batch_size=200, verbose=0, return_dict=True
    )
    expected, _ = build_loss("new-error")(model(X_VAL), Y_VAL, old_model(X_VAL), sample_weight)
    assert logs["loss"] == pytest.approx(float(numpy(expected)), rel=1e-5)


def test_probability_outputs_give_the_numbers_of_logit_outputs(old_model):
    logits_model = mlp(6)
    softmax_model = mlp(6, activation="softmax")
    softmax_model.set_weights(logits_model.get_weights())
    old_softmax = mlp(0, activation="softmax")
    old_softmax.set_weights(old_model.get_weights())
    x, y = X_VAL[:100], Y_VAL[:100]
    from_logits = CompatibleModel(logits_model, old_model, objective="fd-kl")
    from_probabilities = CompatibleModel(
        softmax_model, old_softmax, objective="fd-kl", from_logits=False
    )
    expected = numpy(from_logits.compute_loss(x, y, from_logits(x), training=False))
    got = numpy(from_probabilities.compute_loss(x, y, from_probabilities(x), training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_an_objective_without_the_old_model_trains_without_one():
    loss = CompatibilityLoss(
        [Term("new_error", focus="new_incorrect", base=0.0, boost=1.0, weight=1.0)]
    )
    model = CompatibleModel(mlp(7), None, objective=loss, flip_metrics=False)
    model.compile("sgd")
    history = model.fit(X, Y, epochs=1, verbose=0).history
    assert set(history) == {"loss", "cross_entropy", "new_error"}


def test_class_mask_reaches_the_objective(old_model):
    mask = np.arange(10) < 8  # pretend the old model knew classes 0-7 only
    model = CompatibleModel(mlp(8), old_model, objective="fd-kl", class_mask=mask)
    x, y = X_VAL[:50], Y_VAL[:50]
    total = numpy(model.compute_loss(x, y, model(x), training=False))
    expected, _ = build_loss("fd-kl")(model(x), y, old_model(x), class_mask=mask)
    unmasked, _ = build_loss("fd-kl")(model(x), y, old_model(x))
    np.testing.assert_allclose(total, numpy(expected), rtol=1e-6)
    assert abs(float(numpy(unmasked)) - float(total)) > 1e-4


def test_save_and_load_keep_both_models_and_the_objective(old_model, tmp_path):
    model = CompatibleModel(mlp(9), old_model, objective=build_loss("fd-kl", temperature=4.0))
    model.compile(keras.optimizers.Adam(0.01), metrics=["accuracy"])
    model.fit(X, Y, epochs=1, verbose=0)
    model.save(tmp_path / "compatible.keras")
    loaded = keras.saving.load_model(tmp_path / "compatible.keras")
    assert isinstance(loaded, CompatibleModel)
    np.testing.assert_array_equal(loaded.predict(X_VAL, verbose=0), model.predict(X_VAL, verbose=0))
    for mine, theirs in zip(weights(old_model), weights(loaded.old_model), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert not loaded.old_model.trainable
    assert loaded.objective.get_config() == model.objective.get_config()
    assert model.evaluate(X_VAL, Y_VAL, verbose=0) == pytest.approx(
        loaded.evaluate(X_VAL, Y_VAL, verbose=0), rel=1e-6
    )
    loaded.fit(X, Y, epochs=1, verbose=0)  # compiled again from the saved settings


def test_bad_arguments_are_errors_that_say_how_to_fix_them(old_model):
    new = mlp(10)
    with pytest.raises(InputError, match="compile\\(\\) takes no loss"):
        CompatibleModel(new, old_model).compile("sgd", loss="mse")
    with pytest.raises(InputError, match="the same object"):
        CompatibleModel(old_model, old_model)
    with pytest.raises(InputError, match="new_model must be a Keras model or layer; got list"):
        CompatibleModel([new], old_model)
    with pytest.raises(InputError, match="objective must be a preset name"):
        CompatibleModel(new, old_model, objective=build_loss)
    with pytest.raises(InputError, match="class_mask must hold booleans"):
        CompatibleModel(new, old_model, class_mask=[1, 0])
    with pytest.raises(InputError, match="Unknown loss 'fd'"):
        CompatibleModel(new, old_model, objective="fd")
    no_old = CompatibleModel(new, None)
    with pytest.raises(InputError, match="has no old model and the batch carries no cached"):
        no_old.compute_loss(X[:4], Y[:4], no_old(X[:4]))
    with pytest.raises(InputError, match="must have exactly the keys 'inputs' and 'old_logits'"):
        no_old({"inputs": X[:4], "old_logits": X[:4, :10], "extra": X[:4]})
    model = CompatibleModel(new, old_model)
    with pytest.raises(MismatchError, match=r"y has shape \(4, 10\); expected class indices"):
        model.compute_loss(X[:4], np.eye(10)[Y[:4]], model(X[:4]))
