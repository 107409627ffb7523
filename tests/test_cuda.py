"""The CUDA and mixed-precision paths of the losses and the training loop (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flipless.data.loaders import load_digits
from flipless.losses import build_loss
from flipless.losses.bcml import BCCrossEntropyLoss, StrictImitationKLDivergenceLoss
from flipless.losses.features import OldHead
from flipless.teachers import ModelTeacher
from flipless.train import MLP, TrainSettings, fit, make_update_scenario

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _models():
    torch.manual_seed(0)
    return MLP(64, 10, hidden=(32,)).cuda(), MLP(64, 10, hidden=(32,)).cuda()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("preset", ["fd-kl", "fd-lm", "ldi", "strict-imitation", "new-error"])
def test_objective_under_autocast_matches_float32(dtype, preset):
    old, new = _models()
    x = torch.rand(64, 1, 8, 8, device="cuda")
    labels = torch.randint(0, 10, (64,), device="cuda")
    loss = build_loss(preset)
    teacher = ModelTeacher(old)
    reference, _ = loss(new(x).float(), labels, teacher.logits(x).float())
    with torch.autocast("cuda", dtype=dtype):
        total, parts = loss(new(x), labels, teacher.logits(x))
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    torch.testing.assert_close(total.float(), reference, rtol=5e-2, atol=5e-2)
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in new.parameters())
    assert all(p.grad is None for p in old.parameters())


def test_feature_terms_and_bcml_on_cuda():
    old, new = _models()
    x = torch.rand(32, 1, 8, 8, device="cuda")
    labels = torch.randint(0, 10, (32,), device="cuda")
    features = new.features(x)
    bct = build_loss("bct", old_head=OldHead.from_model(old)).cuda()
    total, _ = bct(new.head(features), labels, new_features=features)
    cna = build_loss("cna")
    total = (
        total
        + cna(
            new.head(features),
            labels,
            new_features=features,
            teacher_features=old.features(x).detach(),
        )[0]
    )
    total.backward()
    assert torch.isfinite(total)
    for loss_class in (BCCrossEntropyLoss, StrictImitationKLDivergenceLoss):
        value = loss_class(old, new, 0.5)(x, labels)
        assert value.is_cuda and torch.isfinite(value)
        reference = F.cross_entropy(new(x), labels)
        assert value >= reference - 1e-4


@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_fit_on_cuda_in_every_precision_and_resume(precision, tmp_path):
    scenario = make_update_scenario(load_digits(), old_fraction=0.3, seed=0)
    old, _ = _models()
    settings = TrainSettings(
        epochs=2, batch_size=64, precision=precision, progress="none", device="cuda"
    )
    torch.manual_seed(1)
    result = fit(
        MLP(64, 10, hidden=(64,)),
        scenario.new_train,
        scenario.validation,
        objective=build_loss("fd-kl"),
        teacher=ModelTeacher(old),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        settings=settings,
        output_dir=tmp_path,
    )
    assert next(result.model.parameters()).is_cuda
    assert result.history[-1].accuracy > 0.5
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (state["scaler"] is not None) == (precision == "fp16")
    assert "cuda" in state["rng"][0]
    again = fit(
        MLP(64, 10, hidden=(64,)),
        scenario.new_train,
        scenario.validation,
        objective=build_loss("fd-kl"),
        teacher=ModelTeacher(old),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        settings=settings,
        output_dir=tmp_path,
    )
    assert [r.train_loss for r in again.history] == [r.train_loss for r in result.history]
