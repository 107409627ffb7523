"""Run under torchrun: compatible training on digits; rank 0 writes the final numbers.

Usage: torchrun --nproc_per_node=2 distributed_fit_worker.py OUT.json
(``run(None)`` gives the same run in one process, for the comparison.)
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch


def teacher_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seven batches (uneven over two processes) for building a cached teacher."""
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(70, 1, 8, 8, generator=generator)
    ids = torch.randperm(1000, generator=generator)[:70]
    return [(inputs[i : i + 10], ids[i : i + 10]) for i in range(0, 70, 10)]


def teacher_model() -> torch.nn.Module:
    from flipless.train import MLP

    torch.manual_seed(4)
    return MLP(64, 10, hidden=(16,))


def run(out: str | None) -> dict[str, Any]:
    from flipless.data.loaders import load_digits
    from flipless.losses import build_loss
    from flipless.teachers import ModelTeacher
    from flipless.train import MLP, TrainSettings, fit, make_update_scenario

    torch.set_num_threads(1)
    scenario = make_update_scenario(load_digits(), old_fraction=0.3, seed=0)
    torch.manual_seed(11)
    old = MLP(64, 10, hidden=(32,))
    with torch.no_grad():  # a fixed, not trained, old model: the same on every rank
        for parameter in old.parameters():
            parameter.mul_(3.0)
    torch.manual_seed(12)
    new = MLP(64, 10, hidden=(32,)).double()
    data = scenario.new_train
    train = type(data)(data.inputs.double(), data.labels, data.ids, data.class_names)
    validation = scenario.validation
    validation = type(validation)(
        validation.inputs.double(), validation.labels, validation.ids, validation.class_names
    )
    result = fit(
        new,
        train,
        validation,
        objective=build_loss("ldi"),
        teacher=ModelTeacher(old.double()),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        settings=TrainSettings(epochs=2, batch_size=64, progress="none", select="last"),
    )
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    summary = {
        "world": world,
        "parameters": torch.cat([p.detach().flatten() for p in result.model.parameters()]).tolist(),
        "accuracy": result.history[-1].accuracy,
        "negative_flip_rate": result.history[-1].negative_flip_rate,
        "train_loss": result.history[-1].train_loss,
        "validation_size": len(validation),
    }
    if out is not None:
        with open(out, "w") as handle:
            json.dump(summary, handle)
    return summary


if __name__ == "__main__":
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    summary = run(sys.argv[1] if rank == 0 else None)
    from flipless.teachers import CachedTeacher

    CachedTeacher.build(teacher_model(), teacher_batches(), sys.argv[1] + ".cache.safetensors")
    torch.distributed.barrier()  # no process tears gloo down while another still uses it
    torch.distributed.destroy_process_group()
