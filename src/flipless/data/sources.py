"""The ``[data]`` section of a run: which data, read how, cut into which update scenario.

One entry point for every data source a config, the command line or Python names:

* shipped data sets: ``digits``, ``fashion-mnist``, ``cifar10``, ``massive``, ``banking77``,
  ``image-folder`` (:mod:`flipless.data.loaders`);
* a user's tables: ``name = "table"`` (CSV / TSV / Parquet / JSON Lines; :mod:`~flipless.data.table`);
* a ``datasets.save_to_disk`` folder: ``name = "hf-disk"`` (:mod:`~flipless.data.hf_disk`);
* a user's function: ``target = "package.module:function"`` with ``args``
  (:mod:`~flipless.data.plugin`).

:func:`load_splits` reads the splits ("val" and "dev" are called "validation");
:func:`load_scenario` cuts them into the :class:`~flipless.data.scenario.UpdateScenario`;
:func:`check_data` reads and checks a source without decoding images or training anything;
:func:`data_config_from_path` guesses the source of a path given on a command line.

The update scenario:

* ``old_split`` set (e.g. "train_v1"): the old model's rows are that split, the new model's
  are ``new_split`` (default "train"; a list of splits is concatenated).
* otherwise the old model's rows are a stratified ``old_fraction`` (default 0.3) of
  ``new_split``, as :func:`~flipless.data.scenario.make_update_scenario` draws them.
* ``validation`` and ``test`` are the data's own splits when it has them; a missing one is
  cut (stratified, seeded) from the new split's rows that are not in ``old_split``:
  ``test_fraction`` of them first, then ``validation_fraction``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flipless import remote
from flipless.errors import FileFormatError, InputError, MissingFileError

#: Data sets that ship with flipless; all but the first two need ``path``.
SHIPPED = ("digits", "fashion-mnist", "cifar10", "massive", "banking77", "image-folder")
#: Every ``data.name``.
DATA_SETS = (*SHIPPED, "table", "hf-disk", "target")
#: Keys that say which column is what (``table`` and ``hf-disk`` only).
COLUMN_KEYS = (
    "id_column",
    "label_column",
    "input_column",
    "input_type",
    "split_column",
    "features",
)
DEFAULT_OLD_FRACTION = 0.3


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` section (see the module docstring and docs/training.md).

    ``name`` defaults to "target" when ``target`` is set, else to "digits". Paths are taken
    as given (a config file makes them relative to its folder). Checked by
    :func:`check_data_config`, which every function here calls.
    """

    name: str | None = None
    path: str | None = None
    target: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    id_column: str | None = None
    label_column: str = "label"
    input_column: str | None = None
    input_type: str | None = None
    split_column: str | None = None
    features: list[str] | None = None
    classes: list[str] | None = None
    old_split: str | None = None
    new_split: str | list[str] | None = None
    old_fraction: float | None = None
    old_classes: list[str] | None = None
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    image_size: int | list[int] | None = None

    def __post_init__(self) -> None:
        if self.name is None:
            object.__setattr__(self, "name", "target" if self.target is not None else "digits")

    @property
    def new_splits(self) -> tuple[str, ...]:
        """The split(s) the new model trains on."""
        if self.new_split is None:
            return ("train",)
        return (self.new_split,) if isinstance(self.new_split, str) else tuple(self.new_split)


@dataclass(frozen=True)
class DataSummary:
    """What :func:`check_data` found: rows per split, the class names and the input type
    (empty / None for shipped data sets and targets, which are only checked to exist)."""

    name: str
    splits: dict[str, int]
    class_names: tuple[str, ...] = ()
    input_type: str | None = None


def check_data_config(data: DataConfig) -> None:
    """Raise an InputError naming the ``data.<key>`` that is wrong or does not apply."""
    if not isinstance(data, DataConfig):
        raise InputError(f"data is {type(data).__name__}; expected a DataConfig.")
    if data.name not in DATA_SETS:
        raise InputError(f"data.name: {data.name!r}; expected one of {DATA_SETS}.")
    if (data.name == "target") != (data.target is not None):
        raise InputError(
            "data.target: give a target ('package.module:function') with name = 'target' or "
            f"no name; name is {data.name!r} and target is {data.target!r}."
        )
    if data.name not in ("digits", "fashion-mnist", "target") and data.path is None:
        raise InputError(f"data.path: the {data.name} data set needs a path.")
    if data.name == "target" and data.path is not None:
        raise InputError("data.path: a target reads its own data; pass paths in data.args.")
    formats = data.name in ("table", "hf-disk")
    _only_for(data, [k for k in COLUMN_KEYS if k != "label_column"], formats, "table and hf-disk")
    if not formats and data.label_column != "label":
        raise InputError("data.label_column: applies to table and hf-disk data only.")
    _only_for(data, ["format"], data.name == "table", "table")
    _only_for(data, ["args"], data.name == "target", "target")
    _only_for(data, ["classes"], formats or data.name == "target", "table, hf-disk and target")
    _only_for(data, ["image_size"], formats or data.name == "image-folder", "image")
    if data.format is not None:
        from flipless.data.table import FORMATS

        if data.format not in FORMATS:
            raise InputError(f"data.format: {data.format!r}; expected one of {FORMATS}.")
    if data.old_split is not None and data.old_fraction is not None:
        raise InputError(
            "data.old_fraction: the old model's rows are data.old_split "
            f"({data.old_split!r}); give old_split or old_fraction, not both."
        )
    if not data.new_splits or len(set(data.new_splits)) != len(data.new_splits):
        raise InputError(f"data.new_split: {data.new_split!r}; expected distinct split names.")
    if data.new_splits == (data.old_split,):
        raise InputError(
            f"data.old_split: {data.old_split!r} is also the whole data.new_split; expected the "
            "new model to train on other rows, or on more (new_split = [old, new])."
        )
    from flipless.data.labeled import check_fraction

    try:
        if data.old_fraction is not None:
            check_fraction(data.old_fraction, "data.old_fraction")
        check_fraction(data.validation_fraction, "data.validation_fraction", allow_one=False)
        check_fraction(data.test_fraction, "data.test_fraction", allow_one=False)
        column_options(data)
    except InputError as error:
        message = str(error)
        raise InputError(message if message.startswith("data.") else f"data.{message}") from error


def _only_for(data: DataConfig, keys: list[str], applies: bool, kinds: str) -> None:
    defaults = {f.name: f for f in dataclasses.fields(DataConfig)}
    for key in keys:
        default = defaults[key]
        empty = (
            default.default_factory()
            if default.default_factory is not dataclasses.MISSING
            else default.default
        )
        if not applies and getattr(data, key) != empty:
            raise InputError(
                f"data.{key}: applies to {kinds} data only; data.name is {data.name!r}. "
                "Remove the key."
            )


def column_options(data: DataConfig) -> Any:
    """The :class:`~flipless.data.columns.ColumnOptions` of a table / hf-disk config."""
    from flipless.data.columns import ColumnOptions

    image_size = data.image_size
    return ColumnOptions(
        id_column=data.id_column,
        label_column=data.label_column,
        input_column=data.input_column,
        input_type=data.input_type,
        split_column=data.split_column,
        features=None if data.features is None else tuple(data.features),
        classes=None if data.classes is None else tuple(data.classes),
        image_size=tuple(image_size) if isinstance(image_size, list) else image_size,
    )


def local_data(data: DataConfig) -> DataConfig:
    """``data`` with a URL ``path`` (``s3://bucket/texts.csv``, a folder URL) replaced by a
    local copy, downloaded once per process (:func:`flipless.remote.downloaded`). Image paths
    in a table are relative to it, so a table of images is given by its folder's URL."""
    if data.path is None or not remote.is_remote(data.path):
        return data
    return dataclasses.replace(data, path=str(remote.downloaded(data.path)))


def load_splits(data: DataConfig, seed: int = 0) -> Any:
    """Every split of the source, by name (a :class:`~flipless.data.columns.Splits`: a dict
    of LabeledData whose ``id_names`` keep string ids); "val" and "dev" become "validation".
    ``seed`` is the digits' train/test draw."""
    from flipless.data import loaders
    from flipless.data.columns import Splits
    from flipless.data.table import split_name

    check_data_config(data)
    data = local_data(data)
    if data.name == "table":
        from flipless.data.table import load_table

        return load_table(data.path, column_options(data), data.format)
    if data.name == "hf-disk":
        from flipless.data.hf_disk import load_hf_disk

        return load_hf_disk(data.path, column_options(data))
    if data.name == "target":
        from flipless.data.plugin import load_target

        return load_target(data.target, data.args, data.classes)
    if data.name == "massive" and (Path(data.path) / "updated").is_dir():
        splits = loaders.load_massive(Path(data.path) / "updated")
    else:
        load = {
            "digits": lambda: loaders.load_digits(seed=seed),
            "fashion-mnist": lambda: loaders.load_fashion_mnist(data.path),
            "cifar10": lambda: loaders.load_cifar10(data.path),
            "massive": lambda: loaders.load_massive(data.path),
            "banking77": lambda: loaders.load_banking77(data.path),
            "image-folder": lambda: loaders.load_image_folder(
                data.path, image_size=column_options(data).image_size
            ),
        }
        splits = load[data.name]()
    return Splits({split_name(name): split for name, split in splits.items()})


def load_scenario(data: DataConfig, seed: int = 0) -> Any:
    """The :class:`~flipless.data.scenario.UpdateScenario` the config describes (module
    docstring); the MASSIVE add-data folder (``path/old``, ``path/updated``) as published."""
    from flipless.data.scenario import massive_update_scenario

    check_data_config(data)
    data = local_data(data)
    if data.name == "massive" and (Path(data.path) / "updated").is_dir():
        return massive_update_scenario(data.path)
    return scenario_from_splits(load_splits(data, seed), data, seed)


def scenario_from_splits(splits: Mapping[str, Any], data: DataConfig, seed: int) -> Any:
    """Cut loaded splits into the update scenario (module docstring); string ids
    (``splits.id_names``) are kept in it."""
    import numpy as np

    from flipless.data.scenario import UpdateScenario, make_update_scenario

    check_split_names(list(splits), data)
    id_names = getattr(splits, "id_names", None)
    new_train = _concatenated([splits[name] for name in data.new_splits])
    old_train = None if data.old_split is None else splits[data.old_split]
    old_ids = np.empty(0, np.int64) if old_train is None else old_train.ids.numpy()
    validation_seed, test_seed = (
        int(s) for s in np.random.SeedSequence([seed, 15]).generate_state(2)
    )
    test = splits.get("test")
    if test is None:
        test, new_train = _cut(new_train, data.test_fraction, test_seed, old_ids, "test")
    validation = splits.get("validation")
    if old_train is None:
        given = {"train": new_train, "test": test}
        if validation is not None:
            given["dev"] = validation
        return make_update_scenario(
            given,
            old_fraction=DEFAULT_OLD_FRACTION if data.old_fraction is None else data.old_fraction,
            old_classes=data.old_classes,
            validation_fraction=data.validation_fraction,
            seed=seed,
            id_names=id_names,
        )
    validation_from = "the 'validation' split"
    if validation is None:
        validation, new_train = _cut(
            new_train, data.validation_fraction, validation_seed, old_ids, "validation"
        )
        validation_from = f"{100 * data.validation_fraction:g}% of the new rows"
    description = (
        f"{data.name} {data.path or data.target}: old model on split {data.old_split!r} "
        f"({len(old_train)} samples), new model on {' + '.join(map(repr, data.new_splits))} "
        f"({len(new_train)}); validation {validation_from} ({len(validation)}); test "
        f"{len(test)}; seed {seed}"
    )
    return UpdateScenario(
        old_train=old_train,
        new_train=new_train,
        validation=validation,
        test=test,
        seed=int(seed),
        description=description,
        old_classes=data.old_classes,
        id_names=id_names,
    )


def check_split_names(names: list[str], data: DataConfig) -> None:
    """Raise an InputError when ``old_split`` or a ``new_split`` is not among ``names``."""
    wanted = [("data.new_split", name) for name in data.new_splits]
    if data.old_split is not None:
        wanted.append(("data.old_split", data.old_split))
    for key, name in wanted:
        if name not in names:
            hint = (
                "Set data.new_split to the split the new model trains on."
                if key == "data.new_split"
                else "Set data.old_split to the split the old model was trained on."
            )
            raise InputError(
                f"{key}: the data has no split {name!r}; its splits are {sorted(names)}. {hint}"
            )


def _concatenated(parts: list[Any]) -> Any:
    import numpy as np
    import torch

    from flipless.data.labeled import LabeledData

    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([part.ids.numpy() for part in parts])
    if np.unique(ids).size != ids.size:
        raise InputError(
            f"data.new_split: the splits {[part.name for part in parts]} share ids; expected "
            "each row in one of them. Give the rows distinct ids."
        )
    if parts[0].is_text:
        inputs: Any = [text for part in parts for text in part.inputs]
    else:
        inputs = torch.cat([part.inputs for part in parts])
    return LabeledData(
        inputs,
        torch.cat([part.labels for part in parts]),
        torch.from_numpy(ids),
        parts[0].class_names,
        " + ".join(part.name for part in parts),
    )


def _cut(new_train: Any, fraction: float, seed: int, old_ids: Any, what: str) -> tuple[Any, Any]:
    """``(part, rest of new_train)``: a stratified ``fraction`` of the rows not in old_ids."""
    import numpy as np

    from flipless.data.labeled import check_fraction, stratified_split

    fraction = check_fraction(fraction, f"data.{what}_fraction", allow_one=False)
    ids = new_train.ids.numpy()
    pool = np.flatnonzero(~np.isin(ids, old_ids))
    if pool.size < 2:
        raise InputError(
            f"the data has no {what} split and {new_train.name} has {pool.size} row(s) outside "
            f"data.old_split to cut one from; expected a {what!r} split in the data (a "
            f"{what} file or {what} rows in the split column)."
        )
    part, _ = stratified_split(new_train.subset(pool), fraction, seed)
    part = part.subset(np.arange(len(part)), name=f"{new_train.name} ({what} cut)")
    rest = new_train.subset(np.flatnonzero(~np.isin(ids, part.ids.numpy())))
    return part, rest


def check_data(data: DataConfig) -> DataSummary:
    """Check a data source before anything trains: the config's keys, files readable,
    columns present, labels, ids and inputs valid (image files present, not decoded), and
    the splits ``old_split`` / ``new_split`` name present. A shipped data set's path is
    checked to exist; a target to be an importable callable (it is not called)."""
    check_data_config(data)
    data = local_data(data)
    if data.name in ("table", "hf-disk"):
        if data.name == "table":
            from flipless.data.table import check_table

            resolution = check_table(data.path, column_options(data), data.format)
        else:
            from flipless.data.hf_disk import check_hf_disk

            resolution = check_hf_disk(data.path, column_options(data))
        sizes = resolution.sizes()
        check_split_names(list(sizes), data)
        _check_old_classes(data, resolution.class_names)
        return DataSummary(data.name, sizes, resolution.class_names, resolution.input_type)
    if data.name == "target":
        from flipless.targets import resolve_target

        if not callable(resolve_target(data.target, key="data.target")):
            raise InputError(f"data.target {data.target!r} is not a function; expected a callable.")
        return DataSummary(data.name, {})
    if data.path is not None and not Path(data.path).exists():
        raise MissingFileError(
            f"data.path: {data.path} does not exist; expected the {data.name} data there."
        )
    return DataSummary(data.name, {})


def _check_old_classes(data: DataConfig, class_names: tuple[str, ...]) -> None:
    unknown = [name for name in data.old_classes or () if name not in class_names]
    if unknown:
        raise InputError(
            f"data.old_classes: {unknown} are not classes of the data; its classes are "
            f"{list(class_names)[:20]}."
        )


def data_config_from_path(path: str | Path, **options: Any) -> DataConfig:
    """The DataConfig of a data source named on a command line, checked.

    ``path``: a table file or a folder of them → "table"; a ``save_to_disk`` folder →
    "hf-disk"; a folder of class folders → "image-folder"; "digits" / "fashion-mnist" → that
    shipped data set; ``NAME:PATH`` (e.g. ``cifar10:/data/cifar``) → a shipped data set at a
    path. ``options`` are other DataConfig keys (``label_column="intent"``, ``classes=[…]``).
    A URL (``s3://bucket/texts.csv``) is downloaded first (:func:`local_data`).
    """
    from flipless.data.hf_disk import is_hf_disk_folder
    from flipless.data.table import is_table_path

    allowed = {f.name for f in dataclasses.fields(DataConfig)} - {"name", "path"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown data option(s) {unknown}; expected some of {sorted(allowed)}.")
    text = str(remote.downloaded(path)) if remote.is_remote(path) else str(path)
    name, _, rest = text.partition(":")
    if name in SHIPPED and rest and not Path(text).exists():
        config = DataConfig(name=name, path=str(Path(rest).expanduser().resolve()), **options)
    elif Path(text).expanduser().exists():
        location = Path(text).expanduser().resolve()
        if location.is_dir() and is_hf_disk_folder(location):
            kind = "hf-disk"
        elif is_table_path(location):
            kind = "table"
        elif location.is_dir() and _holds_only_folders(location):
            kind = "image-folder"
        else:
            raise FileFormatError(
                f"{location} is not a data source flipless can read; expected a table file "
                "(.csv, .tsv, .parquet, .jsonl) or a folder of them, a datasets.save_to_disk "
                "folder, or a folder of class folders of images."
            )
        config = DataConfig(name=kind, path=str(location), **options)
    elif text in ("digits", "fashion-mnist"):
        config = DataConfig(name=text, **options)
    else:
        raise MissingFileError(
            f"{text}: no such file or folder; expected a table file or folder, a "
            "datasets.save_to_disk folder, an image folder, 'digits', 'fashion-mnist' or "
            f"NAME:PATH with NAME one of {', '.join(SHIPPED)}."
        )
    check_data_config(config)
    return config


def _holds_only_folders(folder: Path) -> bool:
    children = [child for child in folder.iterdir() if not child.name.startswith(".")]
    return bool(children) and all(child.is_dir() for child in children)
