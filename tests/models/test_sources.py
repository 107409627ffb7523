"""Tests of flipless.models.sources: where models come from, and init = "old"."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from flipless.data.labeled import LabeledData
from flipless.errors import FileFormatError, InputError, MismatchError
from flipless.models import MLP, load_model, save_model
from flipless.models.sources import (
    OLD_SEED_OFFSET,
    ModelConfig,
    OldConfig,
    build_new_model,
    load_model_source,
    load_old_model,
    model_settings,
    old_model_seed,
    source_class_names,
    start_from_old,
)


def sample(class_names, features=6, size=8) -> LabeledData:
    labels = torch.arange(size) % len(class_names)
    return LabeledData(torch.zeros(size, features), labels, torch.arange(size), tuple(class_names))


def old_mlp(classes: int = 3) -> MLP:
    torch.manual_seed(0)
    return MLP(6, classes, hidden=(5,)).eval()


def test_start_from_old_moves_old_rows_by_name_and_draws_the_new_ones():
    old = old_mlp()
    old.requires_grad_(False)  # as a teacher leaves it
    names = ("c", "x", "a", "b", "y")
    torch.manual_seed(7)
    new = start_from_old(old, names, old_class_names=("a", "b", "c"))
    torch.manual_seed(7)
    fresh = nn.Linear(5, 5)  # what the rows of x and y are drawn from
    assert new.num_classes == 5 and new.build_kwargs["num_classes"] == 5
    for old_row, new_row in ((0, 2), (1, 3), (2, 0)):  # a → 2, b → 3, c → 0
        assert torch.equal(new.head.weight[new_row], old.head.weight[old_row])
        assert torch.equal(new.head.bias[new_row], old.head.bias[old_row])
    for row in (1, 4):
        assert torch.equal(new.head.weight[row], fresh.weight[row])
        assert torch.equal(new.head.bias[row], fresh.bias[row])
    for (name, new_p), (_, old_p) in zip(
        new.body.named_parameters(), old.body.named_parameters(), strict=True
    ):
        assert torch.equal(new_p, old_p), name
        assert new_p.data_ptr() != old_p.data_ptr()  # a copy: training it leaves the old alone
    assert all(p.requires_grad for p in new.parameters())
    assert not any(p.requires_grad for p in old.parameters())
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():  # the old classes' logits are the old model's, in their new places
        old64, new64 = old.double(), new.double()
        torch.testing.assert_close(new64(x)[:, [2, 3, 0]], old64(x), rtol=0, atol=1e-12)


def test_start_from_old_with_the_same_classes_is_an_exact_copy(tmp_path):
    old = old_mlp()
    new = start_from_old(old, ("a", "b", "c"), ("a", "b", "c"))
    assert new is not old
    old_state = old.state_dict()
    assert new.state_dict().keys() == old_state.keys()
    assert all(torch.equal(value, old_state[key]) for key, value in new.state_dict().items())
    # without names the head must already have one row per class
    assert torch.equal(start_from_old(old, ("a", "b", "c")).head.weight, old.head.weight)
    widened = start_from_old(old, list("abcd"), list("abc"))
    loaded = load_model(save_model(widened, tmp_path / "w.safetensors"))
    assert loaded.num_classes == 4 and torch.equal(loaded.head.weight, widened.head.weight)


def test_start_from_old_refusals():
    old = old_mlp()
    with pytest.raises(MismatchError, match=r"3 outputs and the data 4 classes, and nothing says"):
        start_from_old(old, list("abcd"))
    with pytest.raises(MismatchError, match=r"classes \['z'\] are not \(distinct\) classes"):
        start_from_old(old, list("abcd"), ["a", "b", "z"])
    with pytest.raises(MismatchError, match=r"3 outputs but 2 class names"):
        start_from_old(old, list("abcd"), ["a", "b"])
    with pytest.raises(InputError, match=r"needs an old model with a linear head.*Sequential"):
        start_from_old(nn.Sequential(nn.Linear(2, 2)), ["a", "b"])


def test_build_new_model_from_scratch_from_a_target_and_from_old(tmp_path, monkeypatch):
    data = sample(("a", "b", "c"))
    torch.manual_seed(3)
    scratch = build_new_model(ModelConfig(name="mlp", settings={"hidden": [4]}), data)
    torch.manual_seed(3)
    assert torch.equal(scratch.head.weight, MLP(6, 3, hidden=(4,)).head.weight)
    assert model_settings(ModelConfig(path="/x"), data)["path"] == "/x"

    (tmp_path / "my_models_for_sources.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def make(width, num_classes):
                return nn.Sequential(nn.Linear(6, width), nn.Linear(width, num_classes))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = ModelConfig(target="my_models_for_sources:make", args={"width": 3})
    target = build_new_model(config, data)
    assert target[1].out_features == 3 and target.build_kwargs["args"] == {"width": 3}
    reloaded = load_model(save_model(target, tmp_path / "t.safetensors"))
    assert torch.equal(reloaded[0].weight, target[0].weight)

    old = old_mlp()
    grown = build_new_model(
        ModelConfig(init="old"), sample(("a", "b", "c", "d")), old, ("a", "b", "c")
    )
    assert torch.equal(grown.head.weight[:3], old.head.weight)
    with pytest.raises(InputError, match=r'init = "old" needs the old model'):
        build_new_model(ModelConfig(init="old"), data)


def test_model_and_old_config_refusals():
    with pytest.raises(InputError, match=r"init='warm'; expected 'scratch'"):
        ModelConfig(init="warm")
    with pytest.raises(InputError, match=r"args=.* without target"):
        ModelConfig(args={"width": 3})
    with pytest.raises(InputError, match=r"a target model takes its settings in args"):
        ModelConfig(target="m:f", settings={"hidden": [3]})
    with pytest.raises(InputError, match=r"either checkpoint or train_epochs, or a target"):
        OldConfig(checkpoint="a", target="m:f")


def test_old_models_from_checkpoints_with_class_names(tmp_path):
    old = old_mlp()
    path = save_model(old, tmp_path / "old.safetensors", {"class_names": ["a", "b", "c"]})
    loaded = load_old_model(OldConfig(checkpoint=str(path)))
    assert loaded.class_names == ("a", "b", "c")
    assert torch.equal(loaded.model.head.weight, old.head.weight)
    bare = save_model(old, tmp_path / "bare.safetensors")
    assert source_class_names(bare) is None
    bad = save_model(old, tmp_path / "bad.safetensors", {"class_names": "abc"})
    with pytest.raises(FileFormatError, match=r"class_names='abc'; expected a list of names"):
        source_class_names(bad)
    with pytest.raises(MismatchError, match=r"holds a model with 3 classes; expected 4"):
        load_model_source(path, num_classes=4)


def test_the_old_seed_never_equals_a_sweep_seed():
    assert old_model_seed(0) == OLD_SEED_OFFSET == 2**31
    assert old_model_seed(5) == 2**31 + 5
    with pytest.raises(InputError, match=r"seed=-1; expected an integer in \[0, 2³¹\)"):
        old_model_seed(-1)
    with pytest.raises(InputError, match=r"expected an integer in \[0, 2³¹\)"):
        old_model_seed(2**31)


def test_a_target_model_of_another_head_size_gets_a_fresh_head(tmp_path, monkeypatch):
    (tmp_path / "my_fixed_models_for_sources.py").write_text(
        textwrap.dedent(
            """
            import torch
            from flipless.models import MLP

            def make():
                torch.manual_seed(4)
                return MLP(6, 3, hidden=(5,))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(4)
    fixed = MLP(6, 3, hidden=(5,))
    fresh = nn.Linear(5, 5)  # drawn next: the head that replaces make()'s 3-row head
    model = build_new_model(ModelConfig(target="my_fixed_models_for_sources:make"), sample("abcde"))
    assert model.head.out_features == model.num_classes == 5
    assert torch.equal(model.head.weight, fresh.weight)
    assert torch.equal(model.body[0].weight, fixed.body[0].weight)
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert torch.equal(loaded.head.weight, model.head.weight)
