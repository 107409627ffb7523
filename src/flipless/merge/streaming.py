"""Merge checkpoints of any size tensor by tensor: peak memory near the largest tensor.

:func:`stream_merge` reads the old checkpoint and each new one one tensor at a time, calls a
merge function (for example a lambda around :func:`~flipless.merge.tensors.merge_tensor`,
METHODS.md §3) and appends the result to the output shard being written, so that only a few
tensors (old, new, result and the merge's temporaries) are ever in memory, never the model.

Reading. A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``
(offsets relative to the end of the header; the header padded with spaces), then the raw
little-endian bytes. Each tensor is memory-mapped on its own (copy-on-write) and unmapped when
the tensor is dropped. ``safetensors.safe_open`` is not used to read data: it maps the whole file
once, and every page read through that mapping stays in the process's resident set until the
file is closed, so streaming a 2 GB file through one handle shows 2 GB of resident memory
(measured with safetensors 0.8); reopening it for every tensor re-parses the header each time.

Writing. :class:`SafetensorsWriter` computes the header from the declared (name, dtype, shape)
list up front, then takes the tensors one by one in that order, writes their bytes without
copying, and renames its temporary file into place on :meth:`~SafetensorsWriter.close`.
:func:`stream_merge` writes into a hidden staging folder beside ``out_dir`` and renames it into
place at the end, so a failed merge leaves neither a partial checkpoint nor temporary files.
Within a shard, tensors are laid out by element size, largest first, so that every tensor
starts at a multiple of its element size and maps without a copy. Hosts are little-endian.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch
from tqdm.auto import tqdm

from flipless.errors import FileFormatError, InputError, MismatchError, MissingFileError

SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.complex64: "C64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint64: "U64",
    torch.uint32: "U32",
    torch.uint16: "U16",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
"""The torch dtypes flipless reads and writes, with their safetensors names."""

DTYPES_BY_NAME: dict[str, torch.dtype] = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
COPIED_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
"""Files copied from the old checkpoint's folder, when present, so that a Hugging Face model
folder stays loadable after the merge."""

MAX_HEADER_BYTES = 100_000_000  # the limit safetensors itself enforces
LISTED_NAMES = 5  # names quoted in an error message before "and N more"

MergeFunction = Callable[[str, torch.Tensor, list[torch.Tensor]], torch.Tensor]
"""``merge_fn(name, old_tensor, new_tensors) -> merged tensor`` of the old tensor's dtype and shape."""


@dataclass(frozen=True)
class TensorEntry:
    """A tensor as a safetensors header declares it."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))  # a list or torch.Size compares equal

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"{SAFETENSORS_DTYPES.get(self.dtype, self.dtype)} {list(self.shape)}"


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    more = len(names) - LISTED_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def _check_entries(entries: Iterable[TensorEntry]) -> list[TensorEntry]:
    checked: list[TensorEntry] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, TensorEntry):
            raise InputError(f"expected TensorEntry(name, dtype, shape) items; got {entry!r}.")
        if not isinstance(entry.name, str) or not entry.name or entry.name == "__metadata__":
            raise InputError(
                f"tensor name {entry.name!r}: give a non-empty string other than '__metadata__'."
            )
        if entry.name in seen:
            raise InputError(f"tensor name {entry.name!r} appears twice; names must be unique.")
        if entry.dtype not in SAFETENSORS_DTYPES:
            raise InputError(
                f"{entry.name}: dtype {entry.dtype} cannot be stored; supported: "
                f"{', '.join(str(dtype) for dtype in SAFETENSORS_DTYPES)}."
            )
        if any(not isinstance(size, int) or size < 0 for size in entry.shape):
            raise InputError(f"{entry.name}: shape {entry.shape}; expected non-negative integers.")
        seen.add(entry.name)
        checked.append(entry)
    return checked


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    values = dict(metadata or {})
    wrong = [
        key
        for key, value in values.items()
        if not (isinstance(key, str) and isinstance(value, str))
    ]
    if wrong:
        raise InputError(
            f"safetensors metadata must map strings to strings; {_listed([repr(k) for k in wrong])} "
            "do not. Convert the values with str() or json.dumps()."
        )
    return values


class SafetensorsWriter:
    """Write one safetensors file tensor by tensor, atomically.

    The header (names, dtypes, shapes, byte offsets in the order of ``entries``) is written
    first; :meth:`write` then takes the tensors in that order, checks each one's name, dtype and
    shape against its entry, and appends its bytes. :meth:`close` renames the temporary file to
    ``path`` once every tensor is written; :meth:`abort`, or any error, removes it. As a context
    manager it closes on success and aborts on an exception.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        entries: Iterable[TensorEntry],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.entries = _check_entries(entries)
        header: dict[str, object] = {}
        values = _check_metadata(metadata)
        if values:
            header["__metadata__"] = values
        offset = 0
        for entry in self.entries:
            header[entry.name] = {
                "dtype": SAFETENSORS_DTYPES[entry.dtype],
                "shape": list(entry.shape),
                "data_offsets": [offset, offset + entry.nbytes],
            }
            offset += entry.nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        if not self.path.parent.is_dir():
            raise InputError(
                f"cannot write {self.path}: the folder {self.path.parent} does not exist."
            )
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        self.temporary_path = Path(temporary)
        self._file = os.fdopen(handle, "wb")
        self._written = 0
        try:
            self._file.write(struct.pack("<Q", len(text)))
            self._file.write(text)
        except BaseException:
            self.abort()
            raise

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` as the next declared entry, ``name``; any mismatch aborts the file."""
        try:
            self._check_open("write")
            if self._written == len(self.entries):
                raise InputError(
                    f"{name}: all {len(self.entries)} declared tensors are written already."
                )
            entry = self.entries[self._written]
            if name != entry.name:
                raise MismatchError(
                    f"got tensor {name!r} but the header declares {entry.name!r} next (tensor "
                    f"{self._written + 1} of {len(self.entries)}); write them in the declared order."
                )
            if not isinstance(tensor, torch.Tensor):
                raise InputError(f"{name}: expected a torch.Tensor; got {type(tensor).__name__}.")
            if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
                raise MismatchError(
                    f"{name}: the header declares {entry.describe()} but the tensor is "
                    f"{SAFETENSORS_DTYPES.get(tensor.dtype, tensor.dtype)} {list(tensor.shape)}; "
                    "give a tensor of the declared dtype and shape."
                )
            data = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous()
            self._file.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
            self._written += 1
        except BaseException:
            self.abort()
            raise

    def close(self) -> Path:
        """Finish the file and rename it to ``path``; raises (and aborts) if tensors are missing."""
        self._check_open("close")
        if self._written != len(self.entries):
            missing = [entry.name for entry in self.entries[self._written :]]
            self.abort()
            raise InputError(
                f"{self.path}: closed after {self._written} of {len(self.entries)} declared "
                f"tensors; missing {_listed(missing)}. The file was not written."
            )
        try:
            self._file.close()
            os.replace(self.temporary_path, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary file; ``path`` is left untouched."""
        self._file.close()
        self.temporary_path.unlink(missing_ok=True)

    def _check_open(self, action: str) -> None:
        if self._file.closed:
            raise InputError(f"cannot {action}: the writer for {self.path} is closed or aborted.")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        elif not self.closed:
            self.abort()


def shard_plan(entries: Sequence[TensorEntry], max_shard_bytes: int) -> list[list[str]]:
    """Split ``entries`` into consecutive shards of at most ``max_shard_bytes`` tensor bytes.

    Input order is kept; a shard is closed when the next tensor would push it over the limit,
    and a tensor larger than the limit gets a shard of its own.
    """
    if (
        isinstance(max_shard_bytes, bool)
        or not isinstance(max_shard_bytes, int)
        or max_shard_bytes < 1
    ):
        raise InputError(f"max_shard_bytes={max_shard_bytes!r}; expected a positive integer.")
    shards: list[list[str]] = []
    size = 0
    for entry in entries:
        if not shards or (size + entry.nbytes > max_shard_bytes and shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(entry.name)
        size += entry.nbytes
    return shards


@dataclass(frozen=True)
class StoredTensor:
    """Where a tensor's bytes lie: its entry, its file and the absolute offset of its data."""

    entry: TensorEntry
    path: Path
    start: int

    def read(self) -> torch.Tensor:
        """The tensor, memory-mapped copy-on-write from its file; unmapped once dropped.

        A tensor whose data do not start at a multiple of its element size is copied to
        aligned memory.
        """
        entry = self.entry
        if entry.nbytes == 0:
            return torch.empty(entry.shape, dtype=entry.dtype)
        page_start = self.start - self.start % mmap.ALLOCATIONGRANULARITY
        with self.path.open("rb") as handle:
            mapping = mmap.mmap(
                handle.fileno(),
                self.start + entry.nbytes - page_start,
                access=mmap.ACCESS_COPY,
                offset=page_start,
            )
        raw = torch.frombuffer(
            mapping, dtype=torch.uint8, count=entry.nbytes, offset=self.start - page_start
        )
        if self.start % entry.dtype.itemsize:
            raw = raw.clone()
        return raw.view(entry.dtype).reshape(entry.shape)


def read_safetensors_header(
    path: str | os.PathLike[str],
) -> tuple[list[StoredTensor], dict[str, str]]:
    """The tensors of one safetensors file in the order of their data, and its metadata.

    Only the header is read. Raises :class:`FileFormatError` when the file is missing, is not
    a safetensors file, or declares a dtype, shape or byte range that does not fit.
    """
    file = Path(path)

    def invalid(reason: str) -> FileFormatError:
        return FileFormatError(
            f"{file} is not a valid safetensors file: {reason}. Re-save it with "
            "safetensors.torch.save_file."
        )

    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise invalid(f"{size} bytes, shorter than the 8-byte header length")
            (header_bytes,) = struct.unpack("<Q", prefix)
            if header_bytes > min(MAX_HEADER_BYTES, size - 8):
                raise invalid(f"the header claims {header_bytes} bytes in a {size}-byte file")
            header = json.loads(handle.read(header_bytes))
    except FileNotFoundError as error:
        raise MissingFileError(f"No such checkpoint file: {file}.") from error
    except IsADirectoryError as error:
        raise FileFormatError(f"{file} is a folder, not a safetensors file.") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid(f"its header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise invalid("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid("__metadata__ is not a map of strings")
    data_start = 8 + header_bytes
    tensors = []
    for name, info in header.items():
        try:
            dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError) as error:
            raise invalid(f"entry {name!r} lacks dtype, shape or data_offsets") from error
        if dtype_name not in DTYPES_BY_NAME:
            raise invalid(
                f"{name} has dtype {dtype_name!r}; flipless reads {', '.join(DTYPES_BY_NAME)}"
            )
        if not isinstance(shape, list) or any(not isinstance(s, int) or s < 0 for s in shape):
            raise invalid(f"{name} has shape {shape!r}")
        entry = TensorEntry(name, DTYPES_BY_NAME[dtype_name], tuple(shape))
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise invalid(f"{name} has data_offsets {info['data_offsets']!r}")
        if end - begin != entry.nbytes or data_start + end > size:
            raise invalid(
                f"{name} ({entry.describe()}, {entry.nbytes} bytes) has data_offsets "
                f"[{begin}, {end}] in a file with {size - data_start} data bytes"
            )
        tensors.append(StoredTensor(entry, file, data_start + begin))
    tensors.sort(key=lambda stored: stored.start)
    return tensors, metadata


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's tensors by name (in file order) and where each is stored.

    ``folder`` is the model folder (``None`` for a bare file), ``metadata`` the first file's
    safetensors metadata.
    """

    source: Path
    folder: Path | None
    tensors: dict[str, StoredTensor]
    metadata: dict[str, str]


#: Suffixes of torch's own (pickle or zip) checkpoint files, which are not streamed.
TORCH_FILE_SUFFIXES = (".pt", ".pth", ".bin")


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read the headers of a checkpoint: a ``.safetensors`` file, or a folder holding
    ``model.safetensors.index.json`` and its shards, or a folder holding ``model.safetensors``.
    """
    source = Path(path)
    if source.suffix in TORCH_FILE_SUFFIXES:
        raise FileFormatError(
            f"{source} is a torch file; checkpoints are streamed from safetensors only (a torch "
            "file cannot be read tensor by tensor without unpickling it). Convert it once: "
            'python -c "import sys, torch, safetensors.torch as st; st.save_file(torch.load('
            'sys.argv[1], weights_only=True), sys.argv[2])" '
            f"{source} {source.with_suffix('.safetensors')}"
        )
    if source.is_file():
        tensors, metadata = read_safetensors_header(source)
        return Checkpoint(source, None, {t.entry.name: t for t in tensors}, metadata)
    if not source.is_dir():
        raise MissingFileError(
            f"No such checkpoint: {source}. Give a .safetensors file or a model folder."
        )
    index = source / INDEX_FILE
    if index.is_file():
        return _open_sharded(source, index)
    if (source / SINGLE_FILE).is_file():
        tensors, metadata = read_safetensors_header(source / SINGLE_FILE)
        return Checkpoint(source, source, {t.entry.name: t for t in tensors}, metadata)
    raise FileFormatError(
        f"{source} holds neither {INDEX_FILE} nor {SINGLE_FILE}; give a folder with one of them "
        "or a .safetensors file (convert .bin checkpoints to safetensors first)."
    )


def _open_sharded(folder: Path, index: Path) -> Checkpoint:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise FileFormatError(
            f"{index} is not a safetensors index (a JSON object with a 'weight_map'): {error}."
        ) from error
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise FileFormatError(f"{index}: 'weight_map' must map tensor names to file names.")
    tensors: dict[str, StoredTensor] = {}
    metadata: dict[str, str] | None = None
    for file_name in sorted(set(weight_map.values())):
        stored, file_metadata = read_safetensors_header(folder / file_name)
        metadata = file_metadata if metadata is None else metadata
        in_file = {t.entry.name for t in stored}
        missing = [name for name, f in weight_map.items() if f == file_name and name not in in_file]
        if missing:
            raise FileFormatError(
                f"{index} places {_listed(missing)} in {file_name}, which does not hold them; "
                "the index and the shards disagree."
            )
        tensors.update(
            (t.entry.name, t) for t in stored if weight_map.get(t.entry.name) == file_name
        )
    return Checkpoint(folder, folder, tensors, metadata or {})


def check_same_tensors(old: Checkpoint, news: Sequence[Checkpoint]) -> None:
    """Raise :class:`MismatchError` listing every tensor name, shape or dtype that differs
    between the old checkpoint and a new one."""
    problems = []
    for index, new in enumerate(news):
        which = f"new checkpoint {index} ({new.source})"
        missing = [name for name in old.tensors if name not in new.tensors]
        extra = [name for name in new.tensors if name not in old.tensors]
        if missing:
            problems.append(
                f"{which} lacks {len(missing)} tensors of the old one: {_listed(missing)}"
            )
        if extra:
            problems.append(f"{which} has {len(extra)} tensors the old one lacks: {_listed(extra)}")
        differ = [
            f"{name} (old {stored.entry.describe()}, new {new.tensors[name].entry.describe()})"
            for name, stored in old.tensors.items()
            if name in new.tensors
            and (stored.entry.dtype, stored.entry.shape)
            != (new.tensors[name].entry.dtype, new.tensors[name].entry.shape)
        ]
        if differ:
            problems.append(f"{which} differs in dtype or shape for {_listed(differ)}")
    if problems:
        raise MismatchError(
            f"the checkpoints to merge do not match the old one ({old.source}): "
            + "; ".join(problems)
            + ". Merge only models of the same architecture."
        )


def shard_file_names(count: int) -> list[str]:
    """``model.safetensors`` for one shard, else ``model-00001-of-0000K.safetensors`` …"""
    if count == 1:
        return [SINGLE_FILE]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def stream_merge(
    old: str | os.PathLike[str],
    news: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    merge_fn: MergeFunction,
    *,
    max_shard_bytes: int = 2**30,
    metadata: Mapping[str, str] | None = None,
    progress: bool = False,
) -> Path:
    """Merge checkpoints tensor by tensor into ``out_dir`` and return it.

    For every tensor of the old checkpoint, ``merge_fn(name, old_tensor, [new_tensor, ...])``
    gives the output tensor, which must keep the old tensor's dtype and shape (integer buffers
    and other non-floating tensors are ``merge_fn``'s business). Inputs are checkpoints as
    :func:`open_checkpoint` reads them; all must hold the same names, shapes and dtypes. The
    output is ``model.safetensors`` when its tensors fit in ``max_shard_bytes``, else
    ``model-0000i-of-0000K.safetensors`` shards cut by :func:`shard_plan` in the old
    checkpoint's stored order, and a Hugging Face ``model.safetensors.index.json``
    (``{"metadata": {"total_size": bytes}, "weight_map": {name: file}}``). Inside a shard,
    tensors are merged and laid out by element size, largest first. Each file carries the old checkpoint's metadata updated
    with ``metadata``. :data:`COPIED_FILES` present in the old model folder are copied.

    ``out_dir`` must not exist or be empty. Everything is written to a hidden staging folder
    beside it, renamed into place at the end; on any error the staging folder is removed.
    Peak memory: the tensors of one name (old, new ones, result) and ``merge_fn``'s temporaries.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            f"out_dir {out} already exists and is not an empty folder; give a new or empty "
            "folder so that merged shards never mix with older files."
        )
    new_paths = [news] if isinstance(news, str | os.PathLike) else list(news)
    if not new_paths:
        raise InputError("no new checkpoint given; give at least one to merge with the old one.")
    if not callable(merge_fn):
        raise InputError(
            f"merge_fn must be callable (name, old, news) -> tensor; got {merge_fn!r}."
        )
    old_checkpoint = open_checkpoint(old)
    new_checkpoints = [open_checkpoint(path) for path in new_paths]
    check_same_tensors(old_checkpoint, new_checkpoints)
    if not old_checkpoint.tensors:
        raise InputError(f"{old_checkpoint.source} holds no tensors; there is nothing to merge.")
    file_metadata = {**old_checkpoint.metadata, **_check_metadata(metadata)}
    entries = [stored.entry for stored in old_checkpoint.tensors.values()]
    shards = shard_plan(entries, max_shard_bytes)
    names = shard_file_names(len(shards))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    bar = tqdm(
        total=sum(entry.nbytes for entry in entries),
        unit="B",
        unit_scale=True,
        desc="merging",
        disable=not progress,
    )
    try:
        weight_map: dict[str, str] = {}
        for file_name, shard in zip(names, shards, strict=True):
            # Largest element size first: every tensor then starts at a multiple of its own.
            ordered = sorted(shard, key=lambda n: -old_checkpoint.tensors[n].entry.dtype.itemsize)
            layout = [old_checkpoint.tensors[name].entry for name in ordered]
            with SafetensorsWriter(staging / file_name, layout, metadata=file_metadata) as writer:
                for name in ordered:
                    old_tensor = old_checkpoint.tensors[name].read()
                    new_tensors = [
                        checkpoint.tensors[name].read() for checkpoint in new_checkpoints
                    ]
                    merged = merge_fn(name, old_tensor, new_tensors)
                    del old_tensor, new_tensors
                    writer.write(name, merged)
                    del merged
                    weight_map[name] = file_name
                    bar.update(old_checkpoint.tensors[name].entry.nbytes)
        if len(shards) > 1:
            total = sum(entry.nbytes for entry in entries)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        if old_checkpoint.folder is not None:
            for name in COPIED_FILES:
                if (old_checkpoint.folder / name).is_file():
                    shutil.copy2(old_checkpoint.folder / name, staging / name)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        bar.close()
    return out
