"""Run under torchrun: an old model, a new model and a sweep-style point (three ``fit`` calls)
in one job, repeated; rank 0 writes what each repetition trained.

Usage: torchrun --nproc_per_node=2 distributed_repeat_worker.py OUT.json REPEATS

flipless starts the process group at the first ``fit`` and keeps it for every later one (the
worker records which group each ``fit`` ran in) and ends it at exit.
``repetition()`` gives the same three fits in one process, for the comparison.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

#: Samples per split: a few hundred digits.
SIZES = {"old_train": 96, "new_train": 256, "validation": 64}


def splits() -> dict[str, Any]:
    """The digits update scenario cut to :data:`SIZES`, inputs in float64 (so that one process
    and two give the same weights up to rounding)."""
    from flipless.data.loaders import load_digits
    from flipless.train import make_update_scenario

    scenario = make_update_scenario(load_digits(), old_fraction=0.3, seed=0)
    cut = {}
    for name, size in SIZES.items():
        data = getattr(scenario, name).subset(torch.arange(size))
        cut[name] = type(data)(data.inputs.double(), data.labels, data.ids, data.class_names)
    return cut


def parameters(model: torch.nn.Module) -> list[float]:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()


def repetition(data: dict[str, Any], groups: list[int]) -> dict[str, list[float]]:
    """Old model (cross-entropy on old_train), new model (cross-entropy, validation flips
    against the old one) and a sweep point (fd-kl with the old model as teacher, its own
    seed), one epoch each; ``groups`` gets the id of the process group each fit ran in."""
    from flipless.losses import build_loss
    from flipless.teachers import ModelTeacher
    from flipless.train import MLP, TrainSettings, fit

    def settings(seed: int) -> TrainSettings:
        return TrainSettings(epochs=1, batch_size=32, progress="none", select="last", seed=seed)

    def sgd(parameters):
        return torch.optim.SGD(parameters, lr=0.05, momentum=0.9)

    def group() -> int:
        initialized = torch.distributed.is_initialized()
        return id(torch.distributed.group.WORLD) if initialized else 0

    torch.manual_seed(21)
    old = fit(
        MLP(64, 10, hidden=(16,)).double(),
        data["old_train"],
        data["validation"],
        optimizer=sgd,
        settings=settings(1),
    ).model.eval()
    groups.append(group())
    torch.manual_seed(22)
    new = fit(
        MLP(64, 10, hidden=(16,)).double(),
        data["new_train"],
        data["validation"],
        old_model=old,
        optimizer=sgd,
        settings=settings(2),
    ).model
    groups.append(group())
    torch.manual_seed(23)
    point = fit(
        MLP(64, 10, hidden=(16,)).double(),
        data["new_train"],
        data["validation"],
        objective=build_loss("fd-kl"),
        teacher=ModelTeacher(old),
        old_model=old,
        optimizer=sgd,
        settings=settings(3),
    ).model
    groups.append(group())
    return {"old": parameters(old), "new": parameters(new), "point": parameters(point)}


def main(out: str, repeats: int) -> None:
    from flipless.train import distributed

    torch.set_num_threads(1)
    data = splits()
    groups: list[int] = []
    runs = [repetition(data, groups) for _ in range(repeats)]
    summary: dict[str, Any] = {
        "world": torch.distributed.get_world_size(),
        "runs": runs,
        "group_after_every_fit": all(groups),
        "distinct_groups": len(set(groups)),
        "fits": len(groups),
        "owned_by_flipless": distributed.owns_process_group(),
    }
    if torch.distributed.get_rank() == 0:
        with open(out, "w") as handle:
            json.dump(summary, handle)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
