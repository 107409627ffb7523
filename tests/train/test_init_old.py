"""`flipless train` with `[model] init = "old"` and old models from a user's target."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flipless.cli import app
from flipless.models import MLP, load_model
from flipless.models.sources import OLD_SEED_OFFSET, source_class_names

CONFIG = """
seed = 0
output_dir = "run"

[data]
name = "digits"
old_fraction = 0.3

[model]
name = "mlp"
hidden = [8]
init = "{init}"

[old]
{old}

[optimizer]
name = "sgd"
lr = {lr}

[train]
epochs = 1
batch_size = 256
progress = "none"
"""


#: A learning rate so small that training moves no weight by more than ATOL: the kept model is
#: its starting point (a learning rate of 0 is refused).
TINY_LR = 1e-12
ATOL = 1e-9


def train(tmp_path, init: str, old: str, lr: float = TINY_LR):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "run.toml").write_text(CONFIG.format(init=init, old=old, lr=lr))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "run.toml")])
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def same_weights(first, second, atol: float = 0.0) -> bool:
    """Whether two models have the same tensors, to ``atol`` (0: bit for bit)."""
    one, two = first.state_dict(), second.state_dict()
    return one.keys() == two.keys() and all(
        bool((one[k] - two[k]).abs().max() <= atol) for k in one
    )


@pytest.mark.slow
def test_init_old_starts_the_new_model_from_the_old_weights(tmp_path):
    # at a tiny learning rate the kept model is its starting point
    out = train(tmp_path / "old", "old", "train_epochs = 1")
    old, new = load_model(out / "old.safetensors"), load_model(out / "model.safetensors")
    assert same_weights(old, new, ATOL)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["negative_flip_rate"] == 0.0
    assert summary["test"]["accuracy_new"] == summary["test"]["accuracy_old"]
    digits = [str(digit) for digit in range(10)]
    assert source_class_names(out / "old.safetensors") == tuple(digits)
    assert source_class_names(out / "model.safetensors") == tuple(digits)
    # at a tiny learning rate both models stay at their initialisation: the old one was seeded
    # with seed + 2³¹, a new one from scratch with the seed itself, so the two never coincide
    scratch = train(tmp_path / "scratch", "scratch", "train_epochs = 1")
    torch.manual_seed(OLD_SEED_OFFSET)
    old_start = MLP(64, 10, hidden=(8,))
    torch.manual_seed(0)
    new_start = MLP(64, 10, hidden=(8,))
    assert same_weights(load_model(scratch / "old.safetensors"), old_start, ATOL)
    assert same_weights(load_model(scratch / "model.safetensors"), new_start, ATOL)
    assert not same_weights(
        load_model(scratch / "old.safetensors"), load_model(scratch / "model.safetensors"), 0.01
    )


def test_an_old_model_from_a_target_function(tmp_path, monkeypatch):
    (tmp_path / "my_old_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from flipless.models import MLP

            def make_old(width):
                torch.manual_seed(11)
                return MLP(64, 10, hidden=(width,))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    old = 'target = "my_old_models:make_old"\nargs = { width = 8 }'
    out = train(tmp_path, "old", old)
    torch.manual_seed(11)
    expected = MLP(64, 10, hidden=(8,))
    assert same_weights(load_model(out / "model.safetensors"), expected, ATOL)


@pytest.mark.parametrize(
    ("old", "message"),
    [
        ('target = "m:f"\ntrain_epochs = 1', r"either checkpoint or train_epochs, or a target"),
        ("", r"set old.checkpoint .* old.target"),
    ],
)
def test_old_sources_are_checked(tmp_path, old, message):
    (tmp_path / "run.toml").write_text(CONFIG.format(init="old", old=old, lr=0.1))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "run.toml")])
    assert result.exit_code == 2
    assert re.search(message, " ".join(result.output.split())), result.output


def test_model_paths_start_at_the_config_folder(tmp_path):
    from flipless.train.config import parse_config

    document = {
        "output_dir": "out",
        "model": {"name": "encoder-head", "path": "enc", "cache_dir": "features", "init": "old"},
        "old": {"checkpoint": "~/old.safetensors"},
    }
    config = parse_config(document, base=tmp_path)
    assert config.model.path == str(tmp_path / "enc")
    assert config.model.settings == {"cache_dir": str(tmp_path / "features")}
    assert config.model.init == "old" and config.old.checkpoint == str(
        Path.home() / "old.safetensors"
    )


@pytest.mark.slow
def test_fine_tuning_a_hf_folder_that_knew_fewer_classes(tmp_path, tiny_bert):
    transformers = pytest.importorskip("transformers")
    words = ["card", "lost", "stolen", "password", "reset", "money", "send", "fee", "my"]
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(special + words) + "\n")
    transformers.BertTokenizerFast.from_pretrained(folder).save_pretrained(folder)
    old = tiny_bert(len(special) + len(words), 16, 2)
    old.config.id2label = {0: "password", 1: "card"}  # the old model's classes, by name
    old.save_pretrained(folder)
    intents = {
        "card": "my card lost stolen",
        "password": "reset my password",
        "money": "send money fee",
    }
    rows = ["text,label,split"] + [
        f"{text} {'my ' * (n % 4)},{label},{'test' if n >= 8 else 'train'}"
        for n in range(12)
        for label, text in intents.items()
    ]
    (tmp_path / "texts.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "run.toml").write_text(
        textwrap.dedent(
            f"""
            output_dir = "out"
            [data]
            name = "table"
            path = "texts.csv"
            [model]
            name = "hf"
            path = "bert"
            init = "old"
            [old]
            checkpoint = "bert"
            [loss]
            preset = "fd-kl"
            [optimizer]
            lr = {TINY_LR}
            [train]
            epochs = 1
            batch_size = 8
            progress = "none"
            """
        )
    )
    result = CliRunner().invoke(app, ["train", str(tmp_path / "run.toml")])
    assert result.exit_code == 0, result.output
    new = load_model(tmp_path / "out" / "model.safetensors")
    assert source_class_names(tmp_path / "out" / "model.safetensors") == (
        "card",
        "money",
        "password",
    )
    head = old.classifier.weight
    assert torch.allclose(new.head.weight[0], head[1], rtol=0, atol=ATOL)  # card: old row 1
    assert torch.allclose(new.head.weight[2], head[0], rtol=0, atol=ATOL)  # password: old row 0
    assert new.head.weight.shape == (3, 16)
