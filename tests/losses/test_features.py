"""BCT's influence loss and CNA: hand computations, the frozen old head, and DDP gathering."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from flipless import FliplessError
from flipless.errors import FileFormatError, FliplessWarning, InputError, MismatchError
from flipless.losses import CompatibilityLoss, Term, build_loss
from flipless.losses.features import (
    OldHead,
    bct_influence,
    contrastive_neighbourhood_alignment,
)
from flipless.teachers import ModelTeacher

CNA_WORKER = Path(__file__).with_name("distributed_cna_worker.py")


class TwoPart(nn.Module):
    """features → head, as flipless's models are built."""

    def __init__(self, seed: int, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(5, width)
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = []
    for row, label in zip(logits, labels, strict=True):
        top = row.max()
        out.append(top + math.log(sum(math.exp(v - top) for v in row)) - row[label])
    return np.array(out)


def test_bct_influence_by_hand():
    weight = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]])
    bias = np.array([0.1, -0.2, 0.3])
    head = nn.Linear(2, 3).double()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    features = np.array([[0.2, 0.4], [-1.0, 0.5], [0.3, -0.3]])
    labels = np.array([2, 0, 1])
    got = bct_influence(torch.from_numpy(features), torch.from_numpy(labels), OldHead(head))
    expected = _numpy_cross_entropy(features @ weight.T + bias, labels)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_old_head_from_model_is_a_frozen_copy_and_only_features_learn():
    old = TwoPart(seed=0).double()
    head = OldHead.from_model(old)
    features = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    bct_influence(features, torch.tensor([0, 1, 2, 0]), head).sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in head.parameters())
    assert all(p.requires_grad for p in old.parameters())  # the user's model is untouched
    head.train()
    assert not head.training  # the old head stays in eval mode


def test_old_head_really_loaded_from_a_checkpoint(tmp_path):
    old = TwoPart(seed=1)
    x = torch.randn(6, 5)
    save_file(old.state_dict(), tmp_path / "old.safetensors")
    torch.save(old.state_dict(), tmp_path / "old.pt")
    for name in ("old.safetensors", "old.pt"):
        head = OldHead.from_file(tmp_path / name)
        torch.testing.assert_close(head(old.features(x)), old(x), rtol=0, atol=0)
    # an untrained head (the published bug) gives a different loss
    labels = old(x).argmax(dim=1)
    loaded = bct_influence(old.features(x), labels, OldHead.from_file(tmp_path / "old.pt"))
    random = bct_influence(old.features(x), labels, OldHead(nn.Linear(4, 3)))
    assert not torch.allclose(loaded, random)


def test_old_head_file_errors(tmp_path):
    with pytest.raises(FileFormatError, match="no old checkpoint"):
        OldHead.from_file(tmp_path / "missing.pt")
    save_file({"fc.weight": torch.ones(3, 4)}, tmp_path / "other.safetensors")
    with pytest.raises(FileFormatError, match="prefix="):
        OldHead.from_file(tmp_path / "other.safetensors")
    assert OldHead.from_file(tmp_path / "other.safetensors", prefix="fc.").head.bias is None
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FileFormatError, match="weights_only"):
        OldHead.from_file(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="attribute"):
        OldHead.from_model(nn.Linear(2, 2))


def test_bct_new_classes_are_left_out():
    head = nn.Linear(2, 2).double()
    features = torch.randn(4, 2, dtype=torch.float64)
    new_to_old = torch.tensor([1, -1, 0])  # new class 1 did not exist; old 0 is new 2
    got = bct_influence(features, torch.tensor([0, 1, 2, 1]), OldHead(head, new_to_old))
    logits = head(features).detach().numpy()
    expected = _numpy_cross_entropy(logits[[0, 2]], np.array([1, 0]))
    np.testing.assert_allclose(got.detach().numpy()[[0, 2]], expected, rtol=1e-12)
    assert got[1] == 0 and got[3] == 0
    with pytest.raises(MismatchError, match="new_to_old"):
        bct_influence(features, torch.tensor([0, 1, 2, 1]), OldHead(nn.Linear(2, 2).double()))
    with pytest.raises(InputError, match="outside"):
        bct_influence(features, torch.tensor([0, 1, 3, 1]), OldHead(head, new_to_old))
    with pytest.raises(InputError, match="OldHead"):
        bct_influence(features, torch.tensor([0, 1, 0, 1]), head)


def _numpy_cna(new: np.ndarray, old: np.ndarray, temperature: float) -> np.ndarray:
    u = new / np.linalg.norm(new, axis=1, keepdims=True)
    v = old / np.linalg.norm(old, axis=1, keepdims=True)
    out = []
    for i in range(len(u)):
        others = [j for j in range(len(u)) if j != i]
        neighbour = max(others, key=lambda j: float(v[i] @ v[j]))
        terms = [math.exp(float(u[i] @ u[k]) / temperature) for k in others]
        out.append(math.log(sum(terms)) - float(u[i] @ u[neighbour]) / temperature)
    return np.array(out)


def test_cna_by_hand():
    rng = np.random.default_rng(4)
    new, old = rng.normal(size=(5, 3)), rng.normal(size=(5, 6))  # dimensions may differ
    got = contrastive_neighbourhood_alignment(torch.from_numpy(new), torch.from_numpy(old), 0.5)
    np.testing.assert_allclose(got.numpy(), _numpy_cna(new, old, 0.5), rtol=1e-12)
    sharp = contrastive_neighbourhood_alignment(torch.from_numpy(new), torch.from_numpy(old))
    np.testing.assert_allclose(sharp.numpy(), _numpy_cna(new, old, 0.01), rtol=1e-10)


def test_cna_is_low_when_new_neighbourhoods_match_the_old():
    old = torch.randn(8, 4, dtype=torch.float64)
    aligned = contrastive_neighbourhood_alignment(old * 3.0, old, 0.1).mean()
    shuffled = contrastive_neighbourhood_alignment(old[torch.randperm(8)], old, 0.1).mean()
    assert aligned < shuffled


def test_cna_gradients_reach_only_the_new_features():
    new = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    old = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    contrastive_neighbourhood_alignment(new, old, 0.5).sum().backward()
    assert new.grad.abs().sum() > 0 and old.grad is None
    assert torch.autograd.gradcheck(
        lambda x: contrastive_neighbourhood_alignment(x, old.detach(), 0.5),
        (new.detach().requires_grad_(),),
    )


def test_bct_gradcheck():
    head = OldHead(nn.Linear(3, 4).double())
    features = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0])
    assert torch.autograd.gradcheck(lambda f: bct_influence(f, labels, head), (features,))


def test_cna_edge_cases():
    with pytest.warns(FliplessWarning, match="at least two"):
        single = contrastive_neighbourhood_alignment(torch.ones(1, 3), torch.ones(1, 3))
    assert single.shape == (1,) and single.item() == 0.0
    with pytest.raises(InputError, match="temperature"):
        contrastive_neighbourhood_alignment(torch.ones(2, 3), torch.ones(2, 3), 0.0)
    with pytest.raises(MismatchError, match="one of each"):
        contrastive_neighbourhood_alignment(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(MismatchError, match=r"\[N, D\]"):
        contrastive_neighbourhood_alignment(torch.ones(2, 3, 1), torch.ones(2, 3))


def test_presets_in_the_objective():
    old, new = TwoPart(seed=2).double(), TwoPart(seed=3).double()
    x, labels = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    features = new.features(x)
    logits = new.head(features)
    bct = build_loss("bct", old_head=OldHead.from_model(old))
    total, parts = bct(logits, labels, new_features=features)
    head = OldHead.from_model(old)
    expected = F.cross_entropy(logits, labels) + bct_influence(features, labels, head).mean()
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)
    assert set(parts) == {"cross_entropy", "bct", "total"}
    assert bct.needs_features and not bct.needs_teacher

    cna = build_loss("cna", weight=0.5)
    teacher = ModelTeacher(old)
    total, _ = cna(logits, labels, new_features=features, teacher_features=teacher.features(x))
    term = contrastive_neighbourhood_alignment(features, old.features(x).detach(), 0.01)
    torch.testing.assert_close(total, F.cross_entropy(logits, labels) + 0.5 * term.mean())


def test_feature_terms_say_what_is_missing():
    with pytest.raises(InputError, match=r"OldHead\.from_model"):
        build_loss("bct")
    with pytest.raises(InputError, match="no option"):
        Term("cna", weight=1.0, options={"margin": 1.0})
    loss = build_loss("bct", old_head=OldHead(nn.Linear(4, 3)))
    with pytest.raises(InputError, match="new_features"):
        loss(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(MismatchError, match="rows"):
        loss(torch.randn(2, 3), torch.tensor([0, 1]), new_features=torch.randn(3, 4))
    with pytest.raises(InputError, match="features"):
        ModelTeacher(nn.Linear(2, 2)).features(torch.ones(1, 2))
    with pytest.raises(FliplessError):
        build_loss("cna", old_head=None)


def test_bct_refuses_new_features_of_another_width_and_cna_accepts_them():
    old, new = TwoPart(seed=2, width=6).double(), TwoPart(seed=3, width=4).double()
    x, labels = torch.randn(5, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    features = new.features(x)
    head = OldHead.from_model(old)
    assert head.in_features == 6
    with pytest.raises(MismatchError, match=r"width 4, but the old head takes 6 features"):
        bct_influence(features, labels, head)
    bct = build_loss("bct", old_head=head)
    with pytest.raises(MismatchError, match=r"feature_dim \(6\), or make its features\(\) end"):
        bct(new.head(features), labels, new_features=features)
    cna = build_loss("cna", weight=1.0)
    teacher = old.features(x)
    total, _ = cna(new.head(features), labels, new_features=features, teacher_features=teacher)
    by_hand = _numpy_cna(features.detach().numpy(), teacher.detach().numpy(), 0.01).mean()
    expected = F.cross_entropy(new.head(features), labels).item() + by_hand
    np.testing.assert_allclose(total.item(), expected, rtol=1e-10)


def test_a_missing_old_head_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no old checkpoint"):
        OldHead.from_file(tmp_path / "missing.safetensors")


def test_the_old_head_moves_with_the_loss():
    loss = CompatibilityLoss(
        [Term("bct", weight=1.0, options={"old_head": OldHead(nn.Linear(4, 3))})]
    )
    loss.to(torch.float64)
    assert loss.terms[0].options["old_head"].head.weight.dtype == torch.float64
    assert len(list(loss.option_modules.parameters())) == 2


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_cna_over_two_processes_equals_one_process_on_the_global_batch(tmp_path, torchrun):
    out = tmp_path / "cna.json"
    torchrun(CNA_WORKER, out, timeout=170)
    parts = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    result = {key: parts[0][key] + parts[1][key] for key in ("losses", "gradients")}
    spec = {"__name__": "cna_worker"}
    exec(CNA_WORKER.read_text(), spec)  # the worker's shared data, without importing tests
    new, old = spec["shared_features"]()
    new = new.requires_grad_()
    loss = contrastive_neighbourhood_alignment(new, old, 0.05)
    loss.sum().backward()
    np.testing.assert_allclose(result["losses"], loss.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(result["gradients"], new.grad.numpy(), rtol=1e-8, atol=1e-12)
    assert (
        parts[0]["counts"] == parts[1]["counts"] == [3, 2]
    )  # uneven batches: the padding is dropped
