"""Post-hoc baselines: the output ensemble by hand, uniform and greedy soups on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flipless.data.labeled import LabeledData
from flipless.errors import InputError, MismatchError
from flipless.merge.baselines import (
    GreedySoup,
    OutputEnsemble,
    greedy_soup,
    output_ensemble,
    uniform_soup,
)
from flipless.merge.selection import predict_labels, select_old_weight

# ------------------------------------------------------------------------- output ensemble

# softmax rows chosen to be exact: old [1/4, 3/4] and [1/2, 1/2]; new [4/5, 1/5] and [1/10, 9/10]
OLD_LOGITS = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]], dtype=torch.float64)
NEW_LOGITS = torch.tensor([[math.log(4.0), 0.0], [0.0, math.log(9.0)]], dtype=torch.float64)
# w = 1/4: 1/4 · old + 3/4 · new
EXPECTED = torch.tensor(
    [[0.0625 + 0.6, 0.1875 + 0.15], [0.125 + 0.075, 0.125 + 0.675]], dtype=torch.float64
)


def test_output_ensemble_matches_the_hand_computation_in_float64():
    probabilities = output_ensemble(OLD_LOGITS, NEW_LOGITS, 0.25)
    assert probabilities.dtype == torch.float64
    torch.testing.assert_close(probabilities, EXPECTED, rtol=0, atol=1e-15)
    log_probabilities = output_ensemble(OLD_LOGITS, NEW_LOGITS, 0.25, log=True)
    torch.testing.assert_close(log_probabilities, EXPECTED.log(), rtol=1e-14, atol=0)


def test_output_ensemble_at_the_ends_is_one_model_exactly():
    new_probabilities = torch.softmax(NEW_LOGITS, dim=1)
    old_probabilities = torch.softmax(OLD_LOGITS, dim=1)
    assert torch.equal(output_ensemble(OLD_LOGITS, NEW_LOGITS, 0.0), new_probabilities)
    assert torch.equal(output_ensemble(OLD_LOGITS, NEW_LOGITS, 1.0), old_probabilities)
    log_new = output_ensemble(OLD_LOGITS, NEW_LOGITS, 0.0, log=True)
    assert torch.equal(log_new, torch.log_softmax(NEW_LOGITS, dim=1))
    log_old = output_ensemble(OLD_LOGITS, NEW_LOGITS, 1.0, log=True)
    assert torch.equal(log_old, torch.log_softmax(OLD_LOGITS, dim=1))


def test_output_ensemble_log_is_stable_where_probabilities_underflow():
    old = torch.tensor([[0.0, 2000.0]], dtype=torch.float64)  # class 0: e^-2000
    new = torch.tensor([[0.0, 1000.0]], dtype=torch.float64)  # class 0: e^-1000
    log_probabilities = output_ensemble(old, new, 0.5, log=True)
    # log(0.5 e^-2000 + 0.5 e^-1000) = log 0.5 − 1000 + log(1 + e^-1000) = log 0.5 − 1000
    assert log_probabilities[0, 0].item() == pytest.approx(math.log(0.5) - 1000.0, rel=1e-15)
    assert log_probabilities[0, 1].item() == pytest.approx(0.0, abs=1e-15)


def test_output_ensemble_dtypes_and_arrays():
    half = output_ensemble(OLD_LOGITS.half(), NEW_LOGITS.half(), 0.25)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), EXPECTED, rtol=0, atol=2e-3)
    from_arrays = output_ensemble(OLD_LOGITS.numpy(), NEW_LOGITS.tolist(), 0.25)
    torch.testing.assert_close(from_arrays, EXPECTED, rtol=0, atol=1e-15)
    rows = output_ensemble(torch.randn(7, 5), torch.randn(7, 5), 0.6).sum(dim=1)
    torch.testing.assert_close(rows, torch.ones(7), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("old", "new", "weight", "error", "match"),
    [
        (OLD_LOGITS, NEW_LOGITS[:1], 0.5, MismatchError, r"old_logits has shape \(2, 2\) but new"),
        (OLD_LOGITS[0], NEW_LOGITS[0], 0.5, InputError, r"shape \(2,\); expected floating logits"),
        (torch.ones(2, 2, dtype=torch.int64), NEW_LOGITS, 0.5, InputError, "torch.int64 tensor"),
        (OLD_LOGITS, NEW_LOGITS * math.inf, 0.5, InputError, "new_logits holds NaN or infinite"),
        (OLD_LOGITS * math.nan, NEW_LOGITS, 0.5, InputError, "old_logits holds NaN"),
        (OLD_LOGITS, NEW_LOGITS, 1.5, InputError, r"old_weight=1.5; expected a weight .* \[0, 1\]"),
        (OLD_LOGITS, NEW_LOGITS, -0.1, InputError, r"\[0, 1\]"),
    ],
)
def test_output_ensemble_refuses_bad_inputs(old, new, weight, error, match):
    with pytest.raises(error, match=match):
        output_ensemble(old, new, weight)


def _linear(seed: int, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, classes).double()


def test_output_ensemble_module_returns_log_probabilities_of_the_mix():
    old, new = _linear(0), _linear(1)
    inputs = torch.randn(6, 4, dtype=torch.float64)
    ensemble = OutputEnsemble(old, new, 0.3)
    with torch.no_grad():
        expected = 0.3 * torch.softmax(old(inputs), 1) + 0.7 * torch.softmax(new(inputs), 1)
        torch.testing.assert_close(ensemble(inputs).exp(), expected, rtol=0, atol=1e-15)
        assert torch.equal(OutputEnsemble(old, new, 0.0)(inputs).argmax(1), new(inputs).argmax(1))
    assert len(list(ensemble.parameters())) == 4  # both models' weight and bias


def test_output_ensemble_module_can_be_selected_like_any_model():
    old, new = _linear(0), _linear(1)
    inputs = torch.randn(30, 4, dtype=torch.float64)
    with torch.no_grad():
        labels = new(inputs).argmax(dim=1)
    dev = LabeledData(inputs, labels, torch.arange(30), ("a", "b", "c"), "dev")
    selection = select_old_weight(
        lambda w: OutputEnsemble(old, new, w), dev, old_model=old, rule="max-accuracy"
    )
    assert selection.new_accuracy == 1.0  # the labels are the new model's answers
    assert selection.chosen == 0.0
    assert selection.curve[-1].negative_flip_rate == 0.0  # w = 1 is the old model


def test_output_ensemble_module_refuses_bad_arguments():
    with pytest.raises(InputError, match=r"new_model is str; expected a torch\.nn\.Module"):
        OutputEnsemble(_linear(0), "new.pt", 0.5)
    with pytest.raises(InputError, match="old_weight=2"):
        OutputEnsemble(_linear(0), _linear(1), 2)


# ----------------------------------------------------------------------------- soups


def test_uniform_soup_averages_floating_tensors_and_keeps_the_first_models_counters():
    models = []
    for seed, batches in ((0, 1), (1, 2), (2, 4)):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).double()
        for _ in range(batches):
            model(torch.randn(5, 3, dtype=torch.float64))
        models.append(model)
    soup = uniform_soup(models)
    states = [m.state_dict() for m in models]
    for name in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        expected = (states[0][name] + states[1][name] + states[2][name]) / 3.0
        torch.testing.assert_close(soup[name], expected, rtol=0, atol=1e-15)
    assert int(soup["1.num_batches_tracked"]) == 1


def test_uniform_soup_refuses_bad_models():
    with pytest.raises(InputError, match=r"expected a non-empty list of torch\.nn\.Module"):
        uniform_soup([])
    with pytest.raises(InputError, match="models is Linear; expected a non-empty list"):
        uniform_soup(_linear(0))
    with pytest.raises(InputError, match=r"models\[1\] is str"):
        uniform_soup([_linear(0), "b"])
    with pytest.raises(
        MismatchError, match=r"new model 1 .*differs from the old model in 2 tensor shape"
    ):
        uniform_soup([_linear(0), _linear(1, classes=2)])


# Threshold models on one feature: logits [0, x − t], so class 1 iff x > t. Averaging such
# models averages their thresholds, so every soup's dev accuracy is countable by hand.
DEV_X = [k + 0.5 for k in range(10)]  # 0.5 … 9.5
DEV_Y = [int(x > 5) for x in DEV_X]  # the true threshold is 5
THRESHOLDS = [9.2, 4.0, 1.0, 6.0, 3.6]


def _threshold_model(threshold: float) -> nn.Module:
    model = nn.Linear(1, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0], [1.0]]))
        model.bias.copy_(torch.tensor([0.0, -threshold]))
    return model


def _threshold_dev() -> LabeledData:
    inputs = torch.tensor(DEV_X, dtype=torch.float64)[:, None]
    return LabeledData(inputs, torch.tensor(DEV_Y), torch.arange(10), ("low", "high"), "dev")


def test_greedy_soup_adds_models_in_the_hand_computed_order():
    models = [_threshold_model(t) for t in THRESHOLDS]
    # own accuracies (dev points between t and 5 are wrong): t=9.2 → 4 wrong, 0.6; t=4 → 0.9;
    # t=1 → 0.6; t=6 → 0.9; t=3.6 → 0.9. Sorted (ties by position): 1, 3, 4, 0, 2.
    # soup {1}: t=4, 0.9. + 3: t=5, 1.0, added. + 4: t=4.53, 1.0 (a tie), added.
    # + 0: t=(13.6 + 9.2)/4 = 5.7, 0.9, not added. + 2: t=(13.6 + 1)/4 = 3.65, 0.9, not added.
    soup = greedy_soup(models, _threshold_dev())
    assert isinstance(soup, GreedySoup)
    assert soup.chosen == (1, 3, 4)
    assert [step.index for step in soup.steps] == [1, 3, 4, 0, 2]
    assert [step.model_score for step in soup.steps] == pytest.approx([0.9, 0.9, 0.9, 0.6, 0.6])
    assert [step.soup_score for step in soup.steps] == pytest.approx([0.9, 1.0, 1.0, 0.9, 0.9])
    assert [step.added for step in soup.steps] == [True, True, True, False, False]
    assert soup.score == "accuracy"
    bias = soup.state_dict["bias"]
    torch.testing.assert_close(bias, torch.tensor([0.0, -13.6 / 3], dtype=torch.float64))
    np.testing.assert_array_equal(predict_labels(soup.model, _threshold_dev()), DEV_Y)
    frame = soup.to_frame()
    assert list(frame.columns) == ["index", "model_score", "soup_score", "added"]
    assert soup.to_dict()["chosen"] == [1, 3, 4]
    assert bool(frame["added"].iloc[2])


def test_greedy_soup_with_a_score_function():
    models = [_threshold_model(t) for t in THRESHOLDS]

    def share_of_low(predicted: np.ndarray) -> float:
        return float(np.mean(predicted == 0))

    # own scores: the share of dev points below t: 0.9, 0.4, 0.1, 0.6, 0.4 → order 0, 3, 1, 4, 2.
    # soup {0}: 0.9; + 3: t=7.6 → 0.8; + 1: t=6.6 → 0.7; + 4: t=6.4 → 0.6; + 2: t=5.1 → 0.5.
    soup = greedy_soup(models, _threshold_dev(), evaluate=share_of_low)
    assert soup.chosen == (0,)
    assert [step.index for step in soup.steps] == [0, 3, 1, 4, 2]
    assert [step.soup_score for step in soup.steps] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert soup.score == "share_of_low"
    assert torch.equal(soup.state_dict["bias"], models[0].state_dict()["bias"])
    assert soup.model is not models[0]


def test_greedy_soup_refuses_bad_arguments():
    models = [_threshold_model(t) for t in THRESHOLDS]
    dev = _threshold_dev()
    with pytest.raises(
        InputError, match=r"evaluate='nfr' is unknown; expected one of \['accuracy'\]"
    ):
        greedy_soup(models, dev, evaluate="nfr")
    with pytest.raises(InputError, match="evaluate is int; expected a name or a function"):
        greedy_soup(models, dev, evaluate=3)
    with pytest.raises(InputError, match="expected a non-empty list"):
        greedy_soup([], dev)
    with pytest.raises(InputError, match="the split is tuple; expected a LabeledData"):
        greedy_soup(models, (dev.inputs, dev.labels))
    with pytest.raises(InputError, match=r"the soup score 'nan_score' is nan; expected a finite"):

        def nan_score(predicted: np.ndarray) -> float:
            return math.nan

        greedy_soup(models, dev, evaluate=nan_score)
