"""Read-only, lazy access to the tensors of a model, wherever they are stored.

:func:`open_source` turns any of these into a :class:`TensorSource`, a mapping name → tensor
that reads a tensor only when asked for it:

=======================================  ====================================================
what                                     how it is read
=======================================  ====================================================
an ``nn.Module``                         its ``state_dict()`` (parameters and buffers)
a ``Mapping[str, Tensor]``               as it is (a state dict; aliased tensors are fine)
a ``.safetensors`` file                  memory-mapped (``safetensors.safe_open``): only the
                                         tensors asked for are read; a flipless model file
                                         (:func:`flipless.models.save_model`) is one
a ``*.index.json`` file                  Hugging Face sharded layout: its ``weight_map`` says
                                         which shard file holds each tensor
a Hugging Face model folder              ``model.safetensors``, else
                                         ``model.safetensors.index.json``, else
                                         ``pytorch_model.bin``, else
                                         ``pytorch_model.bin.index.json``
a ``.pt`` / ``.pth`` / ``.bin`` file     a state dict, ``torch.load(weights_only=True)``,
                                         memory-mapped when saved in torch's zip format
=======================================  ====================================================

A source opened from files holds them open until :meth:`TensorSource.close` (or the end of
a ``with`` block).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flipless.errors import FileFormatError, InputError, MissingFileError
from flipless.validation import first_few

#: safetensors' dtype names → torch dtypes.
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

#: The files of a Hugging Face model folder, in the order they are looked for.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")

ACCEPTED = (
    "an nn.Module, a mapping name → tensor (a state dict), a .safetensors file, a sharded "
    "checkpoint's *.index.json, a Hugging Face model folder (holding one of "
    f"{', '.join(HF_WEIGHT_FILES)}), or a .pt/.pth/.bin state dict"
)


class TensorSource:
    """A read-only mapping name → tensor; tensors are read on :meth:`get`.

    ``origin`` says where the tensors come from (for messages), ``metadata`` holds what the
    storage records beside them (a safetensors header's metadata, an index file's
    ``metadata``; empty for modules and mappings). Use it as a context manager, or call
    :meth:`close`, to release open files. :func:`open_source` builds one; for other storage,
    give the constructor each tensor's ``(shape, dtype)`` in order and a ``read(name)``
    function.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
        read: Callable[[str], torch.Tensor],
        origin: str,
        metadata: Mapping[str, Any] | None = None,
        resources: ExitStack | None = None,
    ) -> None:
        self._shapes = dict(shapes)
        self._read = read
        self.origin = origin
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._resources = resources or ExitStack()
        self._closed = False

    def keys(self) -> list[str]:
        """The tensor names: a state dict's order, a sharded index's order, or, for one
        safetensors file, the order safetensors lists them in (sorted by name)."""
        return list(self._shapes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def __len__(self) -> int:
        return len(self._shapes)

    def _check_name(self, name: str) -> None:
        if name not in self._shapes:
            raise InputError(
                f"{self.origin} has no tensor named {name!r}; it has {len(self)}, e.g. "
                f"{first_few(self.keys(), 3)}."
            )

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape, without reading it."""
        self._check_name(name)
        return self._shapes[name][0]

    def dtype(self, name: str) -> torch.dtype:
        """The tensor's dtype, without reading it."""
        self._check_name(name)
        return self._shapes[name][1]

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name``, read now (from a module or mapping: the tensor itself)."""
        self._check_name(name)
        if self._closed:
            raise InputError(f"{self.origin} was closed; open it again with open_source.")
        return self._read(name)

    def close(self) -> None:
        """Release the files this source holds open; :meth:`get` fails afterwards."""
        self._closed = True
        self._resources.close()

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorSource({self.origin}, {len(self)} tensors)"


def open_source(source: Any, origin: str | None = None) -> TensorSource:
    """A :class:`TensorSource` over ``source`` (see the module docstring for what is accepted).

    A :class:`TensorSource` is returned as it is. ``origin`` names the source in messages
    (default: the path, or "in-memory MLP", "in-memory state dict").
    """
    if isinstance(source, TensorSource):
        return source
    if isinstance(source, nn.Module):
        return _mapping_source(source.state_dict(), origin or f"in-memory {type(source).__name__}")
    if isinstance(source, Mapping):
        return _mapping_source(source, origin or "in-memory state dict")
    if isinstance(source, (str, os.PathLike)):
        return _path_source(Path(source), origin)
    raise InputError(f"cannot read tensors from a {type(source).__name__}; expected {ACCEPTED}.")


def _mapping_source(mapping: Mapping[Any, Any], origin: str) -> TensorSource:
    """A source over tensors already in memory; every key a str, every value a tensor."""
    not_tensors = [key for key, value in mapping.items() if not isinstance(value, torch.Tensor)]
    not_names = [key for key in mapping if not isinstance(key, str)]
    if not_names or not_tensors:
        bad = not_names or not_tensors
        raise InputError(
            f"{origin} must map tensor names (str) to tensors; entries {first_few(bad)} do not. "
            "Pass model.state_dict() or a dict of tensors."
        )
    tensors = dict(mapping)
    shapes = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    return TensorSource(shapes, tensors.__getitem__, origin)


def _path_source(path: Path, origin: str | None) -> TensorSource:
    if path.is_dir():
        for file_name in HF_WEIGHT_FILES:
            if (path / file_name).is_file():
                return _path_source(path / file_name, origin or str(path))
        raise FileFormatError(
            f"{path} is a folder without model weights: expected one of "
            f"{', '.join(HF_WEIGHT_FILES)} (a Hugging Face model folder, as save_pretrained "
            "writes it)."
        )
    if not path.is_file():
        raise MissingFileError(f"no file or folder at {path}; expected {ACCEPTED}.")
    origin = origin or str(path)
    if path.name.endswith(".index.json"):
        return _sharded_source(path, origin)
    if path.suffix == ".safetensors":
        resources = ExitStack()
        handle = _open_safetensors(path, resources)
        shapes = _safetensors_shapes(handle, path)
        return TensorSource(shapes, handle.get_tensor, origin, handle.metadata(), resources)
    if path.suffix in TORCH_SUFFIXES:
        return _mapping_source(_torch_state_dict(path), origin)
    raise FileFormatError(f"cannot read {path}: unknown file type; expected {ACCEPTED}.")


def _open_safetensors(path: Path, resources: ExitStack) -> Any:
    """An open, memory-mapped safetensors handle, closed with ``resources``."""
    from safetensors import safe_open

    try:
        return resources.enter_context(safe_open(str(path), framework="pt"))
    except Exception as exc:
        raise FileFormatError(
            f"cannot read {path} as a safetensors file ({exc}); the file is damaged or of "
            "another format."
        ) from exc


def _safetensors_shapes(handle: Any, path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    shapes = {}
    for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
        piece = handle.get_slice(name)
        dtype = piece.get_dtype()
        if dtype not in SAFETENSORS_DTYPES:
            raise FileFormatError(
                f"{path}: tensor {name!r} has safetensors dtype {dtype}, which torch cannot "
                f"hold; expected one of {', '.join(SAFETENSORS_DTYPES)}."
            )
        shapes[name] = (tuple(piece.get_shape()), SAFETENSORS_DTYPES[dtype])
    return shapes


def _torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, loaded with ``weights_only=True``.

    Files in torch's zip format (the default since torch 1.6) are memory-mapped.
    """
    try:
        loaded = torch.load(
            path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
        )
    except Exception as exc:
        raise FileFormatError(
            f"cannot read {path} with torch.load(weights_only=True) ({exc}); expected a state "
            "dict saved with torch.save(model.state_dict(), path)."
        ) from exc
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        hint = ""
        if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
            hint = " It holds a 'state_dict' entry: pass torch.load(path)['state_dict'] instead."
        raise FileFormatError(
            f"{path} holds a {type(loaded).__name__} that is not a state dict (a mapping of "
            f"names to tensors).{hint}"
        )
    return dict(loaded)


def _sharded_source(index_path: Path, origin: str) -> TensorSource:
    """A sharded checkpoint: ``{"weight_map": {name: shard file}, "metadata": {...}}``."""
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"cannot read {index_path} as JSON ({exc}).") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in weight_map.items()
    ):
        raise FileFormatError(
            f"{index_path} has no 'weight_map' object of tensor name → shard file; expected a "
            "Hugging Face sharded-checkpoint index."
        )
    metadata = index.get("metadata") or {}
    resources = ExitStack()
    shards: dict[str, Callable[[str], torch.Tensor]] = {}
    shapes = {}
    try:
        for shard_name in dict.fromkeys(weight_map.values()):
            shard_path = index_path.parent / shard_name
            if not shard_path.is_file():
                raise MissingFileError(
                    f"{index_path} names the shard {shard_name}, which is not in "
                    f"{index_path.parent}; copy every shard beside the index."
                )
            if shard_path.suffix == ".safetensors":
                handle = _open_safetensors(shard_path, resources)
                shard_shapes = _safetensors_shapes(handle, shard_path)
                shards[shard_name] = handle.get_tensor
            else:
                state = _torch_state_dict(shard_path)
                shard_shapes = {n: (tuple(t.shape), t.dtype) for n, t in state.items()}
                shards[shard_name] = state.__getitem__
            listed = [name for name, shard in weight_map.items() if shard == shard_name]
            absent = [name for name in listed if name not in shard_shapes]
            if absent:
                raise FileFormatError(
                    f"{index_path}: the weight map puts {len(absent)} tensor(s) in {shard_name} "
                    f"that it does not hold ({first_few(absent)}); the index and the shards "
                    "are from different saves."
                )
            shapes.update({name: shard_shapes[name] for name in listed})
    except BaseException:
        resources.close()
        raise
    shapes = {name: shapes[name] for name in weight_map}

    def read(name: str) -> torch.Tensor:
        return shards[weight_map[name]](name)

    return TensorSource(shapes, read, origin, metadata, resources)
