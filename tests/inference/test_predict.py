"""predict: logits in data order, batched and without gradients, checked against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flipless import compare
from flipless.data.labeled import LabeledData
from flipless.errors import InputError, MismatchError
from flipless.inference import (
    in_data_order,
    predict,
    predicted_classes,
    resolve_device,
    softmax,
)
from flipless.io import compare_files, write_predictions

WEIGHT = np.array([[1.0, -2.0], [0.5, 0.25], [-1.0, 3.0]])
BIAS = np.array([0.1, -0.2, 0.3])
INPUTS = np.array([[1.0, 2.0], [-1.0, 0.5], [3.0, -1.0], [0.0, 0.0], [2.5, 1.5]])


def linear_model() -> nn.Linear:
    model = nn.Linear(2, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(WEIGHT))
        model.bias.copy_(torch.from_numpy(BIAS))
    return model


def data(labels=(0, 1, 2, 0, 1)) -> LabeledData:
    return LabeledData(
        inputs=torch.from_numpy(INPUTS),
        labels=torch.tensor(labels),
        ids=torch.tensor([40, 11, 7, 23, 5]),
        class_names=("a", "b", "c"),
        name="toy",
    )


class Recorder(nn.Module):
    """Logits from a linear layer; records the mode and the grad mode it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = linear_model()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.linear(inputs)


def test_logits_equal_the_affine_map_computed_in_numpy_in_data_order() -> None:
    calls: list[int] = []

    predictions = predict(linear_model(), data(), batch_size=2, on_batch=calls.append)

    # By hand: z_c = w_c · x + b_c, e.g. row 0: 1 − 4 + 0.1, 0.5 + 0.5 − 0.2, −1 + 6 + 0.3.
    by_hand = [
        [-2.9, 0.8, 5.3],
        [-1.9, -0.575, 2.8],
        [5.1, 1.05, -5.7],
        [0.1, -0.2, 0.3],
        [-0.4, 1.425, 2.3],
    ]
    np.testing.assert_allclose(predictions.logits, by_hand, rtol=0, atol=1e-12)
    assert predictions.ids.tolist() == [40, 11, 7, 23, 5]
    assert predictions.labels.tolist() == [0, 1, 2, 0, 1]
    assert predictions.class_names == ("a", "b", "c")
    assert calls == [2, 2, 1]  # 5 samples in batches of 2
    assert predictions.predicted.tolist() == [2, 2, 0, 2, 2]


def test_batch_size_does_not_change_the_logits() -> None:
    whole = predict(linear_model(), data(), batch_size=512).logits
    one_by_one = predict(linear_model(), data(), batch_size=1).logits
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-15, atol=0)


def test_runs_in_eval_mode_without_gradients_and_restores_the_mode() -> None:
    model = Recorder().train()

    predict(model, data(), batch_size=3)

    assert model.seen == [(False, False), (False, False)]
    assert model.training  # put back as it was
    assert predict(model.eval(), data()).logits.shape == (5, 3) and not model.training


def test_texts_are_passed_as_lists_of_strings() -> None:
    class Lengths(nn.Module):
        def forward(self, texts: list[str]) -> torch.Tensor:
            assert isinstance(texts, list) and all(isinstance(text, str) for text in texts)
            length = torch.tensor([float(len(text)) for text in texts])
            return torch.stack([length, -length], dim=1)

    texts = LabeledData.from_arrays(["a", "abc", "ab"], [0, 1, 0], class_names=("x", "y"))

    logits = predict(Lengths(), texts, batch_size=2).logits

    np.testing.assert_array_equal(logits, [[1.0, -1.0], [3.0, -3.0], [2.0, -2.0]])


def test_ties_go_to_the_lowest_class_and_probabilities_are_the_softmax() -> None:
    log2, log3 = math.log(2.0), math.log(3.0)
    logits = np.array([[0.0, log2, log3], [5.0, 5.0, 1.0], [1000.0, 1000.0, -1000.0]])

    probabilities = softmax(logits)

    np.testing.assert_allclose(probabilities[0], [1 / 6, 2 / 6, 3 / 6], rtol=1e-15)
    np.testing.assert_allclose(probabilities[2], [0.5, 0.5, 0.0], rtol=0, atol=1e-300)
    assert probabilities.dtype == np.float64
    assert np.asarray(logits).argmax(axis=1).tolist() == [2, 0, 0]


def test_predicted_classes_is_the_argmax_of_predict() -> None:
    assert predicted_classes(linear_model(), data(), batch_size=2).tolist() == [2, 2, 0, 2, 2]


def test_a_model_with_another_number_of_classes_is_a_mismatch() -> None:
    two_classes = nn.Linear(2, 2).double()
    with pytest.raises(MismatchError, match=r"2 logits per sample but toy has 3 classes"):
        predict(two_classes, data())


def test_an_output_that_is_not_logits_is_refused() -> None:
    class Flat(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return inputs.sum(dim=1)

    with pytest.raises(InputError, match=r"returned \(5,\) for a batch of 5 samples"):
        predict(Flat(), data())


def test_bad_arguments_say_what_was_expected() -> None:
    with pytest.raises(InputError, match="expected a flipless LabeledData"):
        predict(linear_model(), INPUTS)
    with pytest.raises(InputError, match=r"batch_size=0"):
        predict(linear_model(), data(), batch_size=0)
    with pytest.raises(InputError, match="expected one of cpu, cuda, auto"):
        resolve_device("tpu")


def test_cuda_where_there_is_none_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"CUDA is not available.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="CUDA is not available"):
        predict(linear_model(), data(), device="cuda:0")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_prediction_files_compare_exactly_as_the_arrays_do(tmp_path) -> None:
    split = data()
    old = predict(linear_model(), split)
    shifted = linear_model()
    with torch.no_grad():
        shifted.bias.add_(torch.tensor([0.0, 1.5, -0.5], dtype=torch.float64))
    new = predict(shifted, split)
    for name, predictions in (("old", old), ("new", new)):
        write_predictions(
            tmp_path / f"{name}.parquet",
            predictions.ids,
            predictions.predicted,
            labels=predictions.labels,
            scores=predictions.logits,
            class_names=predictions.class_names,
        )

    from_files = compare_files(tmp_path / "old.parquet", tmp_path / "new.parquet")
    in_memory = compare(
        old.logits, new.logits, old.labels, ids=old.ids, class_names=list(old.class_names)
    )

    assert from_files.to_dict() == in_memory.to_dict()
    assert from_files.negative_flips + from_files.positive_flips > 0  # the models differ


def test_the_logit_columns_follow_the_data_classes_by_name() -> None:
    predictions = predict(linear_model(), data())  # model rows: by hand [-2.9, 0.8, 5.3], …

    reordered = in_data_order(predictions, ["c", "a", "b"])  # the model's rows are c, a, b

    # data class a is the model's row 1, b its row 2, c its row 0
    np.testing.assert_array_equal(reordered.logits, predictions.logits[:, [1, 2, 0]])
    assert reordered.logits[0].tolist() == pytest.approx([0.8, 5.3, -2.9], abs=1e-12)
    assert in_data_order(predictions, None) is predictions
    assert in_data_order(predictions, ("a", "b", "c")) is predictions
    with pytest.raises(MismatchError, match=r"1 only in the model \('z'\) and 1 only in the data"):
        in_data_order(predictions, ["a", "b", "z"])
