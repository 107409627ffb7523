"""Tests of flipless.teachers (METHODS.md §2.3)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flipless.errors import FileFormatError, FliplessWarning, InputError, MismatchError
from flipless.losses.terms import kl_divergence
from flipless.teachers import (
    CachedTeacher,
    EnsembleTeacher,
    KnownClassColumns,
    LabelMap,
    LabelSpaceModel,
    ModelTeacher,
    Teacher,
    known_classes,
    teacher_in_label_space,
    unknown_class_logit,
)

D, C = 4, 3


def linear(seed: int, d: int = D, c: int = C) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, c).double()


def x_batch(n: int = 5, seed: int = 100) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class TupleModel(nn.Module):
    """Returns (logits, softmax, log_softmax) like BackwardCompatibilityML models."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = linear(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.fc(x)
        return z, z.softmax(1), z.log_softmax(1)


# --------------------------------------------------------------------------- ModelTeacher


def test_model_teacher_is_frozen_and_detached() -> None:
    model = linear(0)
    teacher = ModelTeacher(model)
    with pytest.raises(InputError, match="num_classes"):  # not known before the first call
        _ = teacher.num_classes
    assert isinstance(ModelTeacher(model, num_classes=C), Teacher)
    assert all(not p.requires_grad for p in model.parameters())
    x = x_batch().requires_grad_(True)
    out = teacher.logits(x)
    assert not out.requires_grad and out.grad_fn is None
    assert teacher.num_classes == C and teacher.class_mask is None
    torch.testing.assert_close(out, model(x).detach(), rtol=0, atol=0)


def test_training_mode_warns_and_switches_to_eval() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 16), nn.Dropout(0.5), nn.Linear(16, C)).double()
    teacher = ModelTeacher(model, num_classes=C)
    model.train()
    x = x_batch(20)
    with pytest.warns(FliplessWarning, match="training mode"):
        first = teacher.logits(x)
    assert not model.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = [teacher.logits(x) for _ in range(3)]
    for out in again:
        torch.testing.assert_close(out, first, rtol=0, atol=0)


def test_tuple_returning_model() -> None:
    model = TupleModel()
    out = ModelTeacher(model, num_classes=C).logits(x_batch())
    torch.testing.assert_close(out, model.fc(x_batch()).detach(), rtol=0, atol=0)


def test_wrong_width_names_both_numbers() -> None:
    with pytest.raises(MismatchError, match=r"returned 3 classes; expected 5"):
        ModelTeacher(linear(0), num_classes=5).logits(x_batch())
    with pytest.raises(MismatchError, match=r"returned 3 classes; expected 2"):
        ModelTeacher(linear(0), label_map=LabelMap((0, 1), 4)).logits(x_batch())


def test_model_teacher_with_label_map() -> None:
    model = linear(0)
    lm = LabelMap((4, 0, 2), 5)
    teacher = ModelTeacher(model, label_map=lm)
    out = teacher.logits(x_batch())
    z = model(x_batch()).detach()
    assert out.shape == (5, 5) and teacher.num_classes == 5
    torch.testing.assert_close(out[:, [4, 0, 2]], z, rtol=0, atol=0)
    assert torch.equal(out[:, [1, 3]], torch.full((5, 2), -1e9, dtype=torch.float64))
    assert teacher.class_mask.tolist() == [True, False, True, False, True]


# --------------------------------------------------------------------------- EnsembleTeacher


def test_ensemble_weighted_mean_of_logits_uses_every_weight() -> None:
    models = [linear(s) for s in (1, 2, 3)]
    weights = [2.0, 1.0, 5.0]
    x = x_batch()
    expected = sum(w * m(x).detach() for w, m in zip(weights, models, strict=True)) / 8.0
    out = EnsembleTeacher(models, weights=weights).logits(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # the first weight matters (the published bug dropped it)
    other = EnsembleTeacher(models, weights=[0.0, 1.0, 5.0]).logits(x)
    assert not torch.allclose(out, other)


@pytest.mark.parametrize("member", [0, 1, 2])
def test_ensemble_uses_every_member(member: int) -> None:
    models = [linear(s) for s in (1, 2, 3)]
    x = x_batch()
    before = EnsembleTeacher(models).logits(x)
    with torch.no_grad():
        models[member].weight.add_(1.0)
    after = EnsembleTeacher(models).logits(x)
    assert not torch.allclose(before, after)


def test_ensemble_probabilities_is_log_of_weighted_mean_softmax() -> None:
    models = [linear(s) for s in (1, 2, 3)]
    weights = [1.0, 3.0, 4.0]
    x = x_batch()
    probs = sum(w * m(x).detach().softmax(1) for w, m in zip(weights, models, strict=True)) / 8.0
    out = EnsembleTeacher(models, weights=weights, average="probabilities").logits(x)
    torch.testing.assert_close(out, probs.log(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.softmax(1), probs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "weights",
    [
        [1.0, 2.0],
        [1.0, -1.0, 1.0],
        [1.0, float("nan"), 1.0],
        [1.0, float("inf"), 1.0],
        [0.0, 0.0, 0.0],
    ],
)
def test_ensemble_bad_weights(weights: list[float]) -> None:
    with pytest.raises(InputError, match="weight"):
        EnsembleTeacher([linear(s) for s in (1, 2, 3)], weights=weights)


def test_ensemble_bad_average_and_empty() -> None:
    with pytest.raises(InputError, match="average"):
        EnsembleTeacher([linear(1)], average="median")
    with pytest.raises(InputError, match="at least one"):
        EnsembleTeacher([])


def test_ensemble_member_widths_must_agree() -> None:
    with pytest.raises(MismatchError, match=r"different widths: \[3, 5\]"):
        EnsembleTeacher([linear(1), linear(2, c=5)]).logits(x_batch())
    with pytest.raises(MismatchError, match="returned 5 classes; expected 3"):
        EnsembleTeacher([linear(1), linear(2, c=5)], num_classes=3).logits(x_batch())


def test_ensemble_members_frozen_and_label_map() -> None:
    models = [linear(s) for s in (1, 2)]
    lm = LabelMap((1, 2, 0), 4)
    teacher = EnsembleTeacher(models, label_map=lm)
    assert all(not p.requires_grad for m in models for p in m.parameters())
    out = teacher.logits(x_batch())
    expected = (models[0](x_batch()) + models[1](x_batch())).detach() / 2
    torch.testing.assert_close(out[:, [1, 2, 0]], expected, rtol=1e-12, atol=1e-12)
    assert teacher.num_classes == 4 and teacher.class_mask.tolist() == [True, True, True, False]


# --------------------------------------------------------------------------- CachedTeacher


def batches(n_batches: int = 3, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids = torch.randperm(100, generator=torch.Generator().manual_seed(7))[: n_batches * size] + 1000
    return [(x_batch(size, seed=b), ids[b * size : (b + 1) * size]) for b in range(n_batches)]


@pytest.fixture
def model32() -> nn.Linear:
    torch.manual_seed(3)
    return nn.Linear(D, C)


@pytest.mark.parametrize("mmap", [False, True])
def test_cached_roundtrip_shuffled_ids(tmp_path: Path, model32: nn.Linear, mmap: bool) -> None:
    data = [(x.float(), i) for x, i in batches()]
    path = tmp_path / "teacher.safetensors"
    CachedTeacher.build(model32, data, path)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher.safetensors"]  # no temp file left
    cached = CachedTeacher.load(path, mmap=mmap)
    assert isinstance(cached._logits, np.ndarray) == mmap  # memory-mapped rows vs. in-memory tensor
    assert len(cached) == 12 and cached.num_classes == C and cached.class_mask is None
    ids = torch.cat([b[1] for b in data])
    # the model's rows, computed on the same batches as the cache (so bit-identical)
    direct = torch.cat([model32(x).detach() for x, _ in data])
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    out = cached.logits(None, ids[perm])
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, direct[perm], rtol=0, atol=0)


def test_cached_mmap_default_by_size(
    tmp_path: Path, model32: nn.Linear, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flipless.teachers as teachers

    path = tmp_path / "c.safetensors"
    CachedTeacher.build(model32, [(x.float(), i) for x, i in batches()], path)
    assert not isinstance(CachedTeacher.load(path)._logits, np.ndarray)
    monkeypatch.setattr(teachers, "MMAP_THRESHOLD_BYTES", 1)
    assert isinstance(CachedTeacher.load(path)._logits, np.ndarray)


def test_cached_keeps_class_mask(tmp_path: Path, model32: nn.Linear) -> None:
    lm = LabelMap((0, 3, 1), 5)
    path = tmp_path / "c.safetensors"
    CachedTeacher.build(
        ModelTeacher(model32, label_map=lm), [(x.float(), i) for x, i in batches()], path
    )
    cached = CachedTeacher.load(path)
    assert cached.num_classes == 5 and cached.class_mask.tolist() == lm.class_mask.tolist()


def test_cached_missing_ids_and_none(tmp_path: Path, model32: nn.Linear) -> None:
    path = tmp_path / "c.safetensors"
    cached = CachedTeacher.build(model32, [(x.float(), i) for x, i in batches()], path)
    with pytest.raises(
        InputError, match=r"2 of 3 ids are not in the cache \(first few: \[5, 999999\]\)"
    ):
        cached.logits(None, torch.tensor([5, int(batches()[0][1][0]), 999999]))
    with pytest.raises(InputError, match="needs sample ids"):
        cached.logits(torch.zeros(3, D))


def test_atomic_write_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(x.shape[0], C)

    path = tmp_path / "c.safetensors"
    with pytest.raises(InputError, match="duplicates"):
        CachedTeacher.build(Broken(), [(torch.zeros(2, D), torch.tensor([1, 1]))], path)
    assert list(tmp_path.iterdir()) == []

    def crash(tensors: dict[str, torch.Tensor], filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    path.write_bytes(b"previous cache")
    with pytest.raises(OSError, match="disk full"):
        CachedTeacher.build(Broken(), [(torch.zeros(2, D), torch.tensor([1, 2]))], path)
    assert list(tmp_path.iterdir()) == [path] and path.read_bytes() == b"previous cache"


def test_build_checks_ids(tmp_path: Path, model32: nn.Linear) -> None:
    with pytest.raises(MismatchError, match="4 inputs but 3 ids"):
        CachedTeacher.build(model32, [(torch.zeros(4, D), torch.arange(3))], tmp_path / "c")
    with pytest.raises(InputError, match="integer"):
        CachedTeacher.build(
            model32, [(torch.zeros(2, D), torch.tensor([0.0, 1.0]))], tmp_path / "c"
        )
    assert list(tmp_path.iterdir()) == []


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


def test_bad_files_are_file_format_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(FileFormatError, match="cannot read"):
        CachedTeacher.load(garbage)
    with pytest.raises(FileFormatError):
        CachedTeacher.load(tmp_path / "absent.safetensors")
    no_logits = _save(tmp_path / "a.safetensors", {"ids": torch.arange(3)})
    with pytest.raises(FileFormatError, match=r"lacks.*logits"):
        CachedTeacher.load(no_logits)
    no_ids = _save(tmp_path / "b.safetensors", {"logits": torch.zeros(3, 2)})
    with pytest.raises(FileFormatError, match=r"lacks.*ids"):
        CachedTeacher.load(no_ids)
    dup = _save(
        tmp_path / "d.safetensors", {"ids": torch.tensor([1, 2, 1]), "logits": torch.zeros(3, 2)}
    )
    for mmap in (False, True):
        with pytest.raises(FileFormatError, match="duplicates"):
            CachedTeacher.load(dup, mmap=mmap)
    rows = _save(tmp_path / "r.safetensors", {"ids": torch.arange(4), "logits": torch.zeros(3, 2)})
    with pytest.raises(FileFormatError, match="expected integer ids"):
        CachedTeacher.load(rows)
    ints = _save(
        tmp_path / "i.safetensors", {"ids": torch.arange(3), "logits": torch.zeros(3, 2).long()}
    )
    with pytest.raises(FileFormatError, match="float logits"):
        CachedTeacher.load(ints)


# --------------------------------------------------------------------------- LabelMap


def test_label_map_from_names_reordered() -> None:
    lm = LabelMap.from_names(["dog", "cat", "bird"], ["cat", "fish", "bird", "dog", "frog"])
    assert lm.old_to_new == (3, 0, 2) and lm.num_new_classes == 5
    assert lm.class_mask.tolist() == [True, False, True, True, False]
    old = torch.tensor([[1.0, 2.0, 3.0], [-4.0, 5.0, -6.0]], dtype=torch.float64)
    new = lm.expand(old)
    u = -1e9  # a class the old model never had: unknown_class_logit(float64)
    expected = torch.tensor([[2.0, u, 3.0, 1.0, u], [5.0, u, -6.0, -4.0, u]], dtype=torch.float64)
    assert torch.equal(new, expected)


def test_unknown_class_logit_by_dtype() -> None:
    assert unknown_class_logit(torch.float16) == -32752.0  # finfo(float16).min / 2
    for dtype in (torch.bfloat16, torch.float32, torch.float64):
        assert unknown_class_logit(dtype) == -1e9
    with pytest.raises(InputError, match="floating point"):
        unknown_class_logit(torch.int64)


def test_expanded_softmax_by_hand() -> None:
    # old classes 0 and 1 at new columns 0 and 2; softmax([0, ln 3]) = [1/4, 3/4]
    lm = LabelMap((0, 2), 3)
    old = torch.tensor([[0.0, float(np.log(3.0))]], dtype=torch.float64)
    probabilities = lm.expand(old).softmax(dim=1)
    torch.testing.assert_close(
        probabilities, torch.tensor([[0.25, 0.0, 0.75]], dtype=torch.float64), rtol=0, atol=1e-15
    )
    assert probabilities[0, 1].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1.0, 100.0])
def test_unknown_columns_never_win_and_take_no_mass(dtype, temperature) -> None:
    # every old logit very negative: a fill of 0 would win the argmax of every row
    low = -1000.0 if dtype == torch.float16 else -1e4
    old = torch.tensor([[low, low + 64.0, low + 128.0], [-1.0, 5.0, low]], dtype=dtype)
    lm = LabelMap((3, 0, 4), 6)
    expanded = lm.expand(old)
    assert expanded.dtype == dtype and bool(torch.isfinite(expanded).all())
    assert set(expanded.argmax(dim=1).tolist()) <= {0, 3, 4}
    assert expanded.argmax(dim=1).tolist() == [4, 0]
    scaled = expanded.float() / temperature  # what the terms compute, in at least float32
    probabilities = scaled.softmax(dim=1)
    assert bool((probabilities[:, ~lm.class_mask] == 0).all())
    torch.testing.assert_close(
        probabilities[:, [3, 0, 4]], (old.float() / temperature).softmax(dim=1), rtol=0, atol=1e-6
    )
    assert bool(torch.isfinite(scaled.log_softmax(dim=1)).all())
    native = (expanded / temperature).softmax(dim=1)  # and in the logits' own dtype
    assert bool((native[:, ~lm.class_mask] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_distilling_from_expanded_logits_has_finite_gradients(dtype) -> None:
    lm = LabelMap((0, 1), 4)
    teacher = lm.expand(torch.tensor([[2.0, -1.0], [-3.0, 0.5]], dtype=dtype))
    new = torch.tensor([[0.1, 0.2, 3.0, -1.0], [1.0, 0.0, 0.0, 2.0]], requires_grad=True)
    for mask in (None, lm.class_mask):  # even a caller that forgets the mask gets no NaN
        new.grad = None
        loss = kl_divergence(new, teacher.float(), temperature=2.0, class_mask=mask).sum()
        loss.backward()
        assert bool(torch.isfinite(loss)) and bool(torch.isfinite(new.grad).all())


def test_known_class_columns_of_a_full_width_head() -> None:
    model = linear(0)  # 3 outputs: a head with a row per new class, trained on classes 0 and 2
    known = (0, 2)
    teacher = ModelTeacher(KnownClassColumns(model, known), label_map=LabelMap(known, 3))
    x = x_batch()
    z = model(x).detach()
    out = teacher.logits(x)
    torch.testing.assert_close(out[:, [0, 2]], z[:, [0, 2]], rtol=0, atol=0)
    assert bool((out[:, 1] == -1e9).all()) and teacher.class_mask.tolist() == [True, False, True]
    with pytest.raises(MismatchError, match="head of at least 5"):
        KnownClassColumns(linear(0), (0, 4))(x)
    with pytest.raises(InputError, match="distinct"):
        KnownClassColumns(model, (1, 1))
    with pytest.raises(InputError, match="no features"):
        KnownClassColumns(model, known).features(x)


def test_teacher_in_label_space_matches_head_rows_by_name() -> None:
    model = linear(0)  # 3 head rows: "b", "d", "a" (recorded names), new classes a, b, c, d
    x = x_batch()
    z = model(x).detach()
    teacher = teacher_in_label_space(model, ["a", "b", "c", "d"], 3, ["b", "d", "a"])
    out = teacher.logits(x)
    torch.testing.assert_close(out[:, [1, 3, 0]], z, rtol=0, atol=0)
    assert bool((out[:, 2] == -1e9).all())
    assert known_classes(teacher) == (0, 1, 3)
    torch.testing.assert_close(teacher.as_model()(x), out, rtol=0, atol=0)
    assert isinstance(teacher.as_model(), LabelSpaceModel)
    # built in the old model's (eval) mode: restoring "its" mode after predicting, as
    # predict_labels does, must not put the frozen old model into training mode
    wrapped = teacher.as_model()
    was_training = wrapped.training
    wrapped.eval()
    wrapped.train(was_training)
    assert not model.training and not teacher.model.training


def test_teacher_in_label_space_for_a_full_width_head_trained_on_fewer_classes() -> None:
    model = linear(0)  # a row per new class, but only classes 0 and 2 were ever a target
    with torch.no_grad():
        model.bias.copy_(torch.tensor([-50.0, 50.0, -50.0], dtype=torch.float64))
    teacher = teacher_in_label_space(model, ["a", "b", "c"], 3, known_classes=(0, 2))
    assert isinstance(teacher.model, KnownClassColumns) and known_classes(teacher) == (0, 2)
    answers = teacher.as_model()(x_batch()).argmax(dim=1)
    assert set(answers.tolist()) <= {0, 2}  # never the unlearned row 1, however large
    # the same classes, every one known, in order: a plain teacher, nothing masked
    plain = teacher_in_label_space(model, ["a", "b", "c"], 3)
    assert plain.label_map is None and known_classes(plain) is None
    assert plain.as_model() is model
    # a narrow head without names: its rows are the known classes, in order
    narrow = teacher_in_label_space(linear(0), list("abcde"), 3, known_classes=(0, 2, 4))
    assert narrow.label_map.old_to_new == (0, 2, 4) and narrow.model is not None
    assert not isinstance(narrow.model, KnownClassColumns)


def test_teacher_in_label_space_errors() -> None:
    with pytest.raises(MismatchError, match="nothing says which output is which class"):
        teacher_in_label_space(linear(0), list("abcde"), 3)
    with pytest.raises(MismatchError, match="3 outputs but 2 class names"):
        teacher_in_label_space(linear(0), list("abc"), 3, ["a", "b"])
    with pytest.raises(MismatchError, match=r"learned classes \['c'\] but its head has no row"):
        teacher_in_label_space(linear(0), list("abcd"), 3, ["a", "b", "d"], known_classes=(2,))
    with pytest.raises(MismatchError, match="not among the new class names"):
        teacher_in_label_space(linear(0), list("abc"), 3, ["a", "b", "z"])


def test_label_map_errors() -> None:
    with pytest.raises(MismatchError, match=r"\['horse', 'cow'\]"):
        LabelMap.from_names(["cat", "horse", "cow"], ["cat", "dog"])
    with pytest.raises(InputError, match="same new class"):
        LabelMap((0, 0), 3)
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        LabelMap((0, 3), 3)
    with pytest.raises(MismatchError, match="num_classes=4"):
        ModelTeacher(linear(0), num_classes=4, label_map=LabelMap((0, 1), 3))
    with pytest.raises(MismatchError, match=r"\[N, 2\]"):
        LabelMap((0, 1), 3).expand(torch.zeros(4, 3))
