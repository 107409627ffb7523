"""Experiment tracking: parameters, metrics, comparisons and files of a training run in MLflow.

The training loop logs through the small :class:`Tracker` protocol (from rank 0 only);
:class:`MlflowTracker` implements it with ``mlflow.tracking.MlflowClient``, so nothing global
changes: no active run, no process-wide tracking URI, and two trackers with different stores
coexist in one process. mlflow is the optional extra ``flipless[mlflow]``, imported only when a
tracker is built.

Where runs go (:func:`resolve_tracking_uri`): by default ``sqlite:///mlflow.db`` in the current
folder; a folder path is a file store; ``sqlite:///…`` and ``file:///…`` are used as given, with
relative paths made absolute at construction. A remote address (``http(s)://…``, a database
server) is used only when passed explicitly: ``MLFLOW_TRACKING_URI`` is ignored, with a warning,
so that no run ever goes to a server unasked. A local SQLite store keeps its artifacts in a
``mlruns`` folder beside the database file (mlflow's own default is ``./mlruns`` under whatever
the current folder is when the store is first opened).
"""

from __future__ import annotations

import numbers
import os
import posixpath
import re
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlparse
from urllib.request import url2pathname

from flipless.errors import FliplessWarning, InputError, MissingExtraError, MissingFileError
from flipless.metrics.comparison import Comparison
from flipless.metrics.schema import write_json

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: Rates of a comparison logged as metrics ``<metric_prefix>/<rate>`` by ``log_comparison``.
HEADLINE_RATES = (
    "negative_flip_rate",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
    "accuracy_old",
    "accuracy_new",
)

#: How a run can end (mlflow's terminal run states).
END_STATUSES = ("FINISHED", "FAILED", "KILLED")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
#: What mlflow accepts in a param, metric or tag key (it also rejects keys that are not
#: normalised paths, such as "a//b", "./a" or "a/").
KEY_PATTERN = re.compile(r"^[/\w.\- :]+$")
MAX_KEY_LENGTH = 250
ARTIFACT_NAME_PATTERN = re.compile(r"^[\w.\-]+(/[\w.\-]+)*$")


@runtime_checkable
class Tracker(Protocol):
    """What the training loop logs to; :class:`MlflowTracker` is one implementation."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_comparison(
        self, comparison: Comparison, name: str = "comparison", step: int | None = None
    ) -> None: ...

    def log_artifact(self, path: str | os.PathLike[str]) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


def resolve_tracking_uri(tracking_uri: str | os.PathLike[str] | None) -> str:
    """The store a tracker writes to, as an absolute URI.

    * ``None``: ``sqlite:///<current folder>/mlflow.db`` (``MLFLOW_TRACKING_URI`` is ignored,
      with a :class:`~flipless.errors.FliplessWarning` when it names somewhere else);
    * a folder path, or ``file:`` URI: ``file:///<absolute folder>`` (mlflow's file store);
    * ``sqlite:///<path>``: the same database with an absolute path;
    * any other URI (``http(s)://``, ``postgresql://``, …): returned unchanged.
    """
    if tracking_uri is None:
        resolved = _sqlite_uri(DEFAULT_TRACKING_URI)
        from_environment = os.environ.get("MLFLOW_TRACKING_URI")
        if from_environment and from_environment != resolved:
            warnings.warn(
                f"MLFLOW_TRACKING_URI is set to {from_environment!r}, but flipless logs to "
                f"{resolved!r}: it never sends runs anywhere it was not given explicitly. Pass "
                "tracking_uri=os.environ['MLFLOW_TRACKING_URI'] to log there.",
                FliplessWarning,
                stacklevel=3,
            )
        return resolved
    if not isinstance(tracking_uri, (str, os.PathLike)) or not str(tracking_uri).strip():
        raise InputError(
            f"tracking_uri={tracking_uri!r}; expected a folder path, 'sqlite:///path/to.db', "
            "'file:///folder', a tracking server's 'http(s)://' address, or None for "
            f"{DEFAULT_TRACKING_URI!r} in the current folder."
        )
    text = os.fspath(tracking_uri)
    scheme = urlparse(text).scheme
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter: a path
        return _folder_uri(Path(text).expanduser())
    if scheme == "file":
        return _folder_uri(Path(url2pathname(urlparse(text).path)))
    if scheme == "sqlite":
        return _sqlite_uri(text)
    return text


def _folder_uri(folder: Path) -> str:
    if folder.is_file() or folder.suffix in DATABASE_SUFFIXES:
        raise InputError(
            f"tracking_uri {str(folder)!r} looks like a database file, but a path names the "
            f"folder of an mlflow file store; pass 'sqlite:///{folder}' to use a SQLite database."
        )
    return folder.resolve().as_uri()


def _sqlite_uri(uri: str) -> str:
    prefix = "sqlite:///"
    location, question, query = uri.partition("?")
    database = location[len(prefix) :]
    if not location.startswith(prefix) or database in ("", ":memory:"):
        raise InputError(
            f"tracking_uri {uri!r} names no database file (an in-memory database loses the "
            "run); expected 'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db'."
        )
    return f"{prefix}{Path(database).expanduser().resolve()}{question}{query}"


def _sqlite_artifact_root(uri: str) -> Path | None:
    """The ``mlruns`` folder beside a local SQLite database; None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].partition("?")[0]).parent / "mlruns"


@contextmanager
def file_store_allowed(uri: str) -> Iterator[None]:
    """Let mlflow ≥ 3.7 open a file store while the client is built, then restore the variable.

    mlflow checks ``MLFLOW_ALLOW_FILE_STORE`` only when it creates a store, and keeps the
    store per URI for the rest of the process.
    """
    name = "MLFLOW_ALLOW_FILE_STORE"
    if not uri.startswith("file:"):
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _check_key(key: str, what: str) -> str:
    """Return ``key`` when mlflow accepts it as a param, metric or tag name."""
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY_LENGTH
        or not KEY_PATTERN.match(key)
        or posixpath.normpath(key) != key
        or key == "."
        or key.startswith(("/", ".."))
    ):
        raise InputError(
            f"{what} name {key!r} is not one mlflow accepts; expected at most {MAX_KEY_LENGTH} "
            "letters, digits, '_', '-', '.', ' ', ':' and '/', as a clean relative path (no "
            "leading '/', no '//', '.' or '..' parts, no trailing '/'). Rename it."
        )
    return key


def _text(value: Any, key: str, limit: int, what: str) -> str:
    """``str(value)``, cut to mlflow's ``limit`` characters with a warning."""
    text = str(value)
    if len(text) > limit:
        warnings.warn(
            f"The value of {what} {key!r} has {len(text)} characters; mlflow keeps at most "
            f"{limit}, so it was cut to its first {limit}. Log the full value as an artifact.",
            FliplessWarning,
            stacklevel=3,
        )
        text = text[:limit]
    return text


def _flatten(params: Mapping[Any, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of nested mappings with dotted keys: ``{"a": {"b": 1}}`` → ``("a.b", 1)``."""
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _metric_value(key: str, value: Any) -> float:
    """A metric value as a float (NaN kept); 0-d arrays and tensors are unwrapped."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(
            f"Metric {key!r} has value {value!r} of type {type(value).__name__}; expected a "
            "real number (an int, a float, or a 0-d array or tensor). Log text as a tag."
        )
    return float(value)


class MlflowTracker:
    """One MLflow run: params, metrics, flip comparisons and files, closed with an end status.

    Args:
        tracking_uri: where runs go (see :func:`resolve_tracking_uri`); default
            ``sqlite:///mlflow.db`` in the current folder.
        experiment: the experiment's name; created when missing.
        run_name: the run's display name (mlflow picks one when None).
        tags: tags set when the run starts (values are stringified).

    Use it as a context manager to end the run as FINISHED, as FAILED when an exception escapes
    (KILLED for ``KeyboardInterrupt``). Under DistributedDataParallel, build and call it on rank
    0 only. Raises :class:`~flipless.errors.MissingExtraError` when mlflow is not installed.
    """

    def __init__(
        self,
        tracking_uri: str | os.PathLike[str] | None = None,
        experiment: str = "flipless",
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient
            from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
        except ImportError as error:
            raise MissingExtraError(
                f"MlflowTracker needs mlflow, which could not be imported ({error}); install "
                "it with: pip install 'flipless[mlflow]'."
            ) from error
        if not isinstance(experiment, str) or not experiment.strip():
            raise InputError(f"experiment={experiment!r}; expected a non-empty name.")
        if run_name is not None and not isinstance(run_name, str):
            raise InputError(f"run_name={run_name!r}; expected a string or None.")
        self._max_param_length = MAX_PARAM_VAL_LENGTH
        self._max_tag_length = MAX_TAG_VAL_LENGTH
        start_tags = self._tag_texts(tags or {})
        self._tracking_uri = resolve_tracking_uri(tracking_uri)
        artifact_root = _sqlite_artifact_root(self._tracking_uri)
        if artifact_root is not None:
            artifact_root.parent.mkdir(parents=True, exist_ok=True)
        try:
            with file_store_allowed(self._tracking_uri):
                self._client: MlflowClient = MlflowClient(tracking_uri=self._tracking_uri)
        except UnsupportedModelRegistryStoreURIException as error:
            raise InputError(
                f"mlflow cannot store runs at tracking_uri {self._tracking_uri!r}; expected a "
                "folder path, 'sqlite:///path/to.db', 'file:///folder' or a tracking server's "
                "'http(s)://' address."
            ) from error
        experiment_id = self._experiment_id(experiment, artifact_root)
        from flipless._version import __version__

        run = self._client.create_run(
            experiment_id,
            run_name=run_name,
            tags={"flipless.version": __version__, **start_tags},
        )
        self._run_id: str = run.info.run_id
        self._end_status: str | None = None
        self._params: dict[str, str] = {}

    def _experiment_id(self, name: str, artifact_root: Path | None) -> str:
        """The id of experiment ``name``, created when missing (tolerating a concurrent create)."""
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(name)
        if found is None:
            location = None if artifact_root is None else str(artifact_root / uuid.uuid4().hex)
            try:
                return self._client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another process created it first
                found = self._client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise InputError(
                f"Experiment {name!r} in {self._tracking_uri} is deleted; restore it "
                "(MlflowClient.restore_experiment) or choose another experiment name."
            )
        return found.experiment_id

    # Identity --------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """The mlflow run id."""
        return self._run_id

    @property
    def tracking_uri(self) -> str:
        """The resolved store URI the run is in; ``MlflowClient(tracker.tracking_uri)`` reads it."""
        return self._tracking_uri

    # Logging ---------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params``: nested mappings flattened with dots, values stringified.

        Values longer than mlflow's limit are cut with a warning. An mlflow param cannot change:
        logging a key again with another value is an :class:`~flipless.errors.InputError`.
        """
        from mlflow.entities import Param

        self._require_open()
        if not isinstance(params, Mapping):
            raise InputError(f"params is a {type(params).__name__}; expected a mapping.")
        texts: dict[str, str] = {}
        for key, value in _flatten(params):
            _check_key(key, "Param")
            if key in texts:
                raise InputError(
                    f"Param {key!r} appears twice after flattening nested keys with dots; "
                    "rename one of them."
                )
            texts[key] = _text(value, key, self._max_param_length, "param")
            logged = self._params.get(key)
            if logged is not None and logged != texts[key]:
                raise InputError(
                    f"Param {key!r} was logged as {logged!r} and now as {texts[key]!r}; an mlflow "
                    "param cannot change. Log a changing value as a metric or a tag."
                )
        new = {key: text for key, text in texts.items() if key not in self._params}
        if not new:
            return
        self._client.log_batch(self._run_id, params=[Param(k, v) for k, v in new.items()])
        self._params.update(new)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log each metric at ``step`` (an integer ≥ 0); NaN is kept as NaN."""
        from mlflow.entities import Metric

        self._require_open()
        step = self._check_step(step)
        if not isinstance(metrics, Mapping):
            raise InputError(f"metrics is a {type(metrics).__name__}; expected a mapping.")
        values = {_check_key(key, "Metric"): _metric_value(key, v) for key, v in metrics.items()}
        timestamp = int(time.time() * 1000)
        self._client.log_batch(
            self._run_id,
            metrics=[Metric(key, value, timestamp, step) for key, value in values.items()],
        )

    def log_comparison(
        self,
        comparison: Comparison,
        name: str = "comparison",
        step: int | None = None,
        *,
        instances: bool = True,
        metric_prefix: str = "compat",
    ) -> None:
        """Log a :class:`~flipless.metrics.comparison.Comparison` as ``<name>.json`` and metrics.

        The artifact is one JSON document (``Comparison.from_json`` reads it back) with the
        per-sample outcomes inline (``instances=False`` leaves them out), so that the one
        artifact is the whole comparison; ``name`` may contain ``/`` to
        put it in a folder, and logging the same name again replaces it. The rates in
        :data:`HEADLINE_RATES` are logged as metrics ``<metric_prefix>/<rate>`` at ``step``
        (0 when None), NaN where a rate is undefined.
        """
        self._require_open()
        if not isinstance(comparison, Comparison):
            raise InputError(
                f"comparison is a {type(comparison).__name__}; expected a flipless Comparison "
                "(from flipless.compare or FlipMetric.compute)."
            )
        if (
            not isinstance(name, str)
            or not ARTIFACT_NAME_PATTERN.fullmatch(name)
            or any(part in (".", "..") for part in name.split("/"))
        ):
            raise InputError(
                f"name={name!r}; expected letters, digits, '_', '-' and '.', with '/' between "
                "folder names, such as 'comparison' or 'epochs/3'."
            )
        folder, _, stem = name.rpartition("/")
        self.log_metrics(
            {f"{metric_prefix}/{rate}": comparison.rate(rate).value for rate in HEADLINE_RATES},
            step=0 if step is None else step,
        )
        with tempfile.TemporaryDirectory(prefix="flipless-") as scratch:
            path = Path(scratch) / f"{stem}.json"
            write_json(comparison.to_dict(instances), path)
            self._client.log_artifact(self._run_id, str(path), artifact_path=folder or None)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a file, or a folder's contents, into the run's artifacts (under ``artifact_path``)."""
        self._require_open()
        source = Path(path)
        if not source.exists():
            raise MissingFileError(
                f"No such file or folder: {source}; expected an existing path to log as an "
                "artifact."
            )
        if source.is_dir():
            self._client.log_artifacts(self._run_id, str(source), artifact_path=artifact_path)
        else:
            self._client.log_artifact(self._run_id, str(source), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run (values stringified, cut to mlflow's limit with a warning)."""
        from mlflow.entities import RunTag

        self._require_open()
        texts = self._tag_texts(tags)
        self._client.log_batch(self._run_id, tags=[RunTag(k, v) for k, v in texts.items()])

    def _tag_texts(self, tags: Mapping[str, Any]) -> dict[str, str]:
        if not isinstance(tags, Mapping):
            raise InputError(f"tags is a {type(tags).__name__}; expected a mapping.")
        return {
            _check_key(key, "Tag"): _text(value, key, self._max_tag_length, "tag")
            for key, value in tags.items()
        }

    # Ending ----------------------------------------------------------------------------------
    def close(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED); later calls do nothing."""
        if status not in END_STATUSES:
            raise InputError(f"status={status!r}; expected one of {', '.join(END_STATUSES)}.")
        if self._end_status is not None:
            return
        self._client.set_terminated(self._run_id, status)
        self._end_status = status

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("FINISHED")
        else:
            self.close("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")

    def _require_open(self) -> None:
        if self._end_status is not None:
            raise InputError(
                f"The run {self._run_id} was closed with status {self._end_status}; log before "
                "close(), or start a new MlflowTracker."
            )

    @staticmethod
    def _check_step(step: Any) -> int:
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise InputError(f"step={step!r}; expected an integer ≥ 0 (an epoch or batch count).")
        return int(step)
