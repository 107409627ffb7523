"""The Lightning integration, in real (short) Lightning runs on CPU on scikit-learn's digits.

An old MLP is trained by hand on 150 training images; a LightningModule trains a new MLP with
:func:`compatibility_step` and the ``fd-kl`` objective for two epochs, with a
:class:`FlipMetricsCallback` fed by the old model and another fed by the old predictions by id.
Each epoch's logged rates are checked against counts made by hand in numpy (float64) from the
new model's validation logits, captured by the module itself.
"""

from __future__ import annotations

import importlib
import math
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

pl = pytest.importorskip("pytorch_lightning")

from pytorch_lightning.loggers import CSVLogger  # noqa: E402

import flipless  # noqa: E402
from flipless.data.labeled import LabeledData  # noqa: E402
from flipless.data.loaders import load_digits  # noqa: E402
from flipless.errors import InputError, MismatchError, MissingExtraError  # noqa: E402
from flipless.integrations.lightning import (  # noqa: E402
    DEFAULT_METRICS,
    FlipMetricsCallback,
    compatibility_step,
)
from flipless.losses import build_loss  # noqa: E402
from flipless.models import MLP  # noqa: E402
from flipless.teachers import CachedTeacher, ModelTeacher  # noqa: E402

BATCH = 64


# --------------------------------------------------------------------------- helpers


class NewModule(pl.LightningModule):
    """Trains a new MLP with compatibility_step; keeps each validation epoch's logits.

    ``old_logits`` (optional) runs the old network: it is used only to compute by hand the loss
    parts that compatibility_step should log (a function, so that the old model is not
    registered as a submodule).
    """

    def __init__(self, objective=None, teacher=None, old_logits=None, validation_output="dict"):
        super().__init__()
        torch.manual_seed(1)
        self.model = MLP(64, 10, hidden=(32,))
        self.objective = objective
        self.teacher = teacher
        self.old_logits = old_logits
        self.validation_output = validation_output
        self.expected_parts: list[dict[str, float]] = []
        self.epoch_logits: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []

    def forward(self, inputs):
        return self.model(inputs)

    def training_step(self, batch, batch_idx):
        if self.old_logits is not None:
            with torch.no_grad():
                new_logits = self.model(batch["inputs"])
                _, parts = self.objective(
                    new_logits, batch["labels"], self.old_logits(batch["inputs"])
                )
                parts["cross_entropy_by_hand"] = F.cross_entropy(new_logits, batch["labels"])
            self.expected_parts.append({name: float(v) for name, v in parts.items()})
        return compatibility_step(self, batch, self.objective, self.teacher)

    def on_validation_epoch_start(self):
        self._logits = []

    def validation_step(self, batch, batch_idx):
        logits = self(batch["inputs"])
        self._logits.append(logits.detach().clone())
        if self.validation_output == "none":
            return None
        if self.validation_output == "tensor":
            return logits
        return {"logits": logits}

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.epoch_logits.append(torch.cat(self._logits))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class Recorder(pl.Callback):
    """Keeps each finished validation epoch's comparison of the callbacks it watches."""

    def __init__(self, watched):
        self.watched = watched
        self.comparisons = [[] for _ in watched]

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            for kept, callback in zip(self.comparisons, self.watched, strict=True):
                kept.append(callback.last_comparison)


class WithGroups(Dataset):
    """A LabeledData's dict samples plus a ``group`` index per sample."""

    def __init__(self, data: LabeledData, groups: torch.Tensor):
        self.data, self.groups = data, groups

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return {**self.data[index], "group": self.groups[index]}


class WithoutIds(Dataset):
    """A LabeledData's dict samples without their ids."""

    def __init__(self, data: LabeledData):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        sample = self.data[index]
        return {"inputs": sample["inputs"], "labels": sample["labels"]}


def _trainer(tmp_path=None, callbacks=(), **options) -> pl.Trainer:
    settings = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "logger": CSVLogger(tmp_path) if tmp_path is not None else False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": list(callbacks),
    }
    return pl.Trainer(**{**settings, **options})


def _loader(data, shuffle=False) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(data, batch_size=BATCH, shuffle=shuffle, generator=generator)


def _rates_by_hand(old_pred, new_pred, labels) -> dict[str, float]:
    """The default rates from 0/1 arrays in float64 numpy."""
    old_ok = (np.asarray(old_pred) == labels).astype(np.float64)
    new_ok = (np.asarray(new_pred) == labels).astype(np.float64)
    return {
        "negative_flip_rate": float(np.mean(old_ok * (1 - new_ok))),
        "positive_flip_rate": float(np.mean((1 - old_ok) * new_ok)),
        "backward_trust_compatibility": float(np.sum(old_ok * new_ok) / np.sum(old_ok)),
        "accuracy_new": float(np.mean(new_ok)),
        "accuracy_old": float(np.mean(old_ok)),
    }


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread is fastest and keeps the runs deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """The digits splits and an old MLP trained by hand on 150 training images."""
    splits = load_digits()
    train, test = splits["train"], splits["test"]
    torch.manual_seed(0)
    old = MLP(64, 10, hidden=(32,))
    optimizer = torch.optim.Adam(old.parameters(), lr=1e-2)
    for _ in range(40):  # full-batch Adam on a small part: a weaker old model, with flips
        loss = F.cross_entropy(old(train.inputs[:150]), train.labels[:150])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    old.eval()
    with torch.no_grad():
        old_logits = old(test.inputs)
    return SimpleNamespace(train=train, test=test, old=old, old_logits=old_logits)


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory):
    """Two epochs of compatible training, flip metrics from the old model and from its ids."""
    tmp_path = tmp_path_factory.mktemp("lightning")
    old_pred = digits.old_logits.argmax(1)
    by_id = dict(zip(digits.test.ids.tolist(), old_pred.tolist(), strict=True))
    by_model = FlipMetricsCallback(old_model=digits.old)
    by_ids = FlipMetricsCallback(old_predictions=by_id, prefix="val_by_id/")
    recorder = Recorder([by_model, by_ids])
    objective = build_loss("fd-kl")
    module = NewModule(objective, ModelTeacher(digits.old), old_logits=lambda x: digits.old(x))
    trainer = _trainer(tmp_path, [by_model, by_ids, recorder], log_every_n_steps=1)
    trainer.fit(module, _loader(digits.train, shuffle=True), _loader(digits.test))
    logged = pd.read_csv(f"{trainer.logger.log_dir}/metrics.csv")
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    return SimpleNamespace(
        module=module,
        logged=logged,
        recorder=recorder,
        by_model=by_model,
        old_pred=old_pred.numpy(),
        checkpoint=checkpoint,
        train_size=len(digits.train),
    )


# --------------------------------------------------------------------------- FlipMetricsCallback


def test_logged_rates_equal_hand_counts_after_each_epoch(fitted, digits):
    rows = fitted.logged.dropna(subset=["val/negative_flip_rate"]).reset_index(drop=True)
    assert list(rows["epoch"]) == [0, 1]
    labels = digits.test.labels.numpy()
    assert len(fitted.module.epoch_logits) == 2
    negative_flips = 0
    for epoch, new_logits in enumerate(fitted.module.epoch_logits):
        new_pred = new_logits.argmax(1).numpy()
        expected = _rates_by_hand(fitted.old_pred, new_pred, labels)
        for name in DEFAULT_METRICS:  # logged as float32
            assert rows.loc[epoch, f"val/{name}"] == pytest.approx(expected[name], rel=1e-6)
        comparison = fitted.recorder.comparisons[0][epoch]
        reference = flipless.compare(digits.old_logits, new_logits, labels)
        assert comparison.counts == reference.counts  # exact integer counts, reset each epoch
        assert comparison.counts.total == len(labels)
        assert comparison.flip_matrix.tolist() == reference.flip_matrix.tolist()
        negative_flips += comparison.counts.negative_flips
    assert negative_flips > 0  # the scenario has regressions, so the rates are not all trivial
    assert rows.loc[0, "val/accuracy_new"] != rows.loc[1, "val/accuracy_new"]
    assert fitted.by_model.last_counts == fitted.recorder.comparisons[0][-1].counts


def test_old_predictions_by_id_give_the_same_numbers_as_the_old_model(fitted):
    rows = fitted.logged.dropna(subset=["val/negative_flip_rate"]).reset_index(drop=True)
    for name in DEFAULT_METRICS:
        assert rows[f"val_by_id/{name}"].tolist() == rows[f"val/{name}"].tolist()
    from_model, from_ids = fitted.recorder.comparisons
    assert [c.counts for c in from_ids] == [c.counts for c in from_model]


def test_compatibility_step_logs_every_part_of_the_objective(fitted):
    steps = fitted.logged.dropna(subset=["train/total"]).reset_index(drop=True)
    expected = pd.DataFrame(fitted.module.expected_parts)
    assert len(steps) == len(expected) == 2 * math.ceil(fitted.train_size / BATCH)
    for name in ("cross_entropy", "kl", "total"):
        np.testing.assert_allclose(steps[f"train/{name}"], expected[name], rtol=1e-5)
    np.testing.assert_allclose(
        steps["train/cross_entropy"], expected["cross_entropy_by_hand"], rtol=1e-5
    )


def test_the_checkpoint_holds_no_state_of_the_callback(fitted):
    checkpoint = torch.load(fitted.checkpoint, weights_only=True)
    assert not [key for key in checkpoint["callbacks"] if "FlipMetricsCallback" in key]
    new_names = {f"model.{name}" for name in fitted.module.model.state_dict()}
    assert set(checkpoint["state_dict"]) == new_names  # the new model's weights only


def test_old_predictions_as_arrays_indexed_by_id_and_per_slice_rates(digits):
    test = digits.test
    size = int(test.ids.max()) + 1
    old_classes = np.zeros(size, dtype=np.int64)
    old_classes[test.ids.numpy()] = digits.old_logits.argmax(1).numpy()
    old_scores = np.zeros((size, 10), dtype=np.float32)
    old_scores[test.ids.numpy()] = digits.old_logits.numpy()
    groups = test.labels % 3
    callbacks = [
        FlipMetricsCallback(old_predictions=old_classes, prefix="classes/"),
        FlipMetricsCallback(
            old_predictions=torch.from_numpy(old_scores),
            prefix="scores/",
            metrics=["negative_flip_rate", "negative_flip_impact"],
            slice_key="group",
            slice_groups=3,
        ),
    ]
    module = NewModule()
    (logged,) = _trainer(callbacks=callbacks).validate(
        module, _loader(WithGroups(test, groups)), verbose=False
    )
    new_pred = module.epoch_logits[0].argmax(1).numpy()
    old_pred, labels = digits.old_logits.argmax(1).numpy(), test.labels.numpy()
    expected = _rates_by_hand(old_pred, new_pred, labels)
    for name in DEFAULT_METRICS:
        assert logged[f"classes/{name}"] == pytest.approx(expected[name], rel=1e-6)
    negative = (old_pred == labels) & (new_pred != labels)
    assert logged["scores/negative_flip_impact"] == pytest.approx(
        negative.sum() / (new_pred != labels).sum(), rel=1e-6
    )
    for group in range(3):
        rows = groups.numpy() == group
        assert logged[f"scores/group_{group}/negative_flip_rate"] == pytest.approx(
            negative[rows].mean(), rel=1e-6, abs=1e-9
        )
    assert set(logged) == set(
        [f"classes/{name}" for name in DEFAULT_METRICS]
        + ["scores/negative_flip_rate", "scores/negative_flip_impact"]
        + [
            f"scores/group_{g}/{n}"
            for g in range(3)
            for n in ("negative_flip_rate", "negative_flip_impact")
        ]
    )


def test_an_undefined_rate_is_logged_as_nan(digits):
    # The old model answers every sample wrongly, so BTC = #both right / #old right = 0 / 0.
    wrong = {
        int(i): int((y + 1) % 10) for i, y in zip(digits.test.ids, digits.test.labels, strict=True)
    }
    callback = FlipMetricsCallback(old_predictions=wrong)
    (logged,) = _trainer(callbacks=[callback]).validate(
        NewModule(), _loader(digits.test), verbose=False
    )
    assert math.isnan(logged["val/backward_trust_compatibility"])
    assert logged["val/accuracy_old"] == 0.0
    assert callback.last_comparison.rate("backward_trust_compatibility").reason == (
        "the old model got no sample right"
    )


# --------------------------------------------------------------------------- errors


def test_validation_step_without_logits_is_a_clear_error(digits):
    callback = FlipMetricsCallback(old_model=digits.old)
    for output, got in (("none", "it returned None"), ("tensor", "it returned a Tensor")):
        trainer = _trainer(callbacks=[callback])
        with pytest.raises(InputError, match=rf"must return a dict with 'logits'.*{got}"):
            trainer.validate(
                NewModule(validation_output=output), _loader(digits.test), verbose=False
            )


def test_a_batch_without_ids_is_a_clear_error_with_old_predictions(digits):
    callback = FlipMetricsCallback(old_predictions=np.zeros(2000, dtype=np.int64))
    with pytest.raises(
        InputError, match=r"no 'ids' \(sample ids \[B\].*keys \['inputs', 'labels'\]"
    ):
        _trainer(callbacks=[callback]).validate(
            NewModule(), _loader(WithoutIds(digits.test)), verbose=False
        )


def test_ids_without_an_old_prediction_are_a_clear_error(digits):
    known = {int(i): 0 for i in digits.test.ids[1:]}
    first = int(digits.test.ids[0])
    callback = FlipMetricsCallback(old_predictions=known)
    with pytest.raises(InputError, match=rf"1 of {BATCH} ids .* no old prediction \(ids {first}\)"):
        _trainer(callbacks=[callback]).validate(NewModule(), _loader(digits.test), verbose=False)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "got neither of old_model and old_predictions"),
        ({"old_model": torch.nn.Linear(2, 2), "old_predictions": [0, 1]}, "got both"),
        ({"old_predictions": {}}, "empty mapping"),
        ({"old_predictions": np.zeros((2, 3, 4))}, r"shape \(2, 3, 4\); expected a mapping"),
        ({"old_predictions": [0, -1]}, "negative value"),
        ({"old_predictions": [0, 1], "metrics": ["nfr"]}, r"unknown or no rate names \['nfr'\]"),
        ({"old_predictions": [0, 1], "metrics": "negative_flip_rate"}, "sequence of rate names"),
        ({"old_predictions": [0, 1], "slice_key": "group"}, "give both"),
        ({"old_predictions": [0, 1], "num_classes": 10, "top_k": 10}, "top_k=10; expected"),
        ({"old_predictions": [0, 1], "num_classes": 1}, "at least 2 classes"),
        (
            {"old_predictions": [0, 1], "num_classes": 2, "slice_key": "g", "slice_groups": 0},
            "'g' has 0 groups",
        ),
    ],
)
def test_bad_arguments_are_clear_errors(arguments, message):
    with pytest.raises(InputError, match=message):
        FlipMetricsCallback(**arguments)


def test_logits_of_another_width_than_num_classes_are_a_clear_error(digits):
    callback = FlipMetricsCallback(old_model=digits.old, num_classes=12)
    with pytest.raises(MismatchError, match="10 columns; expected num_classes=12"):
        _trainer(callbacks=[callback]).validate(NewModule(), _loader(digits.test), verbose=False)


def test_compatibility_step_needs_a_teacher_for_fd_kl_and_ids_for_a_cached_teacher(digits):
    batch = next(iter(_loader(WithoutIds(digits.test))))
    with pytest.raises(InputError, match=r"needs the old model's logits.*teacher is None"):
        compatibility_step(NewModule(), batch, build_loss("fd-kl"))
    cached = CachedTeacher(digits.test.ids, digits.old_logits)
    with pytest.raises(InputError, match=r"CachedTeacher looks its logits up by sample id.*'ids'"):
        compatibility_step(NewModule(), batch, build_loss("fd-kl"), cached)
    with pytest.raises(InputError, match=r"no 'labels' \(true classes"):
        compatibility_step(NewModule(), {"inputs": batch["inputs"]}, build_loss("fd-kl"), cached)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_compatibility_step_with_a_cached_teacher_logs_the_parts_of_the_old_model(digits, tmp_path):
    with torch.no_grad():
        cached = CachedTeacher(digits.train.ids, digits.old(digits.train.inputs))
    module = NewModule(build_loss("fd-kl"), cached, old_logits=lambda x: digits.old(x))
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(module, _loader(digits.train, shuffle=True))
    steps = pd.read_csv(f"{trainer.logger.log_dir}/metrics.csv").dropna(subset=["train/total"])
    expected = pd.DataFrame(module.expected_parts)
    assert len(steps) == 3
    for name in ("cross_entropy", "kl", "total"):
        np.testing.assert_allclose(steps[f"train/{name}"], expected[name], rtol=1e-5)


def test_without_lightning_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)  # the import now fails
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "flipless.integrations.lightning")
    with pytest.raises(MissingExtraError, match=r"pip install 'flipless\[lightning\]'"):
        importlib.import_module("flipless.integrations.lightning")
