"""Runs flipless.keras on one Keras backend and writes what it computed (test_backends.py).

Usage: ``KERAS_BACKEND=jax python backend_worker.py INPUT.npz OUTPUT.npz``. Keras fixes its
backend at import, so each backend needs its own process. INPUT holds float64 logits, labels,
a class mask and a JSON list of cases; OUTPUT holds, per case, the per-sample term, the
gradients with respect to both logits (taken with the backend's own autodiff), the focus
weights, the preset objectives and their parts, and the results of a short ``fit`` /
``evaluate`` on digits. The parent compares everything with flipless.losses (torch).
"""

from __future__ import annotations

import json
import os
import sys

BACKEND = os.environ["KERAS_BACKEND"]
if BACKEND == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 for the comparisons

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from flipless.keras import CompatibleModel, build_loss, focus_weights, terms  # noqa: E402

FUNCTIONS = {
    "kl": terms.kl_divergence,
    "logit_matching": terms.logit_matching,
    "strict_imitation": terms.strict_imitation,
    "ldi": terms.logit_difference_inhibition,
    "new_error": terms.new_error,
}


def numpy(tensor) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def gradients(function, new: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d Σ_i function(new, old)_i / d new and / d old (zeros where no gradient flows)."""
    if BACKEND == "torch":
        import torch

        new_t = torch.tensor(new, requires_grad=True)
        old_t = torch.tensor(old, requires_grad=True)
        function(new_t, old_t).sum().backward()
        old_grad = np.zeros_like(old) if old_t.grad is None else old_t.grad.numpy()
        return new_t.grad.numpy(), old_grad
    if BACKEND == "jax":
        grads = jax.grad(lambda n, o: function(n, o).sum(), argnums=(0, 1))(new, old)
        return np.asarray(grads[0]), np.asarray(grads[1])
    import tensorflow as tf

    new_t, old_t = tf.Variable(new), tf.Variable(old)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(function(new_t, old_t))
    new_grad, old_grad = tape.gradient(total, [new_t, old_t])
    return new_grad.numpy(), np.zeros_like(old) if old_grad is None else old_grad.numpy()


def terms_and_gradients(data, cases, out) -> None:
    new, old, labels, mask = data["new"], data["old"], data["labels"], data["mask"]
    for index, case in enumerate(cases):
        function, options = FUNCTIONS[case["kind"]], dict(case["options"])
        if case["masked"]:
            options["class_mask"] = mask

        def per_sample(n, o, function=function, options=options):
            if function is terms.new_error:
                return function(n, labels)
            if function is terms.logit_difference_inhibition:
                return function(n, o, labels, **options)
            return function(n, o, **options)

        value = per_sample(new, old)
        out[f"term/{index}"] = numpy(value)
        out[f"dtype/{index}"] = np.array(str(keras.ops.dtype(value)))
        if not case["masked"]:
            out[f"grad_new/{index}"], out[f"grad_old/{index}"] = gradients(per_sample, new, old)


def focus_and_objectives(data, presets, out) -> None:
    new, old, labels, weights = data["new"], data["old"], data["labels"], data["weights"]
    for rule in ("all", "old_correct", "neg_flip", "new_incorrect"):
        out[f"focus/{rule}"] = numpy(focus_weights(rule, new, old, labels, 0.5, 3.0, weights))
    for preset in presets:
        total, parts = build_loss(preset)(new, labels, old)
        out[f"objective/{preset}/total"] = numpy(total)
        for name, value in parts.items():
            out[f"objective/{preset}/{name}"] = numpy(value)


def mlp(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    )


def short_fit(out) -> None:
    """fit / evaluate / predict of a CompatibleModel, compiled the backend's default way,
    in float64 (see test_fit_trains_compatibly_and_its_flip_metrics_equal_compare)."""
    keras.config.set_floatx("float64")
    try:
        _short_fit(out)
    finally:
        keras.config.set_floatx("float32")


def _short_fit(out) -> None:
    images, labels = load_digits(return_X_y=True)
    x, y = (images[:300] / 16.0).astype("float64"), labels[:300].astype("int32")
    x_val, y_val = (images[300:500] / 16.0).astype("float64"), labels[300:500].astype("int32")
    old = mlp(0)
    old.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    old.fit(x[:100], y[:100], epochs=5, verbose=0)
    old_before = [np.array(w) for w in old.get_weights()]
    model = CompatibleModel(mlp(1), old, objective="fd-kl")
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9))
    history = model.fit(x, y, epochs=2, batch_size=64, validation_data=(x_val, y_val), verbose=0)
    out["fit/history"] = np.array(json.dumps(history.history))
    out["fit/old_unchanged"] = np.array(
        all(np.array_equal(a, b) for a, b in zip(old_before, old.get_weights(), strict=True))
    )
    logs = model.evaluate(x_val, y_val, batch_size=64, verbose=0, return_dict=True)
    out["fit/evaluate"] = np.array(json.dumps(logs))
    cached = CompatibleModel(model.new_model, None, objective="fd-kl")
    cached.compile("sgd")
    old_logits = old.predict(x_val, verbose=0)
    cached_logs = cached.evaluate(
        {"inputs": x_val, "old_logits": old_logits},
        y_val,
        batch_size=64,
        verbose=0,
        return_dict=True,
    )
    out["fit/evaluate_cached"] = np.array(json.dumps(cached_logs))
    out["fit/old_predictions"] = old_logits
    out["fit/new_predictions"] = model.predict(x_val, verbose=0)
    out["fit/labels"] = y_val


def main(source: str, target: str) -> None:
    data = dict(np.load(source))
    spec = json.loads(str(data.pop("spec")))
    out: dict[str, np.ndarray] = {"backend": np.array(keras.backend.backend())}
    terms_and_gradients(data, spec["cases"], out)
    focus_and_objectives(data, spec["presets"], out)
    short_fit(out)
    np.savez(target, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
