"""Tables a user brings: CSV, TSV, Parquet or JSON Lines, one file or a folder of them.

Layouts (``path``):

* **one file with a split column** (``split``, or ``split_column``): each row belongs to the
  split it names; "val" and "dev" mean "validation".
* **one file without one**: a single split named after the file (``test.csv`` → "test",
  ``dev.parquet`` → "validation", ``rows.csv`` → "rows").
* **a folder**: one file per split, named after it (``train.csv``, ``validation.parquet`` or
  ``val``/``dev``, ``test.jsonl``, or any other name such as ``train_v1.csv``); or a folder
  holding a single file with a split column. Only files with a table suffix are read
  (``.csv``, ``.tsv``, ``.tab``, ``.parquet``, ``.pq``, ``.jsonl``, ``.ndjson``, each also
  ``.gz`` / ``.bz2`` compressed); hidden files are skipped.

Files are read whole by pyarrow (``pyarrow.csv``, ``pyarrow.parquet``, ``pyarrow.json``); in a
CSV / TSV the text and image-path columns are read as strings (``007`` stays ``007``), quoted
values may span lines. ``format`` (``csv``, ``tsv``, ``parquet``, ``jsonl``) overrides the
suffix of a single file. Without an id column a row's id is its row number in its file
(from 0); in a folder the files are numbered one after another in name order, so ids stay
unique across splits. What each column means: :mod:`flipless.data.columns`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flipless.data.columns import (
    ColumnOptions,
    Resolution,
    Splits,
    SplitTable,
    resolve_splits,
    splits_from_tables,
)
from flipless.errors import FileFormatError, InputError, MissingFileError
from flipless.validation import first_few

FORMATS = ("csv", "tsv", "parquet", "jsonl")
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2")
VALIDATION_ALIASES = ("val", "dev")
SPLIT_ORDER = ("train", "validation", "test")
_DESCRIPTIONS: dict[str, str] = {
    "csv": "comma-separated file with a header row",
    "tsv": "tab-separated file with a header row",
    "parquet": "Parquet file",
    "jsonl": "JSON Lines file (one JSON object per line)",
}


def load_table(
    path: str | Path, options: ColumnOptions | None = None, format: str | None = None
) -> Splits:
    """Every split of the table file or folder at ``path``, as LabeledData (module docstring)."""
    options = options or ColumnOptions()
    return splits_from_tables(table_splits(path, options, format), options)


def check_table(
    path: str | Path, options: ColumnOptions | None = None, format: str | None = None
) -> Resolution:
    """Read and check the table(s) at ``path`` without decoding images: columns present,
    labels, ids and inputs valid. Returns what :func:`~flipless.data.columns.resolve_splits`
    found (splits and their sizes, class names, input type)."""
    options = options or ColumnOptions()
    return resolve_splits(table_splits(path, options, format), options)


def is_table_path(path: str | Path) -> bool:
    """True for a file with a table suffix, or a folder holding such files."""
    path = Path(path)
    if path.is_file():
        return table_format(path) is not None
    return path.is_dir() and bool(_table_files(path))


def table_format(path: Path) -> str | None:
    """The format its suffix says (``data.csv.gz`` → "csv"), or None."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    return SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None


def split_name(stem: str) -> str:
    """A split's canonical name: "val" and "dev" are "validation"."""
    return "validation" if stem in VALIDATION_ALIASES else stem


def table_splits(
    path: str | Path, options: ColumnOptions, format: str | None = None
) -> list[SplitTable]:
    """One :class:`SplitTable` per split, in the order train, validation, test, then the
    others by name."""
    path = Path(path).expanduser()
    if format is not None and format not in FORMATS:
        raise InputError(f"format={format!r}; expected one of {', '.join(FORMATS)}.")
    if path.is_dir():
        files = _table_files(path)
        if not files:
            shown = [child.name for child in sorted(path.iterdir())]
            raise FileFormatError(
                f"{path} holds no table files (found {first_few(shown) or 'nothing'}); expected "
                "train / validation / test files ending in "
                f"{', '.join(SUFFIX_FORMATS)} (or one such file with a split column)."
            )
        if format is not None:
            raise InputError(
                f"format={format!r} applies to a single file, and {path} is a folder; its files "
                "are read by their suffixes. Leave format out."
            )
        if len(files) == 1:
            return _one_file(files[0], table_format(files[0]), options)
        return _split_files(path, files, options)
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist; expected a table file ({', '.join(SUFFIX_FORMATS)}) or a "
            "folder of them. Check the path (relative paths start at the config file's folder)."
        )
    kind = format or table_format(path)
    if kind is None:
        raise FileFormatError(
            f"{path} has an unknown suffix; expected one of {', '.join(SUFFIX_FORMATS)}, or set "
            f"format to one of {', '.join(FORMATS)}."
        )
    return _one_file(path, kind, options)


def _table_files(folder: Path) -> list[Path]:
    return sorted(
        child
        for child in folder.iterdir()
        if child.is_file() and not child.name.startswith(".") and table_format(child) is not None
    )


def _stem(path: Path) -> str:
    name = path.name
    for _ in range(2 if path.suffix.lower() in COMPRESSION_SUFFIXES else 1):
        name = name.rsplit(".", 1)[0]
    return name


def _one_file(path: Path, kind: str, options: ColumnOptions) -> list[SplitTable]:
    table = read_table(path, kind, _string_columns(options))
    rows = np.arange(table.num_rows, dtype=np.int64)
    split_column = options.split_column or "split"
    whole = SplitTable(split_name(_stem(path)), table, str(path), rows, 0, path.parent)
    if split_column not in table.column_names:
        if options.split_column is not None:
            raise InputError(
                f"{path}: no column {split_column!r} (split_column); the columns are "
                f"{first_few(table.column_names, 20)}. Set split_column to the right name."
            )
        return [whole]
    column = table.column(split_column).cast(pa.string())
    if column.null_count:
        empty = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
        raise FileFormatError(
            f"{path}: column {split_column!r} is empty at rows {first_few(empty)}; expected a "
            "split name (train, validation, test, …) in every row."
        )
    present = sorted(pc.unique(column).to_pylist())
    aliases = [name for name in present if name in ("validation", *VALIDATION_ALIASES)]
    if len(aliases) > 1:
        raise FileFormatError(
            f"{path}: column {split_column!r} names {aliases}, which all mean the validation "
            "split; expected one of them. Rename the rows to one name."
        )
    splits = []
    for name in _ordered(present):
        positions = np.flatnonzero(pc.equal(column, name).to_numpy(zero_copy_only=False))
        splits.append(
            replace(
                whole,
                split=split_name(name),
                table=table.take(pa.array(positions)),
                rows=positions.astype(np.int64),
            )
        )
    return splits


def _split_files(folder: Path, files: list[Path], options: ColumnOptions) -> list[SplitTable]:
    by_split: dict[str, Path] = {}
    for file in files:
        name = split_name(_stem(file))
        if name in by_split:
            raise FileFormatError(
                f"{folder} has both {by_split[name].name} and {file.name} for the {name!r} "
                "split; expected one file per split (val and dev mean validation). Remove one."
            )
        by_split[name] = file
    tables = []
    offset = 0
    for file in files:  # ids are numbered in file-name order
        table = read_table(file, table_format(file), _string_columns(options))
        if options.split_column is not None:
            raise InputError(
                f"split_column={options.split_column!r} but {folder} holds one file per split; "
                "expected either one file with a split column or a file per split. Leave "
                "split_column out."
            )
        rows = np.arange(table.num_rows, dtype=np.int64)
        tables.append(
            SplitTable(split_name(_stem(file)), table, str(file), rows, offset, file.parent)
        )
        offset += table.num_rows
    order = {name: position for position, name in enumerate(_ordered(list(by_split)))}
    return sorted(tables, key=lambda split: order[split.split])


def _ordered(names: list[str]) -> list[str]:
    def key(name: str) -> tuple[int, str]:
        canonical = split_name(name)
        rank = SPLIT_ORDER.index(canonical) if canonical in SPLIT_ORDER else len(SPLIT_ORDER)
        return rank, name

    return sorted(names, key=key)


def _string_columns(options: ColumnOptions) -> list[str]:
    """Columns a CSV must keep as strings: the text / image path input and the split."""
    named = [options.input_column, options.split_column]
    return [name for name in named if name is not None] + ["text", "image", "split"]


def read_table(path: Path, kind: str, string_columns: list[str] | None = None) -> pa.Table:
    """The whole file as an arrow table; unreadable files are a FileFormatError."""
    try:
        if kind in ("csv", "tsv"):
            from pyarrow import csv

            return csv.read_csv(
                path,
                parse_options=csv.ParseOptions(
                    delimiter="\t" if kind == "tsv" else ",", newlines_in_values=True
                ),
                convert_options=csv.ConvertOptions(
                    column_types={name: pa.string() for name in string_columns or ()},
                    strings_can_be_null=True,  # an empty cell is missing, and reported
                ),
            )
        if kind == "parquet":
            import pyarrow.parquet as parquet

            return parquet.read_table(path)
        from pyarrow import json

        block = max(1 << 20, min(path.stat().st_size + 1, 1 << 30))
        return json.read_json(path, read_options=json.ReadOptions(block_size=block))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise FileFormatError(
            f"{path} could not be read as {kind.upper()} ({error}); expected a "
            f"{_DESCRIPTIONS[kind]}. Fix the file, or set format if its suffix is wrong."
        ) from error
