"""The training loop on real data (digits): selection, resume after a kill, hooks, precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from flipless import compare
from flipless.data.loaders import load_digits
from flipless.errors import FileFormatError, InputError
from flipless.losses import build_loss
from flipless.losses.features import OldHead
from flipless.teachers import CachedTeacher, ModelTeacher
from flipless.train import MLP, Hook, TrainSettings, fit, make_update_scenario
from flipless.train.selection import SelectionRule, undominated

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_fit_worker.py")


@pytest.fixture(scope="module")
def scenario():
    return make_update_scenario(load_digits(), old_fraction=0.3, seed=0)


@pytest.fixture(scope="module")
def old_model(scenario):
    torch.manual_seed(1)
    settings = TrainSettings(epochs=6, batch_size=32, progress="none", seed=1)
    sgd = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)  # noqa: E731
    return fit(
        MLP(64, 10, hidden=(64,)), scenario.old_train, optimizer=sgd, settings=settings
    ).model


def _sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.05, momentum=0.9)


def _new(seed: int = 2) -> MLP:
    torch.manual_seed(seed)
    return MLP(64, 10, hidden=(64,))


def _predictions(model, data) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(data.inputs).argmax(dim=1).numpy()


def test_fit_measures_every_epoch_against_the_old_model(scenario, old_model):
    settings = TrainSettings(epochs=3, batch_size=32, progress="none", select="last")
    result = fit(
        _new(),
        scenario.new_train,
        scenario.validation,
        old_model=old_model,
        optimizer=_sgd,
        settings=settings,
    )
    assert [r.epoch for r in result.history] == [0, 1, 2]
    assert result.best_epoch == 2 and result.rule == "last"
    expected = compare(
        _predictions(old_model, scenario.validation),
        _predictions(result.model, scenario.validation),
        scenario.validation.labels.numpy(),
    )
    last = result.history[-1]
    assert last.accuracy == pytest.approx(expected.accuracy_new, abs=0)
    assert last.negative_flip_rate == pytest.approx(expected.negative_flip_rate, abs=0)
    assert result.comparison.negative_flips == expected.negative_flips
    assert last.accuracy > 0.85
    steps = len(scenario.new_train) // 32 + (len(scenario.new_train) % 32 > 0)
    assert last.steps == steps and last.train_loss < result.history[0].train_loss


def test_the_kept_epoch_follows_the_rule_on_validation(scenario, old_model, tmp_path):
    settings = TrainSettings(epochs=4, batch_size=64, progress="none", select="nfr")
    result = fit(
        _new(),
        scenario.new_train,
        scenario.validation,
        objective=build_loss("fd-kl"),
        teacher=ModelTeacher(old_model),
        optimizer=_sgd,
        settings=settings,
        output_dir=tmp_path,
    )
    nfr = [r.negative_flip_rate for r in result.history]
    accuracy = [r.accuracy for r in result.history]
    assert result.best_epoch == min(range(4), key=lambda i: (nfr[i], -accuracy[i], i))
    assert result.comparison.negative_flip_rate == nfr[result.best_epoch]
    assert result.comparison.accuracy_new == accuracy[result.best_epoch]
    assert (tmp_path / "best.safetensors").exists() and (tmp_path / "checkpoint.pt").exists()
    assert set(result.history[0].parts) == {"cross_entropy", "kl", "total"}


def test_selection_rules_by_hand():
    accuracy = [0.948, 0.950, 0.952, 0.954]
    nfr = [0.01, 0.02, 0.05, 0.04]
    assert SelectionRule.parse("accuracy").best(accuracy, nfr) == 3
    assert SelectionRule.parse("nfr").best(accuracy, nfr) == 0
    assert SelectionRule.parse("nfr-within:0.005").best(accuracy, nfr) == 1
    assert SelectionRule.parse("nfr-within:0.004").best(accuracy, nfr) == 1
    assert SelectionRule.parse("nfr-within:0.001").best(accuracy, nfr) == 3
    assert SelectionRule.parse("last").best(accuracy, nfr) == 3
    # the epoch chosen after three epochs (0) is not the one chosen after four (1), which
    # was never the choice before: every undominated epoch must be kept
    assert SelectionRule.parse("nfr-within:0.005").best(accuracy[:3], nfr[:3]) == 0
    for bad in ("best", "nfr-within", "nfr-within:2", "accuracy:1"):
        with pytest.raises(InputError, match="selection rule"):
            SelectionRule.parse(bad)
    with pytest.raises(InputError, match="undefined"):
        SelectionRule.parse("nfr").best([0.5], [float("nan")])


def test_undominated_epochs_are_kept():
    accuracy, nfr = [0.9, 0.95, 0.9, 0.8], [0.02, 0.03, 0.02, 0.05]
    assert undominated(accuracy, nfr) == {0, 1}  # 2 ties 0 (earlier wins); 3 is beaten
    assert undominated([0.9, 0.9], [float("nan"), float("nan")]) == {0}


KILLED_RUN = textwrap.dedent(
    """
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    from flipless.train import Hook, TrainSettings, fit, make_update_scenario, MLP
    from flipless.data.loaders import load_digits

    torch.set_num_threads(1)
    where, moment, at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class Kill(Hook):
        def before_optimizer_step(self, trainer):
            if moment == "step" and trainer.step == at:
                os._exit(3)

        def on_epoch_end(self, trainer, record):
            if moment == "validation" and trainer.epoch == at:
                os._exit(3)

    scenario = make_update_scenario(load_digits(), old_fraction=0.3, seed=0)
    torch.manual_seed(2)
    model = MLP(64, 10, hidden=(64,), dropout=0.2)
    settings = TrainSettings(epochs=3, batch_size=32, progress="none", checkpoint_every=7, seed=5)
    fit(model, scenario.new_train, scenario.validation, settings=settings, output_dir=where,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=20, gamma=0.5),
        hooks=[Kill()])
    """
)


def _resumable_run(scenario, where):
    torch.manual_seed(2)
    model = MLP(64, 10, hidden=(64,), dropout=0.2)  # dropout: the RNG state matters
    settings = TrainSettings(epochs=3, batch_size=32, progress="none", checkpoint_every=7, seed=5)
    return fit(
        model,
        scenario.new_train,
        scenario.validation,
        settings=settings,
        output_dir=where,
        optimizer=_sgd,
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=20, gamma=0.5),
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("moment", "at"), [("step", 12), ("validation", 1)])
def test_a_killed_run_resumes_to_the_same_result(scenario, tmp_path, moment, at):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = _resumable_run(scenario, tmp_path / "straight")
        script = tmp_path / "killed.py"
        script.write_text(KILLED_RUN.format(tests=str(REPO / "src")))
        killed = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "resumed"), moment, str(at)],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert killed.returncode == 3, killed.stderr[-2000:]
        assert (tmp_path / "resumed" / "checkpoint.pt").exists()
        resumed = _resumable_run(scenario, tmp_path / "resumed")
    finally:
        torch.set_num_threads(threads)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]
    assert resumed.best_epoch == straight.best_epoch


def test_resume_refuses_other_settings_and_bad_checkpoints(scenario, tmp_path):
    settings = TrainSettings(epochs=1, batch_size=64, progress="none")
    fit(_new(), scenario.new_train, settings=settings, output_dir=tmp_path)
    other = TrainSettings(epochs=1, batch_size=32, progress="none")
    with pytest.raises(InputError, match="batch_size"):
        fit(_new(), scenario.new_train, settings=other, output_dir=tmp_path)
    fit(_new(), scenario.new_train, settings=other, output_dir=tmp_path, resume=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(FileFormatError, match="weights_only"):
        fit(_new(), scenario.new_train, settings=other, output_dir=tmp_path)


def test_gradient_accumulation_gives_the_same_steps(scenario):
    results = []
    for accumulation in (1, 4):
        torch.manual_seed(3)
        model = MLP(64, 10, hidden=(32,)).double()
        data = scenario.new_train
        double = type(data)(data.inputs.double(), data.labels, data.ids, data.class_names)
        settings = TrainSettings(
            epochs=1, batch_size=64, accumulation_steps=accumulation, progress="none"
        )
        results.append(fit(model, double, optimizer=_sgd, settings=settings).model)
    for name, value in results[0].state_dict().items():
        torch.testing.assert_close(results[1].state_dict()[name], value, rtol=1e-9, atol=1e-12)


class Recorder(Hook):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gradient_seen = False
        self.restored = None

    def on_fit_start(self, trainer):
        self.calls.append("start")

    def before_backward(self, trainer, loss):
        self.calls.append("backward")
        return loss * 1.0

    def before_optimizer_step(self, trainer):
        self.calls.append("step")
        self.gradient_seen |= all(p.grad is not None for p in trainer.model.parameters())

    def on_epoch_end(self, trainer, record):
        self.calls.append(f"epoch {record.epoch}")

    def state_dict(self):
        return {"count": torch.tensor(len(self.calls))}

    def load_state_dict(self, state):
        self.restored = int(state["count"])


def test_hooks_run_in_order_and_keep_their_state(scenario, tmp_path):
    hook = Recorder()
    settings = TrainSettings(epochs=1, batch_size=512, accumulation_steps=2, progress="none")
    fit(_new(), scenario.new_train, settings=settings, hooks=[hook], output_dir=tmp_path)
    steps = len(scenario.new_train) // 512 + (len(scenario.new_train) % 512 >= 2)
    assert hook.calls == ["start"] + ["backward", "backward", "step"] * steps + ["epoch 0"]
    assert hook.gradient_seen
    again = Recorder()
    longer = TrainSettings(epochs=1, batch_size=512, accumulation_steps=2, progress="none")
    fit(_new(), scenario.new_train, settings=longer, hooks=[again], output_dir=tmp_path)
    assert again.restored == len(hook.calls)  # the checkpoint is written after on_epoch_end
    with pytest.raises(InputError, match="hook"):
        fit(_new(), scenario.new_train, settings=settings, hooks=[object()])


def test_teachers_and_feature_terms_in_the_loop(scenario, old_model, tmp_path):
    settings = TrainSettings(epochs=1, batch_size=64, progress="none")
    data = scenario.new_train
    loader = [(data.inputs[i : i + 200], data.ids[i : i + 200]) for i in range(0, len(data), 200)]
    cached = CachedTeacher.build(old_model, loader, tmp_path / "teacher.safetensors")
    live = fit(
        _new(),
        data,
        objective=build_loss("ldi"),
        teacher=ModelTeacher(old_model),
        optimizer=_sgd,
        settings=settings,
    )
    from_cache = fit(
        _new(), data, objective=build_loss("ldi"), teacher=cached, optimizer=_sgd, settings=settings
    )
    assert live.history[0].train_loss == pytest.approx(from_cache.history[0].train_loss, rel=1e-6)
    bct = fit(
        _new(),
        data,
        objective=build_loss("bct", old_head=OldHead.from_model(old_model)),
        settings=settings,
    )
    assert set(bct.history[0].parts) == {"cross_entropy", "bct", "total"}
    cna = fit(
        _new(),
        data,
        objective=build_loss("cna"),
        teacher=ModelTeacher(old_model),
        settings=settings,
    )
    assert np.isfinite(cna.history[0].parts["cna"])
    with pytest.raises(InputError, match="teacher"):
        fit(_new(), data, objective=build_loss("fd-kl"), settings=settings)


def test_bf16_on_the_cpu_and_settings_errors(scenario):
    settings = TrainSettings(epochs=1, batch_size=64, precision="bf16", progress="none")
    result = fit(_new(), scenario.new_train, scenario.validation, settings=settings)
    assert np.isfinite(result.history[0].train_loss) and result.history[0].accuracy > 0.3
    with pytest.raises(InputError, match="CUDA"):
        fit(_new(), scenario.new_train, settings=TrainSettings(precision="fp16", progress="none"))
    for bad in ({"epochs": 0}, {"batch_size": 1.5}, {"precision": "fp8"}, {"progress": "loud"}):
        with pytest.raises(InputError):
            TrainSettings(**bad)
    with pytest.raises(InputError, match="multiple"):
        fit(_new(), scenario.new_train, settings=TrainSettings(batch_size=30, accumulation_steps=4))
    with pytest.raises(InputError, match="needs validation_data"):
        fit(_new(), scenario.new_train, settings=TrainSettings(select="nfr"))
    with pytest.raises(InputError, match="old model's validation predictions"):
        fit(
            _new(),
            scenario.new_train,
            scenario.validation,
            settings=TrainSettings(select="nfr", progress="none"),
        )


def test_old_validation_predictions_can_be_given(scenario, old_model):
    settings = TrainSettings(epochs=1, batch_size=64, progress="none")
    given = _predictions(old_model, scenario.validation)
    by_array = fit(
        _new(),
        scenario.new_train,
        scenario.validation,
        old_validation_predictions=given,
        settings=settings,
    )
    by_model = fit(
        _new(), scenario.new_train, scenario.validation, old_model=old_model, settings=settings
    )
    assert by_array.history[0].negative_flip_rate == by_model.history[0].negative_flip_rate
    with pytest.raises(InputError, match="one prediction"):
        fit(
            _new(),
            scenario.new_train,
            scenario.validation,
            old_validation_predictions=given[:5],
            settings=settings,
        )


def test_progress_lines(scenario, capsys):
    fit(
        _new(),
        scenario.new_train,
        scenario.validation,
        settings=TrainSettings(epochs=2, progress="log"),
    )
    captured = capsys.readouterr()
    assert captured.out == ""  # progress goes to stderr; stdout is for results
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ") and "NFR n/a" in lines[0]


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_two_processes_give_the_one_process_result(tmp_path, scenario, torchrun):
    out = tmp_path / "ddp.json"
    torchrun(WORKER, out, timeout=280)
    result = json.loads(out.read_text())
    spec: dict = {"__name__": "fit_worker"}
    exec(WORKER.read_text(), spec)
    single = spec["run"](None)
    assert result["world"] == 2
    np.testing.assert_allclose(result["parameters"], single["parameters"], rtol=1e-4, atol=1e-6)
    assert result["accuracy"] == pytest.approx(
        single["accuracy"], abs=2 / single["validation_size"]
    )
    assert result["negative_flip_rate"] == pytest.approx(
        single["negative_flip_rate"], abs=2 / single["validation_size"]
    )
    assert result["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)
    # the teacher cache built by two processes equals the one built by one
    shared = CachedTeacher.load(f"{out}.cache.safetensors")
    alone = CachedTeacher.build(
        spec["teacher_model"](), spec["teacher_batches"](), tmp_path / "one"
    )
    every_id = torch.cat([ids for _, ids in spec["teacher_batches"]()])
    assert len(shared) == len(alone) == 70
    torch.testing.assert_close(shared.logits(None, every_id), alone.logits(None, every_id))


def test_mlflow_tracking_of_a_run(scenario, old_model, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from flipless import Comparison
    from flipless.tracking import MlflowTracker

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, experiment="loop", run_name="fd-kl")
    settings = TrainSettings(epochs=2, batch_size=64, progress="none")
    result = fit(
        _new(),
        scenario.new_train,
        scenario.validation,
        objective=build_loss("fd-kl"),
        teacher=ModelTeacher(old_model),
        settings=settings,
        tracker=tracker,
    )
    tracker.close()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert (
        run.data.params["settings.epochs"] == "2" and run.data.params["teacher"] == "ModelTeacher"
    )
    history = client.get_metric_history(tracker.run_id, "val/negative_flip_rate")
    assert [m.step for m in history] == [0, 1]
    assert [m.value for m in history] == pytest.approx(
        [r.negative_flip_rate for r in result.history]
    )
    kl = client.get_metric_history(tracker.run_id, "train/kl")
    assert [m.value for m in kl] == pytest.approx([r.parts["kl"] for r in result.history])
    folder = client.download_artifacts(tracker.run_id, "validation_comparison.json", str(tmp_path))
    logged = Comparison.from_json(folder)
    assert logged.negative_flips == result.comparison.negative_flips


def test_gradients_left_on_the_model_do_not_leak_into_the_first_step(scenario):
    settings = TrainSettings(epochs=1, batch_size=512, progress="none")
    clean = fit(_new(), scenario.new_train, optimizer=_sgd, settings=settings).model
    stale = _new()
    for parameter in stale.parameters():
        parameter.grad = torch.ones_like(parameter)
    dirty = fit(stale, scenario.new_train, optimizer=_sgd, settings=settings).model
    for name, value in clean.state_dict().items():
        torch.testing.assert_close(dirty.state_dict()[name], value, rtol=0, atol=0)


def test_a_frozen_model_is_refused(scenario, old_model):
    import copy

    frozen = copy.deepcopy(old_model)  # ModelTeacher froze the old model
    with pytest.raises(InputError, match="no trainable parameters"):
        fit(frozen, scenario.new_train, settings=TrainSettings(epochs=1, progress="none"))


def test_an_old_model_with_fewer_classes_is_measured_in_the_new_label_space(scenario):
    from flipless.teachers import LabelMap

    torch.manual_seed(5)
    old = MLP(64, 9, hidden=(16,))  # its class i is the new class i + 1; it never saw class 0
    with torch.no_grad():
        old.head.bias.fill_(-100.0)  # every known logit < 0: the map's 0 for class 0 must not win
    teacher = ModelTeacher(old, label_map=LabelMap(tuple(range(1, 10)), 10))
    settings = TrainSettings(epochs=1, batch_size=64, progress="none", select="last")
    result = fit(
        _new(),
        scenario.new_train,
        scenario.validation,
        objective=build_loss("fd-kl"),
        teacher=teacher,
        settings=settings,
    )
    with torch.no_grad():
        old_answers = old(scenario.validation.inputs).argmax(dim=1).numpy() + 1  # classes 1–9
    new_answers = _predictions(result.model, scenario.validation)
    labels = scenario.validation.labels.numpy()
    expected = compare(old_answers, new_answers, labels, old_classes=range(1, 10))
    assert result.history[0].negative_flip_rate == expected.negative_flip_rate
    assert (old_answers > 0).all()
    # by hand: flips counted only where the label is a class the old model knows (1–9)
    known = labels > 0
    broken = (old_answers == labels) & (new_answers != labels) & known
    assert expected.negative_flip_rate == broken.sum() / known.sum()
    assert result.comparison.restriction.excluded == int((~known).sum()) > 0


def test_old_classes_restrict_the_validation_comparison_of_plain_training(scenario, old_model):
    settings = TrainSettings(epochs=1, batch_size=64, progress="none", select="last")
    result = fit(
        _new(),
        scenario.new_train,
        scenario.validation,
        old_model=old_model,
        old_classes=[0, 1, 2],
        settings=settings,
    )
    labels = scenario.validation.labels.numpy()
    old_answers = _predictions(old_model, scenario.validation)
    new_answers = _predictions(result.model, scenario.validation)
    known = labels <= 2
    broken = (old_answers == labels) & (new_answers != labels) & known
    assert result.history[0].negative_flip_rate == broken.sum() / known.sum()
    assert result.comparison.total == int(known.sum())
    # the epoch's accuracy is over every validation example, the new classes included
    assert result.history[0].accuracy == float((new_answers == labels).mean())


class _LastWeights(Hook):
    """Remembers the weights at the end of every epoch."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.model = None

    def on_fit_start(self, trainer) -> None:
        self.model = trainer.model

    def on_epoch_end(self, trainer, record) -> None:
        self.weights.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})


def test_without_validation_the_last_epoch_is_kept(scenario):
    """Regression: with no validation data every epoch's accuracy is NaN, and the default rule
    "accuracy" used to keep epoch 0."""
    remember = _LastWeights()
    settings = TrainSettings(epochs=3, batch_size=32, progress="none", seed=0)
    result = fit(_new(), scenario.new_train, optimizer=_sgd, settings=settings, hooks=[remember])
    assert len(remember.weights) == 3
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(value, remember.weights[-1][name], rtol=0, atol=0)
    assert not torch.equal(remember.weights[0]["head.weight"], remember.weights[-1]["head.weight"])


def test_selection_rules_refuse_undefined_accuracy():
    nan = float("nan")
    with pytest.raises(InputError, match="validation accuracy of every epoch"):
        SelectionRule.parse("accuracy").best([0.5, nan], [0.1, 0.1])
    assert SelectionRule.parse("last").best([nan, nan], [nan, nan]) == 1
