"""``flipless train CONFIG``: a TOML or YAML file that names everything a compatible run needs.

Example (TOML; the YAML form has the same keys)::

    seed = 0
    output_dir = "runs/digits-fd-kl"

    [data]                 # a data set and the update scenario built from it
    name = "digits"        # digits | fashion-mnist | cifar10 | massive | banking77 | image-folder
                           # | table | hf-disk (path = your files), or target = "pkg.mod:fn"
    old_fraction = 0.3     # the old model saw this share of the training split
                           # (or old_split = "train_v1": the rows it was trained on)

    [model]                # the new model: a name from the model registry and its settings;
    name = "mlp"           # in_features / in_channels / image_size / num_classes come from
    hidden = [128]         # the data when not given (see flipless.models.sources.ModelConfig:
    # init = "old"         # path, target + args, init = "scratch" | "old")

    [old]
    checkpoint = "old.safetensors"   # a flipless model file (save_model) or a HF folder; or
    # target = "pkg.mod:make_old"    # a user's function returning it; or instead
    # train_epochs = 20              # train the old model on the scenario's old split first

    [loss]
    preset = "fd-kl"       # any registered preset, or "cross-entropy" for plain training
    teacher = "model"      # model (the old model runs each step) | cached (logits once)
    temperature = 50       # any other key overrides the preset (checked)

    [optimizer]
    name = "sgd"           # sgd | adam | adamw
    lr = 0.05
    momentum = 0.9

    [train]                # the fields of flipless.train.TrainSettings
    epochs = 30
    batch_size = 64
    select = "nfr-within:0.005"
    schedule = "warmup-cosine"   # constant | warmup-cosine | step | one-cycle
    schedule_settings = { warmup_epochs = 2 }   # see flipless.train.schedules

    [tracking]             # optional
    mlflow = "sqlite:///mlflow.db"

Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from flipless import remote
from flipless.data.sources import DataConfig, check_data_config
from flipless.errors import FileFormatError, InputError, MissingFileError
from flipless.models.sources import ModelConfig, OldConfig
from flipless.train.settings import TrainSettings

OPTIMIZERS = ("sgd", "adam", "adamw")
TEACHER_KINDS = ("model", "cached")


@dataclass(frozen=True)
class LossConfig:
    preset: str = "cross-entropy"
    teacher: str = "model"
    ce_weight: float = 1.0
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrackingConfig:
    mlflow: str | None = None
    experiment: str = "flipless"
    run_name: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """A whole run, checked; see the module docstring for the file layout."""

    output_dir: str
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    old: OldConfig = field(default_factory=OldConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(expected: Any) -> str:
    origin = get_origin(expected)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(expected) if arg is not type(None))
    if origin is list:
        return f"a list of {_type_name(get_args(expected)[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        expected, str(expected)
    )


def _check_value(value: Any, expected: Any, key: str) -> Any:
    origin = get_origin(expected)
    if origin in (Union, types.UnionType):
        options = get_args(expected)
        if value is None and type(None) in options:
            return None
        present = [option for option in options if option is not type(None)]
        if len(present) == 1:
            return _check_value(value, present[0], key)
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key)
            except InputError:
                continue
        raise InputError(f"{key}: expected {_type_name(expected)}; got {value!r}.")
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"{key}: expected {_type_name(expected)}; got {value!r}.")
        (item,) = get_args(expected)
        return [_check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{key}: expected a table; got {value!r}.")
        return dict(value)
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected in (str, bool) and isinstance(value, expected):
        return value
    raise InputError(f"{key}: expected {_type_name(expected)}; got {value!r}.")


def _build(cls: type, table: Any, where: str, rest: str | None = None) -> Any:
    """``cls`` from a table, every key checked; unknown keys go to the field ``rest``."""
    if not isinstance(table, dict):
        raise InputError(f"{where}: expected a table of settings; got {table!r}.")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != rest]
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in table.items():
        if key in names:
            values[key] = _check_value(value, hints[key], f"{where}.{key}")
        elif rest is not None:
            extra[key] = value
        else:
            raise InputError(f"{where}.{key}: unknown key; expected some of {', '.join(names)}.")
    if rest is not None:
        values[rest] = extra
    try:
        return cls(**values)
    except InputError as error:
        raise InputError(f"{where}: {error}") from error


def parse_config(document: Any, base: Path | None = None) -> RunConfig:
    """A :class:`RunConfig` from a parsed TOML/YAML document; relative paths from ``base``."""
    if not isinstance(document, dict):
        raise InputError(f"the config must be a table of settings; got {type(document).__name__}.")
    sections = {
        "data": (DataConfig, None),
        "model": (ModelConfig, "settings"),
        "old": (OldConfig, None),
        "loss": (LossConfig, "overrides"),
        "optimizer": (OptimizerConfig, None),
        "train": (TrainSettings, None),
        "tracking": (TrackingConfig, None),
    }
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key in sections:
            cls, rest = sections[key]
            values[key] = _build(cls, value, key, rest)
        elif key == "seed":
            values["seed"] = _check_value(value, int, "seed")
        elif key == "output_dir":
            values["output_dir"] = _check_value(value, str, "output_dir")
        else:
            raise InputError(
                f"{key}: unknown key; expected seed, output_dir or a table among "
                f"{', '.join(sections)}."
            )
    if "output_dir" not in values:
        raise InputError("output_dir: missing; say where the run writes its files.")
    config = RunConfig(**values)
    _check_choices(config)
    return _resolve_paths(config, base) if base is not None else config


def _check_choices(config: RunConfig) -> None:
    check_data_config(config.data)
    if config.optimizer.name not in OPTIMIZERS:
        raise InputError(
            f"optimizer.name: {config.optimizer.name!r}; expected one of {OPTIMIZERS}."
        )
    if config.loss.teacher not in TEACHER_KINDS:
        raise InputError(f"loss.teacher: {config.loss.teacher!r}; expected one of {TEACHER_KINDS}.")
    if config.loss.preset != "cross-entropy":
        from flipless.losses.registry import PRESETS

        if config.loss.preset not in PRESETS:
            raise InputError(
                f"loss.preset: {config.loss.preset!r}; expected 'cross-entropy' or one of "
                f"{sorted(PRESETS)}."
            )
    old = config.old
    if old.checkpoint is None and old.target is None and old.train_epochs is None:
        raise InputError(
            "old: the update is measured against the old model: set old.checkpoint (a flipless "
            "model file or a Hugging Face folder), old.target ('package.module:function') or "
            "old.train_epochs (train it on the scenario's old split)."
        )


def config_folder(path: str | Path) -> Path:
    """Where the relative paths of the config file at ``path`` start: its folder, or the
    current folder for a config read from a URL (whose paths may be URLs themselves)."""
    return Path.cwd() if remote.is_remote(path) else remote.local_path(path).parent


def _resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    def resolve(path: str | None) -> str | None:
        if path is None or remote.is_remote(path):
            return path
        return str((base / remote.local_path(path).expanduser()).resolve())

    model_settings = dict(config.model.settings)
    if isinstance(model_settings.get("cache_dir"), str):  # encoder-head's feature cache
        model_settings["cache_dir"] = resolve(model_settings["cache_dir"])
    return dataclasses.replace(
        config,
        output_dir=resolve(config.output_dir),
        data=dataclasses.replace(config.data, path=resolve(config.data.path)),
        model=dataclasses.replace(
            config.model, path=resolve(config.model.path), settings=model_settings
        ),
        old=dataclasses.replace(config.old, checkpoint=resolve(config.old.checkpoint)),
    )


def read_document(path: str | Path) -> Any:
    """The parsed content of a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (or URL)."""
    path = remote.as_path(path)
    if not remote.is_file(path):
        raise MissingFileError(f"no config file at {path}.")
    text = remote.read_text(path)
    suffix = remote.suffix_of(path)
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        if suffix == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as error:
        raise FileFormatError(f"{path} is not valid {suffix[1:].upper()}: {error}") from error
    except Exception as error:  # yaml's errors (ScannerError, ParserError, …)
        if type(error).__module__.startswith("yaml"):
            where = " ".join(str(error).split())  # yaml's message spans lines
            raise FileFormatError(f"{path} is not valid YAML: {where}") from error
        raise
    raise FileFormatError(
        f"{path}: unknown config format {suffix!r}; use .toml, .yaml, .yml or .json."
    )


def load_config(path: str | Path) -> RunConfig:
    """Read and check a ``.toml``, ``.yaml``/``.yml`` or ``.json`` config file (or URL)."""
    path = remote.as_path(path)
    document = read_document(path)
    try:
        return parse_config(document, base=config_folder(path))
    except InputError as error:
        raise InputError(f"{path}: {error}") from error
