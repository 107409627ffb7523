"""A local staging folder for a run folder or a sweep folder given as a URL.

Training and sweeps write their folders locally (checkpoints rewritten every epoch, records
appended one by one, worker processes writing point folders); an object store replaces whole
objects only. So a folder at a URL (``output_dir = "s3://bucket/runs/x"``, ``[sweep] store =
"s3://bucket/sweep/results.jsonl"``) is *staged*: :func:`staged_folder` gives a local
temporary folder holding a copy of what the URL already holds (so a rerun resumes exactly as a
local one does), the run works in it, and :func:`publish` uploads its files, each one
atomically (:func:`flipless.remote.copy_file`: an object appears only once complete), the
files named ``last`` after all others — a reader who finds ``summary.json`` (or a sweep's
store) finds every file it refers to.

The staging folder is removed when the block ends; what was not published by then is lost,
as the unsaved part of a killed local run is.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from flipless import remote


@contextlib.contextmanager
def staged_folder(url: str, names: Iterable[str] | None = None) -> Iterator[Path]:
    """A local temporary folder with a copy of the folder at ``url`` (empty if none is there).

    ``names`` (files or folders directly under ``url``) limits the copy to those entries; None
    copies everything under ``url``. The folder is removed when the block ends.
    """
    with tempfile.TemporaryDirectory(prefix="flipless-staging-") as temporary:
        staging = Path(temporary) / "folder"
        staging.mkdir()
        entries = [None] if names is None else list(names)
        for name in entries:
            source = url if name is None else str(remote.join(url, name))
            if not remote.exists(source):
                continue
            with remote.local_tree(source) as copy:
                target = staging if name is None else staging / name
                if copy.is_dir():
                    shutil.copytree(copy, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(copy, target)
        yield staging


def publish(
    staging: Path, url: str, entries: Iterable[str] | None = None, last: Iterable[str] = ()
) -> None:
    """Upload the files of ``staging`` to the folder ``url``, each atomically, ``last`` last.

    ``entries`` (paths relative to ``staging``: files, or folders whose files are all taken)
    limits the upload; None uploads every file (but hidden ones: locks, temporaries). A file already at the URL is replaced. Files
    named in ``last`` (relative paths) are uploaded after all the others, in that order.
    """
    chosen = [staging] if entries is None else [staging / entry for entry in entries]
    files: list[Path] = []
    for path in chosen:
        if path.is_dir():
            files.extend(sorted(item for item in path.rglob("*") if item.is_file()))
            files = [item for item in files if not item.name.startswith(".")]  # locks, temporaries
        elif path.is_file():
            files.append(path)
    order = {name: position for position, name in enumerate(last)}
    relative = [item.relative_to(staging).as_posix() for item in files]
    relative.sort(key=lambda name: (name in order, order.get(name, 0)))
    for name in dict.fromkeys(relative):
        remote.copy_file(staging / name, remote.join(url, name))
