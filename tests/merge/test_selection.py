"""Choosing the old-weight on a dev split: the rules by hand, the curve, the candidates, errors."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flipless.data.labeled import LabeledData
from flipless.errors import InputError, MismatchError
from flipless.merge.interpolate import interpolate
from flipless.merge.policy import MergePolicy
from flipless.merge.selection import (
    DEFAULT_GRID,
    CurvePoint,
    WeightRule,
    interpolation_candidates,
    predict_labels,
    select_old_weight,
)

# ----------------------------------------------------------------------------- rules by hand


def _curve(rows: list[tuple[float, float, float]]) -> list[CurvePoint]:
    """Points from (old_weight, accuracy, NFR); the other rates do not enter any rule."""
    return [CurvePoint(a, acc, nfr, 0.0, 1.0, 0.0) for a, acc, nfr in rows]


# old_weight, dev accuracy, dev NFR; the new model (α = 0) has accuracy 0.900
CURVE = _curve(
    [
        (0.0, 0.900, 0.040),
        (0.1, 0.905, 0.030),
        (0.2, 0.895, 0.020),  # exactly at 0.900 − 0.005
        (0.3, 0.893, 0.020),  # same NFR as 0.2, lower accuracy
        (0.4, 0.880, 0.010),  # exactly at 0.900 − 0.02
        (0.5, 0.885, 0.015),
        (0.6, 0.891, 0.025),
        (1.0, 0.800, 0.000),
    ]
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # accuracy ≥ 0.89: α ∈ {0, .1, .2, .3, .6} → the largest is 0.6
        ("max-old-weight-within:0.01", 0.6),
        # accuracy ≥ 0.895 (0.2 sits on the boundary and counts): {0, .1, .2} → 0.2
        ("max-old-weight-within:0.005", 0.2),
        ("max-old-weight-within:0", 0.1),
        ("max-old-weight-within:1", 1.0),
        # {0, .1, .2, .3, .6}: NFR .04 .03 .02 .02 .025 → .2 and .3 tie, .2 is more accurate
        ("min-nfr-within:0.01", 0.2),
        # accuracy ≥ 0.88 admits 0.4 (on the boundary), NFR .010
        ("min-nfr-within:0.02", 0.4),
        ("min-nfr-above:0.9", 0.1),  # {0, .1}: NFR .04, .03
        ("min-nfr-above:0.8", 1.0),  # everything; NFR 0 at α = 1
        ("max-accuracy", 0.1),
    ],
)
def test_each_rule_picks_the_hand_computed_old_weight(rule, expected):
    index, reason = WeightRule.parse(rule).choose(CURVE)
    assert CURVE[index].old_weight == expected
    assert reason


def test_ties_go_to_lower_nfr_then_higher_accuracy_then_smaller_old_weight():
    curve = _curve([(0.0, 0.90, 0.04), (0.1, 0.92, 0.03), (0.2, 0.92, 0.02), (0.3, 0.92, 0.02)])
    # max-accuracy: .1, .2, .3 tie at .92 → lower NFR (.2, .3) → smaller α
    assert curve[WeightRule.parse("max-accuracy").choose(curve)[0]].old_weight == 0.2
    # min-nfr-within:0: NFR .02 at .2 and .3 with equal accuracy → smaller α
    assert curve[WeightRule.parse("min-nfr-within:0").choose(curve)[0]].old_weight == 0.2
    assert curve[WeightRule.parse("min-nfr-above:0.5").choose(curve)[0]].old_weight == 0.2


def test_equal_nfr_goes_to_the_more_accurate_old_weight_even_when_larger():
    curve = _curve([(0.0, 0.90, 0.04), (0.1, 0.91, 0.02), (0.2, 0.92, 0.02)])
    assert curve[WeightRule.parse("min-nfr-within:0.05").choose(curve)[0]].old_weight == 0.2
    assert curve[WeightRule.parse("min-nfr-above:0.9").choose(curve)[0]].old_weight == 0.2


def test_an_accuracy_exactly_at_the_tolerance_counts_despite_float_rounding():
    curve = _curve([(0.0, 0.9, 0.04), (0.5, 0.6, 0.0)])
    assert 0.9 - 0.3 > 0.6  # in floats; mathematically equal
    assert WeightRule.parse("max-old-weight-within:0.3").choose(curve)[0] == 1


def test_rule_text_round_trips():
    assert WeightRule.parse("min-nfr-within:0.005") == WeightRule("min-nfr-within", 0.005)
    assert str(WeightRule.parse("min-nfr-within:0.005")) == "min-nfr-within:0.005"
    assert str(WeightRule.parse("max-accuracy")) == "max-accuracy"
    assert str(WeightRule.parse("min-nfr-above:1")) == "min-nfr-above:1.0"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("smallest-nfr", "is unknown; expected one of"),
        ("max-old-weight-within", "expected 'max-old-weight-within:<x>' with 0 ≤ x ≤ 1"),
        ("min-nfr-within:half", "with 0 ≤ x ≤ 1"),
        ("min-nfr-within:nan", "with 0 ≤ x ≤ 1"),
        ("min-nfr-within:-0.01", "with 0 ≤ x ≤ 1"),
        ("min-nfr-above:1.5", "with 0 ≤ x ≤ 1"),
        ("max-accuracy:0.1", "takes no argument"),
        (0.005, "expected a string"),
    ],
)
def test_bad_rules_are_refused(text, match):
    with pytest.raises(InputError, match=match):
        WeightRule.parse(text)


def test_an_unreachable_floor_names_the_best_accuracy_seen():
    with pytest.raises(
        InputError, match=r"min-nfr-above:0.95.*best dev accuracy was 0.9050 \(old_weight 0.1\)"
    ):
        WeightRule.parse("min-nfr-above:0.95").choose(CURVE)


@pytest.mark.parametrize(
    "weights",
    [[], [0.1, 0.2], [0.0, 0.5, 0.5], [0.0, 0.6, 0.3]],
    ids=["empty", "no0", "repeat", "unsorted"],
)
def test_choose_needs_a_curve_increasing_from_zero(weights):
    with pytest.raises(InputError, match="expected them increasing from 0"):
        WeightRule.parse("max-accuracy").choose(_curve([(a, 0.9, 0.0) for a in weights]))


# ------------------------------------------------------------------ the whole selection, exact

LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
OLD = [0, 1, 2, 0, 1, 2, 1, 2, 0, 1]  # right on the first 6
# the candidate's predictions at each old-weight
PREDICTIONS = {
    0.0: [0, 1, 2, 0, 1, 0, 0, 1, 2, 0],  # breaks sample 5, fixes 6..9
    0.5: [0, 1, 2, 0, 1, 2, 0, 1, 0, 1],  # breaks nothing, fixes 6, 7
    1.0: OLD,
}
# by hand: accuracy, NFR, PFR, BTC = both right / old right, BEC = both wrong / new wrong
EXPECTED = {
    0.0: (0.9, 0.1, 0.4, 5 / 6, 0 / 1),
    0.5: (0.8, 0.0, 0.2, 6 / 6, 2 / 2),
    1.0: (0.6, 0.0, 0.0, 6 / 6, 4 / 4),
}


class FixedPredictions(nn.Module):
    """Answers ``predictions[i]`` (as one-hot scores) for the input value i."""

    def __init__(self, predictions: list[int]) -> None:
        super().__init__()
        self.register_buffer("predictions", torch.tensor(predictions))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.one_hot(self.predictions[inputs.long()], 3).float()


def _dev() -> LabeledData:
    return LabeledData.from_arrays(np.arange(10.0), LABELS, name="dev")


def _factory(calls: list[float]):
    def make_candidate(old_weight: float) -> nn.Module:
        calls.append(old_weight)
        return FixedPredictions(PREDICTIONS[old_weight])

    return make_candidate


def test_the_curve_holds_the_hand_computed_rates_and_the_rule_chooses_on_it():
    calls: list[float] = []
    selection = select_old_weight(
        _factory(calls),
        _dev(),
        old_predictions=OLD,
        grid=(1.0, 0.0, 0.5),
        rule="max-old-weight-within:0.1",
        batch_size=4,
    )
    assert calls == [0.0, 0.5, 1.0]
    assert [p.old_weight for p in selection.curve] == [0.0, 0.5, 1.0]
    for point in selection.curve:
        assert (
            point.accuracy,
            point.negative_flip_rate,
            point.positive_flip_rate,
            point.backward_trust_compatibility,
            point.backward_error_compatibility,
        ) == pytest.approx(EXPECTED[point.old_weight], abs=1e-12)
    assert selection.chosen == 0.5  # accuracy 0.8 ≥ 0.9 − 0.1; at 1.0, 0.6 is not
    assert selection.chosen_point.negative_flip_rate == 0.0
    assert selection.new_accuracy == pytest.approx(0.9)
    assert selection.dev_size == 10
    assert selection.rule == "max-old-weight-within:0.1"
    assert "old_weight 0.5 is the largest old-weight" in selection.reason
    assert "added to the grid" not in selection.reason


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("max-old-weight-within:0.05", 0.0),
        ("min-nfr-within:0.1", 0.5),
        ("min-nfr-above:0.6", 0.5),  # NFR 0 at 0.5 and 1.0: the more accurate one
        ("max-accuracy", 0.0),
    ],
)
def test_other_rules_on_the_exact_curve(rule, expected):
    selection = select_old_weight(
        _factory([]), _dev(), old_predictions=OLD, grid=(0.0, 0.5, 1.0), rule=rule
    )
    assert selection.chosen == expected


def test_zero_is_added_when_the_grid_lacks_it_and_the_reason_says_so():
    calls: list[float] = []
    selection = select_old_weight(
        _factory(calls), _dev(), old_predictions=OLD, grid=[0.5, 1.0], rule="max-accuracy"
    )
    assert calls == [0.0, 0.5, 1.0]
    assert selection.chosen == 0.0
    assert "old_weight 0 (the new model) was added to the grid" in selection.reason


def test_old_scores_and_old_model_give_the_same_curve_as_old_labels():
    by_labels = select_old_weight(_factory([]), _dev(), old_predictions=OLD, grid=(0.0, 0.5, 1.0))
    scores = F.one_hot(torch.tensor(OLD), 3).double() * 5.0
    by_scores = select_old_weight(
        _factory([]), _dev(), old_predictions=scores, grid=(0.0, 0.5, 1.0)
    )
    by_model = select_old_weight(
        _factory([]), _dev(), old_model=FixedPredictions(OLD), grid=(0.0, 0.5, 1.0)
    )
    assert by_labels.curve == by_scores.curve == by_model.curve


def test_unreachable_floor_raises_from_select_old_weight():
    with pytest.raises(InputError, match=r"best dev accuracy was 0.9000 \(old_weight 0\)"):
        select_old_weight(
            _factory([]),
            _dev(),
            old_predictions=OLD,
            grid=(0.0, 0.5, 1.0),
            rule="min-nfr-above:0.95",
        )


def test_to_dict_and_to_frame_carry_the_whole_curve():
    selection = select_old_weight(
        _factory([]), _dev(), old_predictions=OLD, grid=(0.0, 0.5, 1.0), rule="min-nfr-within:0.1"
    )
    document = selection.to_dict()
    assert document["chosen"] == 0.5
    assert document["rule"] == "min-nfr-within:0.1"
    assert [row["old_weight"] for row in document["curve"]] == [0.0, 0.5, 1.0]
    assert document["curve"][0]["negative_flip_rate"] == pytest.approx(0.1)
    frame = selection.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == [0.0, 0.5, 1.0]
    assert list(frame["chosen"]) == [False, True, False]
    assert frame.loc[1.0, "accuracy"] == pytest.approx(0.6)
    assert set(frame.columns) == {
        "accuracy",
        "negative_flip_rate",
        "positive_flip_rate",
        "backward_trust_compatibility",
        "backward_error_compatibility",
        "chosen",
    }


def test_default_grid_is_zero_to_one_in_tenths():
    assert DEFAULT_GRID == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@pytest.mark.parametrize(
    ("grid", "error", "match"),
    [
        ((), InputError, "non-empty sequence"),
        ("0.5", InputError, "non-empty sequence"),
        (
            (0.0, 1.5),
            InputError,
            r"a grid value=1.5; expected a weight of the old model in \[0, 1\]",
        ),
        ((0.0, -0.1), InputError, r"expected a weight of the old model in \[0, 1\]"),
        ((0.0, math.nan), InputError, r"\[0, 1\]"),
        ((0.0, 0.5, 0.5), InputError, "grid repeats 0.5"),
        ((0.0, True), InputError, "expected numbers in"),
        ((0.0, "0.5"), InputError, "expected numbers in"),
    ],
)
def test_bad_grids_are_refused(grid, error, match):
    with pytest.raises(error, match=match):
        select_old_weight(_factory([]), _dev(), old_predictions=OLD, grid=grid)


def test_bad_arguments_are_refused():
    dev = _dev()
    with pytest.raises(InputError, match=r"exactly one of old_predictions= .* and old_model="):
        select_old_weight(_factory([]), dev)
    with pytest.raises(InputError, match="exactly one of"):
        select_old_weight(_factory([]), dev, old_predictions=OLD, old_model=FixedPredictions(OLD))
    with pytest.raises(
        MismatchError, match=r"old_predictions has shape \(9,\); expected labels \[10\]"
    ):
        select_old_weight(_factory([]), dev, old_predictions=OLD[:9])
    with pytest.raises(InputError, match="is unknown"):
        select_old_weight(_factory([]), dev, old_predictions=OLD, rule="best")
    with pytest.raises(InputError, match="batch_size=0; expected a positive integer"):
        select_old_weight(_factory([]), dev, old_predictions=OLD, batch_size=0)
    with pytest.raises(InputError, match="the split is dict; expected a LabeledData"):
        select_old_weight(_factory([]), {"inputs": [], "labels": []}, old_predictions=OLD)
    with pytest.raises(
        InputError, match=r"make_candidate\(0\) returned dict; expected a torch.nn.Module"
    ):
        select_old_weight(lambda a: {}, dev, old_predictions=OLD)


def test_a_model_that_does_not_return_scores_is_refused():
    with pytest.raises(
        InputError, match=r"Identity returned shape \(10,\); expected scores \[batch"
    ):
        predict_labels(nn.Identity(), _dev())

    class Pair(nn.Module):
        def forward(self, inputs):
            return inputs, inputs

    with pytest.raises(
        InputError, match=r"Pair returned tuple; expected scores \[batch, classes\]"
    ):
        predict_labels(Pair(), _dev())


def test_predict_labels_batches_and_restores_the_training_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    data = LabeledData.from_arrays(torch.randn(13, 4), [0] * 13)
    model.train()
    predicted = predict_labels(model, data, batch_size=5)
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = model(data.inputs).argmax(dim=1).numpy()
    np.testing.assert_array_equal(predicted, expected)  # dropout was off
    assert predicted.dtype == np.int64


# ------------------------------------------------------------------------ the candidates


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    model.train()
    model(torch.randn(8, 3, dtype=torch.float64))  # moves the running statistics
    for _ in range(seed):
        model(torch.randn(8, 3, dtype=torch.float64))
    return model.eval()


def test_candidates_interpolate_every_floating_tensor_by_hand():
    old, new = _net(1), _net(2)
    candidate = interpolation_candidates(old, new)(0.3)
    old_state, new_state = old.state_dict(), new.state_dict()
    for name, tensor in candidate.state_dict().items():
        if tensor.is_floating_point():
            expected = 0.3 * old_state[name] + 0.7 * new_state[name]
            torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-15)
        else:  # BatchNorm's counter: from the new model
            assert torch.equal(tensor, new_state[name])
    assert int(candidate.state_dict()["1.num_batches_tracked"]) == 3  # new model: 1 + 2 batches
    assert candidate is not new
    assert torch.equal(new.state_dict()["0.weight"], new_state["0.weight"])  # new left unchanged


def test_candidates_with_a_soup_and_with_fisher_by_hand():
    old, first, second = _net(1), _net(2), _net(3)
    fisher = {"0.weight": torch.full((4, 3), 3.0, dtype=torch.float64)}
    candidate = interpolation_candidates(old, [first, second], weights=[1, 3], fisher=fisher)(0.5)
    state = candidate.state_dict()
    soup = {k: 0.25 * first.state_dict()[k] + 0.75 * second.state_dict()[k] for k in state}
    # Fisher-weighted: (α F θ_old + (1 − α) θ̄) / (α F + 1 − α) = (1.5 θ_old + 0.5 θ̄) / 2
    expected = (1.5 * old.state_dict()["0.weight"] + 0.5 * soup["0.weight"]) / 2.0
    torch.testing.assert_close(state["0.weight"], expected, rtol=0, atol=1e-15)
    expected_bias = 0.5 * old.state_dict()["2.bias"] + 0.5 * soup["2.bias"]
    torch.testing.assert_close(state["2.bias"], expected_bias, rtol=0, atol=1e-15)
    assert torch.equal(state["1.num_batches_tracked"], first.state_dict()["1.num_batches_tracked"])


def test_candidates_at_the_ends_are_the_new_and_the_old_model():
    old, new = _net(1), _net(2)
    make = interpolation_candidates(old, new)
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(make(0.0)(x), new(x), rtol=0, atol=1e-14)
        torch.testing.assert_close(make(1.0)(x), old(x), rtol=0, atol=1e-14)


def test_select_with_real_candidates_measures_the_new_and_old_models_at_the_ends():
    old, new = _net(1), _net(4)
    torch.manual_seed(5)
    inputs = torch.randn(40, 3, dtype=torch.float64)
    with torch.no_grad():
        labels = new(inputs).argmax(dim=1)  # the new model is always right
    labels[:6] = 1 - labels[:6]  # … except on 6 samples
    dev = LabeledData(inputs, labels, torch.arange(40), ("a", "b"), "dev")
    selection = select_old_weight(
        interpolation_candidates(old, new), dev, old_model=old, rule="max-accuracy"
    )
    with torch.no_grad():
        old_right = (old(inputs).argmax(dim=1) == labels).double().mean().item()
    assert selection.curve[0].accuracy == pytest.approx(34 / 40)
    assert selection.curve[-1].accuracy == pytest.approx(old_right)
    assert selection.curve[-1].negative_flip_rate == 0.0  # the old model against itself


def test_merge_state_dicts_copies_integer_tensors():
    old, new = _net(1), _net(2)
    merged = interpolate(old.state_dict(), [new.state_dict()], 0.5)
    merged["1.num_batches_tracked"] += 100
    assert int(new.state_dict()["1.num_batches_tracked"]) == 3


def test_candidate_errors_name_what_is_wrong():
    old, new = _net(1), _net(2)
    other = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    with pytest.raises(
        MismatchError, match=r"does not have the old model's tensors \(different architectures\?\)"
    ):
        interpolation_candidates(old, other)
    with pytest.raises(
        MismatchError, match=r"Fisher information .* tensors the models lack \('head'\)"
    ):
        interpolation_candidates(old, new, fisher={"head": torch.ones(1)})
    with pytest.raises(InputError, match="got 3 soup weights for 1 new models"):
        interpolation_candidates(old, new, weights=[1, 2, 3])
    with pytest.raises(InputError, match="a soup needs at least one new model"):
        interpolation_candidates(old, [])
    with pytest.raises(InputError, match=r"new model 1 is str; expected a torch\.nn\.Module"):
        interpolation_candidates(old, [new, "new.safetensors"])
    with pytest.raises(InputError, match="old_model is dict"):
        interpolation_candidates({}, new)
    with pytest.raises(InputError, match=r"old_weight=1.2; expected a weight of the old model"):
        interpolation_candidates(old, new)(1.2)
    wide = copy.deepcopy(new)
    wide[2] = nn.Linear(4, 3).double()
    with pytest.raises(
        MismatchError, match=r"'2\.weight: torch\.float64 \(2, 4\) vs torch\.float64 \(3, 4\)'"
    ):
        interpolation_candidates(old, wide)(0.5)


# ----------------------------------------------------------------------------- growing label set


def test_candidates_take_the_merge_policy_of_interpolate():
    torch.manual_seed(3)
    old, new = nn.Linear(2, 3).double(), nn.Linear(2, 3).double()
    policy = MergePolicy(0.9, new_class_rows={"weight": [2], "bias": [2]})
    make_candidate = interpolation_candidates(old, new, policy=policy)
    for alpha in (0.0, 0.3, 1.0):
        candidate = make_candidate(alpha)
        expected = interpolate(old, new, policy=policy.with_old_weight(alpha))
        for name, tensor in candidate.state_dict().items():
            torch.testing.assert_close(tensor, expected.state_dict()[name], rtol=0, atol=0)
        # row 2 (a class the old model never had) is the new model's at every α
        torch.testing.assert_close(candidate.bias[2], new.bias[2], rtol=0, atol=0)
        mixed = alpha * old.bias[0] + (1 - alpha) * new.bias[0]
        torch.testing.assert_close(candidate.bias[0], mixed, rtol=1e-15, atol=1e-15)
    with pytest.raises(InputError, match="expected a MergePolicy"):
        interpolation_candidates(old, new, policy={"old_weight": 0.5})
    with pytest.raises(MismatchError, match="new_class_rows names tensors the models do not"):
        interpolation_candidates(old, new, policy=MergePolicy(0.5, new_class_rows={"w": [0]}))


def test_selection_counts_only_classes_the_old_model_knows():
    # class 2 is new; the old model never answers it
    labels = torch.tensor([0, 1, 2, 2, 0, 1])
    data = LabeledData(torch.zeros(6, 1), labels, torch.arange(6), ("a", "b", "c"), "dev")
    old_answers = np.array([0, 1, 0, 1, 0, 0])
    new_answers = np.array([0, 0, 2, 2, 0, 1])  # breaks example 1, fixes 2, 3 (new class), 5

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return F.one_hot(torch.as_tensor(new_answers), 3).double()

    selection = select_old_weight(
        lambda alpha: Fixed(), data, old_predictions=old_answers, grid=(0.0,), old_classes=[0, 1]
    )
    point = selection.curve[0]
    assert point.accuracy == 5 / 6  # on every dev example: the new classes count here
    # flips on examples 0, 1, 4, 5: old right on 0, 1, 4, new on 0, 4, 5
    assert point.negative_flip_rate == 1 / 4 and point.positive_flip_rate == 1 / 4
