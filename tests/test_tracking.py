"""MlflowTracker against real mlflow stores (SQLite and file store), offline, in temporary folders.

Everything logged is read back with a separate ``MlflowClient(tracking_uri)``. One SQLite store
is shared by the module: creating one runs mlflow's database migrations (seconds).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flipless
from flipless import Comparison, compare
from flipless.errors import FliplessWarning, InputError, MissingExtraError, MissingFileError
from flipless.tracking import HEADLINE_RATES, MlflowTracker, Tracker, resolve_tracking_uri

# mlflow's SQLite store triggers a deprecation warning inside SQLAlchemy; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

# Ten samples with hand-counted outcomes: both right at 0, 1, 3, 9; negative flips at 2, 4;
# positive flips at 5, 6; both wrong at 7 (same answer) and 8 (different answers).
LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
OLD = [0, 1, 2, 0, 1, 0, 1, 2, 0, 0]
NEW = [0, 1, 0, 0, 2, 2, 0, 2, 1, 0]
HAND_RATES = {
    "negative_flip_rate": 2 / 10,
    "positive_flip_rate": 2 / 10,
    "backward_trust_compatibility": 4 / 6,
    "backward_error_compatibility": 2 / 4,
    "accuracy_old": 6 / 10,
    "accuracy_new": 6 / 10,
}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Run every test in its own folder, with no tracking URI from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)


@pytest.fixture(scope="module")
def client_class():
    return pytest.importorskip("mlflow.tracking").MlflowClient


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory, client_class) -> str:
    """One SQLite store for the module: the default store of its folder."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite-store') / 'mlflow.db'}"


@pytest.fixture(params=["sqlite", "file"])
def store(request, tmp_path) -> str:
    """A tracking URI: the shared SQLite store, or a fresh file-store folder."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_uri")
    request.getfixturevalue("client_class")
    return str(tmp_path / "file-store")


@pytest.fixture
def reader(client_class):
    """An independent MlflowClient for a resolved tracking URI."""

    def open_client(uri: str):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
            return client_class(tracking_uri=uri)

    return open_client


@pytest.fixture
def comparison() -> Comparison:
    return compare(
        OLD,
        NEW,
        LABELS,
        ids=[f"s{i}" for i in range(10)],
        class_names=["cat", "dog", "owl"],
        slices={"site": ["north", "south"] * 5},
        n_bootstrap=200,
        seed=5,
    )


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# Where runs go -----------------------------------------------------------------------------------
def test_default_store_is_mlflow_db_in_the_current_folder_even_with_a_server_in_the_environment(
    sqlite_uri, reader, monkeypatch
):
    folder = Path(sqlite_uri.removeprefix("sqlite:///")).parent
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.invalid:5000")
    with pytest.warns(FliplessWarning, match="MLFLOW_TRACKING_URI is set"):
        tracker = MlflowTracker()
    with tracker:
        tracker.log_metrics({"loss": 1.0}, step=0)
    assert tracker.tracking_uri == sqlite_uri == f"sqlite:///{folder}/mlflow.db"
    assert reader(sqlite_uri).get_run(tracker.run_id).info.status == "FINISHED"


def test_uris_are_made_absolute(tmp_path):
    folder_uri = (tmp_path / "runs").as_uri()
    assert resolve_tracking_uri("runs") == folder_uri
    assert resolve_tracking_uri(Path("runs")) == folder_uri
    assert resolve_tracking_uri("file:runs") == folder_uri
    assert resolve_tracking_uri(folder_uri) == folder_uri
    assert resolve_tracking_uri("sqlite:///db/a.db") == f"sqlite:///{tmp_path}/db/a.db"
    assert (
        resolve_tracking_uri("sqlite:///a.db?timeout=5") == f"sqlite:///{tmp_path}/a.db?timeout=5"
    )
    assert resolve_tracking_uri("sqlite:////x/a.db") == "sqlite:////x/a.db"
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://mlflow.example.org"])
def test_a_remote_uri_is_used_only_as_given(uri):
    assert resolve_tracking_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("", "expected a folder path"),
        ("  ", "expected a folder path"),
        (3, "expected a folder path"),
        ("runs.db", "sqlite:///"),
        ("existing.txt", "looks like a database file"),
        ("sqlite://", "names no database file"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_bad_uris(uri, match, tmp_path):
    (tmp_path / "existing.txt").write_text("not a folder")
    with pytest.raises(InputError, match=match):
        resolve_tracking_uri(uri)


def test_unsupported_scheme(client_class):
    with pytest.raises(InputError, match="mlflow cannot store runs at tracking_uri 'foo://bar'"):
        MlflowTracker("foo://bar")


def test_sqlite_artifacts_live_beside_the_database_not_in_the_current_folder(
    sqlite_uri, reader, tmp_path
):
    with MlflowTracker(sqlite_uri) as tracker:
        tracker.set_tags({"where": "here"})
    beside = Path(sqlite_uri.removeprefix("sqlite:///")).parent / "mlruns"
    artifact_uri = reader(sqlite_uri).get_run(tracker.run_id).info.artifact_uri
    assert artifact_uri.startswith(str(beside) + "/")
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "mlflow.db").exists()


# Logging ---------------------------------------------------------------------------------------
def test_params_are_flattened_with_dots_and_stringified(store, reader):
    with MlflowTracker(store) as tracker:
        tracker.log_params(
            {"lr": 0.1, "model": {"hidden": [64, 32], "act": {"name": "relu"}}, "note": None}
        )
        tracker.log_params({"lr": 0.1, "seed": 3})  # the same value again is accepted
        with pytest.raises(InputError, match=r"'lr' was logged as '0.1' and now as '0.2'"):
            tracker.log_params({"lr": 0.2})
        with pytest.raises(InputError, match=r"'a\.b' appears twice"):
            tracker.log_params({"a.b": 1, "a": {"b": 2}})
        for key in ("lr(0)", "a//b", "/a", "a/", "../a", ".", ""):
            with pytest.raises(InputError, match="not one mlflow accepts"):
                tracker.log_params({key: 1})
    params = reader(tracker.tracking_uri).get_run(tracker.run_id).data.params
    assert params == {
        "lr": "0.1",
        "model.hidden": "[64, 32]",
        "model.act.name": "relu",
        "note": "None",
        "seed": "3",
    }


def test_a_long_param_is_cut_to_mlflows_limit_with_a_warning(sqlite_uri, reader):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    with (
        MlflowTracker(sqlite_uri) as tracker,
        pytest.warns(FliplessWarning, match="has 7000 characters; mlflow keeps at most 6000"),
    ):
        tracker.log_params({"prompt": "ab" * 3500})
    stored = reader(sqlite_uri).get_run(tracker.run_id).data.params["prompt"]
    assert MAX_PARAM_VAL_LENGTH == 6000
    assert stored == ("ab" * 3500)[:6000]


def test_metric_history_keeps_values_steps_and_nan(store, reader):
    with MlflowTracker(store) as tracker:
        tracker.log_metrics({"loss": 1.5, "acc": np.float32(0.25), "lr": np.array(0.125)}, step=0)
        tracker.log_metrics({"loss": float("nan")}, step=1)
        tracker.log_metrics({"loss": 0.5, "acc": 3}, step=np.int64(3))
    client = reader(tracker.tracking_uri)
    loss = history(client, tracker.run_id, "loss")
    assert [step for step, _ in loss] == [0, 1, 3]
    assert loss[0][1] == 1.5 and math.isnan(loss[1][1]) and loss[2][1] == 0.5
    assert history(client, tracker.run_id, "acc") == [(0, 0.25), (3, 3.0)]
    assert history(client, tracker.run_id, "lr") == [(0, 0.125)]


@pytest.mark.parametrize("value", ["0.5", None, [1.0], True, np.array([1.0, 2.0])])
def test_non_numeric_metric_values_are_rejected(sqlite_uri, value):
    with MlflowTracker(sqlite_uri) as tracker, pytest.raises(InputError, match="'loss' has value"):
        tracker.log_metrics({"loss": value}, step=0)


@pytest.mark.parametrize("step", [-1, 1.5, True, "3", None])
def test_bad_steps_are_rejected(sqlite_uri, step):
    with (
        MlflowTracker(sqlite_uri) as tracker,
        pytest.raises(InputError, match="expected an integer"),
    ):
        tracker.log_metrics({"loss": 1.0}, step=step)


def test_comparison_artifact_reads_back_equal_and_its_rates_are_metrics(
    store, reader, comparison, tmp_path
):
    with MlflowTracker(store) as tracker:
        tracker.log_comparison(comparison, step=4)
    client = reader(tracker.tracking_uri)
    downloaded = client.download_artifacts(tracker.run_id, "comparison.json", str(tmp_path))
    back = Comparison.from_json(downloaded)
    assert back.to_dict() == comparison.to_dict()
    assert back.negative_flip_ids().tolist() == ["s2", "s4"]
    for rate in HEADLINE_RATES:
        assert comparison.rate(rate).value == pytest.approx(HAND_RATES[rate], abs=1e-15)
        assert history(client, tracker.run_id, f"compat/{rate}") == [
            (4, comparison.rate(rate).value)
        ]


def test_comparison_options_and_undefined_rates(sqlite_uri, reader, tmp_path):
    perfect = compare(LABELS, LABELS, LABELS, n_bootstrap=50)  # no new errors: BEC undefined
    with MlflowTracker(sqlite_uri) as tracker:
        tracker.log_comparison(perfect, name="epochs/3", instances=False, metric_prefix="dev")
    client = reader(sqlite_uri)
    assert [f.path for f in client.list_artifacts(tracker.run_id, "epochs")] == ["epochs/3.json"]
    path = client.download_artifacts(tracker.run_id, "epochs/3.json", str(tmp_path))
    back = Comparison.from_json(path)
    assert back.instances is None
    assert back.to_dict() == perfect.to_dict(instances=False)
    ((step, bec),) = history(client, tracker.run_id, "dev/backward_error_compatibility")
    assert step == 0 and math.isnan(bec)
    assert history(client, tracker.run_id, "dev/negative_flip_rate") == [(0, 0.0)]
    assert "compat/negative_flip_rate" not in client.get_run(tracker.run_id).data.metrics


def test_bad_comparisons_and_names(sqlite_uri, comparison):
    with MlflowTracker(sqlite_uri) as tracker:
        with pytest.raises(InputError, match="expected a flipless Comparison"):
            tracker.log_comparison(comparison.to_dict())
        for name in ("", "../x", "/abs", "a/./b", "a b", "a\\b"):
            with pytest.raises(InputError, match="expected letters, digits"):
                tracker.log_comparison(comparison, name=name)


def test_files_folders_and_tags(sqlite_uri, reader, tmp_path):
    (tmp_path / "notes.txt").write_text("first run")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.csv").write_text("x,y\n1,2\n")
    with MlflowTracker(sqlite_uri, run_name="tagged", tags={"stage": "dev"}) as tracker:
        tracker.log_artifact(tmp_path / "notes.txt")
        tracker.log_artifact(str(tmp_path / "plots"), artifact_path="figures")
        tracker.set_tags({"epochs": 3, "stage": "test"})
        with pytest.raises(MissingFileError, match="No such file or folder"):
            tracker.log_artifact(tmp_path / "missing.txt")
        with pytest.raises(InputError, match=r"Tag name 'bad\|key'"):
            tracker.set_tags({"bad|key": 1})
    client = reader(sqlite_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "tagged"
    assert run.data.tags["stage"] == "test"
    assert run.data.tags["epochs"] == "3"
    assert run.data.tags["flipless.version"] == flipless.__version__
    assert sorted(f.path for f in client.list_artifacts(tracker.run_id)) == ["figures", "notes.txt"]
    copied = client.download_artifacts(tracker.run_id, "figures/a.csv", str(tmp_path / "back"))
    assert Path(copied).read_text() == "x,y\n1,2\n"


# Ending ----------------------------------------------------------------------------------------
def test_run_status_follows_how_the_block_ends(sqlite_uri, reader):
    with MlflowTracker(sqlite_uri) as finished:
        pass
    with pytest.raises(RuntimeError, match="diverged"), MlflowTracker(sqlite_uri) as failed:
        raise RuntimeError("diverged")
    with pytest.raises(KeyboardInterrupt), MlflowTracker(sqlite_uri) as killed:
        raise KeyboardInterrupt
    client = reader(sqlite_uri)
    for tracker, status in ((finished, "FINISHED"), (failed, "FAILED"), (killed, "KILLED")):
        info = client.get_run(tracker.run_id).info
        assert (info.status, info.end_time is not None) == (status, True)


def test_close_is_idempotent_and_ends_logging(sqlite_uri, reader):
    tracker = MlflowTracker(sqlite_uri)
    assert reader(sqlite_uri).get_run(tracker.run_id).info.status == "RUNNING"
    with pytest.raises(InputError, match="expected one of FINISHED, FAILED, KILLED"):
        tracker.close("DONE")
    tracker.close()
    end_time = reader(sqlite_uri).get_run(tracker.run_id).info.end_time
    tracker.close("FAILED")
    with tracker:
        pass
    info = reader(sqlite_uri).get_run(tracker.run_id).info
    assert (info.status, info.end_time) == ("FINISHED", end_time)
    with pytest.raises(InputError, match="closed with status FINISHED"):
        tracker.log_metrics({"loss": 1.0}, step=0)


# Independence, experiments, the protocol, and the optional extra --------------------------------
def test_two_trackers_with_different_stores_do_not_interfere(sqlite_uri, reader, tmp_path):
    import mlflow

    uri_before = mlflow.get_tracking_uri()
    in_sqlite = MlflowTracker(sqlite_uri, experiment="shared")
    in_files = MlflowTracker(tmp_path / "files", experiment="shared")
    in_sqlite.log_metrics({"loss": 1.0}, step=0)
    in_files.log_metrics({"loss": 2.0}, step=0)
    in_sqlite.close()
    in_files.close("FAILED")
    assert mlflow.get_tracking_uri() == uri_before
    assert mlflow.active_run() is None
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    assert "MLFLOW_TRACKING_URI" not in os.environ
    for tracker, loss, status in ((in_sqlite, 1.0, "FINISHED"), (in_files, 2.0, "FAILED")):
        client = reader(tracker.tracking_uri)
        experiment = client.get_experiment_by_name("shared")
        runs = client.search_runs([experiment.experiment_id])
        assert [run.info.run_id for run in runs] == [tracker.run_id]
        assert (runs[0].data.metrics, runs[0].info.status) == ({"loss": loss}, status)


def test_a_deleted_experiment_is_an_error(sqlite_uri, reader):
    MlflowTracker(sqlite_uri, experiment="to-delete").close()
    client = reader(sqlite_uri)
    client.delete_experiment(client.get_experiment_by_name("to-delete").experiment_id)
    with pytest.raises(InputError, match=r"'to-delete' in .* is deleted; restore it"):
        MlflowTracker(sqlite_uri, experiment="to-delete")


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"experiment": ""}, "experiment=''"),
        ({"run_name": 3}, "run_name=3"),
        ({"tags": ["a"]}, "tags is a list"),
    ],
)
def test_bad_constructor_arguments(arguments, match, tmp_path, client_class):
    with pytest.raises(InputError, match=match):
        MlflowTracker(tmp_path / "store", **arguments)
    assert not (tmp_path / "store").exists()


def test_the_tracker_satisfies_the_protocol(tmp_path, client_class):
    with MlflowTracker(tmp_path / "store") as tracker:
        assert isinstance(tracker, Tracker)
    assert not isinstance(object(), Tracker)


def test_missing_mlflow_names_the_extra(monkeypatch, tmp_path):
    for name in [name for name in sys.modules if name == "mlflow" or name.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'flipless\[mlflow\]'"):
        MlflowTracker(tmp_path / "store")


def test_importing_the_module_does_not_import_mlflow():
    code = "import sys, flipless.tracking; sys.exit('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
