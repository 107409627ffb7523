"""A real update on digits: the interpolation chosen on validation breaks fewer test samples.

The update of BCWI (Schumann et al., 2023): for each seed s in 0, 1, 2,
``make_update_scenario(load_digits(), old_fraction=0.3, seed=s)``; an old MLP (one hidden
layer of 256) trained for 10 epochs on the old split (AdamW, lr 1e-3); the new model
**fine-tuned from a copy of the old one** on the whole new split for 30 epochs (AdamW, lr
5e-3); each run keeps its best validation epoch. The old-weight is chosen on the validation
split with ``max-old-weight-within:0.01`` over the default grid; the test split (451 images,
the same for every seed) only measures. With about three flips per seed a single seed is too
noisy to decide, so the flips are summed over the seeds; accuracy must hold for every seed.

Measured when written (seed: chosen α, test accuracy new → interpolated, negative flips
new → interpolated): 0: 0.4, 0.973 → 0.960, 2 → 2; 1: 0.4, 0.971 → 0.969, 4 → 2; 2: 0.3,
0.960 → 0.962, 5 → 3 (11 → 7 flips). Run offline on seeds 0–19: 60 → 36 flips in all, fewer
after interpolation in every window of three consecutive seeds; the chosen α ranged over
0.1–0.6; accuracy changed by −1.3 to +0.2 points except on seed 19 (α 0.5: 0.969 → 0.945,
2 → 3 flips), the one seed of the twenty where the one-point tolerance, held on the 270
validation images, did not carry over to test.
"""

from __future__ import annotations

import copy

import pytest
import torch

from flipless import compare
from flipless.data.loaders import load_digits
from flipless.merge.selection import interpolation_candidates, predict_labels, select_old_weight
from flipless.train import MLP, TrainSettings, fit, make_update_scenario

SEEDS = (0, 1, 2)


def _update(splits, seed: int) -> dict[str, float]:
    scenario = make_update_scenario(splits, old_fraction=0.3, seed=seed)
    torch.manual_seed(seed)
    old = MLP(64, scenario.num_classes, hidden=(256,))
    fit(
        old,
        scenario.old_train,
        scenario.validation,
        settings=TrainSettings(epochs=10, batch_size=32, progress="none", seed=seed),
    )
    new = copy.deepcopy(old)
    fit(
        new,
        scenario.new_train,
        scenario.validation,
        optimizer=lambda parameters: torch.optim.AdamW(parameters, lr=5e-3),
        settings=TrainSettings(epochs=30, batch_size=32, progress="none", seed=seed + 100),
    )
    make_candidate = interpolation_candidates(old, new)
    selection = select_old_weight(
        make_candidate, scenario.validation, old_model=old, rule="max-old-weight-within:0.01"
    )
    test = scenario.test
    old_test = predict_labels(old, test)
    plain = compare(old_test, predict_labels(new, test), test.labels)
    merged = compare(old_test, predict_labels(make_candidate(selection.chosen), test), test.labels)
    return {
        "old_weight": selection.chosen,
        "new_accuracy": plain.accuracy_new,
        "merged_accuracy": merged.accuracy_new,
        "new_flips": plain.negative_flips,
        "merged_flips": merged.negative_flips,
    }


@pytest.mark.slow
def test_selected_interpolation_has_fewer_negative_flips_at_comparable_accuracy():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest and repeatable
    try:
        splits = load_digits()
        runs = [_update(splits, seed) for seed in SEEDS]
    finally:
        torch.set_num_threads(threads)
    new_flips = sum(run["new_flips"] for run in runs)
    merged_flips = sum(run["merged_flips"] for run in runs)
    assert new_flips >= 5, f"the plain update must have flips to remove: {runs}"
    assert merged_flips < new_flips, runs
    for run in runs:
        assert run["merged_accuracy"] >= run["new_accuracy"] - 0.02, runs
    assert any(run["old_weight"] > 0 for run in runs), runs
