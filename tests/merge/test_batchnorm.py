"""Tests of flipless.merge.batchnorm: running statistics re-estimated, checked by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from flipless.data.labeled import LabeledData
from flipless.data.loaders import load_digits
from flipless.errors import FliplessWarning, InputError
from flipless.merge.batchnorm import reestimate_batchnorm
from flipless.merge.interpolate import interpolate
from flipless.models import SmallCNN


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest (two contend on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits64() -> LabeledData:
    """300 real digit images, in float64 so that the comparisons are exact to 1e-12."""
    train = load_digits()["train"].subset(range(300))
    return LabeledData(train.inputs.double(), train.labels, train.ids, train.class_names)


def cnn(seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(1, 10, 8, width=3, feature_dim=8).double()


def rows(n: int, features: int = 3, seed: int = 0) -> LabeledData:
    inputs = torch.randn(n, features, generator=torch.Generator().manual_seed(seed)).double()
    return LabeledData(inputs, torch.zeros(n, dtype=torch.long), torch.arange(n), ("only",))


def channel_stats(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean, unbiased and biased variance of an [N, C, H, W] activation."""
    dims = (0, 2, 3)
    return a.mean(dims), a.var(dims, correction=1), a.var(dims, correction=0)


def test_after_interpolation_one_batch_gives_the_exact_statistics(digits64):
    merged = interpolate(cnn(0).eval(), cnn(1), 0.4)
    bn0, bn1 = merged.blocks[0][1], merged.blocks[1][1]
    interpolated_mean = bn0.running_mean.clone()
    returned = reestimate_batchnorm(merged, digits64, batch_size=len(digits64))
    assert returned is merged and not merged.training
    assert bn0.momentum == 0.1 and bn0.num_batches_tracked.item() == 1
    assert not torch.allclose(bn0.running_mean, interpolated_mean)
    with torch.no_grad():
        # the first BatchNorm sees the first convolution's outputs
        a0 = merged.blocks[0][0](digits64.inputs)
        mean0, var0, biased0 = channel_stats(a0)
        torch.testing.assert_close(bn0.running_mean, mean0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn0.running_var, var0, rtol=1e-12, atol=1e-12)
        # the second sees the first normalised with the batch's statistics (biased variance)
        scale = bn0.weight / torch.sqrt(biased0 + bn0.eps)
        h = (a0 - mean0[:, None, None]) * scale[:, None, None] + bn0.bias[:, None, None]
        a1 = merged.blocks[1][0](F.max_pool2d(torch.relu(h), 2))
        mean1, var1, _ = channel_stats(a1)
        torch.testing.assert_close(bn1.running_mean, mean1, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn1.running_var, var1, rtol=1e-12, atol=1e-12)


def test_several_batches_average_the_batch_statistics(digits64):
    model = cnn(0).eval()
    reestimate_batchnorm(model, digits64, batch_size=128)  # batches of 128, 128, 44
    with torch.no_grad():
        a0 = model.blocks[0][0](digits64.inputs)
    batches = [channel_stats(a0[start : start + 128]) for start in (0, 128, 256)]
    expected_mean = sum(b[0] for b in batches) / 3
    expected_var = sum(b[1] for b in batches) / 3
    bn0 = model.blocks[0][1]
    torch.testing.assert_close(bn0.running_mean, expected_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn0.running_var, expected_var, rtol=1e-12, atol=1e-12)
    assert bn0.num_batches_tracked.item() == 3
    assert not torch.allclose(bn0.running_mean, channel_stats(a0)[0])  # not per example


def test_only_batchnorm_runs_in_train_mode_and_modes_are_restored():
    model = nn.Sequential(nn.Dropout(0.9), nn.BatchNorm1d(3, momentum=0.3)).double().train()
    model[0].eval()  # a submodule's own mode is kept too
    data = rows(50)
    reestimate_batchnorm(model, data, batch_size=50)
    # dropout was off: exactly the data's statistics
    torch.testing.assert_close(model[1].running_mean, data.inputs.mean(0), rtol=1e-12, atol=0)
    torch.testing.assert_close(model[1].running_var, data.inputs.var(0), rtol=1e-12, atol=0)
    assert model.training and model[1].training and not model[0].training
    assert model[1].momentum == 0.3


def test_max_batches_and_dataloaders():
    data = rows(20)
    model = nn.BatchNorm1d(3).double()
    reestimate_batchnorm(model, data, batch_size=4, max_batches=1)
    torch.testing.assert_close(model.running_mean, data.inputs[:4].mean(0), rtol=1e-12, atol=0)
    reestimate_batchnorm(model, DataLoader(data, batch_size=20), batch_size=3)
    torch.testing.assert_close(model.running_mean, data.inputs.mean(0), rtol=1e-12, atol=0)
    assert model.num_batches_tracked.item() == 1  # the loader's batch size, not batch_size


def test_layers_without_running_statistics_are_left_alone():
    model = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False), nn.BatchNorm1d(3))
    model = model.double()
    data = rows(10)
    reestimate_batchnorm(model, data, batch_size=10)
    expected = F.batch_norm(data.inputs, None, None, training=True).mean(0)  # ≈ 0 per feature
    torch.testing.assert_close(model[1].running_mean, expected, rtol=0, atol=1e-12)
    with pytest.warns(FliplessWarning, match="has no BatchNorm layer that tracks running"):
        assert reestimate_batchnorm(nn.Linear(3, 3), data) is not None


def test_a_failed_pass_restores_the_previous_statistics():
    model = nn.BatchNorm1d(3).double()
    with torch.no_grad():
        model.running_mean.fill_(5.0)
    good, bad = rows(4).inputs, torch.zeros(4, 7, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        reestimate_batchnorm(model, [{"inputs": good}, {"inputs": bad}])
    assert model.running_mean.tolist() == [5.0, 5.0, 5.0]
    assert model.running_var.tolist() == [1.0, 1.0, 1.0]
    assert model.num_batches_tracked.item() == 0 and model.momentum == 0.1
    with pytest.raises(InputError, match="the data yielded no batches"):
        reestimate_batchnorm(model, [])
    assert model.running_mean.tolist() == [5.0, 5.0, 5.0]


def test_bad_arguments():
    model, data = nn.BatchNorm1d(3), rows(4)
    with pytest.raises(InputError, match=r"model is a str; expected an nn\.Module"):
        reestimate_batchnorm("model", data)
    with pytest.raises(InputError, match="batch_size=0; expected a whole number"):
        reestimate_batchnorm(model, data, batch_size=0)
    with pytest.raises(InputError, match=r"max_batches=1\.5"):
        reestimate_batchnorm(model, data, max_batches=1.5)
    with pytest.raises(InputError, match="expected a Dataset of dict items"):
        reestimate_batchnorm(model, 3)
