"""Folders written by ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

A ``DatasetDict`` folder gives one split per key ("val" and "dev" mean "validation"). A
single ``Dataset`` is split by its split column when it has one (``split``, or
``split_column``), else it is one split named after its own split (``Dataset.split``) or,
without one, after the folder. Columns are chosen as for tables
(:mod:`flipless.data.columns`): a ``ClassLabel`` label column gives the class names (its
``-1``, "no label", is an error naming the row); an ``Image`` column is decoded from its
bytes (or its path, relative to the folder). The rows are read through Arrow
(``Dataset.with_format("arrow")``), never row by row. Needs the ``datasets`` package
(``pip install 'flipless[hf]'``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flipless.data.columns import (
    ColumnOptions,
    Resolution,
    Splits,
    SplitTable,
    resolve_splits,
    splits_from_tables,
)
from flipless.data.table import split_name
from flipless.errors import FileFormatError, InputError, MissingExtraError, MissingFileError
from flipless.validation import first_few


def is_hf_disk_folder(path: str | Path) -> bool:
    """True for a folder ``save_to_disk`` wrote (``dataset_dict.json``, or ``state.json`` and
    ``dataset_info.json``); reads no data."""
    folder = Path(path)
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def load_hf_disk(path: str | Path, options: ColumnOptions | None = None) -> Splits:
    """Every split of the ``save_to_disk`` folder at ``path`` as LabeledData."""
    options = options or ColumnOptions()
    return splits_from_tables(hf_disk_splits(path, options), options)


def check_hf_disk(path: str | Path, options: ColumnOptions | None = None) -> Resolution:
    """Read and check the folder without decoding images (see :func:`check_table`)."""
    options = options or ColumnOptions()
    return resolve_splits(hf_disk_splits(path, options), options)


def hf_disk_splits(path: str | Path, options: ColumnOptions) -> list[SplitTable]:
    """One :class:`SplitTable` per split of the folder, in the folder's order."""
    try:
        import datasets
    except ImportError as error:
        raise MissingExtraError(
            "reading a datasets.save_to_disk folder (data.name = 'hf-disk') needs the datasets "
            "package; install it with pip install 'flipless[hf]'."
        ) from error
    folder = Path(path).expanduser()
    if not is_hf_disk_folder(folder):
        error = FileFormatError if folder.exists() else MissingFileError
        raise error(
            f"{folder} is not a folder written by datasets' save_to_disk (no dataset_dict.json, "
            "nor state.json and dataset_info.json); expected the folder Dataset.save_to_disk "
            "or DatasetDict.save_to_disk wrote."
        )
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (OSError, ValueError, KeyError, pa.ArrowException) as error:
        raise FileFormatError(
            f"{folder} could not be read by datasets.load_from_disk ({error}); expected an "
            "intact save_to_disk folder. Save it again."
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        tables: list[SplitTable] = []
        offset = 0
        for key, dataset in loaded.items():
            name = split_name(key)
            if name in {table.split for table in tables}:
                raise FileFormatError(
                    f"{folder} has more than one validation split ({key!r} and another of "
                    "validation / val / dev); expected one."
                )
            tables.append(_split_table(folder / key, name, dataset, offset, folder, options))
            offset += tables[-1].table.num_rows
        return tables
    own_split = str(loaded.split) if loaded.split is not None else folder.name
    whole = _split_table(folder, split_name(own_split), loaded, 0, folder, options)
    split_column = options.split_column or "split"
    if split_column not in whole.table.column_names:
        if options.split_column is not None:
            raise InputError(
                f"{folder}: no column {split_column!r} (split_column); the columns are "
                f"{first_few(whole.table.column_names, 20)}."
            )
        return [whole]
    column = whole.table.column(split_column)
    if pa.types.is_integer(column.type) and isinstance(
        loaded.features.get(split_column), datasets.ClassLabel
    ):
        names = loaded.features[split_column].names
        values = np.asarray([names[i] for i in column.to_numpy()], dtype=object)
    else:
        if column.null_count:
            empty = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
            raise FileFormatError(
                f"{folder}: column {split_column!r} is empty at rows {first_few(empty)}; "
                "expected a split name in every row."
            )
        values = np.asarray(column.cast(pa.string()).to_pylist(), dtype=object)
    splits = []
    for name in sorted(set(values.tolist())):
        positions = np.flatnonzero(values == name)
        splits.append(
            replace(
                whole,
                split=split_name(name),
                table=whole.table.take(pa.array(positions)),
                rows=positions.astype(np.int64),
            )
        )
    if len({split.split for split in splits}) != len(splits):
        raise FileFormatError(
            f"{folder}: column {split_column!r} names more than one of validation / val / dev; "
            "expected one name for the validation split."
        )
    return splits


def _split_table(
    source: Path, name: str, dataset: Any, offset: int, folder: Path, options: ColumnOptions
) -> SplitTable:
    import datasets

    table = dataset.with_format("arrow")[:]
    label = dataset.features.get(options.label_column)
    class_names = None
    if isinstance(label, datasets.ClassLabel):
        class_names = tuple(label.names)
        values = table.column(options.label_column).to_numpy(zero_copy_only=False)
        unlabelled = np.flatnonzero(values < 0)
        if unlabelled.size:
            raise FileFormatError(
                f"{source}, row {int(unlabelled[0])}: label {int(values[unlabelled[0]])} means "
                f"'no label' ({unlabelled.size} such row(s)); expected a class in every row. "
                "Drop the unlabelled rows (dataset.filter(lambda row: row['label'] >= 0))."
            )
    rows = np.arange(table.num_rows, dtype=np.int64)
    return SplitTable(name, table, str(source), rows, offset, folder, class_names)
