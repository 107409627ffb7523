"""Paths that may be fsspec URLs: read, copy locally, and write atomically, local or remote.

Every file flipless reads or writes (configs, prediction files, checkpoints, comparisons,
reports) may be given as a local path or as an fsspec URL such as ``s3://bucket/key``,
``gs://bucket/key`` or ``memory://folder/name`` (``file://`` URLs are local paths). Remote
protocols need their fsspec implementation: ``s3://`` the ``s3`` extra
(``pip install 'flipless[s3]'``, which installs s3fs). Credentials and options come from
where the implementation usually finds them: for S3 the AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, …) and ``~/.aws``; for any
protocol fsspec's configuration (``FSSPEC_S3_ENDPOINT_URL=…``, ``FSSPEC_S3='{"anon": true}'``,
or ``~/.config/fsspec/*.json``).

Local paths never touch fsspec: they are opened, copied and renamed with the standard library,
exactly as before URLs were accepted.

Writes are atomic (:func:`atomic_write`, :func:`atomic_local_file`): the content is written
to a local temporary file first and published only when complete. Locally that is a rename
(``os.replace``) within the target's folder. To an object store (S3, GCS) it is one upload,
and an object store shows an object only once its upload completed (a multipart upload
interrupted half-way leaves no object). To any other fsspec file system it is an upload to a
temporary name beside the target (``.<name>.<random>.tmp``), then a move over the target.
A failure before publication leaves the target as it was.

This module sits beside :mod:`flipless.errors` at the bottom of the layers: the metrics
(comparison JSON), the prediction readers, the models and everything above use it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from flipless.errors import (
    FileFormatError,
    FliplessError,
    InputError,
    MissingExtraError,
    MissingFileError,
)

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

PathLike = str | os.PathLike[str]

_URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.\-]*)://")
_LOCAL_PROTOCOLS = frozenset({"file", "local"})
#: Object stores: an uploaded object becomes visible only once its upload is complete.
_ATOMIC_UPLOAD_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})
#: The pip command that installs a protocol's implementation, when flipless has an extra.
_EXTRAS = {"s3": "pip install 'flipless[s3]'", "s3a": "pip install 'flipless[s3]'"}


def protocol_of(path: PathLike) -> str | None:
    """The URL protocol of ``path`` (``"s3"``), or None for a plain local path."""
    if not isinstance(path, str):
        return None
    match = _URL.match(path)
    return match.group("protocol").lower() if match else None


def is_remote(path: PathLike) -> bool:
    """Whether ``path`` is a URL read through fsspec (any protocol but ``file://``).

    Only strings can be URLs: ``Path("s3://b/k")`` has already lost the ``//`` of its URL.
    """
    protocol = protocol_of(path)
    return protocol is not None and protocol not in _LOCAL_PROTOCOLS


def local_path(path: PathLike) -> Path:
    """``path`` as a local :class:`~pathlib.Path` (a ``file://`` URL loses its prefix).

    Raises:
        InputError: ``path`` is a remote URL; it has no local path.
    """
    if is_remote(path):
        raise InputError(
            f"{path} is a remote URL; this needs a local path. Copy the file locally first."
        )
    if protocol_of(path) is not None:
        return Path(str(path).split("://", 1)[1])
    return Path(path)


def as_path(path: PathLike) -> str | Path:
    """A remote URL unchanged (a string), anything else as a local :class:`~pathlib.Path`."""
    return str(path) if is_remote(path) else local_path(path)


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec file system serving ``url`` and the path within it.

    Raises:
        MissingExtraError: the protocol's implementation is not installed.
        InputError: fsspec knows no such protocol.
    """
    given = protocol_of(url)
    protocol = given or "file"
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError as error:  # pragma: no cover - torch depends on fsspec
        raise MissingExtraError(f"{url}: URLs need fsspec; pip install fsspec.") from error
    try:
        return url_to_fs(url if given is None else given + url[len(given) :])  # lower-case names
    except ImportError as error:
        install = _EXTRAS.get(protocol)
        advice = install or f"install the package fsspec names: {error}"
        raise MissingExtraError(
            f"{url}: {protocol}:// paths need fsspec's {protocol} implementation, which is not "
            f"installed; {advice}."
        ) from error
    except ValueError as error:
        known = ", ".join(sorted(fsspec.available_protocols())[:12])
        raise InputError(
            f"{url}: fsspec knows no protocol {protocol!r} ({error}); expected a local path or "
            f"a URL such as s3://bucket/key (protocols include {known}, …)."
        ) from error


@contextlib.contextmanager
def _translated(url: str, action: str) -> Iterator[None]:
    """Turn a file system's errors while ``action``-ing ``url`` into FileFormatErrors."""
    check = (
        "Check the URL: the bucket (or container) and the key must both exist."
        if is_remote(url)
        else "Check the path."
    )
    try:
        yield
    except FliplessError:
        raise
    except FileNotFoundError as error:
        raise MissingFileError(
            f"cannot {action} {url}: it does not exist ({_reason(error)}). {check}"
        ) from error
    except PermissionError as error:
        raise FileFormatError(
            f"cannot {action} {url}: access denied ({_reason(error)}). Check the credentials "
            "(for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the "
            "bucket's permissions."
        ) from error
    except OSError as error:
        raise FileFormatError(f"cannot {action} {url}: {_reason(error)}.") from error


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _info(url: str) -> dict[str, Any] | None:
    """fsspec's info of ``url``, or None when nothing is there."""
    fs, inner = filesystem(url)
    with _translated(url, "look up"):
        try:
            return fs.info(inner)
        except FileNotFoundError:
            return None


def exists(path: PathLike) -> bool:
    """Whether a file or folder is at ``path``."""
    if is_remote(path):
        return _info(str(path)) is not None
    return local_path(path).exists()


def is_file(path: PathLike) -> bool:
    """Whether a file (an object) is at ``path``."""
    if is_remote(path):
        info = _info(str(path))
        return info is not None and info.get("type") == "file"
    return local_path(path).is_file()


def is_dir(path: PathLike) -> bool:
    """Whether a folder (a prefix with objects under it) is at ``path``."""
    if is_remote(path):
        info = _info(str(path))
        return info is not None and info.get("type") == "directory"
    return local_path(path).is_dir()


def size(path: PathLike) -> int:
    """The size of the file at ``path`` in bytes."""
    if is_remote(path):
        info = _info(str(path))
        if info is None:
            raise MissingFileError(f"{path} does not exist; check the URL.")
        return int(info.get("size") or 0)
    return local_path(path).stat().st_size


def name_of(path: PathLike) -> str:
    """The last part of ``path`` (``"model.safetensors"``)."""
    if is_remote(path):
        return PurePosixPath(str(path).split("://", 1)[1]).name
    return local_path(path).name


def suffix_of(path: PathLike) -> str:
    """The suffix of ``path``'s last part (``".safetensors"``), as written."""
    return PurePosixPath(name_of(path)).suffix


def parent_of(path: PathLike) -> str | Path:
    """The folder holding ``path`` (a URL's prefix up to its last ``/``)."""
    if is_remote(path):
        return str(path).rstrip("/").rsplit("/", 1)[0]
    return local_path(path).parent


def sibling(path: PathLike, name: str) -> str | Path:
    """The path named ``name`` in the same folder as ``path``."""
    if is_remote(path):
        return f"{parent_of(path)}/{name}"
    return local_path(path).with_name(name)


def join(folder: PathLike, name: str) -> str | Path:
    """The path ``name`` inside ``folder``."""
    if is_remote(folder):
        return f"{str(folder).rstrip('/')}/{name}"
    return local_path(folder) / name


@contextlib.contextmanager
def open_for_reading(
    path: PathLike, mode: str = "rb", encoding: str | None = None
) -> Iterator[IO[Any]]:
    """An open file to read ``path`` from (``mode`` ``"rb"`` or ``"r"``).

    Raises:
        FileFormatError: nothing is at ``path``, or it cannot be read (missing bucket, access
            denied).
    """
    if mode not in ("rb", "r"):
        raise InputError(f"open_for_reading(mode={mode!r}); expected 'rb' or 'r'.")
    if encoding is None and mode == "r":
        encoding = "utf-8"
    if not is_remote(path):
        with _translated(str(path), "read"):
            stream = open(local_path(path), mode, encoding=encoding)  # noqa: SIM115
        with stream:
            yield stream
        return
    fs, inner = filesystem(str(path))
    with _translated(str(path), "read"):
        stream = fs.open(inner, mode, encoding=encoding) if mode == "r" else fs.open(inner, mode)
    with stream:
        yield stream


def read_bytes(path: PathLike) -> bytes:
    """The content of the file at ``path``."""
    with open_for_reading(path) as stream:
        return stream.read()


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """The text of the file at ``path``."""
    return read_bytes(path).decode(encoding)


@contextlib.contextmanager
def local_copy(path: PathLike) -> Iterator[Path]:
    """A local file with the content of ``path``, for libraries that need a real path.

    A local path is given as it is (no copy). A remote file is downloaded to a temporary
    folder under the same name, which is removed when the block ends.
    """
    if not is_remote(path):
        yield local_path(path)
        return
    if is_dir(path):
        raise FileFormatError(f"{path} is a folder; expected a file.")
    with tempfile.TemporaryDirectory(prefix="flipless-") as folder:
        yield _download(str(path), Path(folder))


@contextlib.contextmanager
def local_tree(path: PathLike) -> Iterator[Path]:
    """A local copy of the file or the folder (with everything under it) at ``path``.

    A local path is given as it is; a remote one is downloaded to a temporary folder under the
    same name, removed when the block ends.
    """
    if not is_remote(path):
        yield local_path(path)
        return
    with tempfile.TemporaryDirectory(prefix="flipless-") as folder:
        yield _download(str(path), Path(folder))


_DOWNLOADS: dict[str, Path] = {}


def downloaded(path: PathLike) -> Path:
    """A local copy of the file or folder at ``path``, downloaded once per process.

    For data read at any time during a run (images found through a table, say): the copy is
    kept in a temporary folder until the process ends. A local path is given as it is.
    """
    if not is_remote(path):
        return local_path(path)
    url = str(path).rstrip("/")
    if url not in _DOWNLOADS:
        folder = Path(tempfile.mkdtemp(prefix="flipless-data-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _DOWNLOADS[url] = _download(url, folder)
    return _DOWNLOADS[url]


def _download(url: str, folder: Path) -> Path:
    """Download the file or folder at ``url`` into ``folder``, under its own name."""
    url = url.rstrip("/")
    fs, inner = filesystem(url)
    target = folder / (name_of(url) or "download")
    with _translated(url, "download"):
        if fs.isdir(inner):
            fs.get(inner.rstrip("/") + "/", str(target), recursive=True)
        else:
            fs.get_file(inner, str(target))
    return target


@contextlib.contextmanager
def atomic_local_folder(path: PathLike) -> Iterator[Path]:
    """A local folder to fill (not created yet), published to ``path`` if the block succeeds.

    A local ``path`` is given as it is: the caller writes it (and stages it) itself. For a URL,
    which must hold nothing yet, the block gets a path in a temporary folder; afterwards each
    file under it is uploaded as :func:`atomic_local_file` does, the ``.json`` files (an index
    of shards, a config) last, so that a reader who finds the index finds its shards.

    Raises:
        InputError: something already exists at the URL ``path``.
    """
    if not is_remote(path):
        yield local_path(path)
        return
    url = str(path).rstrip("/")
    if exists(url):
        raise InputError(
            f"{url} already exists; give a new folder URL so that new files never mix with "
            "older ones."
        )
    fs, inner = filesystem(url)
    with tempfile.TemporaryDirectory(prefix="flipless-") as folder:
        local = Path(folder) / (name_of(url) or "upload")
        yield local
        files = sorted(
            (item for item in local.rglob("*") if item.is_file()),
            key=lambda item: (item.suffix == ".json", str(item)),
        )
        for item in files:
            relative = item.relative_to(local).as_posix()
            _upload(fs, str(item), f"{inner}/{relative}", f"{url}/{relative}")


@contextlib.contextmanager
def atomic_local_file(path: PathLike) -> Iterator[Path]:
    """A local temporary path to write; published to ``path`` only if the block succeeds.

    Locally the temporary file lies in ``path``'s folder and is renamed over ``path``
    (``os.replace``), with the replaced file's permissions (a new file's: ``0o644``). Remotely it lies in the system's temporary folder and is uploaded (see
    the module docstring). On an error (or KeyboardInterrupt) the temporary file is removed
    and ``path`` is untouched.

    Raises:
        InputError: ``path``'s local folder does not exist.
    """
    if is_remote(path):
        fs, inner = filesystem(str(path))  # a missing extra fails before any work is done
        handle, temporary = tempfile.mkstemp(prefix="flipless-", suffix=suffix_of(path))
    else:
        target = local_path(path)
        if not target.parent.is_dir():
            raise InputError(
                f"cannot write {target}: the folder {target.parent} does not exist; create it "
                "first."
            )
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
    os.close(handle)
    try:
        yield Path(temporary)
        if is_remote(path):
            _upload(fs, temporary, inner, str(path))
        else:
            os.chmod(temporary, _published_mode(target))
            os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _published_mode(target: Path) -> int:
    """The permissions of a written file: those of the file it replaces, else ``0o644``
    (``mkstemp`` makes files private; results, checkpoints and reports are for sharing)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o644


def _upload(fs: AbstractFileSystem, local: str, inner: str, url: str) -> None:
    """Publish the local file ``local`` at ``inner`` on ``fs``, atomically."""
    protocol = protocol_of(url)
    with _translated(url, "write"):
        if protocol in _ATOMIC_UPLOAD_PROTOCOLS:
            fs.put_file(local, inner)
            return
        folder, _, name = inner.rstrip("/").rpartition("/")
        staging = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp" if folder else f".{name}.tmp"
        try:
            fs.put_file(local, staging)
            fs.mv(staging, inner)
        except BaseException:
            with contextlib.suppress(Exception):
                if fs.exists(staging):
                    fs.rm(staging)
            raise


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """An open file (``mode`` ``"wb"`` or ``"w"``) whose content replaces ``path`` atomically.

    Nothing appears at ``path`` until the block ends without an error; see
    :func:`atomic_local_file`.
    """
    if mode not in ("wb", "w"):
        raise InputError(f"atomic_write(mode={mode!r}); expected 'wb' or 'w'.")
    with atomic_local_file(path) as temporary:
        if mode == "w":
            with open(temporary, "w", encoding=encoding) as stream:
                yield stream
        else:
            with open(temporary, "wb") as stream:
                yield stream


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as stream:
        stream.write(data)


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w", encoding=encoding) as stream:
        stream.write(text)


def copy_file(source: PathLike, target: PathLike) -> None:
    """Copy the file ``source`` to ``target`` (either may be remote), atomically."""
    with open_for_reading(source) as reading, atomic_write(target) as writing:
        shutil.copyfileobj(reading, writing)
