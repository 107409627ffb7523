"""Features computed once and kept on disk, keyed by the content that decides them.

A frozen encoder gives the same features for the same text every time, so a run (or a sweep
of ten runs, or the next run tomorrow) computes them once. Two stores:

* :func:`cached_tensors`: a whole result (e.g. one split's hidden states) in one safetensors
  file named by the SHA-256 of what decides it;
* :class:`TextFeatureCache`: one row per text, keyed by ``sha256(text)``, inside a folder
  keyed by the encoder (:func:`path_sha256` of its folder, pooling, maximum length…); new
  rows are appended as a new shard file, so texts seen in any earlier batch or run are read
  back and only unseen ones are computed.

The cache never changes a number: a row is the float32 tensor that was computed, stored
bit for bit. Every write goes to a temporary file in the same folder and is renamed into
place, so readers (other sweep workers) never see a half-written file. The folder is
``cache_dir`` when given, else ``$FLIPLESS_CACHE``, else ``~/.cache/flipless/features``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from flipless import remote
from flipless.errors import FileFormatError, InputError, MissingFileError

#: The environment variable that moves the default cache folder.
CACHE_ENV = "FLIPLESS_CACHE"
#: Where a shard's row keys are stored (uint8 [n, 32], the SHA-256 of each text).
KEYS = "keys"
#: Where a shard's rows are stored (float32 [n, ...]).
VALUES = "values"

_DIGESTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$FLIPLESS_CACHE``, else ``~/.cache/flipless/features``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "flipless" / "features"


def content_key(*parts: str | bytes) -> str:
    """The SHA-256 hex digest of ``parts``, each length-prefixed (so ``("ab", "c")`` and
    ``("a", "bc")`` differ)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def path_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, or of a folder: of every file below it, by relative
    name and content digest, in sorted order. Memoised per process by sizes and mtimes. A URL
    is hashed in its local copy (:func:`flipless.remote.downloaded`, once per process)."""
    root = remote.downloaded(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
    else:
        raise MissingFileError(f"cannot hash {root}: no such file or folder.")
    names = [file.relative_to(root).as_posix() for file in files]
    stamp = tuple((name, *_size_and_mtime(file)) for name, file in zip(names, files, strict=True))
    memo = (str(root.resolve()), stamp)
    if memo not in _DIGESTS:
        if root.is_file():
            _DIGESTS[memo] = _file_sha256(root)
        else:
            digest = hashlib.sha256()
            for name, file in zip(names, files, strict=True):
                digest.update(name.encode() + b"\0" + bytes.fromhex(_file_sha256(file)))
            _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def _size_and_mtime(file: Path) -> tuple[int, int]:
    status = file.stat()
    return status.st_size, status.st_mtime_ns


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    try:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise FileFormatError(f"cannot read {file}: {error}.") from error
    return digest.hexdigest()


def write_tensors_atomically(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Save ``tensors`` as safetensors at ``path`` via a temporary file renamed into place."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({key: value.contiguous() for key, value in tensors.items()}, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a cache file, or :class:`FileFormatError` naming it (delete it to redo)."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as error:
        raise FileFormatError(
            f"the feature cache file {path} cannot be read ({error}); delete it and run again."
        ) from error


def cached_tensors(
    path: Path, compute: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The tensors stored at ``path``; when there are none, ``compute()``, stored first."""
    if path.is_file():
        return read_tensors(path)
    values = compute()
    write_tensors_atomically(values, path)
    return values


class TextFeatureCache:
    """Rows of features by text, in ``folder`` (one encoder's setting; see the module docstring).

    :meth:`get` returns the features of a list of texts, computing (with ``compute``, one call
    for all unseen texts of the list) and storing only the texts no shard holds yet. Shards
    written by other processes since the last look are read before computing.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._rows: dict[bytes, torch.Tensor] = {}
        self._read_shards: set[str] = set()

    def __len__(self) -> int:
        return len(self._rows)

    def _refresh(self) -> None:
        if not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("*.safetensors")):
            if shard.name in self._read_shards:
                continue
            tensors = read_tensors(shard)
            if set(tensors) != {KEYS, VALUES} or len(tensors[KEYS]) != len(tensors[VALUES]):
                raise FileFormatError(
                    f"{shard} is not a feature cache shard (expected '{KEYS}' and '{VALUES}' of "
                    "one length); delete it and run again."
                )
            for key, row in zip(tensors[KEYS], tensors[VALUES], strict=True):
                self._rows[bytes(key.tolist())] = row
            self._read_shards.add(shard.name)

    def get(
        self, texts: Sequence[str], compute: Callable[[list[str]], torch.Tensor]
    ) -> torch.Tensor:
        """Features [len(texts), ...] of ``texts`` (float32, CPU), stored rows read back."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise InputError("texts must be a list of strings; wrap a single text as [text].")
        keys = [hashlib.sha256(text.encode()).digest() for text in texts]
        if any(key not in self._rows for key in keys):
            self._refresh()
        unseen = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if unseen:
            text_of = dict(zip(keys, texts, strict=True))
            values = compute([text_of[key] for key in unseen]).detach().float().cpu()
            if len(values) != len(unseen):
                raise InputError(
                    f"the encoder returned {len(values)} rows for {len(unseen)} texts."
                )
            self._store(unseen, values)
        return torch.stack([self._rows[key] for key in keys])

    def _store(self, keys: Iterable[bytes], values: torch.Tensor) -> None:
        keys = list(keys)
        key_tensor = torch.tensor([list(key) for key in keys], dtype=torch.uint8)
        name = content_key(*keys)[:32] + ".safetensors"
        write_tensors_atomically({KEYS: key_tensor, VALUES: values}, self.folder / name)
        self._read_shards.add(name)
        for key, row in zip(keys, values.clone(), strict=True):
            self._rows[key] = row
