"""Join an old and a new model's predictions by sample id, never by position.

:func:`join_by_id` matches the rows of two :class:`~flipless.io.readers.PredictionTable`
objects by id, checks that they describe the same samples (same true labels, same classes,
same score width, agreeing slice columns) and turns class names into class indices, so that
the result can go straight into :func:`flipless.compare`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from flipless.errors import InputError, MismatchError
from flipless.io.readers import PredictionTable
from flipless.validation import first_few

#: How :func:`join_by_id` treats ids found in only one file.
JOIN_MODES = ("exact", "inner")


@dataclass(frozen=True, eq=False)
class JoinedPredictions:
    """Old and new predictions of the same samples, row by row, in the old file's order.

    Attributes:
        ids: [N] sample ids.
        labels: [N] int64 true class indices.
        old, new: int64 [N] predicted classes, or float [N, C] scores (when the file has them).
        class_names: names of the classes (declared, or the sorted names found in the files),
            None when the files use class indices without names.
        slices: the other columns of both files (candidate slice columns), same row order.
        dropped_old, dropped_new: rows left out because their id is only in that file
            (always 0 for an exact join).
    """

    ids: np.ndarray
    labels: np.ndarray
    old: np.ndarray
    new: np.ndarray
    class_names: tuple[str, ...] | None
    slices: pd.DataFrame
    dropped_old: int
    dropped_new: int


def join_by_id(
    old: PredictionTable, new: PredictionTable, *, how: str = "exact"
) -> JoinedPredictions:
    """Match the rows of ``old`` and ``new`` by id.

    Args:
        old, new: the two models' predictions (see :func:`~flipless.io.read_predictions`).
        how: ``"exact"``: both files must hold the same ids; ``"inner"``: keep the ids in both.

    Each model's scores are used when its file has them, else its predicted labels. Class
    names (text labels or predictions) become indices into the declared class names, or, when
    none are declared, into the sorted names found in both files. Integer labels stay as they
    are. Where both files have true labels they must agree; where both have a column of the
    same name (other than the fields above) it must agree too.

    The ids are matched by one sort of each file's ids (:func:`match_ids`): O(N log N), and
    the old file's columns are used as they are when every old row is kept.

    Raises:
        MismatchError: the files hold different ids (exact), no common ids, different labels,
            classes, score widths or slice values.
        InputError: repeated ids, no labels in either file, or unknown class names.
    """
    if how not in JOIN_MODES:
        raise InputError(f"how={how!r}; expected one of {', '.join(map(repr, JOIN_MODES))}.")
    old_rows, new_rows = _match_rows(old, new, how)
    ids = _rows(old.ids, old_rows)
    declared = _shared_class_names(old, new)
    _check_score_widths(old, new, declared)

    # Class-valued fields of the joined rows, keyed by what they are (for messages).
    fields = {
        f"the labels of the old file {old.source}": _rows(old.labels, old_rows),
        f"the labels of the new file {new.source}": _rows(new.labels, new_rows),
        f"the predictions of the old file {old.source}": None
        if old.scores is not None
        else _rows(old.predicted, old_rows),
        f"the predictions of the new file {new.source}": None
        if new.scores is not None
        else _rows(new.predicted, new_rows),
    }
    present = {what: values for what, values in fields.items() if values is not None}
    class_names = _vocabulary(present, declared, old.scores is not None or new.scores is not None)
    encoded = {what: _indices(values, what, class_names) for what, values in present.items()}
    old_labels, new_labels, old_predicted, new_predicted = (encoded.get(what) for what in fields)
    kept_old = len(old) if old_rows is None else old_rows.size
    return JoinedPredictions(
        ids=ids,
        labels=_agreed_labels(old, new, old_labels, new_labels, ids, class_names),
        old=_rows(old.scores, old_rows) if old.scores is not None else old_predicted,
        new=_rows(new.scores, new_rows) if new.scores is not None else new_predicted,
        class_names=class_names,
        slices=_joined_extra(old, new, old_rows, new_rows, ids),
        dropped_old=len(old) - kept_old,
        dropped_new=len(new) - new_rows.size,
    )


def _rows(values: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray | None:
    """``values[rows]``; ``values`` itself when ``rows`` is None (every row, in order)."""
    if values is None or rows is None:
        return values
    return values[rows]


@dataclass(frozen=True, eq=False)
class IdMatch:
    """Where the ids of two files meet, from one sort of each.

    Attributes:
        old_rows: rows of the old file whose id is in the new file, in the old file's order;
            None when that is every old row.
        new_rows: for each of those, the row of the new file with the same id.
        only_old, only_new: the ids found in one file only (sorted).
    """

    old_rows: np.ndarray | None
    new_rows: np.ndarray
    only_old: np.ndarray
    only_new: np.ndarray


def sorted_unique(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, ids[order], repeated)``: the stable sort of ``ids`` and the ids that occur
    more than once, found as equal neighbours in sorted order (sorted, each once)."""
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    repeated_at = np.flatnonzero(ordered[1:] == ordered[:-1])
    repeated = ordered[repeated_at]
    if repeated.size:
        repeated = repeated[np.r_[True, repeated[1:] != repeated[:-1]]]
    return order, ordered, repeated


def match_ids(
    old_order: np.ndarray, old_sorted: np.ndarray, new_order: np.ndarray, new_sorted: np.ndarray
) -> IdMatch:
    """Match two sets of unique ids, each given as (sort order, sorted ids).

    Where both files hold the same ids, the i-th smallest id is at row ``old_order[i]`` of
    the old file and ``new_order[i]`` of the new one, so ``new_rows[old_order] = new_order``.
    Otherwise each sorted old id is looked up in the sorted new ids (binary search).
    Ids of different kinds (integers in one file, text in the other) never match.
    """
    size = old_order.size
    comparable = (old_sorted.dtype == object) == (new_sorted.dtype == object) and new_sorted.size
    if (
        comparable
        and old_sorted.shape == new_sorted.shape
        and np.array_equal(old_sorted, new_sorted)
    ):
        new_rows = np.empty(size, dtype=np.int64)
        new_rows[old_order] = new_order
        return IdMatch(None, new_rows, old_sorted[:0], new_sorted[:0])
    if comparable:
        place = np.minimum(np.searchsorted(new_sorted, old_sorted), new_sorted.size - 1)
        found = new_sorted[place] == old_sorted
    else:
        place = np.zeros(size, dtype=np.int64)
        found = np.zeros(size, dtype=bool)
    in_new = np.zeros(new_sorted.size, dtype=bool)
    in_new[place[found]] = True
    found_by_row = np.empty(size, dtype=bool)
    found_by_row[old_order] = found
    new_row_by_row = np.empty(size, dtype=np.int64)
    new_row_by_row[old_order] = new_order[place]
    old_rows = np.flatnonzero(found_by_row)
    return IdMatch(old_rows, new_row_by_row[old_rows], old_sorted[~found], new_sorted[~in_new])


def _sorted_ids(table: PredictionTable, role: str) -> tuple[np.ndarray, np.ndarray]:
    """The sort order and the sorted ids of one file; raises when an id repeats."""
    order, ordered, repeated = sorted_unique(table.ids)
    if repeated.size:
        raise InputError(
            f"The {role} file {table.source} has {repeated.size} id(s) on more than one row "
            f"({first_few(repeated)}); expected one row per sample. Remove the repeated rows, "
            "or pass id_column= (CLI --id-col) if that column is not the sample id."
        )
    return order, ordered


def _match_rows(
    old: PredictionTable, new: PredictionTable, how: str
) -> tuple[np.ndarray | None, np.ndarray]:
    """Row numbers in ``old`` (None: all, in order) and in ``new`` of each shared id."""
    old_order, old_sorted = _sorted_ids(old, "old")
    new_order, new_sorted = _sorted_ids(new, "new")
    match = match_ids(old_order, old_sorted, new_order, new_sorted)
    del old_order, old_sorted, new_order, new_sorted
    if match.new_rows.size == 0:
        raise MismatchError(
            f"The old file {old.source} and the new file {new.source} share no ids (old: "
            f"{first_few(old.ids)}; new: {first_few(new.ids)}); expected predictions of the "
            "same samples. Check that both files use the same ids (pass id_column= / CLI "
            "--id-col if the wrong column was taken)."
        )
    if how == "exact" and (match.only_old.size or match.only_new.size):
        raise MismatchError(
            f"The files hold different ids: {match.only_old.size} only in the old file "
            f"{old.source}{_shown(match.only_old)} and {match.only_new.size} only in the new "
            f"file {new.source}{_shown(match.only_new)}; expected the same samples in both. "
            f"Pass how='inner' (CLI --inner-join) to compare the {match.new_rows.size} ids "
            "they share."
        )
    return match.old_rows, match.new_rows


def _shown(ids: np.ndarray) -> str:
    return f" ({first_few(ids)})" if ids.size else ""


def _shared_class_names(old: PredictionTable, new: PredictionTable) -> tuple[str, ...] | None:
    """The class names declared by either file; both must agree where both declare them."""
    if old.class_names is None or new.class_names is None:
        return old.class_names if old.class_names is not None else new.class_names
    if old.class_names == new.class_names:
        return old.class_names
    only_old = [name for name in old.class_names if name not in new.class_names]
    only_new = [name for name in new.class_names if name not in old.class_names]
    if not only_old and not only_new:
        position = next(
            k
            for k, (a, b) in enumerate(zip(old.class_names, new.class_names, strict=True))
            if a != b
        )
        raise MismatchError(
            f"The files declare the same class names in a different order (class {position} "
            f"is {old.class_names[position]!r} in {old.source} but "
            f"{new.class_names[position]!r} in {new.source}); expected the same class order, "
            "since indices and score columns follow it."
        )
    raise MismatchError(
        f"The files declare different classes: {len(only_old)} only in the old file "
        f"{old.source}{_shown(np.array(only_old, dtype=object))} and {len(only_new)} only in "
        f"the new file {new.source}{_shown(np.array(only_new, dtype=object))}; expected the "
        "same label space. If classes were added, map the old model's classes into the new "
        "label space first."
    )


def _check_score_widths(
    old: PredictionTable, new: PredictionTable, class_names: tuple[str, ...] | None
) -> None:
    """Scores of both files, and the class names, must count the same classes."""
    widths = [
        (f"the {role} file {table.source}", table.scores.shape[1])
        for role, table in (("old", old), ("new", new))
        if table.scores is not None
    ]
    if len({width for _, width in widths}) > 1:
        listed = " and ".join(f"{what} has {width}" for what, width in widths)
        raise MismatchError(
            f"Scores of different widths ({listed} columns); expected one score per class of "
            "the same label space. If classes were added, map the old model's classes into "
            "the new label space first."
        )
    for what, width in widths:
        if class_names is not None and width != len(class_names):
            raise MismatchError(
                f"{what} has {width} scores per row but the other file declares "
                f"{len(class_names)} class names ({first_few(class_names)}); expected one "
                "score per class."
            )


def _vocabulary(
    fields: dict[str, np.ndarray], declared: tuple[str, ...] | None, scores: bool
) -> tuple[str, ...] | None:
    """The class names that index the joined data: declared, or the sorted names found."""
    text = [what for what, values in fields.items() if values.dtype == object]
    if declared is not None or not text:
        return declared
    if scores:
        raise InputError(
            f"{text[0]} are class names but a model gave scores, whose columns have no names; "
            "expected declared class names. Pass class_names= or write a <file>.classes.json "
            "list next to the file."
        )
    numbers = [what for what, values in fields.items() if values.dtype != object]
    if numbers:
        raise MismatchError(
            f"{text[0]} are class names but {numbers[0]} are class indices; expected one kind "
            "in both files. Pass class_names= to say which name each index stands for."
        )
    return tuple(sorted(set().union(*(values.tolist() for values in fields.values()))))


def _indices(values: np.ndarray, what: str, class_names: tuple[str, ...] | None) -> np.ndarray:
    """Class names as int64 indices into ``class_names``; indices are returned as they are."""
    if values.dtype != object or class_names is None:
        return values
    positions = pd.Index(class_names).get_indexer(values)
    unknown = pd.unique(values[positions < 0])
    if unknown.size:
        raise InputError(
            f"{what} hold {unknown.size} name(s) that are not class names "
            f"({first_few(unknown)}); the classes are {first_few(class_names)}. Fix the names "
            "or the declared class_names."
        )
    return positions.astype(np.int64)


def _agreed_labels(
    old: PredictionTable,
    new: PredictionTable,
    old_labels: np.ndarray | None,
    new_labels: np.ndarray | None,
    ids: np.ndarray,
    class_names: tuple[str, ...] | None,
) -> np.ndarray:
    """The true labels; where both files give them they must be equal row by row."""
    if old_labels is None and new_labels is None:
        raise InputError(
            f"Neither {old.source} nor {new.source} has true labels; expected a label column "
            "in at least one of them. Pass label_column= (CLI --label-col) naming it."
        )
    if old_labels is None or new_labels is None:
        return old_labels if old_labels is not None else new_labels
    differ = np.flatnonzero(old_labels != new_labels)
    if differ.size:
        raise MismatchError(
            f"The files disagree on the true label of {differ.size} of {ids.size} sample(s) "
            f"(ids {first_few(ids[differ])}: the old file {old.source} says "
            f"{_named(old_labels[differ], class_names)}, the new file {new.source} says "
            f"{_named(new_labels[differ], class_names)}); expected the same labels for the "
            "same ids. Check that the ids refer to the same samples in both files."
        )
    return old_labels


def _named(indices: np.ndarray, class_names: tuple[str, ...] | None) -> str:
    if class_names is None:
        return first_few(indices)
    return first_few([class_names[k] if 0 <= k < len(class_names) else k for k in indices])


def _joined_extra(
    old: PredictionTable,
    new: PredictionTable,
    old_rows: np.ndarray | None,
    new_rows: np.ndarray,
    ids: np.ndarray,
) -> pd.DataFrame:
    """The other columns of both files, joined; a column in both must agree."""
    frame = old.extra if old_rows is None else old.extra.iloc[old_rows]
    frame = frame.reset_index(drop=True)
    other = new.extra.iloc[new_rows].reset_index(drop=True)
    for column in other.columns:
        if column not in frame.columns:
            frame[column] = other[column]
            continue
        differ = np.flatnonzero(_differ(frame[column], other[column]))
        if differ.size:
            raise MismatchError(
                f"Both files have a column {column!r} but it differs on {differ.size} of "
                f"{ids.size} sample(s) (ids {first_few(ids[differ])}: old "
                f"{first_few(frame[column].to_numpy()[differ])}, new "
                f"{first_few(other[column].to_numpy()[differ])}); expected the same value for "
                "the same sample. Rename or drop the column in one file."
            )
    return frame


def _differ(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Row-wise inequality, missing equal to missing; values that cannot be compared as
    they are (arrays in cells, incompatible categories) are compared as text."""
    both_missing = (a.isna() & b.isna()).to_numpy()
    try:
        equal = a.eq(b).to_numpy(dtype=bool)
    except (TypeError, ValueError):
        equal = (a.astype(str) == b.astype(str)).to_numpy(dtype=bool)
    return ~(equal | both_missing)
