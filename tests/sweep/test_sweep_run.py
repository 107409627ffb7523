"""Running sweeps on the digits: records, resume, refusals, failures, workers, Ray, MLflow."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch

from flipless.errors import FileFormatError, FliplessError
from flipless.metrics.comparison import Comparison
from flipless.models import load_model
from flipless.sweep.config import load_sweep_config, parse_sweep_config
from flipless.sweep.runner import run_sweep
from flipless.sweep.store import read_records
from flipless.sweep.workspace import FolderLock, read_events
from flipless.train.config import TrackingConfig
from flipless.train.recipe import load_scenario

BASE = """
seed = 0

[data]
name = "digits"

[model]
name = "mlp"
hidden = [16]

[old]
train_epochs = 2

[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9

[train]
epochs = 2
batch_size = 64
progress = "none"
"""
FD_KL_AND_BCWI = [
    {"method": "fd-kl", "strengths": [1.0]},
    {"method": "bcwi", "strengths": [0.5]},
]
RECORD_KEYS = {
    "schema",
    "point_id",
    "method",
    "kind",
    "strength_name",
    "strength",
    "seed",
    "config",
    "metrics",
    "comparison_path",
    "model_path",
    "duration_s",
    "finished_at",
    "versions",
}
SPLIT_KEYS = {
    "accuracy",
    "old_accuracy",
    "negative_flip_rate",
    "positive_flip_rate",
    "relative_negative_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
    "size",
}


def sweep_config(store: Path, methods, seeds=(0,), epochs=2, **sweep):
    """A sweep of BASE; one torch thread per point (fast for this MLP, and the same numbers on
    every backend)."""
    document = tomllib.loads(BASE)
    document["train"]["epochs"] = epochs
    document["sweep"] = {"store": str(store), "seeds": list(seeds), "methods": methods}
    document["sweep"] |= {"threads": 1, **sweep}
    return parse_sweep_config(document)


def metrics_by_id(records):
    return {record["point_id"]: record["metrics"] for record in records}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """fd-kl λ = 1 and bcwi α = 0.5 (with the cross-entropy point), seed 0, run in-process."""
    folder = tmp_path_factory.mktemp("sweep")
    config = sweep_config(folder / "results.jsonl", FD_KL_AND_BCWI)
    return config, run_sweep(config, quiet=True)


def copy_of(finished, tmp_path) -> Path:
    """A copy of the finished sweep's folder (records hold relative paths)."""
    config, _ = finished
    shutil.copytree(config.folder, tmp_path / "copy")
    return tmp_path / "copy"


def test_records_follow_the_contract(finished):
    config, outcome = finished
    scenario = load_scenario(config.base)
    sizes = {"train": len(scenario.new_train), "dev": len(scenario.validation)}
    sizes["test"] = len(scenario.test)
    assert [r["point_id"] for r in outcome.records] == [
        "cross-entropy/seed=0",
        "fd-kl/weight=1.0/seed=0",
        "bcwi/old_weight=0.5/seed=0",
    ]
    assert outcome.ran == [r["point_id"] for r in outcome.records] and outcome.skipped == []
    assert read_records(config.store) == outcome.records
    for record in outcome.records:
        assert set(record) >= RECORD_KEYS
        assert record["schema"] == "flipless.sweep-record/1"
        assert set(record["metrics"]) == {"train", "dev", "test"}
        for split, values in record["metrics"].items():
            assert set(values) == SPLIT_KEYS
            assert values["size"] == sizes[split]
        assert (
            record["comparison_path"]
            == f"points/{record['point_id'].replace('/', '__')}/test_comparison.json"
        )
        assert record["model_path"].endswith("/model.safetensors")
        assert record["duration_s"] > 0 and record["finished_at"].endswith("+00:00")
        assert set(record["versions"]) == {"flipless", "torch", "python"}
        assert record["config"]["seed"] == 0 and record["config"]["train"]["seed"] == 0
    ce, fd, bcwi = outcome.records
    assert (ce["strength_name"], ce["strength"], ce["kind"]) == ("weight", None, "loss")
    assert (fd["strength_name"], fd["strength"]) == ("weight", 1.0)
    assert fd["config"]["loss"] == {
        "preset": "fd-kl",
        "teacher": "model",
        "ce_weight": 1.0,
        "overrides": {"weight": 1.0},
    }
    assert (bcwi["kind"], bcwi["strength_name"], bcwi["strength"]) == (
        "interpolation",
        "old_weight",
        0.5,
    )
    assert bcwi["config"]["interpolation"]["new_model"] == ce["model_path"]


def test_metrics_match_a_computation_by_hand(finished):
    config, outcome = finished
    scenario = load_scenario(config.base)
    old = load_model(config.folder / "old.safetensors")
    splits = {"train": scenario.new_train, "dev": scenario.validation, "test": scenario.test}
    for record in outcome.records:
        new = load_model(config.folder / record["model_path"])
        for split, data in splits.items():
            with torch.no_grad():
                old_right = old(data.inputs).argmax(1).numpy() == data.labels.numpy()
                new_right = new(data.inputs).argmax(1).numpy() == data.labels.numpy()
            total = len(old_right)
            negative, positive = (old_right & ~new_right).sum(), (~old_right & new_right).sum()
            expected = {
                "accuracy": new_right.sum() / total,
                "old_accuracy": old_right.sum() / total,
                "negative_flip_rate": negative / total,
                "positive_flip_rate": positive / total,
                "relative_negative_flip_rate": negative
                * total
                / (old_right.sum() * (~new_right).sum()),
                "backward_trust_compatibility": (old_right & new_right).sum() / old_right.sum(),
                "backward_error_compatibility": (~old_right & ~new_right).sum()
                / (~new_right).sum(),
                "size": total,
            }
            assert record["metrics"][split] == pytest.approx(expected, rel=1e-12), split
        comparison = Comparison.from_json(str(config.folder / record["comparison_path"]))
        assert comparison.negative_flip_rate == record["metrics"]["test"]["negative_flip_rate"]
        assert comparison.accuracy_new == record["metrics"]["test"]["accuracy"]


def test_every_point_is_measured_against_the_same_old_model(finished):
    config, outcome = finished
    old_path = str(config.folder / "old.safetensors")
    assert {record["config"]["old"]["checkpoint"] for record in outcome.records} == {old_path}
    for split in ("train", "dev", "test"):
        assert len({r["metrics"][split]["old_accuracy"] for r in outcome.records}) == 1


def test_bcwi_is_the_plain_interpolation_of_old_and_cross_entropy(finished):
    config, outcome = finished
    ce, _, bcwi = outcome.records
    old = load_model(config.folder / "old.safetensors").state_dict()
    new = load_model(config.folder / ce["model_path"]).state_dict()
    merged = load_model(config.folder / bcwi["model_path"]).state_dict()
    assert merged.keys() == old.keys()
    for name, tensor in merged.items():
        expected = 0.5 * old[name].double() + 0.5 * new[name].double()
        assert torch.allclose(tensor.double(), expected, rtol=0, atol=1e-7), name
    assert not torch.equal(merged["head.weight"], new["head.weight"])


def test_fisher_bcwi_weights_by_the_old_models_fisher(finished, tmp_path):
    from flipless.merge.fisher import fisher_diagonal, load_fisher

    folder = copy_of(finished, tmp_path)
    methods = [*FD_KL_AND_BCWI, {"method": "fisher-bcwi", "strengths": [0.3]}]
    config = sweep_config(folder / "results.jsonl", methods)
    outcome = run_sweep(config, quiet=True)
    assert outcome.ran == ["fisher-bcwi/old_weight=0.3/seed=0"]
    record = outcome.records[-1]
    assert (record["kind"], record["strength_name"]) == ("interpolation", "old_weight")
    assert record["config"]["interpolation"]["fisher"] == "old_fisher.safetensors"
    old_model = load_model(folder / "old.safetensors")
    fisher = load_fisher(folder / "old_fisher.safetensors")  # on the old model's training split
    recomputed = fisher_diagonal(old_model, load_scenario(config.base).old_train)
    assert all(torch.equal(fisher[name], recomputed[name]) for name in recomputed)
    old = old_model.state_dict()
    new = load_model(folder / outcome.records[0]["model_path"]).state_dict()
    merged = load_model(folder / record["model_path"]).state_dict()
    alpha = 0.3
    for name, tensor in merged.items():  # θ = (α F θ_old + (1 − α) θ_ce) / (α F + 1 − α)
        weight = alpha * fisher[name].double()
        expected = (weight * old[name].double() + (1 - alpha) * new[name].double()) / (
            weight + 1 - alpha
        )
        assert torch.allclose(tensor.double(), expected, rtol=0, atol=1e-6), name
    plain = 0.7 * new["head.weight"].double() + 0.3 * old["head.weight"].double()
    assert not torch.allclose(merged["head.weight"].double(), plain, rtol=0, atol=1e-6)


def test_a_rerun_runs_nothing(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    before = (folder / "results.jsonl").read_bytes()
    outcome = run_sweep(sweep_config(folder / "results.jsonl", FD_KL_AND_BCWI), quiet=True)
    assert outcome.ran == [] and len(outcome.skipped) == 3
    assert (folder / "results.jsonl").read_bytes() == before
    assert [event for event, _ in read_events(folder)].count("started") == 3


def test_a_grown_grid_runs_only_its_new_points(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    methods = [FD_KL_AND_BCWI[0], {"method": "bcwi", "strengths": [0.5, 0.25]}]
    outcome = run_sweep(sweep_config(folder / "results.jsonl", methods), quiet=True)
    assert outcome.ran == ["bcwi/old_weight=0.25/seed=0"]
    _, first = finished
    assert metrics_by_id(outcome.records[:3]) == metrics_by_id(first.records)


def test_a_changed_base_config_is_refused_unless_a_new_store_is_asked_for(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    changed = sweep_config(folder / "results.jsonl", [{"method": "cross-entropy"}], epochs=1)
    with pytest.raises(FliplessError, match=r"base config differs .* \(changed: train.epochs\)"):
        run_sweep(changed, quiet=True)
    outcome = run_sweep(changed, quiet=True, new_store=True)
    assert outcome.moved_to.parent == folder and outcome.moved_to.name.startswith("replaced-")
    assert len(read_records(outcome.moved_to / "results.jsonl")) == 3
    assert outcome.ran == ["cross-entropy/seed=0"]
    assert outcome.records[0]["config"]["train"]["epochs"] == 1


def test_changed_method_options_are_refused(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    methods = [{"method": "fd-kl", "strengths": [1.0], "options": {"temperature": 10}}]
    with pytest.raises(
        FliplessError, match=r"record of fd-kl/weight=1.0/seed=0 was made with other settings"
    ):
        run_sweep(sweep_config(folder / "results.jsonl", methods), quiet=True)


def test_a_store_without_its_sidecar_or_a_busy_folder_is_refused(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    config = sweep_config(folder / "results.jsonl", FD_KL_AND_BCWI)
    with FolderLock(folder), pytest.raises(FliplessError, match="another sweep is running"):
        run_sweep(config, quiet=True)
    other = sweep_config(folder / "other.jsonl", FD_KL_AND_BCWI)
    with pytest.raises(FliplessError, match=r"holds the sweep of the store 'results.jsonl'"):
        run_sweep(other, quiet=True)
    (folder / "sweep.json").unlink()
    with pytest.raises(FliplessError, match=r"exists but .*sweep.json does not"):
        run_sweep(config, quiet=True)


def test_a_failed_point_is_reported_and_the_others_finish(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    (folder / "points/cross-entropy__seed=0/model.safetensors").unlink()
    methods = [
        {"method": "fd-kl", "strengths": [1.0, 2.0]},
        {"method": "bcwi", "strengths": [0.5, 0.25]},
    ]
    with pytest.raises(
        FliplessError,
        match=r"1 of 5 points failed \(bcwi/old_weight=0.25/seed=0: MissingFileError: no model checkpoint",
    ):
        run_sweep(sweep_config(folder / "results.jsonl", methods), quiet=True)
    assert "fd-kl/weight=2.0/seed=0" in {
        r["point_id"] for r in read_records(folder / "results.jsonl")
    }
    error = (folder / "points/bcwi__old_weight=0.25__seed=0/error.txt").read_text()
    assert "MissingFileError" in error and "Traceback" in error
    assert ("failed", "bcwi/old_weight=0.25/seed=0") in read_events(folder)


def test_a_parquet_store_gives_the_same_records(finished, tmp_path):
    config = sweep_config(tmp_path / "results.parquet", [{"method": "cross-entropy"}])
    outcome = run_sweep(config, quiet=True)
    _, first = finished
    assert read_records(tmp_path / "results.parquet") == outcome.records
    assert outcome.records[0]["metrics"] == first.records[0]["metrics"]
    assert outcome.records[0]["point_id"] == first.records[0]["point_id"]


def test_a_given_old_checkpoint_is_used_as_it_is(finished, tmp_path):
    config, first = finished
    document = tomllib.loads(BASE)
    document["old"] = {"checkpoint": str(config.folder / "old.safetensors")}
    document["sweep"] = {
        "store": str(tmp_path / "results.jsonl"),
        "methods": [{"method": "cross-entropy"}],
        "threads": 1,
    }
    outcome = run_sweep(parse_sweep_config(document), quiet=True)
    assert not (tmp_path / "old.safetensors").exists()
    assert outcome.records[0]["metrics"] == first.records[0]["metrics"]


def test_the_progress_shows_each_point_and_the_best(finished, tmp_path, capsys):
    from rich.console import Console

    folder = copy_of(finished, tmp_path)
    methods = [FD_KL_AND_BCWI[0], {"method": "bcwi", "strengths": [0.5, 0.25]}]
    console = Console(file=sys.stdout, width=200, force_terminal=False)
    run_sweep(sweep_config(folder / "results.jsonl", methods), console=console)
    output = capsys.readouterr().out
    assert "1 of 4 points to run" in output
    assert "[4/4] bcwi/old_weight=0.25/seed=0: dev accuracy " in output
    run_sweep(sweep_config(folder / "results.jsonl", methods), quiet=True)
    assert capsys.readouterr().out == ""


def worker_pids(folder: Path) -> set[str]:
    """The process ids that started points, from the event log."""
    lines = (folder / "events.log").read_text().splitlines()
    return {line.rsplit("pid=", 1)[1] for line in lines if " started " in line}


def assert_same_as_in_process(records, finished):
    """Points shared with the in-process sweep have exactly its metrics."""
    _, first = finished
    expected = metrics_by_id(first.records)
    shared = [point_id for point_id in metrics_by_id(records) if point_id in expected]
    assert shared
    for point_id in shared:
        assert metrics_by_id(records)[point_id] == expected[point_id], point_id


@pytest.mark.slow
def test_local_workers_give_the_same_records(finished, tmp_path):
    # the two cross-entropy points run side by side, then the two interpolations
    config = sweep_config(tmp_path / "results.jsonl", [FD_KL_AND_BCWI[1]], (0, 1), workers=2)
    outcome = run_sweep(config, quiet=True)
    assert len(outcome.records) == 4
    assert_same_as_in_process(outcome.records, finished)
    pids = worker_pids(tmp_path)
    assert len(pids) == 2 and str(os.getpid()) not in pids


@pytest.mark.slow
def test_ray_tasks_give_the_same_records(finished, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        config = sweep_config(tmp_path / "results.jsonl", [FD_KL_AND_BCWI[1]], backend="ray")
        outcome = run_sweep(config, quiet=True)
        assert ray.is_initialized()  # a running instance is left running
    finally:
        ray.shutdown()
    assert [r["point_id"] for r in outcome.records] == [
        "cross-entropy/seed=0",
        "bcwi/old_weight=0.5/seed=0",
    ]
    assert_same_as_in_process(outcome.records, finished)
    assert str(os.getpid()) not in worker_pids(tmp_path)


KILL_TOML = (
    BASE
    + """
[sweep]
store = "out/results.jsonl"
seeds = [0, 1, 2]
threads = 1

[[sweep.methods]]
method = "bcwi"
strengths = [0.5]
"""
)


@pytest.mark.slow
def test_a_killed_sweep_resumes_with_nothing_lost_or_repeated(tmp_path):
    (tmp_path / "sweep.toml").write_text(KILL_TOML)
    command = [sys.executable, "-m", "flipless.cli", "sweep", "sweep.toml", "--quiet"]
    store = tmp_path / "out/results.jsonl"
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (store.exists() and store.read_bytes().count(b"\n") >= 1):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_at_kill = [r["point_id"] for r in read_records(store)]
    assert 1 <= len(done_at_kill) < 6
    resumed = run_sweep(load_sweep_config(tmp_path / "sweep.toml"), quiet=True)  # the rerun
    assert resumed.skipped == done_at_kill and len(resumed.ran) == 6 - len(done_at_kill)
    records = read_records(store)
    reference = tomllib.loads(KILL_TOML)
    reference["sweep"]["store"] = str(tmp_path / "reference/results.jsonl")
    uninterrupted = run_sweep(parse_sweep_config(reference, base_dir=tmp_path), quiet=True)
    assert [r["point_id"] for r in records[: len(done_at_kill)]] == done_at_kill
    assert metrics_by_id(records) == metrics_by_id(uninterrupted.records)
    events = read_events(tmp_path / "out")
    for point_id in done_at_kill:  # finished before the kill: started once, never again
        assert events.count(("started", point_id)) == 1
    finished = [p for e, p in events if e == "finished"]
    assert len(finished) == len(set(finished))  # no point finished twice
    assert set(resumed.ran) <= set(finished) <= set(metrics_by_id(records))
    # the kill may land between a record's append and its event line: only the last record
    # written before the kill can lack its "finished" event
    assert set(done_at_kill[:-1]) <= set(finished)


@pytest.mark.slow
def test_mlflow_child_runs_per_point_under_one_parent(finished, tmp_path):
    from mlflow.tracking import MlflowClient

    folder = copy_of(finished, tmp_path)
    database = f"sqlite:///{tmp_path / 'mlflow.db'}"
    methods = [FD_KL_AND_BCWI[0], {"method": "bcwi", "strengths": [0.5, 0.25]}]
    config = sweep_config(folder / "results.jsonl", methods)
    tracking = TrackingConfig(mlflow=database)
    tracked = dataclasses.replace(config, base=dataclasses.replace(config.base, tracking=tracking))
    outcome = run_sweep(tracked, quiet=True)  # logs the three earlier points and the new one
    run_sweep(tracked, quiet=True)  # nothing new: no second parent, no duplicate children
    client = MlflowClient(database)
    experiment = client.get_experiment_by_name("flipless")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "flipless.sweep" in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["train.epochs"] == "2"
    children = {run.data.tags["flipless.point_id"]: run for run in runs if run not in parents}
    assert sorted(children) == sorted(metrics_by_id(outcome.records))
    for record in outcome.records:
        child = children[record["point_id"]]
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["mlflow.runName"] == record["point_id"]
        assert child.data.metrics["test/accuracy"] == record["metrics"]["test"]["accuracy"]
        assert (
            child.data.metrics["dev/negative_flip_rate"]
            == record["metrics"]["dev"]["negative_flip_rate"]
        )
        assert child.data.params["method"] == record["method"]
        assert child.info.status == "FINISHED"


def test_an_unreadable_old_checkpoint_fails_before_any_point(tmp_path):
    (tmp_path / "old.safetensors").write_bytes(b"not a model")
    document = tomllib.loads(BASE)
    document["old"] = {"checkpoint": str(tmp_path / "old.safetensors")}
    document["sweep"] = {
        "store": str(tmp_path / "s/results.jsonl"),
        "methods": [{"method": "cross-entropy"}],
    }
    with pytest.raises(FileFormatError, match=r"cannot read .*old.safetensors as a safetensors"):
        run_sweep(parse_sweep_config(document), quiet=True)
    assert read_records(tmp_path / "s/results.jsonl") == []
    assert not (tmp_path / "s/points").exists()
