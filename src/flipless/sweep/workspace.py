"""The sweep folder: its sidecar, its lock, its event log and the old model every point shares.

Layout (the folder is the store's folder)::

    results.jsonl           the store (or results.parquet): one record per finished point
    sweep.json              the sidecar: the fingerprint of the base config, and more
    events.log              one line per point started (by the worker), finished or failed
    old.safetensors         the old model, trained once, first (unless old.checkpoint is given)
    old/                    its training checkpoints (a killed old-model training resumes)
    old_fisher.safetensors  the old model's diagonal Fisher (only for fisher-bcwi)
    points/<safe id>/       one folder per point: config.json, model.safetensors,
                            test_comparison.json (+ .instances.parquet), history.json

The sidecar is written before anything is trained. Opening a folder whose sidecar holds
another fingerprint is refused (:class:`~flipless.errors.FliplessError`) unless the caller
asks for a new store, which moves the old one and everything beside it into
``replaced-<UTC time>/``. A lock file (``.sweep.lock``, ``flock``) keeps a second sweep out
of a folder that one is running in; the operating system releases it when a process dies.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flipless._version import __version__
from flipless.errors import FileFormatError, FliplessError
from flipless.sweep.grid import POINTS_FOLDER

SIDECAR = "sweep.json"
SIDECAR_SCHEMA = "flipless.sweep/1"
EVENTS = "events.log"
LOCK = ".sweep.lock"
OLD_MODEL = "old.safetensors"
OLD_FISHER = "old_fisher.safetensors"
#: What a new store moves aside: the sweep's own files and folders (nothing else).
SWEEP_FILES = (SIDECAR, EVENTS, OLD_MODEL, OLD_FISHER, "old", POINTS_FOLDER)


def utc_now() -> str:
    """The current time, ISO 8601 with the UTC offset (seconds)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_json_atomically(path: Path, value: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(value, stream, indent=2, default=str)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.sweep.lock`` for the life of a sweep run."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self._descriptor: int | None = None

    def __enter__(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one sweep per folder is then the user's care
            return self
        self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._descriptor)
            self._descriptor = None
            raise FliplessError(
                f"another sweep is running in {self.path.parent} (it holds {self.path}); wait "
                "for it to finish, or stop it, before starting this one."
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor releases the lock
            self._descriptor = None


def read_sidecar(folder: Path) -> dict[str, Any] | None:
    """The sidecar's content, or None when there is none."""
    path = folder / SIDECAR
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise FileFormatError(
            f"cannot read {path} ({error}); expected the sweep's sidecar."
        ) from error
    if not isinstance(value, dict) or value.get("schema") != SIDECAR_SCHEMA:
        raise FileFormatError(f"{path} is not a flipless sweep sidecar (schema {SIDECAR_SCHEMA}).")
    return value


def _differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        return [
            difference
            for key in keys
            for difference in _differences(before.get(key), after.get(key), f"{prefix}{key}.")
        ]
    return [] if before == after else [prefix.rstrip(".")]


def archive(folder: Path, store: Path) -> Path | None:
    """Move the store and the sweep's files into ``replaced-<UTC time>/``; None if none."""
    present = [folder / name for name in SWEEP_FILES if (folder / name).exists()]
    present += [path for path in (store,) if path.exists()]
    if not present:
        return None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"replaced-{stamp}"
    target.mkdir()
    for path in present:
        shutil.move(str(path), str(target / path.name))
    return target


def open_sidecar(
    folder: Path, store: Path, fingerprint: str, settings: dict[str, Any], new_store: bool
) -> tuple[dict[str, Any], Path | None]:
    """Check the folder's sidecar against the base config's fingerprint, or write a new one.

    Returns the sidecar and, when a new store was asked for, where the old one went.
    """
    moved = archive(folder, store) if new_store else None
    sidecar = read_sidecar(folder)
    if sidecar is None and store.exists():
        raise FliplessError(
            f"{store} exists but {folder / SIDECAR} does not, so it is unknown which config "
            "made its records; give another store path, or --force-new-store to move it aside."
        )
    if sidecar is not None:
        if sidecar.get("store") != store.name:
            raise FliplessError(
                f"{folder} holds the sweep of the store {sidecar.get('store')!r}, not "
                f"{store.name!r}; a folder holds one sweep. Put this store in another folder."
            )
        if sidecar.get("fingerprint") != fingerprint:
            changed = _differences(sidecar.get("base", {}), settings)
            raise FliplessError(
                f"the base config differs from the one that started the sweep in {folder} "
                f"(changed: {', '.join(changed[:8]) or 'the old checkpoint file'}); its "
                "results would not be comparable. Restore those settings, give another store "
                "path, or pass --force-new-store to move the old results aside and start anew."
            )
        return sidecar, moved
    sidecar = {
        "schema": SIDECAR_SCHEMA,
        "fingerprint": fingerprint,
        "base": settings,
        "store": store.name,
        "created_at": utc_now(),
        "flipless": __version__,
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomically(folder / SIDECAR, sidecar)
    return sidecar, moved


def update_sidecar(folder: Path, **values: Any) -> dict[str, Any]:
    """Add or change keys of the sidecar (never the fingerprint)."""
    sidecar = read_sidecar(folder)
    if sidecar is None:
        raise FileFormatError(f"no sidecar in {folder}; open the sweep first.")
    sidecar.update(values)
    write_json_atomically(folder / SIDECAR, sidecar)
    return sidecar


def log_event(folder: Path, event: str, point_id: str, detail: str = "") -> None:
    """Append ``<UTC time> <event> <point id> pid=<pid> [detail]`` to the event log.

    One ``os.write`` to an ``O_APPEND`` file: lines from several processes do not interleave.
    """
    line = f"{utc_now()} {event} {point_id} pid={os.getpid()}"
    if detail:
        line += " " + " ".join(detail.split())
    descriptor = os.open(folder / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode("utf-8"))
    finally:
        os.close(descriptor)


def read_events(folder: Path) -> list[tuple[str, str]]:
    """(event, point id) for each line of the event log, in order."""
    path = folder / EVENTS
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        if len(parts) >= 3:
            events.append((parts[1], parts[2]))
    return events
