"""Arrow tables of a user's data → labelled splits: which column is what, checked row by row.

Every tabular source (CSV / TSV / Parquet / JSON Lines files, folders written by
``datasets.save_to_disk``) is read into one :class:`SplitTable` per split; this module turns
them into :class:`~flipless.data.labeled.LabeledData` with one set of rules:

* **ids**: the id column (``id`` when present, or ``id_column``), else the row number in the
  source plus the source's offset. Integer ids are kept. String ids are mapped to int64 by
  their position in the sorted list of every distinct id of the source (all splits
  together): hash-free, the same data gives the same numbers, and
  :attr:`Splits.id_names` keeps the original strings (``id_names[i]`` is the id numbered i).
* **labels**: integers (integer-valued floats too) are class indices; strings are class
  names. Class names come from ``classes``, else from the format (a ``ClassLabel``), else
  from the data: the sorted distinct names, or "0".."K-1" for indices (K = largest + 1).
* **inputs**: texts (a string column, ``text`` by default), images (a column of paths,
  ``image`` by default, relative to the file; or a Hugging Face ``Image`` column) decoded with
  PIL to float32 ``[N, C, H, W]`` in [0, 1], or numeric feature columns (``features``, else
  every numeric column but the id, label and split columns) as float32 ``[N, F]``; a column
  of equal-length numeric lists (an embedding per row) gives as many features as its length.

Every error names the source, the row (counted from 0, the header not counted) and the
value, and says how to fix it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flipless.data.labeled import LabeledData
from flipless.errors import FileFormatError, InputError, MismatchError, MissingFileError
from flipless.validation import first_few

INPUT_TYPES = ("text", "image", "features")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass(frozen=True)
class ColumnOptions:
    """Which columns hold what; ``None`` means "the usual name when present".

    Attributes:
        id_column: sample ids (default ``id`` when the table has one, else row numbers).
        label_column: the labels, class names or indices (default ``label``).
        input_column: the input (default ``text``, else ``image``, else numeric features).
        input_type: ``text``, ``image`` or ``features``; guessed when None (a string column
            whose every value ends in an image suffix is ``image``).
        split_column: the split of each row, in a single file (default ``split`` when present).
        features: the numeric feature columns, in order (default: every numeric column but
            the id, label and split columns).
        classes: every class name, in index order (default: from the format or the data).
        image_size: resize images to this (an int for square, or [height, width]).
    """

    id_column: str | None = None
    label_column: str = "label"
    input_column: str | None = None
    input_type: str | None = None
    split_column: str | None = None
    features: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    image_size: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.input_type is not None and self.input_type not in INPUT_TYPES:
            raise InputError(
                f"input_type={self.input_type!r}; expected one of {', '.join(INPUT_TYPES)}."
            )
        if self.features is not None:
            if not self.features:
                raise InputError("features is empty; list at least one numeric column.")
            if self.input_column is not None or self.input_type not in (None, "features"):
                raise InputError(
                    "features names the input columns; leave input_column and input_type out "
                    "(or set input_type = 'features')."
                )
        if self.classes is not None:
            names = [str(name) for name in self.classes]
            if not names or len(set(names)) != len(names):
                raise InputError(
                    f"classes={list(self.classes)!r}; expected a non-empty list of distinct "
                    "class names, in index order."
                )
        if self.image_size is not None:
            size = self.image_size
            pair = (size, size) if isinstance(size, int) else tuple(size)
            if len(pair) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
            ):
                raise InputError(
                    f"image_size={size!r}; expected a positive integer or [height, width]."
                )


@dataclass(frozen=True)
class SplitTable:
    """The rows of one split, as read, and where they came from.

    Attributes:
        split: the split's name ("train", "validation", "test", or the data's own).
        table: the rows.
        source: the file (or folder) they were read from, for messages.
        rows: int64 [len(table)], each row's number in the source (from 0).
        id_offset: added to ``rows`` to make default ids (sources read one after another).
        base: the folder relative image paths start from.
        class_names: class names the format declares (a Hugging Face ClassLabel), or None.
    """

    split: str
    table: pa.Table
    source: str
    rows: np.ndarray
    id_offset: int = 0
    base: Path = field(default_factory=Path)
    class_names: tuple[str, ...] | None = None

    def where(self, position: int) -> str:
        """``"<source>, row <n>"`` for the table row at ``position``."""
        return f"{self.source}, row {int(self.rows[position])}"


class Splits(dict[str, LabeledData]):
    """A data source's splits by name, and the original string ids when they were strings.

    ``id_names[i]`` is the id a file wrote for the sample numbered ``i`` (None when the ids
    were integers or row numbers: those are kept as they are).
    """

    def __init__(self, splits: dict[str, LabeledData], id_names: tuple[str, ...] | None = None):
        super().__init__(splits)
        self.id_names = id_names

    def original_ids(self, ids: Any) -> list[Any]:
        """The ids as the source wrote them, for int64 sample ids of these splits."""
        numbers = np.asarray(ids, dtype=np.int64).tolist()
        if self.id_names is None:
            return numbers
        return [self.id_names[number] for number in numbers]


@dataclass(frozen=True)
class ResolvedSplit:
    """One split with its ids, labels and input column(s) known; inputs not yet decoded."""

    table: SplitTable
    ids: np.ndarray
    labels: np.ndarray
    input_type: str
    input_columns: tuple[str, ...]


@dataclass(frozen=True)
class Resolution:
    """What :func:`resolve_splits` found: the splits, class names, input type, id strings."""

    splits: tuple[ResolvedSplit, ...]
    class_names: tuple[str, ...]
    input_type: str
    input_columns: tuple[str, ...]
    id_names: tuple[str, ...] | None

    def sizes(self) -> dict[str, int]:
        """Rows per split."""
        return {split.table.split: len(split.ids) for split in self.splits}


def splits_from_tables(tables: Sequence[SplitTable], options: ColumnOptions) -> Splits:
    """Every split as a LabeledData (inputs decoded), checked; see the module docstring."""
    resolution = resolve_splits(tables, options)
    inputs = decode_inputs(resolution, options)
    return Splits(
        {
            split.table.split: LabeledData.from_arrays(
                split_inputs,
                split.labels,
                split.ids,
                class_names=resolution.class_names,
                name=f"{Path(split.table.source).name}/{split.table.split}",
            )
            for split, split_inputs in zip(resolution.splits, inputs, strict=True)
        },
        resolution.id_names,
    )


def resolve_splits(tables: Sequence[SplitTable], options: ColumnOptions) -> Resolution:
    """Ids, labels, class names and input columns of every split, checked: empty texts,
    missing image files and NaN features are reported here already; images are not decoded."""
    if not tables:
        raise InputError("no splits were found; expected at least one table of rows.")
    for table in tables:
        if table.table.num_rows == 0:
            raise FileFormatError(
                f"{table.source}: the {table.split!r} split has no rows; expected at least one "
                "row per split. Remove the empty split or fill it."
            )
        _require_columns(table, [options.label_column], "label_column")
    input_type, input_columns = _input_columns(tables, options)
    class_names, labels = _labels(tables, options)
    id_names, ids = _ids(tables, options)
    splits = tuple(
        ResolvedSplit(table, split_ids, split_labels, input_type, input_columns)
        for table, split_ids, split_labels in zip(tables, ids, labels, strict=True)
    )
    resolution = Resolution(splits, class_names, input_type, input_columns, id_names)
    widths: list[int] = []
    for split in splits:
        if input_type == "image":
            _image_sources(split)  # every path present before anything is decoded
        elif input_type == "text":
            _null_rows(
                split.table, _column(split.table, input_columns[0]), input_columns[0], "a text"
            )
        else:
            widths.append(_features(split).shape[1])
    if len(set(widths)) > 1:
        other = next(i for i, width in enumerate(widths) if width != widths[0])
        raise MismatchError(
            f"{splits[other].table.source}: the {splits[other].table.split!r} split has "
            f"{widths[other]} features but the {splits[0].table.split!r} split has {widths[0]}; "
            "expected one width in every split."
        )
    return resolution


def decode_inputs(resolution: Resolution, options: ColumnOptions) -> list[Any]:
    """Each split's inputs: a list of texts, or a float32 array of images or features."""
    if resolution.input_type == "text":
        return [_texts(split) for split in resolution.splits]
    if resolution.input_type == "features":
        return [_features(split) for split in resolution.splits]
    return _images(resolution.splits, options.image_size)


# --------------------------------------------------------------------------- columns


def _require_columns(table: SplitTable, columns: Sequence[str], key: str) -> None:
    missing = [column for column in columns if column not in table.table.column_names]
    if missing:
        raise InputError(
            f"{table.source}: no column {first_few(missing)} ({key}); the columns are "
            f"{first_few(table.table.column_names, 20)}. Set {key} to the right column name."
        )


def _column(table: SplitTable, name: str) -> pa.ChunkedArray:
    column = table.table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column


def _null_rows(table: SplitTable, column: pa.ChunkedArray, name: str, what: str) -> None:
    if column.null_count:
        positions = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
        rows = table.rows[positions]
        raise FileFormatError(
            f"{table.source}: column {name!r} is empty at rows {first_few(rows)}; expected "
            f"{what} in every row. Fill or drop those rows."
        )


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _is_number_list(kind: pa.DataType) -> bool:
    """A column of numeric vectors (an embedding per row, a ``Sequence(Value("float32"))``)."""
    lists = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    return (lists or pa.types.is_fixed_size_list(kind)) and _is_number(kind.value_type)


def _is_string(kind: pa.DataType) -> bool:
    """A string column, or one with no values at all (its empty cells are reported)."""
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, for messages."""
    return value.item() if isinstance(value, np.generic) else value


def _is_image_struct(kind: pa.DataType) -> bool:
    """A Hugging Face ``Image`` column: struct<bytes: binary, path: string>."""
    return pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} == {
        "bytes",
        "path",
    }


def _reserved(table: SplitTable, options: ColumnOptions) -> set[str]:
    reserved = {options.label_column, options.id_column or "id", options.split_column or "split"}
    return reserved & set(table.table.column_names)


def _input_columns(
    tables: Sequence[SplitTable], options: ColumnOptions
) -> tuple[str, tuple[str, ...]]:
    """The input type and its column(s), the same in every split."""
    first = tables[0]
    names = first.table.column_names
    input_type, column = options.input_type, options.input_column
    if options.features is not None:
        return "features", _checked_features(tables, tuple(options.features), "features")
    if input_type == "features" and column is None:
        return "features", _checked_features(tables, _numeric_columns(first, options), None)
    if column is None:
        if input_type in (None, "text") and "text" in names:
            column, input_type = "text", "text"
        elif input_type in (None, "image") and "image" in names:
            column, input_type = "image", "image"
        elif input_type is None:
            return "features", _checked_features(tables, _numeric_columns(first, options), None)
        else:
            raise InputError(
                f"{first.source}: input_type is {input_type!r} but there is no {input_type!r} "
                f"column; the columns are {first_few(names, 20)}. Set input_column."
            )
    for table in tables:
        _require_columns(table, [column], "input_column")
    kind = _column(first, column).type
    if input_type is None:
        if _is_number(kind) or _is_number_list(kind):
            return "features", _checked_features(tables, (column,), "input_column")
        input_type = (
            "image" if _is_image_struct(kind) or _looks_like_paths(first, column) else "text"
        )
    if input_type == "features":
        return "features", _checked_features(tables, (column,), "input_column")
    for table in tables:
        column_type = _column(table, column).type
        if not (
            _is_string(column_type) or (input_type == "image" and _is_image_struct(column_type))
        ):
            expected = "texts" if input_type == "text" else "image file paths"
            raise InputError(
                f"{table.source}: column {column!r} holds {column_type} values; expected "
                f"{expected} (strings). Set input_column to the {input_type} column, or use "
                "features = [...] for numbers."
            )
    return input_type, (column,)


def _looks_like_paths(table: SplitTable, column: str) -> bool:
    values = _column(table, column)
    if not _is_string(values.type) or values.null_count == len(values):
        return False
    lowered = pc.utf8_lower(values.drop_null())
    ends = [pc.ends_with(lowered, suffix) for suffix in IMAGE_SUFFIXES]
    matched = ends[0]
    for other in ends[1:]:
        matched = pc.or_(matched, other)
    return bool(pc.all(matched).as_py())


def _numeric_columns(table: SplitTable, options: ColumnOptions) -> tuple[str, ...]:
    reserved = _reserved(table, options)
    columns = tuple(
        name
        for name in table.table.column_names
        if name not in reserved
        and (_is_number(_column(table, name).type) or _is_number_list(_column(table, name).type))
    )
    if not columns:
        raise InputError(
            f"{table.source}: found no input: no 'text' or 'image' column and no numeric "
            f"feature column besides {sorted(reserved)}; the columns are "
            f"{first_few(table.table.column_names, 20)}. Set input_column (texts or image "
            "paths) or features = [...]."
        )
    return columns


def _checked_features(
    tables: Sequence[SplitTable], columns: tuple[str, ...], key: str | None
) -> tuple[str, ...]:
    for table in tables:
        if key is not None:
            _require_columns(table, columns, key)
        else:
            missing = [c for c in columns if c not in table.table.column_names]
            if missing:
                raise MismatchError(
                    f"{table.source}: no feature column {first_few(missing)}, which "
                    f"{tables[0].source} has; expected the same numeric columns in every "
                    "split. Add them, or list the shared ones in features = [...]."
                )
        for column in columns:
            kind = _column(table, column).type
            numeric = _is_number(kind) or _is_number_list(kind)
            if not (numeric or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
                raise InputError(
                    f"{table.source}: feature column {column!r} holds {kind} values; expected "
                    "numbers. Leave it out of features (or convert it to numbers)."
                )
    return columns


# --------------------------------------------------------------------------- labels


def _labels(
    tables: Sequence[SplitTable], options: ColumnOptions
) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """The class names and each split's int64 label indices."""
    name = options.label_column
    columns = []
    for table in tables:
        column = _column(table, name)
        _null_rows(table, column, name, "a label")
        if not (_is_number(column.type) or _is_string(column.type)):
            raise InputError(
                f"{table.source}: label column {name!r} holds {column.type} values; expected "
                "class names (strings) or class indices (integers)."
            )
        columns.append(column)
    declared = _declared_classes(tables, options)
    if any(_is_string(column.type) for column in columns):
        texts = [column.cast(pa.string()) for column in columns]
        if declared is None:
            distinct = set()
            for values in texts:
                distinct.update(pc.unique(values).to_pylist())
            declared = tuple(sorted(distinct))
        lookup = pa.array(declared, type=pa.string())
        labels = []
        for table, values in zip(tables, texts, strict=True):
            indices = pc.index_in(values, value_set=lookup)
            unknown = np.flatnonzero(indices.is_null().to_numpy(zero_copy_only=False))
            if unknown.size:
                bad = values.take(pa.array(unknown[:5])).to_pylist()
                raise InputError(
                    f"{table.where(int(unknown[0]))}: label {bad[0]!r} is not a class "
                    f"({unknown.size} row(s) with unknown labels, e.g. {first_few(bad)}); the "
                    f"classes are {first_few(list(declared), 10)}. Add it to classes = [...] or "
                    "fix the row."
                )
            labels.append(indices.to_numpy(zero_copy_only=False).astype(np.int64))
        return declared, labels
    indices = [
        _integer_labels(table, column, name) for table, column in zip(tables, columns, strict=True)
    ]
    if declared is None:
        largest = max(int(values.max()) for values in indices)
        declared = tuple(str(k) for k in range(largest + 1))
    elif (
        options.classes is not None
        and all(table.class_names is None for table in tables)
        and all(_is_integer_text(c) for c in declared)
        and declared != tuple(str(k) for k in range(len(declared)))
    ):
        raise InputError(
            f"{tables[0].source}: label column {name!r} holds integers, read as class indices, "
            f"but classes {first_few(list(declared), 10)} are numbers other than 0..K-1, so an "
            "integer could be an index or a name. Write the labels as indices 0..K-1, or as "
            "class names in a string column."
        )
    for table, values in zip(tables, indices, strict=True):
        outside = np.flatnonzero((values < 0) | (values >= len(declared)))
        if outside.size:
            raise InputError(
                f"{table.where(int(outside[0]))}: label {int(values[outside[0]])} is not a class "
                f"index in [0, {len(declared)}) ({outside.size} such row(s), values "
                f"{first_few(values[outside])}); the classes are {first_few(list(declared), 10)}. "
                "List every class in classes = [...] or fix the row."
            )
    return declared, indices


def _integer_labels(table: SplitTable, column: pa.ChunkedArray, name: str) -> np.ndarray:
    return _whole_numbers(table, column, name, "label", "class indices (integers) or class names")


def _whole_numbers(
    table: SplitTable, column: pa.ChunkedArray, name: str, what: str, expected: str
) -> np.ndarray:
    """``column`` as int64; integer-valued floats are accepted, any other float is an error
    naming the first row, the ``what`` it holds and the ``expected`` values."""
    values = column.to_numpy()
    if np.issubdtype(values.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if bad.size:
            raise InputError(
                f"{table.where(int(bad[0]))}: {what} {float(values[bad[0]])!r} in column "
                f"{name!r} is not a whole number; expected {expected}."
            )
    return values.astype(np.int64)


def _is_integer_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _declared_classes(
    tables: Sequence[SplitTable], options: ColumnOptions
) -> tuple[str, ...] | None:
    from_format = {table.class_names for table in tables if table.class_names is not None}
    if len(from_format) > 1:
        raise MismatchError(
            f"the splits declare different class names ({first_few(sorted(from_format))}); "
            "expected one label space. Pass classes = [...]."
        )
    declared_by_format = next(iter(from_format)) if from_format else None
    if options.classes is None:
        return declared_by_format
    classes = tuple(str(name) for name in options.classes)
    if declared_by_format is not None and classes != declared_by_format:
        raise MismatchError(
            f"classes = {first_few(list(classes), 10)} differs from the class names the data "
            f"declares ({first_few(list(declared_by_format), 10)}); leave classes out or make "
            "them equal."
        )
    return classes


# --------------------------------------------------------------------------- ids


def _ids(
    tables: Sequence[SplitTable], options: ColumnOptions
) -> tuple[tuple[str, ...] | None, list[np.ndarray]]:
    """The original string ids (or None) and each split's int64 ids, unique per split."""
    column_name = options.id_column or "id"
    present = [column_name in table.table.column_names for table in tables]
    if options.id_column is not None:
        for table in tables:
            _require_columns(table, [column_name], "id_column")
    elif any(present) and not all(present):
        with_ids = [t.source for t, has in zip(tables, present, strict=True) if has]
        without = [t.source for t, has in zip(tables, present, strict=True) if not has]
        raise MismatchError(
            f"{first_few(with_ids)} have an 'id' column but {first_few(without)} do not; "
            "expected ids in every split or in none (then row numbers are the ids)."
        )
    if not any(present):
        ids = [table.rows.astype(np.int64) + table.id_offset for table in tables]
        for table, split_ids in zip(tables, ids, strict=True):
            _check_unique(table, split_ids)
        return None, ids
    columns = []
    for table in tables:
        column = _column(table, column_name)
        _null_rows(table, column, column_name, "an id")
        if not (_is_number(column.type) or _is_string(column.type)):
            raise InputError(
                f"{table.source}: id column {column_name!r} holds {column.type} values; "
                "expected integers or strings."
            )
        columns.append(column)
    if any(_is_string(column.type) for column in columns):
        texts = [column.cast(pa.string()) for column in columns]
        every = pa.chunked_array(
            [chunk for values in texts for chunk in values.chunks], pa.string()
        )
        distinct = pc.unique(every)
        ordered = distinct.take(pc.array_sort_indices(distinct))
        ids = [
            pc.index_in(values, value_set=ordered).to_numpy(zero_copy_only=False).astype(np.int64)
            for values in texts
        ]
        for table, split_ids, values in zip(tables, ids, texts, strict=True):
            _check_unique(table, split_ids, values)
        return tuple(ordered.to_pylist()), ids
    ids = [
        _integer_ids(table, column, column_name)
        for table, column in zip(tables, columns, strict=True)
    ]
    for table, split_ids in zip(tables, ids, strict=True):
        _check_unique(table, split_ids)
    return None, ids


def _integer_ids(table: SplitTable, column: pa.ChunkedArray, name: str) -> np.ndarray:
    return _whole_numbers(table, column, name, "id", "integer or string ids")


def _check_unique(
    table: SplitTable, ids: np.ndarray, written: pa.ChunkedArray | None = None
) -> None:
    """Raise naming the first repeated id (as ``written`` holds it, when given) and its rows."""
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if repeated.size:
        first = order[repeated[0] + 1]
        earlier = order[repeated[0]]
        shown = _plain(ids[first]) if written is None else written[int(first)].as_py()
        raise InputError(
            f"{table.where(int(first))}: id {shown!r} already appears at row "
            f"{int(table.rows[earlier])} ({repeated.size} repeated id(s) in the "
            f"{table.split!r} split); expected a unique id per row. Fix the ids, or drop the id "
            "column to number the rows."
        )


# --------------------------------------------------------------------------- inputs


def _texts(split: ResolvedSplit) -> list[str]:
    column = _column(split.table, split.input_columns[0])
    _null_rows(split.table, column, split.input_columns[0], "a text")
    return column.to_pylist()


def _features(split: ResolvedSplit) -> np.ndarray:
    """float32 [N, F]: the feature columns side by side, a vector column as its width."""
    table = split.table
    blocks = []
    for name in split.input_columns:
        column = _column(table, name)
        if _is_number_list(column.type):
            block = _vectors(table, column, name)
        else:
            if pa.types.is_boolean(column.type) or pa.types.is_null(column.type):
                column = column.cast(pa.float64())
            block = column.to_numpy(zero_copy_only=False).astype(np.float64)[:, None]
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if bad.size:
            value = block[bad[0]][~np.isfinite(block[bad[0]])][0]
            raise FileFormatError(
                f"{table.where(int(bad[0]))}: feature {name!r} is {float(value)!r} "
                f"({bad.size} row(s) empty, NaN or infinite in this column); expected a finite "
                "number in every row. Fill or drop those rows (or leave the column out of "
                "features)."
            )
        blocks.append(block)
    return np.concatenate(blocks, axis=1).astype(np.float32)


def _vectors(table: SplitTable, column: pa.ChunkedArray, name: str) -> np.ndarray:
    """float64 [N, L] from a column of numeric lists, all of one length L."""
    _null_rows(table, column, name, "a list of numbers")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    other = np.flatnonzero(lengths != lengths[0])
    if other.size:
        raise FileFormatError(
            f"{table.where(int(other[0]))}: column {name!r} holds {int(lengths[other[0]])} "
            f"numbers but row {int(table.rows[0])} holds {int(lengths[0])}; expected vectors "
            "of one length in every row."
        )
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return flat.astype(np.float64).reshape(len(lengths), int(lengths[0]))


def _image_sources(split: ResolvedSplit) -> list[Any]:
    """Per row: a path to open, or the bytes of an embedded image; missing files are errors."""
    table = split.table
    name = split.input_columns[0]
    column = _column(table, name)
    _null_rows(table, column, name, "an image")
    sources: list[Any] = []
    for position, value in enumerate(column.to_pylist()):
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                sources.append(value["bytes"])
                continue
            value = value.get("path")
            if value is None:
                raise FileFormatError(
                    f"{table.where(position)}: image column {name!r} has neither bytes nor a "
                    "path; expected an image in every row."
                )
        path = Path(value).expanduser()
        path = path if path.is_absolute() else table.base / path
        if not path.is_file():
            raise MissingFileError(
                f"{table.where(position)}: image file {str(path)!r} does not exist (column "
                f"{name!r}, {value!r}, relative to {str(table.base)!r}); expected a path to an "
                "image, relative to the table's folder or absolute."
            )
        sources.append(path)
    return sources


def _images(splits: Sequence[ResolvedSplit], image_size: Any) -> list[np.ndarray]:
    """Every split's images, float32 [N, C, H, W] in [0, 1]: one size (``image_size`` or the
    images' own, then all equal) and one channel count in all splits (grey images are
    repeated to RGB when any image has colour)."""
    from PIL import Image, UnidentifiedImageError

    size = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    decoded: list[list[np.ndarray]] = []
    first_seen: tuple[tuple[int, int], str] | None = None
    colour = False
    for split in splits:
        arrays = []
        for position, source in enumerate(_image_sources(split)):
            where = f"{split.table.where(position)} ({source if isinstance(source, Path) else 'embedded image'})"
            try:
                with Image.open(
                    source if isinstance(source, Path) else io.BytesIO(source)
                ) as image:
                    image = image.convert("L" if image.mode in _GRAY_MODES else "RGB")
                    if size is not None:
                        image = image.resize(size[::-1], Image.Resampling.BILINEAR)
                    array = np.asarray(image, dtype=np.uint8)
            except (
                OSError,
                UnidentifiedImageError,
                ValueError,
                Image.DecompressionBombError,
            ) as error:
                raise FileFormatError(
                    f"{where} could not be read as an image ({error}); expected an image file "
                    "PIL can open. Fix or remove the row."
                ) from error
            shape = array.shape[:2]
            if first_seen is None:
                first_seen = (shape, where)
            elif shape != first_seen[0]:
                raise MismatchError(
                    f"{where} is {shape[1]}×{shape[0]} pixels but {first_seen[1]} is "
                    f"{first_seen[0][1]}×{first_seen[0][0]}; expected one size. Set image_size "
                    "= [height, width] to resize them."
                )
            colour = colour or array.ndim == 3
            arrays.append(array)
        decoded.append(arrays)
    result = []
    for arrays in decoded:
        channels = [
            (np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a) if colour else a[..., None]
            for a in arrays
        ]
        stacked = np.stack(channels).transpose(0, 3, 1, 2).astype(np.float32)
        stacked *= np.float32(1 / 255)
        result.append(stacked)
    return result
