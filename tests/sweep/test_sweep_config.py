"""Sweep configs: keys and values checked, the grid's points, ids, run configs and fingerprints."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from flipless.errors import FileFormatError, InputError
from flipless.sweep.config import (
    MethodGrid,
    SweepConfig,
    base_fingerprint,
    load_sweep_config,
    parse_sweep_config,
    with_overrides,
)
from flipless.sweep.grid import point_config, sweep_points
from flipless.train.config import parse_config

TOML = """
seed = 3

[data]
name = "digits"

[model]
name = "mlp"
hidden = [16]

[old]
train_epochs = 2

[loss]
teacher = "cached"

[train]
epochs = 2
progress = "none"

[sweep]
store = "runs/s/results.jsonl"
seeds = [0, 1]
workers = 2

[[sweep.methods]]
method = "fd-kl"
strengths = [0.5, 2]
options = { temperature = 10 }

[[sweep.methods]]
method = "ldi"
strengths = [0.25]

[[sweep.methods]]
method = "bcwi"
strengths = [0.3]
"""

YAML = """
seed: 3
data: {name: digits}
model: {name: mlp, hidden: [16]}
old: {train_epochs: 2}
loss: {teacher: cached}
train: {epochs: 2, progress: none}
sweep:
  store: runs/s/results.jsonl
  seeds: [0, 1]
  workers: 2
  methods:
    - {method: fd-kl, strengths: [0.5, 2], options: {temperature: 10}}
    - {method: ldi, strengths: [0.25]}
    - {method: bcwi, strengths: [0.3]}
"""


def document(**changes):
    """The TOML example as a dict, with top-level or sweep keys changed (None removes)."""
    value = tomllib.loads(TOML)
    for key, new in changes.items():
        table, _, name = key.rpartition(".")
        target = value[table] if table else value
        if new is None:
            target.pop(name, None)
        else:
            target[name] = new
    return value


def test_toml_and_yaml_give_the_same_checked_config(tmp_path):
    (tmp_path / "s.toml").write_text(TOML)
    (tmp_path / "s.yaml").write_text(YAML)
    config = load_sweep_config(tmp_path / "s.toml")
    assert load_sweep_config(tmp_path / "s.yaml") == config
    assert config.store == str(tmp_path.resolve() / "runs/s/results.jsonl")
    assert config.folder == tmp_path.resolve() / "runs/s"
    assert config.base.output_dir == str(config.folder)
    assert config.base.seed == 3 and config.seeds == (0, 1) and config.workers == 2
    assert config.base.loss.teacher == "cached"
    # cross-entropy is added first; strengths become floats
    assert [grid.method for grid in config.methods] == ["cross-entropy", "fd-kl", "ldi", "bcwi"]
    assert config.methods[1].strengths == (0.5, 2.0)
    assert [grid.strength_name for grid in config.methods] == [
        "weight",
        "weight",
        "mix",
        "old_weight",
    ]
    assert [grid.kind for grid in config.methods] == ["loss", "loss", "loss", "interpolation"]


def test_the_grid_has_one_point_per_method_strength_and_seed():
    config = parse_sweep_config(document(), base_dir=Path("/sweeps"))
    points = sweep_points(config)
    assert [point.point_id for point in points] == [
        "cross-entropy/seed=0",
        "cross-entropy/seed=1",
        "fd-kl/weight=0.5/seed=0",
        "fd-kl/weight=0.5/seed=1",
        "fd-kl/weight=2.0/seed=0",
        "fd-kl/weight=2.0/seed=1",
        "ldi/mix=0.25/seed=0",
        "ldi/mix=0.25/seed=1",
        "bcwi/old_weight=0.3/seed=0",
        "bcwi/old_weight=0.3/seed=1",
    ]
    assert points[2].safe_id == "fd-kl__weight=0.5__seed=0"
    assert points[0].strength is None and points[0].depends_on is None
    assert points[8].depends_on == "cross-entropy/seed=0"
    assert points[9].depends_on == "cross-entropy/seed=1"


def test_a_point_config_keeps_the_data_seed_and_sets_the_rest():
    config = parse_sweep_config(document(), base_dir=Path("/sweeps"))
    points = {point.point_id: point for point in sweep_points(config)}
    folder, old = Path("/sweeps/runs/s"), Path("/sweeps/runs/s/old.safetensors")
    fd = point_config(config.base, points["fd-kl/weight=2.0/seed=1"], folder, old)
    assert fd.seed == 3  # the data split: the same for every point
    assert fd.train.seed == 1 and fd.train.epochs == 2 and fd.train.progress == "none"
    assert fd.loss.preset == "fd-kl" and fd.loss.teacher == "cached"
    assert fd.loss.overrides == {"temperature": 10, "weight": 2.0}
    assert fd.old.checkpoint == str(old) and fd.old.train_epochs is None
    assert fd.output_dir == "/sweeps/runs/s/points/fd-kl__weight=2.0__seed=1"
    ldi = point_config(config.base, points["ldi/mix=0.25/seed=0"], folder, old)
    assert ldi.loss.overrides == {"mix": 0.25}
    bcwi = point_config(config.base, points["bcwi/old_weight=0.3/seed=0"], folder, old)
    assert bcwi.loss.preset == "cross-entropy" and bcwi.loss.overrides == {}
    assert bcwi.train.seed == 0


def test_the_fingerprint_ignores_display_and_place_but_not_what_is_computed(tmp_path):
    config = parse_sweep_config(document(), base_dir=tmp_path)
    fingerprint, settings = base_fingerprint(config.base)
    assert "output_dir" not in settings and "tracking" not in settings
    same = dataclasses.replace(
        config.base,
        output_dir="/elsewhere",
        train=dataclasses.replace(config.base.train, progress="bar", device="cpu"),
    )
    assert base_fingerprint(same)[0] == fingerprint
    longer = dataclasses.replace(
        config.base, train=dataclasses.replace(config.base.train, epochs=3)
    )
    assert base_fingerprint(longer)[0] != fingerprint
    # a given old checkpoint enters by its content
    checkpoint = tmp_path / "old.safetensors"
    checkpoint.write_bytes(b"one")
    given = parse_config({"output_dir": "x", "old": {"checkpoint": str(checkpoint)}}, base=tmp_path)
    before = base_fingerprint(given)[0]
    checkpoint.write_bytes(b"two")
    assert base_fingerprint(given)[0] != before


def test_store_and_output_dir():
    no_store = document(**{"sweep.store": None, "output_dir": "runs/x"})
    config = parse_sweep_config(no_store, base_dir=Path("/s"))
    assert config.store == "/s/runs/x/results.jsonl"
    agreeing = document(**{"sweep.store": "runs/x/r.parquet", "output_dir": "runs/x"})
    assert parse_sweep_config(agreeing, base_dir=Path("/s")).store == "/s/runs/x/r.parquet"
    with pytest.raises(InputError, match="lies in another folder"):
        parse_sweep_config(document(output_dir="runs/y"), base_dir=Path("/s"))
    with pytest.raises(InputError, match=r"sweep.store: missing"):
        parse_sweep_config(document(**{"sweep.store": None}))
    with pytest.raises(InputError, match=r"\.jsonl .* or \.parquet"):
        parse_sweep_config(document(**{"sweep.store": "r.csv"}))


def test_overrides_from_the_command_line(tmp_path):
    config = parse_sweep_config(document(), base_dir=tmp_path)
    changed = with_overrides(config, workers=1, backend="ray", store=tmp_path / "o/r.parquet")
    assert (changed.workers, changed.backend) == (1, "ray")
    assert changed.store == str(tmp_path / "o/r.parquet")
    assert with_overrides(config) is config
    with pytest.raises(InputError, match=r"sweep.backend='spark'; expected one of"):
        with_overrides(config, backend="spark")
    with pytest.raises(InputError, match=r"sweep.workers=0; expected an integer ≥ 1"):
        with_overrides(config, workers=0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sweep": None}, r"sweep: missing or not a table"),
        ({"sweep.method": "x"}, r"sweep.method: unknown key"),
        ({"sweep.methods": None}, r"sweep.methods: missing"),
        ({"sweep.methods": []}, r"sweep.methods=\[\]; expected a list of tables"),
        ({"sweep.methods": [{"strengths": [1]}]}, r"expected a table with method"),
        ({"sweep.methods": [{"method": "fd-kl", "strength": [1]}]}, r"\.strength: unknown key"),
        ({"sweep.methods": [{"method": "fd-kl"}]}, r"strengths is empty; give at least one weight"),
        ({"sweep.methods": [{"method": "focal"}]}, r"unknown method 'focal'; expected"),
        (
            {"sweep.methods": [{"method": "ldi", "strengths": [1.5]}]},
            r"1.5; mix values lie in \[0, 1\]",
        ),
        (
            {"sweep.methods": [{"method": "bcwi", "strengths": [-0.1]}]},
            r"-0.1; old_weight values lie in",
        ),
        ({"sweep.methods": [{"method": "fd-kl", "strengths": [-1]}]}, r"a weight λ is ≥ 0"),
        ({"sweep.methods": [{"method": "fd-kl", "strengths": [1, 1.0]}]}, r"repeats a value"),
        ({"sweep.methods": [{"method": "fd-kl", "strengths": ["1"]}]}, r"expected finite numbers"),
        (
            {"sweep.methods": [{"method": "cross-entropy", "strengths": [1]}]},
            r"plain cross-entropy has no strength",
        ),
        (
            {"sweep.methods": [{"method": "bcwi", "strengths": [0.5], "options": {"a": 1}}]},
            r"interpolation methods take no options",
        ),
        (
            {
                "sweep.methods": [
                    {"method": "ldi", "strengths": [0.5], "options": {"temperature": 2}}
                ]
            },
            r"sweep.methods\[ldi\]: Loss 'ldi' has no setting 'temperature'",
        ),
        (
            {"sweep.methods": [{"method": "fd-kl", "strengths": [1], "options": {"weight": 2}}]},
            r"sets 'weight', which is what the grid varies",
        ),
        (
            {"sweep.methods": [{"method": "fd-kl", "strengths": [1]}] * 2},
            r"lists \['fd-kl'\] more than once",
        ),
        ({"sweep.seeds": []}, r"sweep.seeds=\(\); expected a list of integers ≥ 0"),
        ({"sweep.seeds": [0, -1]}, r"expected a list of integers ≥ 0"),
        ({"sweep.seeds": [1, 1]}, r"repeats a seed"),
        ({"sweep.seeds": 3}, r"sweep.seeds=3; expected a list"),
        ({"sweep.select": "best"}, r"selection rule 'best' is unknown"),
        ({"sweep.cpus_per_point": 0}, r"cpus_per_point=0; expected a number > 0"),
        ({"sweep.threads": 0}, r"sweep.threads=0; expected an integer ≥ 1"),
        ({"sweep.backend": 1}, r"sweep.backend=1; expected a string"),
        (
            {"loss": {"preset": "fd-kl"}},
            r"loss.preset: a sweep takes its losses from sweep.methods",
        ),
        ({"train": {"epochs": "two"}}, r"train.epochs: expected an integer"),
    ],
)
def test_bad_configs_name_the_key(changes, message):
    with pytest.raises(InputError, match=message):
        parse_sweep_config(document(**changes))


def test_bct_options_are_checked_without_an_old_model():
    grid = MethodGrid("bct", (0.5, 1.0))
    assert grid.strength_name == "weight" and grid.options == {}
    with pytest.raises(InputError, match=r"Loss 'bct' has no setting 'margin'"):
        MethodGrid("bct", (1.0,), {"margin": 1})


def test_python_definition_checks_its_fields(tmp_path):
    base = parse_config({"output_dir": "x", "old": {"train_epochs": 1}})
    config = SweepConfig(base, (MethodGrid("bcwi", (0.5,)),), str(tmp_path / "r.jsonl"))
    assert [grid.method for grid in config.methods] == ["cross-entropy", "bcwi"]
    with pytest.raises(InputError, match="expected a RunConfig"):
        SweepConfig({"output_dir": "x"}, (MethodGrid("bcwi", (0.5,)),), "r.jsonl")
    with pytest.raises(InputError, match="non-empty list of MethodGrid"):
        SweepConfig(base, (), "r.jsonl")


def test_unreadable_files(tmp_path):
    with pytest.raises(FileFormatError, match="no config file"):
        load_sweep_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("seed = [")
    with pytest.raises(FileFormatError, match="is not valid TOML"):
        load_sweep_config(tmp_path / "bad.toml")
    (tmp_path / "s.ini").write_text("x")
    with pytest.raises(FileFormatError, match=r"unknown config format '\.ini'"):
        load_sweep_config(tmp_path / "s.ini")
    (tmp_path / "wrong.toml").write_text(TOML.replace('method = "ldi"', 'method = "ld"'))
    with pytest.raises(InputError, match=r"wrong.toml: sweep.methods: unknown method 'ld'"):
        load_sweep_config(tmp_path / "wrong.toml")
