"""Teachers: where the old model's logits come from during compatible training (METHODS.md §2.3).

A teacher hands the distillation terms (:mod:`flipless.losses.terms`) the old model's logits
z_o for a batch, already in the *student's* label space, detached, computed under
``torch.no_grad()`` and on the inputs' device. Four kinds:

* :class:`ModelTeacher`: one old model, frozen (no parameter takes a gradient) and kept in
  eval mode, so dropout and batch-norm statistics never change what it says.
* :class:`EnsembleTeacher`: several old models averaged, by logits or by probabilities, with
  optional weights; every member and every weight counts (a published implementation silently
  dropped the first weight).
* :class:`CachedTeacher`: the old model is run once over the training set and its logits are
  stored by sample id in a safetensors file; training then only looks rows up. This is valid
  only when the inputs are the same every epoch (no random augmentation).
* :class:`LabelMap`: the old model was trained before classes were added. The map places each
  old class at its student column, matched by class name (:meth:`LabelMap.from_names`); the
  columns of new classes are filled with :func:`unknown_class_logit` (a large negative finite
  logit: it never wins an argmax and its softmax probability is exactly 0, even at T = 100 and
  in float16) and flagged False in ``class_mask``, so the distillation terms leave them out.
  :class:`KnownClassColumns` reads the old classes' rows of an old head that has a row for
  every new class but learned only some of them.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from flipless.errors import (
    FileFormatError,
    FliplessWarning,
    InputError,
    MismatchError,
    MissingFileError,
)

MMAP_THRESHOLD_BYTES = 64 * 2**20  # CachedTeacher.load(mmap=None) memory-maps files this large
_FORMAT = "flipless.cached_teacher"
_FLOATS = ("F16", "BF16", "F32", "F64")


@runtime_checkable
class Teacher(Protocol):
    """Anything that returns the old model's logits [N, num_classes], in student classes."""

    num_classes: int

    def logits(self, inputs: Any, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Detached float logits [N, num_classes], computed under ``torch.no_grad()``."""
        ...


@dataclass(frozen=True)
class LabelMap:
    """Old class i is new (student) class ``old_to_new[i]``; unlisted new classes are unknown."""

    old_to_new: tuple[int, ...]
    num_new_classes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "old_to_new", tuple(int(k) for k in self.old_to_new))
        n = self.num_new_classes
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"num_new_classes must be a positive int; got {n!r}.")
        if not self.old_to_new:
            raise InputError("old_to_new is empty: the teacher must know at least one class.")
        bad = [k for k in self.old_to_new if not 0 <= k < n]
        if bad:
            raise InputError(f"old_to_new entries must lie in [0, {n}); got {bad[:5]}.")
        if len(set(self.old_to_new)) != len(self.old_to_new):
            raise InputError("old_to_new maps two old classes to the same new class.")

    @classmethod
    def from_names(cls, old_names: Sequence[str], new_names: Sequence[str]) -> LabelMap:
        """Match classes by name; every old name must appear among the new names."""
        old, new = list(old_names), list(new_names)
        for what, names in (("old", old), ("new", new)):
            if len(set(names)) != len(names):
                raise InputError(f"the {what} class names contain duplicates.")
        missing = [name for name in old if name not in new]
        if missing:
            raise MismatchError(
                f"{len(missing)} old class name(s) are not among the new class names: {missing}. "
                "Rename them or build the LabelMap from indices."
            )
        index = {name: k for k, name in enumerate(new)}
        return cls(tuple(index[name] for name in old), len(new))

    @property
    def num_old_classes(self) -> int:
        """Width of the old model's logits."""
        return len(self.old_to_new)

    @property
    def class_mask(self) -> torch.Tensor:
        """Bool [num_new_classes]: True for the classes the teacher knows."""
        mask = torch.zeros(self.num_new_classes, dtype=torch.bool)
        mask[list(self.old_to_new)] = True
        return mask

    def expand(self, old_logits: torch.Tensor) -> torch.Tensor:
        """[N, C_old] → [N, C_new]; columns of classes unknown to the teacher hold
        :func:`unknown_class_logit` of the logits' dtype, so they never win an argmax nor take
        probability mass."""
        if old_logits.ndim != 2 or old_logits.shape[1] != self.num_old_classes:
            raise MismatchError(
                f"the label map expects old logits [N, {self.num_old_classes}]; "
                f"got {tuple(old_logits.shape)}."
            )
        out = old_logits.new_full(
            (old_logits.shape[0], self.num_new_classes), unknown_class_logit(old_logits.dtype)
        )
        out[:, list(self.old_to_new)] = old_logits
        return out


def unknown_class_logit(dtype: torch.dtype) -> float:
    """The logit :meth:`LabelMap.expand` gives the classes the old model never had.

    max(−10⁹, finfo(dtype).min / 2): −10⁹ in float32/float64/bfloat16, −32 752 in float16.
    Finite, so that log-softmax stays finite and 0 · log p is 0 rather than NaN; low enough
    that exp(fill / T − max) underflows to exactly 0 for any temperature T ≤ 100 and old
    logits of magnitude up to 10⁴ in float32 and bfloat16 (10³ in float16), so such a column
    never wins an argmax and takes no probability mass; and half the dtype's range, so that
    subtracting a row maximum cannot overflow to −inf.
    """
    if not dtype.is_floating_point:
        raise InputError(f"old logits must be floating point; got {dtype}.")
    return max(-1e9, torch.finfo(dtype).min / 2)


class KnownClassColumns(nn.Module):
    """The old classes' logits [N, len(columns)] of an old model with a full-width head.

    An old model built with a row for every class of the new label space but trained only on
    ``columns`` (e.g. ``data.old_classes``) has rows for the other classes that were never a
    target; their values are no answer of the old model. This module keeps only the learned
    rows, in the order given, so that ``ModelTeacher(KnownClassColumns(old, known),
    label_map=LabelMap(known, C))`` places the old model in the new label space.
    ``features()`` is the wrapped model's, for feature terms.
    """

    def __init__(self, model: nn.Module, columns: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.columns = tuple(int(k) for k in columns)
        self.train(model.training)
        if not self.columns or len(set(self.columns)) != len(self.columns):
            raise InputError(f"columns={list(columns)}; expected distinct column indices.")

    def forward(self, inputs: Any) -> torch.Tensor:
        logits = _first_logits(self.model(inputs))
        if max(self.columns) >= logits.shape[1] or min(self.columns) < 0:
            raise MismatchError(
                f"the old model returned {logits.shape[1]} classes; the known columns "
                f"{list(self.columns)} need a head of at least {max(self.columns) + 1}."
            )
        return logits[:, list(self.columns)]

    def features(self, inputs: Any) -> torch.Tensor:
        """The wrapped model's representation, when it has one."""
        extract = getattr(self.model, "features", None)
        if not callable(extract):
            raise InputError(f"the old model ({type(self.model).__name__}) has no features().")
        return extract(inputs)


class LabelSpaceModel(nn.Module):
    """An old model as a module of the new label space: ``forward`` is ``label_map.expand``
    of its logits, so its argmax is always a class it knows (for predictions and flips)."""

    def __init__(self, model: nn.Module, label_map: LabelMap) -> None:
        super().__init__()
        self.model = model
        self.label_map = label_map
        self.train(model.training)  # the wrapped model's mode, not nn.Module's default

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.label_map.expand(_first_logits(self.model(inputs)))


def teacher_in_label_space(
    model: nn.Module,
    class_names: Sequence[str],
    width: int,
    head_class_names: Sequence[str] | None = None,
    known_classes: Sequence[int] | None = None,
) -> ModelTeacher:
    """The old model as a teacher of the new label space ``class_names``, matched by name.

    Args:
        model: the old model; its head has ``width`` rows.
        class_names: the new (student) classes, in order.
        head_class_names: the class of each head row, when the model's source records it;
            None means the new classes in order (a head of ``width == len(class_names)``) or,
            for a narrower head, the classes of ``known_classes`` in order.
        known_classes: indices into ``class_names`` of the classes the old model learned
            (``data.old_classes``); None: every class its head names. A full-width head
            trained on fewer classes keeps only those rows (:class:`KnownClassColumns`).

    Returns a plain :class:`ModelTeacher` when the old model knows every new class in order,
    else one with the :class:`LabelMap` of the classes it knows.
    """
    names = tuple(class_names)
    if head_class_names is None:
        if width == len(names):
            head_class_names = names
        elif known_classes is not None and width == len(known_classes):
            head_class_names = tuple(names[k] for k in known_classes)
        else:
            raise MismatchError(
                f"the old model has {width} outputs and the data {len(names)} classes, and "
                "nothing says which output is which class; record the old model's class names "
                "(flipless train saves them) or list its classes in data.old_classes."
            )
    if len(head_class_names) != width:
        raise MismatchError(
            f"the old model has {width} outputs but {len(head_class_names)} class names."
        )
    head = LabelMap.from_names(head_class_names, names)  # head row i is new class old_to_new[i]
    learned = set(head.old_to_new) if known_classes is None else {int(k) for k in known_classes}
    unheaded = sorted(learned - set(head.old_to_new))
    if unheaded:
        raise MismatchError(
            f"the old model learned classes {[names[k] for k in unheaded]} but its head has no "
            "row for them; expected data.old_classes to be among the old model's classes."
        )
    rows = [row for row, k in enumerate(head.old_to_new) if k in learned]
    if head.old_to_new == tuple(range(len(names))) and len(rows) == len(names):
        return ModelTeacher(model)
    source = model if rows == list(range(width)) else KnownClassColumns(model, rows)
    return ModelTeacher(source, label_map=LabelMap([head.old_to_new[r] for r in rows], len(names)))


def known_classes(teacher: Any) -> tuple[int, ...] | None:
    """The student classes a teacher knows (from its ``class_mask``); None when all of them."""
    mask = getattr(teacher, "class_mask", None)
    if mask is None or bool(mask.all()):
        return None
    return tuple(int(k) for k in torch.nonzero(mask.cpu()).flatten())


def _first_logits(output: Any) -> torch.Tensor:
    """Accept plain logits or a tuple/list whose first element is the logits."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(
            f"the teacher model must return logits [N, C] (or a tuple of them first); got {got}."
        )
    return output


def _check_num_classes(num_classes: int | None, label_map: LabelMap | None) -> None:
    if label_map is not None and num_classes not in (None, label_map.num_new_classes):
        raise MismatchError(
            f"num_classes={num_classes} but the label map has {label_map.num_new_classes} "
            "new classes; pass one of them only, or make them agree."
        )


class ModelTeacher:
    """One old model, frozen and in eval mode (METHODS §2.3, 'one old model')."""

    def __init__(
        self, model: nn.Module, num_classes: int | None = None, label_map: LabelMap | None = None
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        _check_num_classes(num_classes, label_map)
        self.model = model.requires_grad_(False).eval()
        self.label_map = label_map
        self._num_classes = label_map.num_new_classes if label_map is not None else num_classes

    @property
    def num_classes(self) -> int:
        """Width of the returned logits (student classes); else learned at the first call."""
        if self._num_classes is None:
            raise InputError(
                "num_classes is not known until the first logits() call; pass num_classes=."
            )
        return self._num_classes

    @property
    def class_mask(self) -> torch.Tensor | None:
        """Bool [C_student] of the classes the teacher knows; None when it knows them all."""
        return None if self.label_map is None else self.label_map.class_mask

    def raw_logits(self, inputs: Any) -> torch.Tensor:
        """The model's own logits [N, C_old] (before any label map), width-checked, detached."""
        if self.model.training:
            warnings.warn(
                "the teacher model was in training mode; switching it back to eval() so dropout "
                "and batch-norm do not change its outputs.",
                FliplessWarning,
                stacklevel=3,
            )
            self.model.eval()
        with torch.no_grad():
            out = _first_logits(self.model(inputs)).detach()
        expected = (
            self.label_map.num_old_classes if self.label_map is not None else self._num_classes
        )
        if expected is None:
            self._num_classes = expected = out.shape[1]
        if out.shape[1] != expected:
            raise MismatchError(
                f"the teacher model returned {out.shape[1]} classes; expected {expected}."
            )
        device = inputs.device if isinstance(inputs, torch.Tensor) else out.device
        return out.to(device=device, dtype=out.dtype if out.is_floating_point() else torch.float32)

    def logits(self, inputs: Any, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher logits [N, num_classes] for a batch; ``ids`` is ignored."""
        out = self.raw_logits(inputs)
        return out if self.label_map is None else self.label_map.expand(out)

    def as_model(self) -> nn.Module:
        """The old model as a module in the student's label space (:class:`LabelSpaceModel`
        when a label map places it there), for predictions and comparisons."""
        return self.model if self.label_map is None else LabelSpaceModel(self.model, self.label_map)

    def features(self, inputs: Any) -> torch.Tensor:
        """The old model's representation [N, D] from ``model.features`` (for CNA), detached."""
        extract = getattr(self.model, "features", None)
        if not callable(extract):
            raise InputError(
                f"the teacher model ({type(self.model).__name__}) has no features() method; "
                "feature terms need models that expose their penultimate representation."
            )
        if self.model.training:
            self.model.eval()
        with torch.no_grad():
            out = extract(inputs)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"the teacher's features() must return [N, D]; got {got}.")
        return out.detach()


class EnsembleTeacher:
    """Weighted mean of several old models, of logits or of probabilities (METHODS §2.3)."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        weights: Sequence[float] | None = None,
        average: str = "logits",
        label_map: LabelMap | None = None,
        num_classes: int | None = None,
    ) -> None:
        members = list(models)
        if not members:
            raise InputError("an ensemble needs at least one model.")
        if average not in ("logits", "probabilities"):
            raise InputError(f"average must be 'logits' or 'probabilities'; got {average!r}.")
        _check_num_classes(num_classes, label_map)
        if weights is None:
            weights = [1.0] * len(members)
        w = [float(x) for x in weights]
        if len(w) != len(members):
            raise InputError(
                f"got {len(w)} weights for {len(members)} models; give one weight per model."
            )
        if not all(np.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            raise InputError(f"weights must be finite, non-negative and not all zero; got {w}.")
        self.weights = tuple(x / sum(w) for x in w)
        self.average = average
        self.label_map = label_map
        old_width = label_map.num_old_classes if label_map is not None else num_classes
        self.members = [ModelTeacher(m, num_classes=old_width) for m in members]

    @property
    def num_classes(self) -> int:
        """Width of the returned logits (student label space)."""
        if self.label_map is not None:
            return self.label_map.num_new_classes
        return self.members[0].num_classes

    @property
    def class_mask(self) -> torch.Tensor | None:
        """Bool [C_student] of the classes the teacher knows; None when it knows them all."""
        return None if self.label_map is None else self.label_map.class_mask

    def logits(self, inputs: Any, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_i w_i z_i, or log Σ_i w_i softmax(z_i) with ``average='probabilities'``."""
        outs = [m.raw_logits(inputs) for m in self.members]
        widths = {o.shape[1] for o in outs}
        if len(widths) > 1:
            raise MismatchError(f"the ensemble members return different widths: {sorted(widths)}.")
        stacked = torch.stack(outs)  # [M, N, C]
        w = torch.tensor(self.weights, dtype=stacked.dtype, device=stacked.device)[:, None, None]
        with torch.no_grad():
            if self.average == "logits":
                mean = (w * stacked).sum(0)
            else:  # log of the weighted mean probability, computed stably in log space
                mean = torch.logsumexp(torch.log_softmax(stacked, dim=2) + torch.log(w), dim=0)
        return mean if self.label_map is None else self.label_map.expand(mean)


def _as_ids(ids: Any, n: int | None = None) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.ndim != 1 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise InputError(
            f"sample ids must be a 1-D integer tensor; got {ids.dtype} {tuple(ids.shape)}."
        )
    if n is not None and ids.shape[0] != n:
        raise MismatchError(f"a batch has {n} inputs but {ids.shape[0]} ids.")
    return ids.to(torch.int64)


class CachedTeacher:
    """Teacher logits computed once and looked up by sample id (METHODS §2.3, 'cached logits').

    The file is safetensors with ``ids`` [N] int64, ``logits`` [N, C] float32 and, when the
    teacher knows only some classes, ``class_mask`` [C] bool. :meth:`load` either reads it
    fully into memory or memory-maps it (``mmap=True``; default: files of at least
    ``MMAP_THRESHOLD_BYTES``): then only the ids are read, and each call copies just the
    requested logits rows from the mapped file.
    """

    def __init__(
        self,
        ids: torch.Tensor,
        logits: torch.Tensor | np.ndarray,
        class_mask: torch.Tensor | None = None,
    ) -> None:
        self._order = torch.argsort(ids)
        self._sorted_ids = ids[self._order]
        if ids.numel() > 1 and bool((self._sorted_ids[1:] == self._sorted_ids[:-1]).any()):
            raise InputError("the cached ids contain duplicates; every sample needs its own id.")
        self._logits = logits
        self.num_classes = int(logits.shape[1])
        self.class_mask = class_mask

    def __len__(self) -> int:
        return int(self._sorted_ids.numel())

    @classmethod
    def build(
        cls,
        teacher: Teacher | nn.Module,
        loader: Iterable[tuple[Any, Any]],
        path: str | os.PathLike[str],
    ) -> CachedTeacher:
        """Run ``teacher`` once over ``(inputs, ids)`` batches and write the cache atomically.

        Under torchrun (an initialised process group) the work is shared: every process calls
        ``build`` with the same loader, runs the teacher on every world-size-th batch, the
        rows are gathered, rank 0 writes the file, and every process returns the full cache.
        """
        if isinstance(teacher, nn.Module):
            teacher = ModelTeacher(teacher)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
        world = torch.distributed.get_world_size() if distributed else 1
        all_ids, all_logits = [], []
        for index, (inputs, ids) in enumerate(loader):
            if index % world != rank:
                continue
            out = teacher.logits(inputs, None)
            all_ids.append(_as_ids(ids, out.shape[0]).cpu())
            all_logits.append(out.detach().to("cpu", torch.float32))
        if distributed:
            shards: list[Any] = [None] * world
            torch.distributed.all_gather_object(shards, (all_ids, all_logits))
            all_ids = [part for shard in shards for part in shard[0]]
            all_logits = [part for shard in shards for part in shard[1]]
        if not all_ids:
            raise InputError("the loader yielded no batches; nothing to cache.")
        tensors = {
            "ids": torch.cat(all_ids).contiguous(),
            "logits": torch.cat(all_logits).contiguous(),
        }
        mask = getattr(teacher, "class_mask", None)
        if mask is not None:
            tensors["class_mask"] = mask.to("cpu", torch.bool).contiguous()
        cached = cls(
            tensors["ids"], tensors["logits"], tensors.get("class_mask")
        )  # checks duplicates
        if rank == 0:
            _write_cache(tensors, Path(path))
        if distributed:
            torch.distributed.barrier()
        return cached

    @classmethod
    def load(cls, path: str | os.PathLike[str], mmap: bool | None = None) -> CachedTeacher:
        """Read a cache written by :meth:`build`; see the class docstring for ``mmap``."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"no teacher cache at {path}: the file does not exist; write one with "
                "CachedTeacher.build."
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                missing = {"ids", "logits"} - keys
                if missing:
                    raise FileFormatError(
                        f"{path} is not a teacher cache: it lacks {sorted(missing)}."
                    )
                ids = f.get_tensor("ids")
                shape = f.get_slice("logits").get_shape()
                dtype = f.get_slice("logits").get_dtype()
                mask = f.get_tensor("class_mask") if "class_mask" in keys else None
                if mmap is None:
                    mmap = path.stat().st_size >= MMAP_THRESHOLD_BYTES
                logits = _memmap(path, "logits") if mmap else f.get_tensor("logits")
        except FileFormatError:
            raise
        except Exception as exc:
            raise FileFormatError(
                f"cannot read {path} as a safetensors teacher cache: {exc}"
            ) from exc
        ok_ids = ids.ndim == 1 and not ids.is_floating_point() and ids.dtype != torch.bool
        if not ok_ids or dtype not in _FLOATS or len(shape) != 2 or shape[0] != ids.shape[0]:
            raise FileFormatError(
                f"{path}: expected integer ids [N] and float logits [N, C]; "
                f"got {ids.dtype} {tuple(ids.shape)} and {dtype} {tuple(shape)}."
            )
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (shape[1],)):
            raise FileFormatError(f"{path}: class_mask must be bool [{shape[1]}].")
        try:
            return cls(ids.to(torch.int64), logits, mask)
        except InputError as exc:
            raise FileFormatError(f"{path}: {exc}") from exc

    def logits(self, inputs: Any, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The cached rows for ``ids`` (``inputs`` only decides the device)."""
        if ids is None:
            raise InputError("a cached teacher needs sample ids: call logits(inputs, ids).")
        query = _as_ids(ids).cpu()
        pos = torch.searchsorted(self._sorted_ids, query).clamp(max=max(len(self) - 1, 0))
        found = self._sorted_ids[pos] == query
        if not bool(found.all()):
            absent = query[~found]
            raise InputError(
                f"{absent.numel()} of {query.numel()} ids are not in the cache "
                f"(first few: {absent[:5].tolist()}); rebuild it over the full training set."
            )
        rows = self._order[pos]
        if isinstance(self._logits, np.ndarray):
            out = torch.from_numpy(np.ascontiguousarray(self._logits[rows.numpy()]))
        else:
            out = self._logits[rows]
        device = inputs.device if isinstance(inputs, torch.Tensor) else torch.as_tensor(ids).device
        return out.to(device=device, dtype=torch.float32)


def _write_cache(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors to a temporary file beside ``path``, then renamed over it."""
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": _FORMAT})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _memmap(path: Path, name: str) -> np.ndarray:
    """Memory-map one float32 tensor of a safetensors file (header: u64 length + JSON)."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        info = json.loads(fh.read(n))[name]
    if info["dtype"] != "F32":
        raise FileFormatError(
            f"{path}: {name} must be float32 to be memory-mapped; got {info['dtype']}."
        )
    start, _ = info["data_offsets"]
    return np.memmap(path, dtype="<f4", mode="r", offset=8 + n + start, shape=tuple(info["shape"]))
