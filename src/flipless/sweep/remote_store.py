"""A sweep whose store is a URL (``s3://bucket/sweep/results.jsonl``): staged, then mirrored.

Object stores cannot append, and the points' worker processes write local folders, so the
sweep runs in a local staging folder (:func:`~flipless.train.staging.staged_folder`) that
starts as a copy of the sweep's files at the URL — the store, the sidecar, the event log, the
old model and the points' folders — and resumes from them exactly as from a local folder
(torn-line repair, fingerprints, finished points skipped). Then it mirrors, in this order:

1. the sidecar (``sweep.json``) as soon as it is written, before any record exists;
2. the old model (and its Fisher) once prepared, so a resumed sweep does not train it again;
3. after every record appended locally, the point's folder first and then the *whole* store,
   each object in one atomic upload: a record at the URL never names missing files, and a
   reader sees the store before or after a record, never half of one;
4. when the run ends, successfully or not, the event log, the failed points' folders and an
   unfinished old model's checkpoints.

One sweep writes a store URL at a time: the folder lock is local to the machine. A sweep
killed outright loses only the points that had no record at the URL, which run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flipless import remote
from flipless.sweep.grid import POINTS_FOLDER
from flipless.sweep.store import ResultsStore
from flipless.sweep.workspace import EVENTS, OLD_FISHER, OLD_MODEL, SIDECAR, SWEEP_FILES
from flipless.train.staging import publish

#: The old model's training checkpoints, in the sweep folder.
OLD_TRAINING = "old"


def staged_names(store_url: str) -> tuple[str, ...]:
    """What a sweep folder at a URL holds of the sweep (what staging downloads)."""
    return (*SWEEP_FILES, remote.name_of(store_url))


class FolderMirror:
    """Uploads parts of the local staging folder ``staging`` to the sweep folder ``url``."""

    def __init__(self, staging: Path, url: str) -> None:
        self.staging = staging
        self.url = url

    def sidecar_written(self) -> None:
        publish(self.staging, self.url, [SIDECAR])

    def old_model_ready(self) -> None:
        publish(self.staging, self.url, [OLD_MODEL, OLD_FISHER])

    def record_appended(self, record: dict[str, Any], store: Path) -> None:
        """The point's folder, then the whole store (see the module docstring)."""
        folder = Path(str(record["model_path"])).parent.as_posix()
        publish(self.staging, self.url, [folder])
        publish(self.staging, self.url, [store.name])

    def finished(self) -> None:
        """The event log, the folders of failed points (their ``error.txt``) and, while the
        old model is unfinished, its training checkpoints (a rerun resumes them)."""
        publish(self.staging, self.url, [EVENTS])
        if not (self.staging / OLD_MODEL).exists():
            publish(self.staging, self.url, [OLD_TRAINING])
        points = self.staging / POINTS_FOLDER
        if points.is_dir():
            failed = [p for p in points.iterdir() if (p / "error.txt").is_file()]
            publish(self.staging, self.url, [f"{POINTS_FOLDER}/{p.name}" for p in failed])


class MirroredStore(ResultsStore):
    """A local :class:`ResultsStore` whose every append is mirrored to the URL."""

    def __init__(self, path: Path, mirror: FolderMirror) -> None:
        super().__init__(path)
        self.mirror = mirror

    def append(self, record: dict[str, Any]) -> None:
        super().append(record)
        self.mirror.record_appended(record, self.path)
