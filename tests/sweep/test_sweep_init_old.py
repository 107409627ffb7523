"""Sweeps with `[model] init = "old"`: every trained point, and so BCWI's cross-entropy model,
starts from the old weights; the old model may come from a user's target; seeds are checked."""

from __future__ import annotations

import textwrap
import tomllib

import pytest
import torch

from flipless.errors import InputError
from flipless.models import MLP, load_model
from flipless.sweep.config import parse_sweep_config
from flipless.sweep.runner import run_sweep
from flipless.sweep.workspace import OLD_MODEL

BASE = """
seed = 0

[data]
name = "digits"

[model]
name = "mlp"
hidden = [8]
init = "old"

[old]
target = "my_sweep_old_models:make_old"

[optimizer]
name = "sgd"
lr = {lr}

[train]
epochs = 1
batch_size = 256
progress = "none"
"""


@pytest.fixture
def old_target(tmp_path, monkeypatch):
    (tmp_path / "my_sweep_old_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from flipless.models import MLP

            def make_old():
                torch.manual_seed(21)
                return MLP(64, 10, hidden=(8,))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(21)
    return MLP(64, 10, hidden=(8,))


def config(tmp_path, lr: float, seeds=(0,)):
    document = tomllib.loads(BASE.format(lr=lr))
    document["sweep"] = {
        "store": str(tmp_path / "sweep" / "results.jsonl"),
        "seeds": list(seeds),
        "threads": 1,
        "methods": [{"method": "bcwi", "strengths": [0.5]}],
    }
    return parse_sweep_config(document)


def same_weights(first, second, atol: float = 0.0) -> bool:
    """Whether two models have the same tensors, to ``atol`` (0: bit for bit)."""
    one, two = first.state_dict(), second.state_dict()
    return one.keys() == two.keys() and all(
        bool((one[k] - two[k]).abs().max() <= atol) for k in one
    )


def test_bcwi_interpolates_the_old_model_with_a_model_trained_from_it(tmp_path, old_target):
    # at a tiny learning rate the cross-entropy point keeps its start: the old model itself,
    # so BCWI's θ = ½ θ_old + ½ θ_ce is the old model (to 1e-9) and nothing flips
    sweep = config(tmp_path, lr=1e-12)
    outcome = run_sweep(sweep, quiet=True)
    folder = sweep.folder
    assert same_weights(load_model(folder / OLD_MODEL), old_target)
    by_id = {record["point_id"]: record for record in outcome.records}
    assert set(by_id) == {"cross-entropy/seed=0", "bcwi/old_weight=0.5/seed=0"}
    for record in by_id.values():
        assert same_weights(load_model(folder / record["model_path"]), old_target, 1e-9)
        assert record["config"]["model"]["init"] == "old"
        for split in ("train", "dev", "test"):
            assert record["metrics"][split]["negative_flip_rate"] == 0.0
            assert record["metrics"][split]["positive_flip_rate"] == 0.0


def test_a_trained_point_moves_away_from_the_old_start(tmp_path, old_target):
    sweep = config(tmp_path, lr=0.5)
    outcome = run_sweep(sweep, quiet=True)
    ce = next(r for r in outcome.records if r["kind"] == "loss")
    trained = load_model(sweep.folder / ce["model_path"])
    assert not same_weights(trained, old_target)
    # yet it started there: one epoch of SGD moves it only a little compared with a new draw
    distance = (trained.head.weight - old_target.head.weight).norm()
    torch.manual_seed(0)
    assert distance < (MLP(64, 10, hidden=(8,)).head.weight - old_target.head.weight).norm()


def test_sweep_seeds_stay_below_the_old_models_seed(tmp_path):
    with pytest.raises(InputError, match=r"sweep.seeds holds 2147483648; seeds lie in \[0, 2³¹\)"):
        config(tmp_path, lr=0.1, seeds=(0, 2**31))


def test_bcwi_with_an_old_model_of_fewer_classes_takes_new_rows_from_the_new_model(
    tmp_path, monkeypatch
):
    (tmp_path / "my_narrow_old_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from flipless.models import MLP

            def make_old():
                torch.manual_seed(22)
                model = MLP(64, 7, hidden=(8,))
                model.class_names = [str(digit) for digit in (6, 5, 4, 3, 2, 1, 0)]
                return model
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    document = tomllib.loads(
        BASE.format(lr=0.5).replace("my_sweep_old_models", "my_narrow_old_models")
    )
    document["sweep"] = {
        "store": str(tmp_path / "sweep" / "results.jsonl"),
        "threads": 1,
        "methods": [{"method": "bcwi", "strengths": [0.25]}],
    }
    sweep = parse_sweep_config(document)
    outcome = run_sweep(sweep, quiet=True)
    assert not outcome.failed
    old = load_model(sweep.folder / OLD_MODEL)
    records = {record["point_id"]: record for record in outcome.records}
    ce = load_model(sweep.folder / records["cross-entropy/seed=0"]["model_path"])
    bcwi = load_model(sweep.folder / records["bcwi/old_weight=0.25/seed=0"]["model_path"])
    assert old.head.out_features == 7 and ce.head.out_features == bcwi.head.out_features == 10
    rows = [6, 5, 4, 3, 2, 1, 0]  # where each old row's class sits among the digits
    expected = 0.25 * old.head.weight + 0.75 * ce.head.weight[rows]
    torch.testing.assert_close(bcwi.head.weight[rows], expected, rtol=0, atol=1e-6)
    assert torch.equal(bcwi.head.weight[7:], ce.head.weight[7:])  # classes the old never had
    body = 0.25 * old.body[0].weight + 0.75 * ce.body[0].weight
    torch.testing.assert_close(bcwi.body[0].weight, body, rtol=0, atol=1e-6)
