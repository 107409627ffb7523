"""Running a sweep: the old model first, then every unfinished point, each recorded as it ends.

:func:`run_sweep` opens the sweep folder (lock, sidecar, store; see
:mod:`flipless.sweep.workspace`), skips the points the store already has, trains the old model
once (unless given) and, for ``fisher-bcwi``, its Fisher, then runs the other points on a
backend and appends each record as soon as its point ends. A killed sweep run again does only
what has no record: nothing finished is lost, nothing finished runs twice.

Backends (``backend``, ``workers``):

* ``local`` with ``workers=1``: the points run one after the other in this process;
* ``local`` with ``workers=N > 1``: a ``ProcessPoolExecutor`` of N ``spawn``-ed processes;
* ``ray``: one Ray task per point (:mod:`flipless.sweep.ray_backend`).

Each point runs with ``threads`` torch threads (default ``max(1, cpus // workers)`` locally,
``max(1, int(cpus_per_point))`` on Ray): the same setting gives the same numbers on every
backend.

Only this process appends to the store and logs to MLflow. An interpolation point is
submitted once its seed's cross-entropy point has a record (it reads that model). A point
that fails leaves a traceback in ``points/<safe id>/error.txt``; the others go on, the points
that depend on it are skipped, and at the end a :class:`~flipless.errors.FliplessError` names
the failures (running the sweep again retries exactly those).

A store at a URL (``s3://bucket/sweep/results.jsonl``) runs the same sweep in a local staging
folder mirrored to the URL record by record (:mod:`flipless.sweep.remote_store`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from flipless import remote
from flipless.errors import FliplessError, InputError
from flipless.sweep.config import SweepConfig, base_fingerprint
from flipless.sweep.grid import SweepPoint, point_config, sweep_points
from flipless.sweep.points import PointTask, run_point_logged
from flipless.sweep.progress import SweepProgress
from flipless.sweep.remote_store import FolderMirror, MirroredStore, staged_names
from flipless.sweep.store import ResultsStore
from flipless.sweep.workspace import (
    OLD_FISHER,
    OLD_MODEL,
    FolderLock,
    log_event,
    open_sidecar,
)
from flipless.train.staging import staged_folder

Result = tuple[PointTask, "dict[str, Any] | BaseException"]


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did.

    Attributes:
        config: the sweep's config.
        records: the records of the grid's points, in grid order (from the store).
        ran: ids of the points run by this call.
        skipped: ids of the points already in the store before this call.
        failed: id → error message of the points that failed (the call then raised).
        moved_to: where ``new_store=True`` moved the previous store, if anywhere.
    """

    config: SweepConfig
    records: list[dict[str, Any]]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    moved_to: Path | None = None

    @property
    def store(self) -> Path | str:
        return remote.as_path(self.config.store)


class Backend(Protocol):
    """Runs point tasks: ``submit`` queues one, ``wait`` blocks until at least one ends."""

    def submit(self, task: PointTask) -> None: ...

    def wait(self) -> list[Result]: ...

    def close(self) -> None: ...


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _start_worker(threads: int) -> None:
    """A pool worker's set-up: its torch threads, and an exit when the parent dies.

    A parent killed by SIGKILL cannot stop its workers; one left running would go on writing
    into a point folder that the resumed sweep redoes. Each worker checks once a second that
    its parent is still the one that started it, and exits otherwise.
    """
    import torch

    torch.set_num_threads(threads)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="flipless-parent-watch", daemon=True).start()


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch threads, then restore the setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class InProcessBackend:
    """Points one after the other in this process, with ``threads`` torch threads."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._queue: deque[PointTask] = deque()

    def submit(self, task: PointTask) -> None:
        self._queue.append(task)

    def wait(self) -> list[Result]:
        task = self._queue.popleft()
        try:
            with torch_threads(self.threads):
                return [(task, run_point_logged(task))]
        except Exception as error:
            return [(task, error)]

    def close(self) -> None:
        self._queue.clear()


class ProcessBackend:
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each."""

    def __init__(self, workers: int, threads: int) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(threads,),
        )
        self._running: dict[concurrent.futures.Future[dict[str, Any]], PointTask] = {}

    def submit(self, task: PointTask) -> None:
        self._running[self._pool.submit(run_point_logged, task)] = task

    def wait(self) -> list[Result]:
        done, _ = concurrent.futures.wait(
            self._running, return_when=concurrent.futures.FIRST_COMPLETED
        )
        results: list[Result] = []
        for future in done:
            task = self._running.pop(future)
            error = future.exception()
            results.append((task, error if error is not None else future.result()))
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_backend(config: SweepConfig) -> Backend:
    if config.backend == "ray":
        from flipless.sweep.ray_backend import RayBackend

        return RayBackend(config.cpus_per_point, config.ray_address, config.threads)
    threads = config.threads or max(1, cpu_count() // config.workers)
    if config.workers == 1:
        return InProcessBackend(threads)
    return ProcessBackend(config.workers, threads)


def prepare_old_model(config: SweepConfig, quiet: bool) -> tuple[Path, Path | None]:
    """The old model's file (trained here once when not given) and, for ``fisher-bcwi``, its
    diagonal Fisher on the old training split (computed once), with ``config.threads`` torch
    threads (default: all CPUs)."""
    with torch_threads(config.threads or cpu_count()):
        return _prepare_old_model(config, quiet)


def _prepare_old_model(config: SweepConfig, quiet: bool) -> tuple[Path, Path | None]:
    from flipless.models.files import load_model, read_model_info, save_model
    from flipless.models.sources import build_new_model, load_old_model, precompute_features
    from flipless.train.recipe import load_scenario, prepare_old_model

    base, folder = config.base, config.folder
    scenario = None
    old_path = folder / OLD_MODEL
    if base.old.checkpoint is not None and Path(base.old.checkpoint).is_file():
        old_path = Path(base.old.checkpoint)
        read_model_info(old_path)  # a flipless model file, or a FileFormatError now
    elif base.old.train_epochs is None:
        if not old_path.exists():  # a HF folder or a target: stored once as a flipless file
            loaded = load_old_model(base.old)
            names = {} if loaded.class_names is None else {"class_names": list(loaded.class_names)}
            save_model(loaded.model, old_path, {"role": "old", **names})
    else:
        if not old_path.exists():
            scenario = load_scenario(base)
            progress = "none" if quiet else base.train.progress
            training = dataclasses.replace(
                base,
                output_dir=str(folder),
                train=dataclasses.replace(base.train, progress=progress),
            )
            prepare_old_model(training, scenario, folder)  # writes old.safetensors atomically, last
    if base.model.name == "encoder-head":  # encode every text once, before the points start
        scenario = scenario or load_scenario(base)
        head = build_new_model(dataclasses.replace(base.model, init="scratch"), scenario.new_train)
        precompute_features([head], scenario.splits().values())
    if not any(grid.method == "fisher-bcwi" for grid in config.methods):
        return old_path, None
    fisher_path = folder / OLD_FISHER
    if not fisher_path.exists():
        from flipless.merge.fisher import fisher_diagonal, save_fisher

        scenario = scenario or load_scenario(base)
        old = load_model(old_path)
        save_fisher(fisher_diagonal(old, scenario.old_train), fisher_path)
    return old_path, fisher_path


def _check_finished(
    points: list[SweepPoint], records: dict[str, dict[str, Any]], base: str
) -> None:
    for point in points:
        record = records.get(point.point_id)
        if record is not None and record.get("fingerprint") != point.fingerprint(base):
            raise FliplessError(
                f"the store's record of {point.point_id} was made with other settings (options "
                f"now {dict(point.options)}); its results would not match the grid. Restore "
                "the method's options, or use another store (--store, --force-new-store)."
            )


def run_sweep(
    config: SweepConfig,
    *,
    quiet: bool = False,
    new_store: bool = False,
    console: Console | None = None,
) -> SweepOutcome:
    """Run every point of ``config`` that the store lacks; see the module docstring.

    ``new_store=True`` moves an existing store (and the sweep's files beside it) into
    ``replaced-<time>/`` first, instead of refusing a changed base config. The base config is
    checked whole first (:func:`~flipless.train.check.check_run_config`; the grid's methods
    and options were checked when the config was read), before any folder is made.
    """
    from flipless.train.check import check_run_config

    check_run_config(config.base)
    if remote.is_remote(config.store):
        outcome = _run_staged(config, quiet, new_store, console)
    else:
        outcome = _run_in_folder(config, quiet, new_store, console, None)
    if outcome.failed:
        listed = "; ".join(f"{pid}: {message}" for pid, message in outcome.failed.items())
        raise FliplessError(
            f"{len(outcome.failed)} of {len(outcome.failed) + len(outcome.records)} points "
            f"failed ({listed[:2000]}). The other points are in {config.store}; each failed "
            "point's traceback is in its folder's error.txt. Fix the cause and run the sweep "
            "again: it runs only what is missing."
        )
    return outcome


def _run_staged(
    config: SweepConfig, quiet: bool, new_store: bool, console: Console | None
) -> SweepOutcome:
    """The sweep of a store at a URL, run in a local staging folder mirrored to the URL."""
    if new_store:
        raise InputError(
            f"--force-new-store moves a local store aside; {config.store} is a URL. Give a new "
            "store URL (--store), or remove the old store and its folder with your storage's "
            "tools first."
        )
    url = str(config.folder)
    with staged_folder(url, staged_names(config.store)) as staging:
        local = dataclasses.replace(
            config,
            store=str(staging / remote.name_of(config.store)),
            base=dataclasses.replace(config.base, output_dir=str(staging)),
        )
        mirror = FolderMirror(staging, url)
        try:
            outcome = _run_in_folder(local, quiet, False, console, mirror)
        finally:
            mirror.finished()
    outcome.config = config
    return outcome


def _run_in_folder(
    config: SweepConfig,
    quiet: bool,
    new_store: bool,
    console: Console | None,
    mirror: FolderMirror | None,
) -> SweepOutcome:
    """:func:`run_sweep` in the local sweep folder of ``config``; ``mirror``: a staging folder's."""
    folder, store_path = Path(config.folder), Path(config.store)
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint, settings = base_fingerprint(config.base)
    with FolderLock(folder):
        sidecar, moved = open_sidecar(folder, store_path, fingerprint, settings, new_store)
        if mirror is not None:
            mirror.sidecar_written()
            store: ResultsStore = MirroredStore(store_path, mirror)
        else:
            store = ResultsStore(store_path)
        points = sweep_points(config)
        existing = {record["point_id"]: record for record in store.records()}
        _check_finished(points, existing, fingerprint)
        outcome = SweepOutcome(config, [], moved_to=moved)
        outcome.skipped = [p.point_id for p in points if p.point_id in existing]
        tracking = None
        if config.base.tracking.mlflow is not None:
            from flipless.sweep.tracking import SweepTracking

            tracking = SweepTracking(config.base.tracking, folder, settings, sidecar)
            for record in existing.values():
                tracking.log(record)
        status = "FAILED"
        try:
            pending = [point for point in points if point.point_id not in existing]
            if pending:
                old_path, fisher_path = prepare_old_model(config, quiet)
                if mirror is not None:
                    mirror.old_model_ready()
                finished = [existing[p] for p in outcome.skipped]
                with SweepProgress(len(points), finished, quiet, console) as progress:
                    where = (
                        "on Ray"
                        if config.backend == "ray"
                        else (f"in {config.workers} local worker(s)")
                    )
                    progress.note(
                        f"{len(pending)} of {len(points)} points to run {where}: {folder}"
                    )
                    scheduler = _Scheduler(
                        config,
                        fingerprint,
                        old_path,
                        fisher_path,
                        store,
                        existing,
                        progress,
                        tracking,
                        outcome,
                    )
                    scheduler.run(pending)
            status = "FAILED" if outcome.failed else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if tracking is not None:
                tracking.finish(status)
        by_id = {record["point_id"]: record for record in store.records()}
        outcome.records = [by_id[p.point_id] for p in points if p.point_id in by_id]
    return outcome


@dataclass
class _Scheduler:
    """Submits points as their dependencies finish; appends each record as it arrives."""

    config: SweepConfig
    fingerprint: str
    old_path: Path
    fisher_path: Path | None
    store: ResultsStore
    records: dict[str, dict[str, Any]]
    progress: SweepProgress
    tracking: Any
    outcome: SweepOutcome

    def task(self, point: SweepPoint) -> PointTask:
        folder = self.config.folder
        new_model = None
        if point.depends_on is not None:
            new_model = str(folder / self.records[point.depends_on]["model_path"])
        return PointTask(
            point=point,
            config=point_config(self.config.base, point, folder, self.old_path),
            sweep_folder=str(folder),
            fingerprint=point.fingerprint(self.fingerprint),
            new_model=new_model,
            fisher=str(self.fisher_path) if point.method == "fisher-bcwi" else None,
        )

    def run(self, pending: list[SweepPoint]) -> None:
        folder, failed = self.config.folder, self.outcome.failed
        waiting = {point.point_id: point for point in pending}
        running = 0
        backend = make_backend(self.config)
        try:
            while True:
                for point_id, point in list(waiting.items()):
                    needed = point.depends_on
                    if needed is not None and needed in failed:
                        del waiting[point_id]
                        failed[point_id] = f"not run: {needed} failed"
                        log_event(folder, "skipped", point_id, f"{needed} failed")
                    elif needed is None or needed in self.records:
                        del waiting[point_id]
                        backend.submit(self.task(point))
                        running += 1
                if running == 0:
                    return
                for done, result in backend.wait():
                    running -= 1
                    self.arrived(done.point.point_id, result)
        finally:
            backend.close()

    def arrived(self, point_id: str, result: dict[str, Any] | BaseException) -> None:
        folder = self.config.folder
        if isinstance(result, BaseException):
            message = f"{type(result).__name__}: {result}"
            self.outcome.failed[point_id] = message
            log_event(folder, "failed", point_id, message)
            self.progress.failed(point_id, result)
            return
        self.store.append(result)  # last: the point's files are complete by now
        self.records[point_id] = result
        self.outcome.ran.append(point_id)
        log_event(folder, "finished", point_id)
        self.progress.finished(result)
        if self.tracking is not None:
            self.tracking.log(result)
