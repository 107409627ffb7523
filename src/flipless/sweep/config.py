"""``flipless sweep CONFIG``: a base run config (the sections of ``flipless train``) plus a grid.

Example (TOML; YAML and JSON take the same keys)::

    seed = 0                       # the data split and the old model: one for the whole sweep

    [data]
    name = "digits"

    [model]
    name = "mlp"
    hidden = [64]

    [old]
    train_epochs = 10              # trained once, first, into the sweep folder (or: checkpoint)

    [loss]
    teacher = "model"              # only teacher and ce_weight here: the methods come from the grid

    [train]
    epochs = 10

    [sweep]
    store = "runs/sweep/results.jsonl"    # or .parquet, or s3://…; the sweep folder is the store's
    seeds = [0, 1, 2]                     # seeds of the new models (initialisation, batch order)
    workers = 2                           # local worker processes
    threads = 1                           # torch threads per point (default: cpus // workers)
    backend = "local"                     # local | ray
    select = "min-nfr-within:0.005"       # the rule the command line applies at the end

    [[sweep.methods]]
    method = "fd-kl"                      # a loss preset: strengths are its weight λ or mix
    strengths = [0.5, 1, 2]
    options = { temperature = 10 }        # optional preset overrides

    [[sweep.methods]]
    method = "bcwi"                       # old-weights α of θ = α θ_old + (1 − α) θ_ce
    strengths = [0.2, 0.4, 0.6]

``cross-entropy`` (the plain update) is always part of the grid, one point per seed: it is the
reference of the selection rules and the new model the interpolation methods start from.
A preset's strength is the field the preset defines: its additive ``weight`` λ (``fd-kl``,
``fd-lm``, ``strict-imitation``, ``new-error``, ``bct``, ``cna``) or its convex ``mix``
(``ldi``, ``elodi``). Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flipless import remote
from flipless.data.feature_cache import path_sha256
from flipless.errors import InputError
from flipless.models.sources import OLD_SEED_OFFSET
from flipless.train.config import (
    RunConfig,
    config_folder,
    parse_config,
    read_document,
)

CROSS_ENTROPY = "cross-entropy"
#: Interpolation methods: θ(α) = α θ_old + (1 − α) θ_ce, plainly or Fisher-weighted.
INTERPOLATION_METHODS = ("bcwi", "fisher-bcwi")
BACKENDS = ("local", "ray")
STORE_SUFFIXES = (".jsonl", ".parquet")
#: Keys of the base ``[loss]`` table a sweep accepts; the rest comes from ``sweep.methods``.
BASE_LOSS_KEYS = ("teacher", "ce_weight")
SWEEP_KEYS = (
    "methods",
    "seeds",
    "store",
    "workers",
    "backend",
    "select",
    "cpus_per_point",
    "ray_address",
    "threads",
)
METHOD_KEYS = ("method", "strengths", "options")


def strength_name(method: str) -> str:
    """What a method's strength means: ``old_weight``, ``mix`` or ``weight``.

    Interpolation methods take the old-weight α; a loss preset takes the field it sets (its
    convex ``mix`` for ``ldi`` and ``elodi``, else its additive ``weight``); plain
    cross-entropy has no strength and is recorded as ``weight`` with strength null.
    """
    if method in INTERPOLATION_METHODS:
        return "old_weight"
    if method == CROSS_ENTROPY:
        return "weight"
    from flipless.losses.registry import PRESETS

    if method not in PRESETS:
        raise InputError(
            f"sweep.methods: unknown method {method!r}; expected {CROSS_ENTROPY!r}, an "
            f"interpolation method {INTERPOLATION_METHODS} or a loss preset {sorted(PRESETS)}."
        )
    return "mix" if PRESETS[method]().get("mix") is not None else "weight"


@dataclass(frozen=True)
class MethodGrid:
    """One method of the grid and its strengths (none for cross-entropy).

    Attributes:
        method: ``cross-entropy``, a loss preset of :mod:`flipless.losses.registry`, or an
            interpolation method (``bcwi``, ``fisher-bcwi``).
        strengths: the preset's λ (``weight``, ≥ 0) or ``mix`` (in [0, 1]), or the old-weight
            α in [0, 1]; each once.
        options: overrides of the preset's other settings (``temperature``, ``boost``, …).
    """

    method: str
    strengths: tuple[float, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = strength_name(self.method)
        where = f"sweep.methods[{self.method}]"
        if isinstance(self.strengths, (str, bytes)) or not isinstance(self.strengths, Sequence):
            raise InputError(f"{where}.strengths={self.strengths!r}; expected a list of numbers.")
        values = tuple(_strength(value, name, where) for value in self.strengths)
        object.__setattr__(self, "strengths", values)
        object.__setattr__(self, "options", dict(self.options))
        if self.method == CROSS_ENTROPY:
            if values or self.options:
                raise InputError(
                    f"{where}: plain cross-entropy has no strength and no options; give "
                    f'{{method = "{CROSS_ENTROPY}"}} alone (it is always in the grid anyway).'
                )
            return
        if not values:
            raise InputError(f"{where}.strengths is empty; give at least one {name}.")
        if len(set(values)) != len(values):
            raise InputError(f"{where}.strengths={list(values)} repeats a value; list each once.")
        if self.kind == "interpolation":
            if self.options:
                raise InputError(
                    f"{where}.options={dict(self.options)}: interpolation methods take no "
                    "options (the new model is the seed's cross-entropy model)."
                )
            return
        _check_preset(self.method, name, values, self.options, where)

    @property
    def kind(self) -> str:
        """``interpolation`` or ``loss``."""
        return "interpolation" if self.method in INTERPOLATION_METHODS else "loss"

    @property
    def strength_name(self) -> str:
        return strength_name(self.method)


def _strength(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}.strengths holds {value!r}; expected finite numbers.")
    value = float(value)
    if name in ("old_weight", "mix") and not 0.0 <= value <= 1.0:
        raise InputError(f"{where}.strengths holds {value:g}; {name} values lie in [0, 1].")
    if value < 0:
        raise InputError(f"{where}.strengths holds {value:g}; a weight λ is ≥ 0.")
    return value


def _check_preset(
    method: str, name: str, values: tuple[float, ...], options: Mapping[str, Any], where: str
) -> None:
    """Build the preset's term once per strength, so that bad options fail before any training."""
    from flipless.losses.registry import preset_term

    if name in options:
        raise InputError(
            f"{where}.options sets {name!r}, which is what the grid varies; list it in strengths."
        )
    extra = {"old_head": object()} if method == "bct" else {}  # bct gets the old head at run time
    for value in values:
        try:
            preset_term(method, **options, **extra, **{name: value})
        except InputError as error:
            raise InputError(f"{where}: {error}") from error


@dataclass(frozen=True)
class SweepConfig:
    """A grid of compatible updates over one base config; see the module docstring.

    Attributes:
        base: the settings every point shares. ``base.seed`` fixes the data split and the old
            model; ``base.output_dir`` is not used (each point writes to its own folder).
        methods: the grid's methods; cross-entropy is added when missing.
        seeds: seeds of the new models (initialisation, batch order, ``train.seed``).
        store: the results file (``.jsonl`` or ``.parquet``); its folder is the sweep folder.
        workers: local worker processes (1: the points run in this process).
        backend: ``local`` or ``ray``.
        select: the rule applied to the finished sweep (see :func:`~flipless.sweep.pareto.select_point`).
        cpus_per_point: CPUs a Ray task asks for.
        ray_address: the Ray cluster to join (None: the running instance, or a new local one).
        threads: torch threads per point; default ``max(1, cpus // workers)`` locally and
            ``max(1, int(cpus_per_point))`` on Ray. Small models train fastest with 1.
    """

    base: RunConfig
    methods: tuple[MethodGrid, ...]
    store: str
    seeds: tuple[int, ...] = (0,)
    workers: int = 1
    backend: str = "local"
    select: str = "min-nfr-within:0.005"
    cpus_per_point: float = 1.0
    ray_address: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, RunConfig):
            raise InputError(f"base is {type(self.base).__name__}; expected a RunConfig.")
        methods = tuple(self.methods)
        if not methods or not all(isinstance(m, MethodGrid) for m in methods):
            raise InputError("sweep.methods: expected a non-empty list of MethodGrid entries.")
        names = [m.method for m in methods]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(
                f"sweep.methods lists {repeated} more than once; give each method one entry "
                "with all its strengths."
            )
        if CROSS_ENTROPY not in names:
            methods = (MethodGrid(CROSS_ENTROPY), *methods)
        object.__setattr__(self, "methods", methods)
        seeds = tuple(self.seeds) if isinstance(self.seeds, Sequence) else ()
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise InputError(f"sweep.seeds={self.seeds!r}; expected a list of integers ≥ 0.")
        if len(set(seeds)) != len(seeds):
            raise InputError(f"sweep.seeds={list(seeds)} repeats a seed; list each once.")
        if max(seeds) >= OLD_SEED_OFFSET:
            raise InputError(
                f"sweep.seeds holds {max(seeds)}; seeds lie in [0, 2³¹), below the seeds of old "
                "models trained by flipless (seed + 2³¹), so a new model never starts as the old."
            )
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "store", str(check_store_path(self.store)))
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise InputError(f"sweep.workers={self.workers!r}; expected an integer ≥ 1.")
        if self.backend not in BACKENDS:
            raise InputError(f"sweep.backend={self.backend!r}; expected one of {BACKENDS}.")
        cpus = self.cpus_per_point
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus > 0:
            raise InputError(f"sweep.cpus_per_point={cpus!r}; expected a number > 0.")
        threads = self.threads
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise InputError(
                f"sweep.threads={threads!r}; expected an integer ≥ 1 (or leave it out)."
            )
        from flipless.merge.selection import WeightRule

        WeightRule.parse(self.select)

    @property
    def folder(self) -> Path:
        """The sweep folder: the store's folder, which holds ``points/``, ``sweep.json``, …
        (a URL, a string, for a store at a URL)."""
        return remote.parent_of(self.store)


def check_store_path(store: Any) -> Path | str:
    """The store's path (a URL stays a string), or an InputError unless it ends in ``.jsonl``
    or ``.parquet``."""
    if not isinstance(store, (str, Path)) or not str(store).strip():
        raise InputError(f"sweep.store={store!r}; expected a path ending in .jsonl or .parquet.")
    path = str(store) if remote.is_remote(store) else remote.local_path(store).expanduser()
    if remote.suffix_of(path) not in STORE_SUFFIXES:
        raise InputError(
            f"sweep.store={str(store)!r}; expected a file ending in .jsonl (JSON lines) or "
            ".parquet."
        )
    return path


def base_fingerprint(base: RunConfig) -> tuple[str, dict[str, Any]]:
    """The SHA-256 of what every point shares, and the settings it was computed from.

    Left out: ``output_dir``, ``tracking``, ``train.progress`` and ``train.device`` (where
    and how a run is shown or placed, not what it computes). A given old checkpoint enters by
    the SHA-256 of its file (or of a Hugging Face folder's files), and so does a model's
    ``path`` (an ``hf`` or ``encoder-head`` folder), so replacing either under the same name
    is noticed.
    """
    settings = base.to_dict()
    for key in ("output_dir", "tracking"):
        settings.pop(key)
    for key in ("progress", "device"):
        settings["train"].pop(key)
    if base.old.checkpoint is not None:
        settings["old"]["checkpoint"] = {"sha256": path_sha256(base.old.checkpoint)}
    if base.model.path is not None:
        settings["model"]["path"] = {"sha256": path_sha256(base.model.path)}
    return _digest(settings), settings


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_sweep_config(document: Any, base_dir: Path | None = None) -> SweepConfig:
    """A :class:`SweepConfig` from a parsed TOML/YAML/JSON document.

    Relative paths (the store, ``data.path``, ``old.checkpoint``) are taken from ``base_dir``
    when given. The sweep folder is the store's folder; ``output_dir``, when given, must be it
    (``store`` then defaults to ``<output_dir>/results.jsonl``).
    """
    if not isinstance(document, dict):
        raise InputError(f"the config must be a table of settings; got {type(document).__name__}.")
    document = dict(document)
    sweep = document.pop("sweep", None)
    if not isinstance(sweep, dict):
        raise InputError(
            "sweep: missing or not a table; a sweep config is a run config plus a [sweep] "
            "section with methods, seeds and store."
        )
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise InputError(f"sweep.{unknown[0]}: unknown key; expected some of {SWEEP_KEYS}.")
    loss = document.get("loss", {})
    if isinstance(loss, dict):
        moved = sorted(set(loss) - set(BASE_LOSS_KEYS))
        if moved:
            raise InputError(
                f"loss.{moved[0]}: a sweep takes its losses from sweep.methods; the [loss] "
                f"table holds only {BASE_LOSS_KEYS}. Put preset settings in a method's options."
            )
    store = _store_path(sweep.get("store"), document.get("output_dir"), base_dir)
    document["output_dir"] = str(remote.parent_of(store))
    base = parse_config(document, base=base_dir)
    if "methods" not in sweep:
        raise InputError("sweep.methods: missing; list the methods of the grid.")
    methods = sweep["methods"]
    if not isinstance(methods, list) or not methods:
        raise InputError(
            f"sweep.methods={methods!r}; expected a list of tables "
            '{method = "fd-kl", strengths = [0.5, 1.0]}.'
        )
    grids = []
    for index, entry in enumerate(methods):
        if not isinstance(entry, dict) or "method" not in entry:
            raise InputError(
                f"sweep.methods[{index}]={entry!r}; expected a table with method and strengths."
            )
        extra = sorted(set(entry) - set(METHOD_KEYS))
        if extra:
            raise InputError(
                f"sweep.methods[{index}].{extra[0]}: unknown key; expected some of {METHOD_KEYS}."
            )
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise InputError(f"sweep.methods[{index}].options={options!r}; expected a table.")
        grids.append(MethodGrid(str(entry["method"]), entry.get("strengths", ()), options))
    settings = {key: sweep[key] for key in SWEEP_KEYS if key in sweep and key != "methods"}
    if "seeds" in settings:
        if not isinstance(settings["seeds"], list):
            raise InputError(f"sweep.seeds={settings['seeds']!r}; expected a list of integers.")
        settings["seeds"] = tuple(settings["seeds"])
    for key in ("backend", "select", "ray_address"):
        if key in settings and not isinstance(settings[key], str):
            raise InputError(f"sweep.{key}={settings[key]!r}; expected a string.")
    settings["store"] = str(store)
    return SweepConfig(base=base, methods=tuple(grids), **settings)


def _store_path(store: Any, output_dir: Any, base_dir: Path | None) -> Path | str:
    def resolve(path: Path | str) -> Path | str:
        if remote.is_remote(path):
            return str(path).rstrip("/")
        path = remote.local_path(path).expanduser()
        return (base_dir / path).resolve() if base_dir is not None else path

    if output_dir is not None and not isinstance(output_dir, str):
        raise InputError(f"output_dir: expected a string; got {output_dir!r}.")
    if store is None:
        if output_dir is None:
            raise InputError(
                "sweep.store: missing; say where the results go (e.g. 'runs/sweep/results.jsonl')."
            )
        return remote.join(resolve(output_dir), "results.jsonl")
    path = resolve(check_store_path(store))
    if output_dir is not None and resolve(output_dir) != remote.parent_of(path):
        raise InputError(
            f"output_dir={output_dir!r} but sweep.store={store!r} lies in another folder; the "
            "sweep writes beside its store: drop output_dir, or put the store in it."
        )
    return path


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and check a sweep config file (or URL); relative paths start at its folder."""
    path = remote.as_path(path)
    document = read_document(path)
    try:
        return parse_sweep_config(document, base_dir=config_folder(path).resolve())
    except InputError as error:
        raise InputError(f"{path}: {error}") from error


def with_overrides(
    config: SweepConfig,
    *,
    workers: int | None = None,
    backend: str | None = None,
    store: str | Path | None = None,
) -> SweepConfig:
    """The config with the command line's ``--workers``, ``--backend`` and ``--store``."""
    changes: dict[str, Any] = {}
    if workers is not None:
        changes["workers"] = workers
    if backend is not None:
        changes["backend"] = backend
    if store is not None:
        path = check_store_path(store)
        changes["store"] = str(path if isinstance(path, str) else path.resolve())
    return dataclasses.replace(config, **changes) if changes else config
