"""A sweep of encoder-head models over a CSV of texts encodes every text once, for all points,
and with init = "old" BCWI mixes the old head with a head trained from it."""

from __future__ import annotations

import csv
import tomllib

import pytest
import torch

transformers = pytest.importorskip("transformers")

from flipless.errors import FliplessError  # noqa: E402
from flipless.models import encoder_head as module  # noqa: E402
from flipless.models import load_model  # noqa: E402
from flipless.sweep.config import parse_sweep_config  # noqa: E402
from flipless.sweep.runner import run_sweep  # noqa: E402
from flipless.sweep.workspace import OLD_MODEL  # noqa: E402

WORDS = ["card", "lost", "stolen", "password", "reset", "money", "send", "fee", "refund", "my"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
INTENTS = {
    "card": ["card", "lost", "stolen"],
    "password": ["password", "reset"],
    "money": ["money", "send", "fee", "refund"],
}

BASE = """
seed = 0

[data]
name = "table"
path = "{csv}"
old_fraction = 0.5

[model]
name = "encoder-head"
path = "{encoder}"
hidden = [6]
cache_dir = "{cache}"
init = "old"

[old]
train_epochs = 2

[optimizer]
lr = 0.01

[train]
epochs = 2
batch_size = 8
progress = "none"

[sweep]
store = "{store}"
seeds = [0, 1]
threads = 1
methods = [{{ method = "fd-kl", strengths = [1.0] }}, {{ method = "bcwi", strengths = [0.5] }}]
"""


@pytest.fixture
def texts_and_encoder(tmp_path, tiny_bert):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    transformers.BertTokenizerFast.from_pretrained(encoder).save_pretrained(encoder)
    tiny_bert(len(SPECIAL) + len(WORDS), 16, 2).bert.save_pretrained(encoder)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for number in range(48):
        label = list(INTENTS)[number % 3]
        words = INTENTS[label] + ["my"]
        picks = torch.randint(len(words), (3,), generator=generator).tolist()
        text = " ".join(words[p] for p in picks) + f" {number}"  # every text distinct
        rows.append({"text": text, "label": label, "split": "test" if number >= 36 else "train"})
    path = tmp_path / "texts.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path, encoder, [row["text"] for row in rows]


def test_a_sweep_encodes_every_text_once(tmp_path, texts_and_encoder, monkeypatch):
    path, encoder, texts = texts_and_encoder
    encoded: list[str] = []
    encode = module._encode

    def counting(model, batch, device):
        encoded.extend(batch)
        return encode(model, batch, device)

    monkeypatch.setattr(module, "_encode", counting)
    module._text_cache.cache_clear()
    document = tomllib.loads(
        BASE.format(
            csv=path, encoder=encoder, cache=tmp_path / "cache", store=tmp_path / "s/results.jsonl"
        )
    )
    sweep = parse_sweep_config(document)
    outcome = run_sweep(sweep, quiet=True)
    assert len(outcome.records) == 6 and not outcome.failed
    assert sorted(encoded) == sorted(texts)  # 48 texts, one pass, for the old model and 6 points
    module._text_cache.cache_clear()
    # BCWI at ½ is the mean of the old head and the cross-entropy head trained from it
    old = load_model(sweep.folder / OLD_MODEL)
    records = {record["point_id"]: record for record in outcome.records}
    ce = load_model(sweep.folder / records["cross-entropy/seed=0"]["model_path"])
    bcwi = load_model(sweep.folder / records["bcwi/old_weight=0.5/seed=0"]["model_path"])
    for name, value in bcwi.state_dict().items():
        expected = 0.5 * old.state_dict()[name] + 0.5 * ce.state_dict()[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)
    assert not torch.equal(ce.head.weight, old.head.weight)
    assert len(encoded) == len(texts)  # reading the models back encoded nothing
    # the encoder folder is part of the sweep's fingerprint: changed, the store is refused
    again = parse_sweep_config(document)
    assert run_sweep(again, quiet=True).ran == []
    (encoder / "notes.txt").write_text("changed")
    with pytest.raises(FliplessError, match=r"base config differs .* \(changed: model.path"):
        run_sweep(parse_sweep_config(document), quiet=True)
