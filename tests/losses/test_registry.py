"""Presets by name carry the published settings, and overrides are checked."""

from __future__ import annotations

import pytest
import torch

from flipless import FliplessError
from flipless.losses import PRESETS, Term, build_loss, preset_term, register, terms

NEW = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
OLD = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1])


def test_published_presets():
    assert {"fd-kl", "fd-lm", "ldi", "elodi", "strict-imitation", "new-error"} <= set(PRESETS)
    fd = preset_term("fd-kl")
    assert (fd.kind, fd.focus, fd.base, fd.boost, fd.options["temperature"]) == (
        "kl",
        "old_correct",
        1.0,
        5.0,
        100.0,
    )
    ldi = preset_term("ldi")
    assert (ldi.mix, ldi.options["power"], ldi.options["margin"]) == (0.5, 2.0, 0.5)
    elodi = preset_term("elodi")
    assert (elodi.mix, elodi.options["margin"]) == (0.8, 0.0)
    assert preset_term("new-error").kind == "new_error"
    assert preset_term("strict-imitation").kind == "strict_imitation"


def test_overrides_change_the_value():
    loss = build_loss("ldi", margin=0.0, top_k=1)
    total, _ = loss(NEW, LABELS, OLD)
    ce = torch.nn.functional.cross_entropy(NEW, LABELS)
    ldi = terms.logit_difference_inhibition(NEW, OLD, LABELS, margin=0.0, top_k=1).mean()
    torch.testing.assert_close(total, 0.5 * ce + 0.5 * ldi)
    switched = preset_term("fd-kl", mix=0.3)
    assert (switched.weight, switched.mix) == (None, 0.3)


def test_unknown_names_and_settings():
    with pytest.raises(FliplessError, match="Unknown loss"):
        build_loss("fd-kld")
    with pytest.raises(FliplessError, match="no setting 'margin'"):
        build_loss("fd-kl", margin=1.0)
    with pytest.raises(FliplessError, match="already registered"):
        register("fd-kl")(lambda: Term("kl", weight=1.0))
