"""Running a trained model over data: logits, predicted classes and probabilities.

::

    from flipless.inference import predict
    predictions = predict(model, data, batch_size=256, device="auto")
    predictions.ids, predictions.labels, predictions.logits, predictions.predicted
"""

from flipless.inference.predict import (
    DEVICES,
    Predictions,
    in_data_order,
    predict,
    predicted_classes,
    resolve_device,
    softmax,
)

__all__ = [
    "DEVICES",
    "Predictions",
    "in_data_order",
    "predict",
    "predicted_classes",
    "resolve_device",
    "softmax",
]
