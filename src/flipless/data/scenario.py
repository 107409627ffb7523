"""The update scenario: what the old model and the new model are trained on, and where both
are measured.

An :class:`UpdateScenario` holds four splits of one label space: ``old_train`` (the old
model's training data), ``new_train`` (the new model's), ``validation`` (for model selection)
and ``test`` (shared, where the flips are counted). :func:`make_update_scenario` builds the
usual "more data" (and optionally "more classes") update from any loader's splits;
:func:`massive_update_scenario` reads the published MASSIVE add-data scenario as it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flipless.data.labeled import LabeledData, check_fraction, stratified_split
from flipless.data.loaders import load_massive
from flipless.errors import InputError, MismatchError
from flipless.metrics.restriction import old_class_indices
from flipless.validation import first_few

SPLIT_FIELDS = ("old_train", "new_train", "validation", "test")


@dataclass(frozen=True)
class UpdateScenario:
    """The four splits of a model update, checked to share one label space and not to leak.

    ``new_train``, ``validation`` and ``test`` must have no id in common, nor may ``old_train``
    share an id with ``validation`` or ``test``; ``old_train`` labels must lie in
    ``old_classes`` (the class indices the old model knows; all classes when None). ``seed``
    is the seed the splits were drawn with (None when nothing was drawn). ``id_names`` are the
    ids as the data source wrote them when they were strings: ``id_names[i]`` is the id of
    the sample numbered ``i`` (:class:`~flipless.data.columns.Splits`); None when the ids are
    the integers themselves. :meth:`original_ids` turns sample ids back into them, for
    everything a user reads (comparisons, their instance files, the report).
    """

    old_train: LabeledData
    new_train: LabeledData
    validation: LabeledData
    test: LabeledData
    seed: int | None
    description: str
    old_classes: tuple[int, ...] | None = None
    id_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for field in SPLIT_FIELDS:
            if not isinstance(getattr(self, field), LabeledData):
                raise InputError(
                    f"UpdateScenario.{field} is {type(getattr(self, field)).__name__}; "
                    "expected a LabeledData."
                )
        for field in SPLIT_FIELDS[1:]:
            _check_same_classes(self.old_train, getattr(self, field), "old_train", field)
        for first, second in (
            ("new_train", "validation"),
            ("new_train", "test"),
            ("validation", "test"),
            ("old_train", "validation"),
            ("old_train", "test"),
        ):
            _check_disjoint(getattr(self, first), getattr(self, second), first, second)
        old_classes = _class_indices(
            range(self.num_classes) if self.old_classes is None else self.old_classes,
            self.class_names,
        )
        object.__setattr__(self, "old_classes", old_classes)
        unknown = ~np.isin(self.old_train.labels.numpy(), old_classes)
        if unknown.any():
            labels = np.unique(self.old_train.labels.numpy()[unknown])
            raise MismatchError(
                f"old_train holds classes {first_few(labels)} outside old_classes "
                f"{first_few(old_classes)}; expected the old model's data to hold only the "
                "classes it knows. Restrict old_train, or list those classes."
            )
        if self.id_names is not None:
            object.__setattr__(self, "id_names", _checked_id_names(self.id_names, self.splits()))

    def original_ids(self, ids: Any) -> np.ndarray:
        """``ids`` (int64 sample ids of these splits) as the data source wrote them: the
        strings of ``id_names`` (an object array), or the integers unchanged."""
        numbers = np.asarray(ids, dtype=np.int64)
        if self.id_names is None:
            return numbers
        return np.asarray(self.id_names, dtype=object)[numbers]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names shared by the four splits."""
        return self.new_train.class_names

    @property
    def num_classes(self) -> int:
        """How many classes the new model predicts."""
        return self.new_train.num_classes

    def splits(self) -> dict[str, LabeledData]:
        """``{"old_train": …, "new_train": …, "validation": …, "test": …}``."""
        return {field: getattr(self, field) for field in SPLIT_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: description, seed, classes, and per split its name, size,
        per-class counts and the SHA-256 of its ids (int64, little-endian, in order), which
        identifies the exact samples without storing them."""
        return {
            "description": self.description,
            "seed": self.seed,
            "class_names": list(self.class_names),
            "old_classes": list(self.old_classes or ()),
            "splits": {
                field: {
                    "name": data.name,
                    "size": len(data),
                    "class_counts": data.class_counts().tolist(),
                    "ids_sha256": hashlib.sha256(
                        data.ids.numpy().astype("<i8").tobytes()
                    ).hexdigest(),
                }
                for field, data in self.splits().items()
            },
        }


def make_update_scenario(
    splits: Mapping[str, LabeledData],
    old_fraction: float = 0.3,
    old_classes: Sequence[int | str] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    id_names: Sequence[str] | None = None,
) -> UpdateScenario:
    """The old model learns from a stratified part of the training data, the new one from all.

    ``splits`` needs "train" and "test" (a loader's output). In this order:

    1. ``validation`` is the "dev" or "val" split when there is one; otherwise a
       :func:`~flipless.data.labeled.stratified_split` of ``validation_fraction`` ∈ (0, 1) of
       "train", drawn first.
    2. ``new_train`` is the rest of "train".
    3. ``old_train`` is a stratified ``old_fraction`` ∈ (0, 1] of ``new_train``, after keeping
       only ``old_classes`` (indices or names) when given: the old model then knows fewer
       classes, as in a class-incremental update.
    4. ``test`` is the "test" split, shared by both models.

    The two draws use seeds derived from ``seed`` (``numpy.random.SeedSequence(seed)``), so
    the same splits and seed give the same ids. ``id_names``: the string ids of the samples
    (``splits.id_names`` of :func:`flipless.data.sources.load_splits`), kept in the scenario;
    by default ``splits``' own ``id_names`` when it has them.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed={seed!r}; expected a non-negative integer.")
    old_fraction = check_fraction(old_fraction, "old_fraction")
    missing = [name for name in ("train", "test") if name not in splits]
    if missing:
        raise InputError(
            f"splits has {sorted(splits)}; expected 'train' and 'test' (missing {missing}). "
            "Pass the dict a flipless.data.loaders loader returns."
        )
    validation_names = [name for name in ("dev", "val") if name in splits]
    if len(validation_names) > 1:
        raise InputError(
            "splits has both 'dev' and 'val'; expected at most one validation split. Drop one."
        )
    train, test = splits["train"], splits["test"]
    validation_seed, old_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    if validation_names:
        validation, new_train = splits[validation_names[0]], train
        validation_from = f"the '{validation_names[0]}' split"
    else:
        validation_fraction = check_fraction(
            validation_fraction, "validation_fraction", allow_one=False
        )
        validation, new_train = stratified_split(train, validation_fraction, validation_seed)
        validation_from = f"{100 * validation_fraction:g}% of train"
    _check_same_classes(train, test, "train", "test")
    known = _class_indices(
        range(train.num_classes) if old_classes is None else old_classes, train.class_names
    )
    pool = new_train
    if old_classes is not None:
        pool = new_train.subset(np.flatnonzero(np.isin(new_train.labels.numpy(), known)))
        if len(pool) == 0:
            raise InputError(
                f"no training sample belongs to old_classes {first_few(known)}; expected the "
                "old model's classes to have training data."
            )
    old_train, _ = stratified_split(pool, old_fraction, old_seed)
    classes = (
        "all classes" if old_classes is None else f"{len(known)} of {train.num_classes} classes"
    )
    description = (
        f"{train.name}: old model on {100 * old_fraction:g}% of new_train ({classes}, "
        f"{len(old_train)} samples), new model on new_train ({len(new_train)}); validation "
        f"{validation_from} ({len(validation)}); test {test.name} ({len(test)}); seed {seed}"
    )
    return UpdateScenario(
        old_train=old_train,
        new_train=new_train,
        validation=validation,
        test=test,
        seed=int(seed),
        description=description,
        old_classes=known,
        id_names=getattr(splits, "id_names", None) if id_names is None else tuple(id_names),
    )


def massive_update_scenario(root: str | Path) -> UpdateScenario:
    """The MASSIVE add-data update as published: ``root/old`` and ``root/updated``.

    old_train = old/train, new_train = updated/train, validation = updated/dev, test =
    updated/test; both versions' ``info.json`` must list the same labels in the same order.
    """
    root = Path(root)
    old, updated = load_massive(root / "old"), load_massive(root / "updated")
    _check_same_classes(old["train"], updated["train"], "old/info.json", "updated/info.json")
    if "dev" not in updated:
        raise InputError(
            f"{root / 'updated'} has no dev.jsonl; expected updated/dev.jsonl as the "
            "validation split of the MASSIVE add-data scenario."
        )
    description = (
        f"MASSIVE add-data ({root}): old model on old/train ({len(old['train'])}), new model "
        f"on updated/train ({len(updated['train'])}); validation updated/dev "
        f"({len(updated['dev'])}); test updated/test ({len(updated['test'])})"
    )
    return UpdateScenario(
        old_train=old["train"],
        new_train=updated["train"],
        validation=updated["dev"],
        test=updated["test"],
        seed=None,
        description=description,
    )


def _class_indices(classes: Any, class_names: tuple[str, ...]) -> tuple[int, ...]:
    """Class indices or names → sorted unique indices, each in [0, len(class_names))."""
    return old_class_indices(classes, len(class_names), class_names)


def _check_same_classes(
    first: LabeledData, second: LabeledData, first_name: str, second_name: str
) -> None:
    if first.class_names == second.class_names:
        return
    if len(first.class_names) != len(second.class_names):
        difference = f"{len(first.class_names)} vs {len(second.class_names)} classes"
    else:
        position = next(
            i
            for i, (a, b) in enumerate(zip(first.class_names, second.class_names, strict=True))
            if a != b
        )
        difference = (
            f"class {position} is {first.class_names[position]!r} vs "
            f"{second.class_names[position]!r}"
        )
    raise MismatchError(
        f"{first_name} and {second_name} have different class names ({difference}); expected "
        "one label space in every split. Load the splits with the same class list."
    )


def _checked_id_names(
    id_names: Sequence[str], splits: Mapping[str, LabeledData]
) -> tuple[str, ...]:
    """``id_names`` as a tuple of strings, with a name for every sample id of ``splits``."""
    if isinstance(id_names, str) or not all(isinstance(name, str) for name in id_names):
        raise InputError(
            f"UpdateScenario.id_names is {type(id_names).__name__}; expected a tuple of strings, "
            "the string id of each sample number (Splits.id_names)."
        )
    for field, data in splits.items():
        ids = data.ids.numpy()
        outside = ids[(ids < 0) | (ids >= len(id_names))]
        if outside.size:
            raise MismatchError(
                f"{field} has sample ids {first_few(outside)} but id_names names only "
                f"{len(id_names)} samples (0 to {len(id_names) - 1}); expected the id_names of "
                "the splits these samples came from."
            )
    return tuple(id_names)


def _check_disjoint(
    first: LabeledData, second: LabeledData, first_name: str, second_name: str
) -> None:
    shared = np.intersect1d(first.ids.numpy(), second.ids.numpy())
    if shared.size:
        raise MismatchError(
            f"{first_name} and {second_name} share {shared.size} id(s) ({first_few(shared)}); "
            "expected disjoint splits, so that no sample is both trained on and measured on. "
            "Give the splits distinct ids (the loaders offset them)."
        )
