"""build_loss checks the values of a preset's settings, naming the setting (not a bare
TypeError from deep inside the term)."""

from __future__ import annotations

import pytest

from flipless.errors import InputError
from flipless.losses import build_loss


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"weight": "heavy"}, "weight='heavy'"),
        ({"boost": True}, "boost=True"),
        ({"temperature": "hot"}, "temperature='hot'"),
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"ce_weight": "x"}, "ce_weight='x'"),
    ],
)
def test_a_setting_of_the_wrong_type_is_an_input_error_naming_it(settings, named):
    with pytest.raises(InputError, match=f"Loss 'fd-kl': {named}; expected a finite number"):
        build_loss("fd-kl", **settings)


def test_numbers_are_still_accepted():
    loss = build_loss("fd-kl", weight=2, temperature=10.0, ce_weight=0.5)
    assert loss.ce_weight == 0.5
