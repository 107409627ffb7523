"""Tests of flipless.merge.fisher: the diagonal Fisher against loops written by hand."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from flipless.data.labeled import LabeledData
from flipless.errors import FileFormatError, InputError
from flipless.merge.fisher import (
    FISHER_FORMAT,
    FisherDiagonal,
    align_fisher_names,
    fisher_diagonal,
    load_fisher,
    save_fisher,
)
from flipless.merge.interpolate import interpolate
from flipless.models import MLP, SmallCNN

CLASSES = ("a", "b", "c")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest (two contend on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data64(n: int = 10, shape: tuple[int, ...] = (4,), seed: int = 0) -> LabeledData:
    generator = torch.Generator().manual_seed(seed)
    return LabeledData(
        inputs=torch.randn(n, *shape, generator=generator, dtype=torch.float64),
        labels=torch.randint(0, 3, (n,), generator=generator),
        ids=torch.arange(n),
        class_names=CLASSES,
    )


def mlp64(seed: int = 0, dropout: float = 0.0) -> MLP:
    torch.manual_seed(seed)
    return MLP(4, 3, hidden=(5,), dropout=dropout).double()


def cnn64(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(1, 3, 8, width=2, feature_dim=4).double()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # eval mode uses these: make them matter
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def normalised(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mean = sum(s.sum() for s in sums.values()) / sum(s.numel() for s in sums.values())
    return {name: s / mean for name, s in sums.items()}


def fisher_by_hand(model: nn.Module, data: LabeledData, label: str) -> dict[str, torch.Tensor]:
    """Σ_i (∂ log p(y_i | x_i)/∂θ)², one example at a time with .backward(), then mean 1."""
    model.eval()
    sums = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for x, y in zip(data.inputs, data.labels, strict=True):
        model.zero_grad()
        log_probs = torch.log_softmax(model(x[None]), dim=-1)[0]
        target = log_probs.argmax() if label == "predicted" else y
        log_probs[target].backward()
        for name, p in model.named_parameters():
            sums[name] += p.grad**2
    model.zero_grad(set_to_none=True)
    return normalised(sums)


def assert_fisher_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- exact values


@pytest.mark.parametrize("label", ["predicted", "true"])
@pytest.mark.parametrize("build", [mlp64, cnn64], ids=["mlp", "cnn"])
def test_exact_fisher_equals_a_loop_over_single_examples(label, build):
    model = build()
    data = data64(10, (4,) if build is mlp64 else (1, 8, 8))
    fisher = fisher_diagonal(model, data, label, batch_size=4)  # batches 4, 4, 2
    assert_fisher_equal(fisher, fisher_by_hand(build(), data, label))
    assert (fisher.label, fisher.samples, fisher.method) == (label, 10, "per-example")
    total = sum(f.sum() for f in fisher.values()) / sum(f.numel() for f in fisher.values())
    assert total.item() == pytest.approx(1.0, abs=1e-12)
    assert all(f.dtype == torch.float64 and f.device.type == "cpu" for f in fisher.values())


def test_predicted_and_true_labels_differ():
    model, data = mlp64(), data64()
    predicted = model(data.inputs).argmax(-1)
    assert not torch.equal(predicted, data.labels)  # else the next line proves nothing
    a, b = fisher_diagonal(model, data, "predicted"), fisher_diagonal(model, data, "true")
    assert not torch.allclose(a["head.weight"], b["head.weight"])


class ItemGate(nn.Module):
    """The MLP behind a data-dependent branch on .item(), which vmap cannot run."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.abs().sum().item() >= 0:
            return self.inner(inputs)
        raise AssertionError("unreachable")


def test_models_vmap_cannot_run_fall_back_to_a_loop():
    data = data64()
    expected = fisher_diagonal(mlp64(), data, batch_size=4)
    gated = fisher_diagonal(ItemGate(mlp64()), data, batch_size=4)
    assert list(gated) == [f"inner.{name}" for name in expected]
    for name, value in expected.items():
        torch.testing.assert_close(gated[f"inner.{name}"], value, rtol=1e-10, atol=1e-12)


class CharacterCounts(nn.Module):
    """A text classifier: counts of the letters a, b, c, d of each string, then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.linear = nn.Linear(4, 3, dtype=torch.float64)

    def forward(self, texts: list[str]) -> torch.Tensor:
        counts = [[float(text.count(letter)) for letter in "abcd"] for text in texts]
        return self.linear(torch.tensor(counts, dtype=torch.float64))


def test_text_inputs_go_through_the_loop():
    texts = ["abca", "dd", "cab", "bbbd", "a", "cdcd", "aabbccdd"]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    model = CharacterCounts()
    counts = torch.tensor([[float(t.count(c)) for c in "abcd"] for t in texts], dtype=torch.float64)
    as_text = LabeledData(texts, labels, torch.arange(7), CLASSES)
    as_numbers = LabeledData(counts, labels, torch.arange(7), CLASSES)
    got = fisher_diagonal(model, as_text, "true", batch_size=3)
    expected = fisher_by_hand(model.linear, as_numbers, "true")
    assert_fisher_equal(got, {f"linear.{name}": value for name, value in expected.items()})


def test_batched_approximation():
    model, data = mlp64(), data64(9)
    exact = fisher_diagonal(model, data)
    assert_fisher_equal(fisher_diagonal(model, data, batch_size=1, per_example=False), exact)
    batched = fisher_diagonal(model, data, batch_size=3, per_example=False)
    assert batched.method == "batched"
    # by hand: per batch, the square of the gradient of the summed log-likelihood
    sums = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for start in (0, 3, 6):
        model.zero_grad()
        log_probs = torch.log_softmax(model(data.inputs[start : start + 3]), dim=-1)
        log_probs.max(dim=-1).values.sum().backward()
        for name, p in model.named_parameters():
            sums[name] += p.grad**2
    assert_fisher_equal(batched, normalised(sums))
    assert not torch.allclose(batched["head.weight"], exact["head.weight"])


# --------------------------------------------------------------------------- data, model


def test_model_is_left_as_it_was():
    model = mlp64(dropout=0.5).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fisher = fisher_diagonal(model, data64())
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    # dropout was off: the same as the model in eval mode
    assert_fisher_equal(fisher, fisher_diagonal(mlp64(dropout=0.5).eval(), data64()))


def test_dataloader_and_max_samples():
    model, data = mlp64(), data64(10)
    from_dataset = fisher_diagonal(model, data, batch_size=4)
    assert_fisher_equal(fisher_diagonal(model, DataLoader(data, batch_size=3)), from_dataset)
    first = fisher_diagonal(model, data, batch_size=4, max_samples=6)  # cuts the 2nd batch
    assert first.samples == 6
    assert_fisher_equal(first, fisher_diagonal(model, data.subset(range(6))))


def test_frozen_parameters_are_left_out_and_tied_ones_named_twice():
    model = mlp64()
    model.body[0].bias.requires_grad_(False)
    fisher = fisher_diagonal(model, data64())
    assert "body.0.bias" not in fisher and set(fisher) == {
        "body.0.weight",
        "head.weight",
        "head.bias",
    }
    expected = fisher_by_hand(mlp64(), data64(), "predicted")
    del expected["body.0.bias"]
    assert_fisher_equal(fisher, normalised({n: f for n, f in expected.items()}))

    tied = nn.Sequential(nn.Linear(4, 4, dtype=torch.float64), nn.Linear(4, 4, dtype=torch.float64))
    tied[1].weight = tied[0].weight
    fisher = fisher_diagonal(tied, data64(6))
    assert list(fisher) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert torch.equal(fisher["0.weight"], fisher["1.weight"])
    # the tied tensor counts once in the mean
    entries = sum(fisher[n].numel() for n in ("0.weight", "0.bias", "1.bias"))
    total = sum(fisher[n].sum() for n in ("0.weight", "0.bias", "1.bias"))
    assert (total / entries).item() == pytest.approx(1.0, abs=1e-12)


def test_float32_model_gives_float32_fisher():
    torch.manual_seed(0)
    model = MLP(4, 3, hidden=(5,))
    data = LabeledData.from_arrays(torch.randn(6, 4).numpy(), [0, 1, 2, 0, 1, 2])
    fisher = fisher_diagonal(model, data)
    assert all(f.dtype == torch.float32 for f in fisher.values())


# --------------------------------------------------------------------------- files


def test_save_and_load_round_trip_and_use_in_interpolation(tmp_path):
    old, new, data = mlp64(0), mlp64(1), data64()
    fisher = fisher_diagonal(old, data, "true")
    path = save_fisher(fisher, tmp_path / "fisher.safetensors")
    loaded = load_fisher(path)
    assert isinstance(loaded, FisherDiagonal)
    assert (loaded.label, loaded.samples, loaded.method) == ("true", 10, "per-example")
    assert sorted(loaded) == sorted(fisher)  # safetensors keeps names sorted
    assert all(torch.equal(loaded[n], fisher[n]) for n in fisher)
    from_file = interpolate(old, new, 0.4, fisher=path)
    from_dict = interpolate(old, new, 0.4, fisher=fisher)
    assert all(torch.equal(from_file.state_dict()[n], t) for n, t in from_dict.state_dict().items())
    assert not torch.equal(from_dict.head.weight, interpolate(old, new, 0.4).head.weight)


def test_saving_a_plain_mapping_needs_its_label(tmp_path):
    plain = {"w": torch.ones(2)}
    with pytest.raises(InputError, match="a plain mapping needs the label rule"):
        save_fisher(plain, tmp_path / "f.safetensors")
    loaded = load_fisher(save_fisher(plain, tmp_path / "f.safetensors", label="predicted"))
    assert (loaded.label, loaded.samples, loaded.method) == ("predicted", None, "unknown")
    fisher = FisherDiagonal(plain, label="true", samples=3, method="per-example")
    with pytest.raises(InputError, match="computed with label='true'"):
        save_fisher(fisher, tmp_path / "g.safetensors", label="predicted")
    with pytest.raises(InputError, match=r"'w' holds negative, NaN or infinite values"):
        save_fisher({"w": torch.tensor([1.0, -1.0])}, tmp_path / "h.safetensors", label="true")
    with pytest.raises(InputError, match=r"folder .* does not exist"):
        save_fisher(fisher, tmp_path / "nowhere" / "f.safetensors")


def test_loading_refuses_other_files(tmp_path):
    with pytest.raises(FileFormatError, match="no Fisher file at"):
        load_fisher(tmp_path / "missing.safetensors")
    save_file({"w": torch.ones(2)}, tmp_path / "weights.safetensors")
    with pytest.raises(FileFormatError, match=r"not a flipless Fisher file: .*format=None"):
        load_fisher(tmp_path / "weights.safetensors")
    record = {"format": FISHER_FORMAT, "label": "true"}
    save_file({"w": torch.tensor([float("nan")])}, tmp_path / "nan.safetensors", metadata=record)
    with pytest.raises(FileFormatError, match="'w' holds negative, NaN or infinite"):
        load_fisher(tmp_path / "nan.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(FileFormatError, match=r"cannot read .* as a safetensors file"):
        load_fisher(tmp_path / "junk.safetensors")
    assert json.loads(json.dumps(FisherDiagonal({}, label="true", samples=1, method="x").record()))


# --------------------------------------------------------------------------- bad inputs


def test_bad_arguments():
    model, data = mlp64(), data64()
    with pytest.raises(InputError, match="label='gold'; expected 'predicted'"):
        fisher_diagonal(model, data, "gold")
    with pytest.raises(InputError, match="batch_size=0; expected a whole number"):
        fisher_diagonal(model, data, batch_size=0)
    with pytest.raises(InputError, match="max_samples=0"):
        fisher_diagonal(model, data, max_samples=0)
    with pytest.raises(InputError, match="data is a int; expected a Dataset of dict items"):
        fisher_diagonal(model, 3)
    with pytest.raises(InputError, match=r"a batch is list; expected a dict with 'inputs'"):
        fisher_diagonal(model, [[data.inputs, data.labels]])
    with pytest.raises(InputError, match="label='true' needs the batches' 'labels'"):
        fisher_diagonal(model, [{"inputs": data.inputs}], "true")
    with pytest.raises(InputError, match="the data holds no examples"):
        fisher_diagonal(model, [])
    with pytest.raises(InputError, match="no trainable parameters"):
        fisher_diagonal(mlp64().requires_grad_(False), data)
    with pytest.raises(InputError, match=r"returning logits \[N, C\].*got \(10, 3, 1\)"):
        fisher_diagonal(nn.Sequential(mlp64(), nn.Unflatten(1, (3, 1))), data)


def test_a_fisher_of_zeros_cannot_be_normalised():
    model = mlp64()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.body[0].weight.zero_()
        model.body[0].bias.fill_(-1.0)  # ReLU(−1) = 0: every gradient vanishes but the bias's
    model.head.bias.requires_grad_(False)
    with pytest.raises(InputError, match=r"the squared gradients sum to 0\.0 over 10 examples"):
        fisher_diagonal(model, data64())


# ----------------------------------------------------------------------------- Hugging Face


def _bert_batches(seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30, (6, 5), generator=generator)
    mask = torch.ones_like(ids)
    mask[4:, 3:] = 0  # two padded examples
    return [
        {"inputs": {"input_ids": ids[i : i + 3], "attention_mask": mask[i : i + 3]}} for i in (0, 3)
    ]


def _hand_fisher(model: nn.Module, batches: list[dict]) -> dict[str, torch.Tensor]:
    """Σ_i (∂ log p(ŷ_i | x_i) / ∂θ)² example by example with model(**inputs), mean 1."""
    named = dict(model.named_parameters())
    sums = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in named.items()}
    for batch in batches:
        inputs = batch["inputs"]
        for i in range(inputs["input_ids"].shape[0]):
            one = {key: value[i : i + 1] for key, value in inputs.items()}
            log_probs = torch.log_softmax(model(**one).logits, dim=-1)[0]
            grads = torch.autograd.grad(log_probs[log_probs.argmax()], list(named.values()))
            for name, grad in zip(named, grads, strict=True):
                sums[name] += grad.double().square()
    mean = sum(float(s.sum()) for s in sums.values()) / sum(s.numel() for s in sums.values())
    return {name: value / mean for name, value in sums.items()}


def test_fisher_of_a_hugging_face_classifier_and_of_its_hflogits_wrapper(tiny_bert):
    from flipless.integrations.hf import HFLogits

    old = tiny_bert(30, 5, 3, seed=1).double().eval()
    new = tiny_bert(30, 5, 3, seed=2).double().eval()
    batches = _bert_batches()
    plain = fisher_diagonal(old, batches, batch_size=3)  # dict inputs as keyword arguments
    expected = _hand_fisher(old, batches)
    assert set(plain) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(plain[name], value, rtol=1e-9, atol=1e-12)
    wrapped = fisher_diagonal(HFLogits(old), batches, batch_size=3)
    assert set(wrapped) == {"model." + name for name in plain}
    for name, value in plain.items():
        torch.testing.assert_close(wrapped["model." + name], value, rtol=1e-9, atol=1e-12)
    # the wrapper's names are matched to the bare model's, and the other way round
    reference = interpolate(old, new, 0.4, fisher=plain)
    from_wrapper = interpolate(old, new, 0.4, fisher=wrapped)
    into_wrapper = interpolate(HFLogits(old), HFLogits(new), 0.4, fisher=plain)
    state, wrapper_state = from_wrapper.state_dict(), into_wrapper.state_dict()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)
        torch.testing.assert_close(wrapper_state["model." + name], value, rtol=0, atol=0)
    differs = reference.state_dict()["classifier.weight"]
    assert not torch.equal(differs, interpolate(old, new, 0.4).state_dict()["classifier.weight"])


def test_align_fisher_names_leaves_unmatched_names_alone():
    fisher = {"model.head.weight": torch.ones(2)}
    assert align_fisher_names(fisher, ["head.weight"]) == {
        "head.weight": fisher["model.head.weight"]
    }
    assert align_fisher_names(fisher, ["body.weight"]) is fisher
    other = {"head.weight": torch.ones(2)}  # only a wrapper's "model." prefix is matched
    assert align_fisher_names(other, ["weight"]) is other
    assert align_fisher_names({"head.weight": torch.ones(2)}, ["model.head.weight"]).keys() == {
        "model.head.weight"
    }
