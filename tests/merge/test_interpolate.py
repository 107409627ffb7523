"""Tests of flipless.merge.interpolate and flipless.merge.policy: BCWI of whole models."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from flipless.errors import FliplessWarning, InputError, MismatchError
from flipless.merge.interpolate import check_sources, interpolate, load_merged, merge_tensors
from flipless.merge.policy import MergePolicy, new_class_rows_from_names
from flipless.merge.sources import TensorSource
from flipless.models import MLP, SmallCNN, save_model


def linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return layer


def seeded_mlp(seed: int, dtype: torch.dtype = torch.float64) -> MLP:
    torch.manual_seed(seed)
    return MLP(4, 3, hidden=(5,)).to(dtype)


def seeded_cnn(seed: int, batches_tracked: int) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(1, 3, 8, width=2, feature_dim=4)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.num_batches_tracked.fill_(batches_tracked)
    return model


OLD = linear([[1.0, 2.0], [3.0, 4.0]], [0.5, -1.0])
NEW = linear([[5.0, 6.0], [-3.0, 0.0]], [1.5, 1.0])


# --------------------------------------------------------------------------- exact values


def test_plain_interpolation_by_hand():
    merged = interpolate(OLD.state_dict(), NEW.state_dict(), 0.25)
    # 0.25 · old + 0.75 · new, entry by entry
    expected_weight = [[0.25 + 3.75, 0.5 + 4.5], [0.75 - 2.25, 1.0 + 0.0]]
    assert merged["weight"].tolist() == expected_weight
    assert merged["bias"].tolist() == [0.125 + 1.125, -0.25 + 0.75]
    assert list(merged) == ["weight", "bias"]
    assert merged["weight"].dtype == torch.float64


def test_weighted_soup_by_hand():
    third = linear([[0.0, 0.0], [0.0, 0.0]], [0.0, 3.0])
    merged = interpolate(OLD, [NEW, third], 0.5, weights=[3, 1])
    # θ̄_new = 0.75 NEW + 0.25 third; θ = 0.5 OLD + 0.5 θ̄_new
    assert merged.weight.tolist() == [[0.5 + 1.875, 1.0 + 2.25], [1.5 - 1.125, 2.0]]
    assert merged.bias.tolist() == [0.25 + 0.5625, -0.5 + 0.5 * (0.75 + 0.75)]


def test_a_soup_of_identical_models_is_the_model():
    model = seeded_mlp(0)
    merged = interpolate(model, [model, model, model], 0.3)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[name], tensor, rtol=1e-15, atol=0)


@pytest.mark.parametrize(("old_weight", "which"), [(0.0, "new"), (1.0, "old")])
def test_old_weight_zero_and_one_return_the_new_and_old_models(old_weight, which):
    old, new = seeded_mlp(0, torch.float32), seeded_mlp(1, torch.float32)
    merged = interpolate(old, new, old_weight)
    expected = (new if which == "new" else old).state_dict()
    assert all(torch.equal(merged.state_dict()[n], t) for n, t in expected.items())


def test_fisher_of_ones_equals_plain_interpolation():
    old, new = seeded_mlp(0), seeded_mlp(1)
    ones = {name: torch.ones_like(t) for name, t in old.state_dict().items()}
    plain = interpolate(old.state_dict(), new.state_dict(), 0.3)
    weighted = interpolate(old.state_dict(), new.state_dict(), 0.3, fisher=ones)
    for name in plain:
        torch.testing.assert_close(weighted[name], plain[name], rtol=1e-15, atol=1e-15)


def test_fisher_weighting_by_hand():
    fisher = {"weight": torch.tensor([[3.0, 0.0], [1.0, 2.0]], dtype=torch.float64)}
    merged = interpolate(OLD, NEW, 0.5, fisher=fisher)
    # (α F θ_old + (1 − α) θ_new) / (α F + 1 − α) with α = 0.5
    expected = [[(1.5 + 2.5) / 2.0, (0 + 3.0) / 0.5], [(1.5 - 1.5) / 1.0, (4.0 + 0.0) / 1.5]]
    torch.testing.assert_close(merged.weight, torch.tensor(expected, dtype=torch.float64))
    # the bias has no Fisher entry: plain interpolation, as F = 1
    assert merged.bias.tolist() == [1.0, 0.0]


def test_fisher_zero_at_old_weight_one_falls_back_to_old():
    fisher = {"weight": torch.tensor([[0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)}
    merged = interpolate(OLD, NEW, 1.0, fisher=fisher)  # 0/0 where F = 0
    assert torch.equal(merged.weight, OLD.weight)
    assert torch.equal(merged.bias, OLD.bias)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_kept_and_computed_in_float32(dtype):
    torch.manual_seed(0)
    old = {"w": torch.randn(64).to(dtype)}
    news = [{"w": torch.randn(64).to(dtype)} for _ in range(3)]
    merged = interpolate(old, news, 0.3)
    mean = sum(new["w"].double() / 3 for new in news)  # the exact value, in float64
    exact = 0.3 * old["w"].double() + 0.7 * mean
    assert merged["w"].dtype == dtype
    # computed in float32 and rounded once: within one unit in the last place of the dtype
    ulp = torch.finfo(dtype).eps * exact.abs().clamp_min(torch.finfo(dtype).tiny)
    assert bool(((merged["w"].double() - exact).abs() <= ulp).all())


# --------------------------------------------------------------------------- what comes back


def test_module_in_gives_a_copy_out_and_model_loads_in_place():
    old, new = seeded_mlp(0), seeded_mlp(1)
    before = {n: t.clone() for n, t in old.state_dict().items()}
    merged = interpolate(old, new, 0.5)
    assert isinstance(merged, MLP) and merged is not old
    assert all(torch.equal(old.state_dict()[n], t) for n, t in before.items())
    target = seeded_mlp(2)
    returned = interpolate(old.state_dict(), new.state_dict(), 0.5, model=target)
    assert returned is target
    for name, tensor in merged.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor)


def test_files_merge_like_modules(tmp_path):
    old, new = seeded_cnn(0, 5), seeded_cnn(1, 9)
    save_model(old, tmp_path / "old.safetensors")
    save_file(new.state_dict(), tmp_path / "new.safetensors")
    from_files = interpolate(tmp_path / "old.safetensors", tmp_path / "new.safetensors", 0.3)
    from_modules = interpolate(old, new, 0.3).state_dict()
    assert from_files.keys() == from_modules.keys()
    assert all(torch.equal(from_files[n], from_modules[n]) for n in from_files)


def test_load_merged_tolerates_a_missing_tied_alias():
    model = nn.Sequential(nn.Embedding(4, 3), nn.Linear(3, 4, bias=False))
    model[1].weight = model[0].weight  # tied, as a language model's decoder
    merged = {"0.weight": torch.ones(4, 3)}  # save_pretrained leaves the alias out
    load_merged(model, merged)
    assert torch.equal(model[1].weight, torch.ones(4, 3))
    with pytest.raises(
        MismatchError, match=r"2 of its tensors missing \('1.weight', '1.bias'\)\.$"
    ):
        load_merged(nn.Sequential(nn.Embedding(4, 3), nn.Linear(3, 4)), merged)
    with pytest.raises(
        MismatchError, match=r"(?s)do not fit the Sequential: .*size mismatch for 0.weight"
    ):
        load_merged(model, {"0.weight": torch.ones(5, 3)})


# --------------------------------------------------------------------------- policies


def test_integer_buffers_come_from_the_chosen_side():
    old, new, other = seeded_cnn(0, 5), seeded_cnn(1, 9), seeded_cnn(2, 11)
    name = "blocks.0.1.num_batches_tracked"
    assert interpolate(old, new, 0.5).state_dict()[name].item() == 9  # default: "new"
    to_old = MergePolicy(0.5, integer_buffers="old")
    assert interpolate(old, [new, other], policy=to_old).state_dict()[name].item() == 5
    assert interpolate(old, [other, new], 0.5).state_dict()[name].item() == 11  # first new
    merged = interpolate(old, new, 0.5).state_dict()
    expected = 0.5 * old.blocks[0][1].running_mean + 0.5 * new.blocks[0][1].running_mean
    torch.testing.assert_close(merged["blocks.0.1.running_mean"], expected)  # floats merge


def test_integer_buffer_must_agree_in_shape():
    policy = MergePolicy(0.5)
    with pytest.raises(MismatchError, match=r"n: the old model has torch.int64 \(2,\) but new"):
        merge_tensors(
            "n",
            torch.zeros(2, dtype=torch.long),
            [torch.zeros(3, dtype=torch.long)],
            policy,
            old_weight=0.5,
        )
    with pytest.raises(InputError, match="complex tensors"):
        merge_tensors(
            "c",
            torch.zeros(2, dtype=torch.cfloat),
            [torch.zeros(2, dtype=torch.cfloat)],
            policy,
            old_weight=0.5,
        )


def schedule_names() -> list[str]:
    return [f"encoder.layer.{i}.dense.weight" for i in (0, 1, 2, 3, 10)] + [
        "embeddings.weight",
        "classifier.weight",
        "classifier.bias",
    ]


def test_layer_schedule_by_hand_and_rules_first():
    policy = MergePolicy(
        0.3,
        rules=[("classifier.*", 0.0), ("*.layer.3.*", 0.9), ("*weight", 0.8)],
        layer_schedule=(r"encoder\.layer\.(\d+)\.", 0.6, 0.2),
    )
    weights = policy.old_weights(schedule_names())
    # rules first (the first match wins); "*weight" catches every other weight
    assert weights["classifier.weight"] == 0.0 and weights["classifier.bias"] == 0.0
    assert weights["encoder.layer.3.dense.weight"] == 0.9
    assert weights["encoder.layer.0.dense.weight"] == 0.8
    schedule_only = MergePolicy(0.3, layer_schedule=(r"encoder\.layer\.(\d+)\.", 0.6, 0.2))
    weights = schedule_only.old_weights(schedule_names())
    # 5 layers found (0, 1, 2, 3, 10): k-th gets 0.6 + (0.2 − 0.6) · k / 4
    got = [weights[f"encoder.layer.{i}.dense.weight"] for i in (0, 1, 2, 3, 10)]
    assert got == pytest.approx([0.6, 0.5, 0.4, 0.3, 0.2], abs=1e-15)
    assert weights["embeddings.weight"] == 0.3 and weights["classifier.bias"] == 0.3
    single = schedule_only.old_weights(["encoder.layer.7.w"])
    assert single == {"encoder.layer.7.w": 0.6}
    assert schedule_only.old_weight_for("encoder.layer.2.x", layers=(0, 2, 4)) == 0.4
    with pytest.raises(InputError, match=r"layer 2 of the schedule.*pass layers=policy.layers_in"):
        schedule_only.old_weight_for("encoder.layer.2.x")


def test_per_tensor_old_weights_are_applied():
    old = {
        "encoder.layer.0.w": torch.zeros(2),
        "encoder.layer.1.w": torch.zeros(2),
        "head.w": torch.zeros(2),
    }
    new = {name: torch.ones(2) for name in old}
    policy = MergePolicy(0.5, rules=[("head.*", 0.25)], layer_schedule=(r"layer\.(\d+)", 1.0, 0.0))
    merged = interpolate(old, new, policy=policy)
    # θ = α · 0 + (1 − α) · 1
    assert merged["encoder.layer.0.w"].tolist() == [0.0, 0.0]
    assert merged["encoder.layer.1.w"].tolist() == [1.0, 1.0]
    assert merged["head.w"].tolist() == [0.75, 0.75]


def test_new_class_rows_copied_from_the_soup_mean():
    torch.manual_seed(0)
    old = {
        "head.weight": torch.randn(4, 3, dtype=torch.float64),
        "head.bias": torch.randn(4, dtype=torch.float64),
    }
    news = [{n: torch.randn_like(t) for n, t in old.items()} for _ in range(2)]
    rows = new_class_rows_from_names(
        ["cat", "dog"], ["cat", "bird", "dog", "fish"], ["head.weight", "head.bias"]
    )
    assert rows == {"head.weight": (1, 3), "head.bias": (1, 3)}
    merged = interpolate(old, news, policy=MergePolicy(0.4, new_class_rows=rows))
    for name, tensor in old.items():
        mean = (news[0][name] + news[1][name]) / 2
        for row in range(4):
            expected = mean[row] if row in (1, 3) else 0.4 * tensor[row] + 0.6 * mean[row]
            torch.testing.assert_close(merged[name][row], expected, rtol=1e-15, atol=1e-15)


def test_new_class_rows_with_fisher_and_at_old_weight_one():
    old = {"head.bias": torch.tensor([1.0, 2.0, 3.0])}
    new = {"head.bias": torch.tensor([5.0, 6.0, 7.0])}
    policy = MergePolicy(1.0, new_class_rows={"head.bias": [2]})
    fisher = {"head.bias": torch.zeros(3)}
    assert interpolate(old, new, policy=policy, fisher=fisher)["head.bias"].tolist() == [1, 2, 7]


def test_new_class_rows_errors():
    old = {"head.bias": torch.zeros(3)}
    with pytest.raises(InputError, match=r"new_class_rows 3 are outside the tensor's 3 rows"):
        interpolate(old, old, policy=MergePolicy(0.5, new_class_rows={"head.bias": [3]}))
    with pytest.raises(MismatchError, match="new_class_rows names tensors the models do not have"):
        interpolate(old, old, policy=MergePolicy(0.5, new_class_rows={"head.b": [0]}))
    policy = MergePolicy(0.5, new_class_rows={"head.bias": [2]})
    with pytest.raises(MismatchError, match="Build the old model with the full"):
        merge_tensors("head.bias", torch.zeros(2), [torch.zeros(3)], policy, old_weight=0.5)
    with pytest.raises(MismatchError, match=r"1 old class name.* not among the new ones: 'cow'"):
        new_class_rows_from_names(["cow"], ["cat"], ["head.bias"])
    with pytest.raises(InputError, match="the new class names repeat 'cat'"):
        new_class_rows_from_names([], ["cat", "cat"], ["head.bias"])
    with pytest.raises(InputError, match="expected the classifier tensors' names"):
        new_class_rows_from_names([], ["cat"], "head.bias")


def test_a_head_with_more_classes_names_new_class_rows(tmp_path):
    old = MLP(8, 100, hidden=(4,))
    new = MLP(8, 150, hidden=(4,))
    pattern = (
        r"a classifier for more classes than the old model: 'head.weight', 'head.bias' have "
        r"100 rows in the old model and 150 in the new one.*start_from_old.*"
        r"--new-class-rows head.weight=100-149 --new-class-rows head.bias=100-149.*"
        r"new_class_rows=\{'head.weight': range\(100, 150\), 'head.bias': range\(100, 150\)\}"
    )
    with pytest.raises(MismatchError, match=pattern):
        interpolate(old, new, 0.5)
    save_model(old, tmp_path / "old.safetensors")
    save_model(new, tmp_path / "new.safetensors")
    with pytest.raises(MismatchError, match=r"--new-class-rows head\.weight=100-149"):
        interpolate(tmp_path / "old.safetensors", tmp_path / "new.safetensors", 0.5)
    # a difference elsewhere too is another architecture, not a wider head
    with pytest.raises(MismatchError, match="differs from the old model in 4 tensor"):
        interpolate(MLP(8, 100, hidden=(4,)), MLP(8, 150, hidden=(5,)), 0.5)


def test_with_old_weight_keeps_everything_else():
    policy = MergePolicy(0.5, rules=[("head.*", 0.0)], new_class_rows={"head.bias": [2]})
    moved = policy.with_old_weight(0.2)
    assert moved.old_weight == 0.2
    assert moved.describe() == {**policy.describe(), "old_weight": 0.2}


def test_policy_validation():
    with pytest.raises(InputError, match=r"old_weight=1.5; expected a weight of the old model"):
        MergePolicy(1.5)
    with pytest.raises(InputError, match=r"the old_weight of rule 'head\.\*'=-0\.1"):
        MergePolicy(0.5, rules=[("head.*", -0.1)])
    with pytest.raises(InputError, match=r"rules\[0\] is 'head.\*'; expected a"):
        MergePolicy(0.5, rules=["head.*"])
    with pytest.raises(InputError, match="has 0 groups; expected exactly one"):
        MergePolicy(0.5, layer_schedule=(r"layer\.\d+", 0.1, 0.2))
    with pytest.raises(InputError, match="has 2 groups"):
        MergePolicy(0.5, layer_schedule=(r"(layer)\.(\d+)", 0.1, 0.2))
    with pytest.raises(InputError, match="is not a regular expression"):
        MergePolicy(0.5, layer_schedule=("(", 0.1, 0.2))
    with pytest.raises(InputError, match="layer_schedule's last old_weight=2"):
        MergePolicy(0.5, layer_schedule=(r"(\d+)", 0.1, 2))
    with pytest.raises(InputError, match="integer_buffers='mean'; expected 'new' or 'old'"):
        MergePolicy(0.5, integer_buffers="mean")
    with pytest.raises(InputError, match=r"new_class_rows\['h'\] holds -1, 1.5, True; expected"):
        MergePolicy(0.5, new_class_rows={"h": [-1, 1.5, True, 2]})
    numpy_rows = MergePolicy(0.5, new_class_rows={"h": np.array([3, 1])}).new_class_rows
    assert numpy_rows == {"h": (1, 3)}
    with pytest.raises(InputError, match="repeats rows"):
        MergePolicy(0.5, new_class_rows={"h": [1, 1]})
    with pytest.raises(InputError, match=r"captured 'x' in 'layer.x'; expected a layer index"):
        MergePolicy(0.5, layer_schedule=(r"layer\.(\w)", 0.1, 0.2)).old_weights(["layer.x"])


def test_describe_is_json_and_complete():
    policy = MergePolicy(
        0.3,
        rules={"head.*": 0.0},
        layer_schedule=(r"l\.(\d+)", 0.5, 0.1),
        integer_buffers="old",
        new_class_rows={"head.bias": [4, 2]},
    )
    assert json.loads(json.dumps(policy.describe())) == {
        "old_weight": 0.3,
        "rules": [["head.*", 0.0]],
        "layer_schedule": {"pattern": r"l\.(\d+)", "first": 0.5, "last": 0.1},
        "integer_buffers": "old",
        "new_class_rows": {"head.bias": [2, 4]},
    }


def test_rules_and_schedules_that_match_nothing_warn():
    state = {"w": torch.zeros(1)}
    with pytest.warns(FliplessWarning, match=r"the merge rules 'head.\*' match no tensor"):
        interpolate(state, state, policy=MergePolicy(0.5, rules=[("head.*", 0.0)]))
    with pytest.warns(FliplessWarning, match="regex .* matches no tensor name"):
        interpolate(state, state, policy=MergePolicy(0.5, layer_schedule=(r"l(\d)", 0.0, 1.0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interpolate(state, state, policy=MergePolicy(0.5, rules=[("w", 0.0)]))


# --------------------------------------------------------------------------- checks


def test_missing_and_extra_tensors_are_listed():
    old = {"a": torch.zeros(1), "b": torch.zeros(1), "c": torch.zeros(1)}
    new = {"a": torch.zeros(1), "d": torch.zeros(1)}
    with pytest.raises(
        MismatchError,
        match=(
            r"the new model \(in-memory state dict\) does not have the old model's tensors \(different "
            r"architectures\?\): 2 of the old model's tensors missing \('b', 'c'\); 1 tensors the "
            r"old model lacks \('d'\)"
        ),
    ):
        interpolate(old, new, 0.5)
    with pytest.raises(
        MismatchError, match=r"new model 1 \(in-memory state dict\) does not.* \('c'\)"
    ):
        interpolate(old, [old, {"a": torch.zeros(1), "b": torch.zeros(1)}], 0.5)


def test_shape_and_dtype_mismatches_are_refused_before_reading():
    old = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
    with pytest.raises(
        MismatchError,
        match=r"1 tensor shape\(s\) or dtype\(s\).*w: torch.float32 "
        r"\(2, 3\) vs torch.float32 \(3, 2\)",
    ):
        interpolate(old, {"w": torch.zeros(3, 2), "b": torch.zeros(2)}, 0.5)
    with pytest.raises(MismatchError, match=r"b: torch.float32 \(2,\) vs torch.float16 \(2,\)"):
        interpolate(old, {"w": torch.zeros(2, 3), "b": torch.zeros(2).half()}, 0.5)
    mlp, cnn = seeded_mlp(0), seeded_cnn(0, 1)
    with pytest.raises(MismatchError, match="different architectures"):
        interpolate(mlp, cnn, 0.5)


def test_non_finite_values_and_bad_weights_are_refused():
    nan = {
        "weight": torch.tensor([[float("nan"), 0.0], [0.0, 0.0]], dtype=torch.float64),
        "bias": torch.zeros(2, dtype=torch.float64),
    }
    with pytest.raises(InputError, match="weight: new model 0 holds NaN or infinite values"):
        interpolate(OLD, nan, 0.5)
    with pytest.raises(InputError, match=r"old_weight=1.5; expected a weight of the old model"):
        interpolate(OLD, NEW, 1.5)
    with pytest.raises(InputError, match=r"give either old_weight .* or policy"):
        interpolate(OLD, NEW, 0.5, policy=MergePolicy(0.5))
    with pytest.raises(InputError, match="give either old_weight"):
        interpolate(OLD, NEW)
    with pytest.raises(InputError, match="new is an empty list"):
        interpolate(OLD, [], 0.5)
    with pytest.raises(InputError, match="got 1 soup weights for 2 new models"):
        interpolate(OLD, [NEW, NEW], 0.5, weights=[1.0])
    with pytest.raises(InputError, match=r"model is a dict; expected an nn\.Module"):
        interpolate(OLD, NEW, 0.5, model={})
    with pytest.raises(InputError, match="cannot read tensors from a float"):
        interpolate(OLD, 0.5, 0.5)


def test_fisher_must_fit_the_models():
    with pytest.raises(MismatchError, match=r"has 1 tensors the models lack \('head.weight'\)"):
        interpolate(OLD, NEW, 0.5, fisher={"head.weight": torch.ones(2, 2)})
    with pytest.raises(MismatchError, match=r"not floating or not of the model's shape: 'bias: "):
        interpolate(OLD, NEW, 0.5, fisher={"bias": torch.ones(3)})
    with pytest.raises(MismatchError, match=r"bias: torch\.int64"):
        interpolate(OLD, NEW, 0.5, fisher={"bias": torch.ones(2, dtype=torch.long)})
    with pytest.raises(InputError, match="the Fisher information must be finite and ≥ 0"):
        interpolate(OLD, NEW, 0.5, fisher={"bias": -torch.ones(2)})


def test_check_sources_reads_no_tensor():
    reads = []

    def source(value: float) -> TensorSource:
        tensor = torch.full((2,), value)
        return TensorSource({"w": ((2,), torch.float32)}, lambda n: reads.append(n) or tensor, "t")

    check_sources(source(0.0), [source(1.0)], source(1.0))
    assert reads == []
    merged = interpolate(source(0.0), source(1.0), 0.25)
    assert merged["w"].tolist() == [0.75, 0.75] and reads == ["w", "w"]


def test_load_merged_lists_tensors_the_module_lacks():
    with pytest.raises(MismatchError, match=r"1 it does not have \('extra'\)\.$"):
        load_merged(
            nn.Linear(1, 1),
            {"weight": torch.ones(1, 1), "bias": torch.ones(1), "extra": torch.ones(1)},
        )
