"""Tests of the layer presets of flipless.continual.importance (BERT, DistilBERT and LoRA
spellings, on tiny randomly initialised transformers models) and of the self-KL proxy loss
(checked against a hand computation in float64 with the same seeded dropout mask)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

transformers = pytest.importorskip("transformers")

from flipless.continual import (  # noqa: E402
    LAYER_PRESETS,
    SoftMask,
    SoftMasker,
    compute_importance,
    select_layers,
    self_kl_loss,
)
from flipless.continual.importance import resolve_layers  # noqa: E402
from flipless.errors import InputError  # noqa: E402
from flipless.train import MLP, LabeledData  # noqa: E402

VOCAB, LENGTH, CLASSES = 40, 8, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_distilbert(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB,
        dim=16,
        n_layers=2,
        n_heads=2,
        hidden_dim=24,
        max_position_embeddings=LENGTH,
        num_labels=CLASSES,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return transformers.DistilBertForSequenceClassification(config)


class TokenData(Dataset):
    """Random token ids with labels, as dict samples (``inputs`` are what the model takes)."""

    def __init__(self, count: int = 12, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(VOCAB, (count, LENGTH), generator=generator)
        self.labels = torch.randint(CLASSES, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.tokens[index], "labels": self.labels[index]}


def bert_names(layers: int, *suffixes: str) -> set[str]:
    return {f"bert.encoder.layer.{i}.{suffix}" for i in range(layers) for suffix in suffixes}


BERT_ATTENTION = ("attention.self.query", "attention.self.key", "attention.self.value")
BERT_ATTENTION += ("attention.output.dense",)
BERT_FEED_FORWARD = ("intermediate.dense", "output.dense")


# --------------------------------------------------------------------------- presets


def test_bert_presets_select_exactly_the_encoder_projections(tiny_bert) -> None:
    model = tiny_bert(VOCAB, LENGTH, CLASSES)
    attention = select_layers(model, preset="hf-attention")
    feed_forward = select_layers(model, preset="hf-feed-forward")
    encoder = select_layers(model, preset="hf-encoder")
    assert set(attention) == bert_names(2, *BERT_ATTENTION)
    assert set(feed_forward) == bert_names(2, *BERT_FEED_FORWARD)
    assert "bert.encoder.layer.0.attention.output.dense" not in feed_forward
    assert set(encoder) == set(attention) | set(feed_forward)
    assert len(encoder) == 12  # 6 projections × 2 layers; not the pooler nor the classifier
    modules = dict(model.named_modules())
    for name, module in encoder.items():
        assert module is modules[name]
    # resolve_layers (what compute_importance and SoftMasker use) reads the preset names
    assert set(resolve_layers(model, "hf-attention")) == set(attention)
    assert sorted(SoftMasker(model, layers="hf-encoder").layer_names) == sorted(encoder)


def test_distilbert_presets_select_its_spelling() -> None:
    model = tiny_distilbert()
    prefix = "distilbert.transformer.layer"
    attention = {f"{prefix}.{i}.attention.{p}" for i in range(2) for p in ("q_lin", "k_lin")}
    attention |= {f"{prefix}.{i}.attention.{p}" for i in range(2) for p in ("v_lin", "out_lin")}
    feed_forward = {f"{prefix}.{i}.ffn.{p}" for i in range(2) for p in ("lin1", "lin2")}
    assert set(select_layers(model, preset="hf-attention")) == attention
    assert set(select_layers(model, preset="hf-feed-forward")) == feed_forward
    assert set(select_layers(model, preset="hf-encoder")) == attention | feed_forward


def test_presets_reject_bad_arguments(tiny_bert) -> None:
    with pytest.raises(InputError, match="no layer of MLP matches preset 'lora'"):
        select_layers(MLP(4, 3, hidden=(5,)), preset="lora")
    with pytest.raises(InputError, match="no layer of BertForSequenceClassification matches"):
        compute_importance(tiny_bert(VOCAB, LENGTH, CLASSES), TokenData(), "lora")
    with pytest.raises(InputError, match="give names or preset, not both"):
        select_layers(tiny_bert(VOCAB, LENGTH, CLASSES), names="bert.*", preset="hf-attention")
    with pytest.raises(InputError, match=r"preset='hf-decoder'; expected one of \['hf-attention'"):
        select_layers(tiny_bert(VOCAB, LENGTH, CLASSES), preset="hf-decoder")
    assert set(LAYER_PRESETS) == {"hf-attention", "hf-feed-forward", "hf-encoder", "lora"}


# --------------------------------------------------------------------------- LoRA


@pytest.fixture
def lora_bert(tiny_bert) -> nn.Module:
    """The tiny BERT with LoRA adapters (r = 2) on query and value; lora_B, zero at creation,
    is drawn at random to stand for a trained adapter (a zero B gives A and B zero gradients,
    so zero importance)."""
    peft = pytest.importorskip("peft")
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        model = peft.get_peft_model(
            tiny_bert(VOCAB, LENGTH, CLASSES),
            peft.LoraConfig(r=2, target_modules=["query", "value"]),
        )
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model


def lora_names(kind: str) -> set[str]:
    prefix = "base_model.model.bert.encoder.layer"
    return {
        f"{prefix}.{i}.attention.self.{target}.lora_{kind}.default"
        for i in range(2)
        for target in ("query", "value")
    }


def test_lora_preset_selects_exactly_the_adapter_layers(lora_bert) -> None:
    selected = select_layers(lora_bert, preset="lora")
    assert set(selected) == lora_names("A") | lora_names("B")
    for name, module in selected.items():
        assert type(module) is nn.Linear
        expected = (2, 16) if ".lora_A." in name else (16, 2)
        assert tuple(module.weight.shape) == expected


def test_lora_importance_is_bounded_and_informative(lora_bert) -> None:
    importance = compute_importance(lora_bert, TokenData(), "lora", batch_size=4)
    assert set(importance) == lora_names("A") | lora_names("B")
    for name, values in importance.items():
        assert values.shape == ((2,) if ".lora_A." in name else (16,))
        assert bool(torch.isfinite(values).all())
        assert bool(((values >= 0) & (values <= 1)).all())
    assert max(float(values.max()) for values in importance.values()) > 0.5


def test_update_mode_keeps_lora_a_fixed_under_adamw_while_lora_b_trains(lora_bert) -> None:
    importance = {name: torch.ones(2) for name in lora_names("A")}
    importance |= {name: torch.zeros(16) for name in lora_names("B")}
    mask = SoftMask(importance, mode="update")
    trainable = [p for p in lora_bert.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.05, weight_decay=0.1)
    mask.bind(lora_bert)
    mask.attach(optimizer)
    before = {name: p.detach().clone() for name, p in lora_bert.named_parameters()}
    data = TokenData()
    lora_bert.train()
    for _ in range(3):
        optimizer.zero_grad()
        loss = lora_bert(input_ids=data.tokens, labels=data.labels).loss
        loss.backward()
        mask.before_optimizer_step()
        optimizer.step()
    assert mask.steps == 3
    after = dict(lora_bert.named_parameters())
    lora_a = [n for n in before if ".lora_A." in n]
    lora_b = [n for n in before if ".lora_B." in n]
    assert len(lora_a) == len(lora_b) == 4
    for name in lora_a:
        assert after[name].grad is not None and bool(after[name].grad.abs().sum() > 0)
        assert torch.equal(after[name], before[name])
    for name in lora_b:
        assert not torch.allclose(after[name], before[name])


# --------------------------------------------------------------------------- self-KL


def _data(count: int = 20, seed: int = 0) -> LabeledData:
    generator = torch.Generator().manual_seed(seed)
    return LabeledData(
        inputs=torch.randn(count, 4, generator=generator, dtype=torch.float64),
        labels=torch.arange(count) % CLASSES,
        ids=torch.arange(count),
        class_names=tuple(str(c) for c in range(CLASSES)),
    )


def _dropout_model(p: float = 0.5, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(p), nn.Linear(6, CLASSES)).double()


def test_self_kl_importance_is_seeded_and_leaves_the_global_generator_alone() -> None:
    model, data = _dropout_model().train(), _data()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = compute_importance(model, data, loss="self-kl", seed=1, batch_size=8)
    assert torch.equal(torch.get_rng_state(), state)
    again = compute_importance(model, data, loss="self-kl", seed=1, batch_size=8)
    other = compute_importance(model, data, loss="self-kl", seed=2, batch_size=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert set(first) == {"0", "3"}
    for name in first:
        assert torch.equal(first[name], again[name])
        assert bool(((first[name] >= 0) & (first[name] <= 1)).all())
    assert any(not torch.allclose(first[n], other[n]) for n in first)
    assert max(float(values.max()) for values in first.values()) > 0.5
    assert all(module.training for module in model.modules())  # train mode restored


def test_self_kl_needs_active_dropout(tiny_bert) -> None:
    with pytest.raises(InputError, match="loss='self-kl' needs dropout"):
        compute_importance(MLP(4, 3, hidden=(5,)).double(), _data(), loss="self-kl")
    # dropout layers with p = 0 perturb nothing: KL is exactly 0 and its gradient is rounding
    # noise (~1e-18) that standardisation would blow up to importances near 1, so it is refused
    with pytest.raises(InputError, match="loss='self-kl' needs dropout"):
        compute_importance(_dropout_model(p=0.0), _data(), loss="self-kl")
    with pytest.raises(InputError, match="loss='self-kl' needs dropout"):
        compute_importance(
            tiny_bert(VOCAB, LENGTH, CLASSES), TokenData(), "hf-encoder", loss="self-kl"
        )


def test_self_kl_activates_the_functional_attention_dropout_of_bert(tiny_bert) -> None:
    """BERT applies attention dropout functionally, ``dropout=p if self.training else 0``: with
    no other dropout, the loss must switch the attention modules to train mode, or the KL is
    exactly 0 and the importance standardised rounding noise (the same for every seed)."""
    torch.manual_seed(0)
    config = tiny_bert(VOCAB, LENGTH, CLASSES).config
    config.attention_probs_dropout_prob = 0.3
    model = transformers.BertForSequenceClassification(config).eval()
    data = TokenData()
    torch.manual_seed(5)
    assert self_kl_loss(model)(model, {"inputs": data.tokens}).item() > 0
    model.eval()  # the bare loss leaves the model in train mode; compute_importance restores it
    first = compute_importance(model, data, "hf-attention", loss="self-kl", seed=1)
    again = compute_importance(model, data, "hf-attention", loss="self-kl", seed=1)
    other = compute_importance(model, data, "hf-attention", loss="self-kl", seed=2)
    assert not model.training and not any(m.training for m in model.modules())
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert all(not torch.allclose(first[name], other[name]) for name in first)


def test_self_kl_keeps_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, CLASSES)
    ).double()
    with torch.no_grad():
        model[1].running_mean.fill_(0.25)
        model[1].running_var.fill_(2.0)
    state = copy.deepcopy(model.state_dict())
    importance = compute_importance(model, _data(), loss="self-kl")
    assert set(importance) == {"0", "4"}
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name  # num_batches_tracked included


def _kl_by_hand(target_logits: np.ndarray, logits: np.ndarray) -> float:
    """mean_i Σ_c q_ic (log q_ic − log p_ic), q = softmax(target), p = softmax(logits)."""

    def log_softmax(values: np.ndarray) -> np.ndarray:
        shifted = values - values.max(1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))

    log_q, log_p = log_softmax(target_logits), log_softmax(logits)
    return float((np.exp(log_q) * (log_q - log_p)).sum(1).mean())


def _forward_by_hand(model: nn.Sequential, inputs: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Linear → ReLU → (× dropout scale ``keep``) → Linear, in numpy."""
    first, last = model[0], model[3]
    hidden = np.maximum(inputs @ first.weight.detach().numpy().T + first.bias.detach().numpy(), 0)
    return (hidden * keep) @ last.weight.detach().numpy().T + last.bias.detach().numpy()


def test_self_kl_loss_equals_the_hand_computation_for_a_seeded_dropout_draw() -> None:
    model, data = _dropout_model(p=0.5).eval(), _data(count=6)
    loss = self_kl_loss(model)
    batch = {"inputs": data.inputs, "labels": data.labels}
    torch.manual_seed(11)
    value = loss(model, batch)
    assert value.dtype == torch.float64
    assert model.training  # the loss runs the model in train mode (its dropout active)
    # the same seed redraws the same mask: F.dropout of ones gives 0 or 1 / (1 − p) where the
    # model's dropout kept a unit (the frozen copy runs in eval mode and draws nothing)
    torch.manual_seed(11)
    keep = torch.nn.functional.dropout(torch.ones(6, 6, dtype=torch.float64), 0.5, True).numpy()
    assert set(np.unique(keep)) == {0.0, 2.0}
    inputs = data.inputs.numpy()
    expected = _kl_by_hand(
        _forward_by_hand(model, inputs, np.ones_like(keep)), _forward_by_hand(model, inputs, keep)
    )
    assert expected > 1e-3
    np.testing.assert_allclose(value.item(), expected, rtol=1e-12)


def test_self_kl_target_is_a_frozen_copy() -> None:
    model, data = _dropout_model(p=0.5), _data(count=6)
    original = copy.deepcopy(model)
    loss = self_kl_loss(model)
    batch = {"inputs": data.inputs, "labels": data.labels}
    model[2].p = 0.0  # no perturbation: the model equals its frozen copy, KL exactly 0
    assert loss(model, batch).item() == 0.0
    with torch.no_grad():  # the model moves on; the target stays the model as it was
        model[3].weight[0].add_(0.5)  # one class's row (all rows would shift no softmax)
    inputs, ones = data.inputs.numpy(), np.ones((6, 6))
    expected = _kl_by_hand(
        _forward_by_hand(original, inputs, ones), _forward_by_hand(model, inputs, ones)
    )
    assert expected > 1e-3
    np.testing.assert_allclose(loss(model, batch).item(), expected, rtol=1e-12)
    # and the gradient reaches the model's parameters, not the frozen copy's
    loss(model, batch).backward()
    assert model[3].weight.grad is not None and bool(model[3].weight.grad.abs().sum() > 0)
