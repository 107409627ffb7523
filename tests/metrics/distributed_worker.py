"""Run under torchrun: each rank streams its shard into a FlipMetric; rank 0 writes the counts.

Usage: torchrun --nproc_per_node=N distributed_worker.py OUT.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torch.distributed as dist

from flipless import FlipMetric

SIZE, CLASSES, GROUPS = 1003, 6, 4


def shared_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same seeded evaluation set on every rank."""
    rng = np.random.default_rng(123)
    labels = rng.integers(0, CLASSES, SIZE)
    old = rng.normal(size=(SIZE, CLASSES))
    new = rng.normal(size=(SIZE, CLASSES))
    old[np.arange(SIZE), labels] += 1.0
    new[np.arange(SIZE), labels] += 1.5
    return old, new, labels, rng.integers(0, GROUPS, SIZE)


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    old, new, labels, groups = shared_data()
    mine = np.arange(rank, SIZE, world)  # uneven shards when SIZE % world != 0
    metric = FlipMetric(num_classes=CLASSES, slices={"group": GROUPS})
    for batch in np.array_split(mine, 5):
        metric.update(
            torch.tensor(old[batch]),
            torch.tensor(new[batch]),
            torch.tensor(labels[batch]),
            slices={"group": torch.tensor(groups[batch])},
        )
    result = metric.compute()
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(
                {
                    "world": world,
                    "class_outcomes": result.class_outcomes.tolist(),
                    "flip_matrix": result.flip_matrix.tolist(),
                    "slice_outcomes": result.slices["group"].outcomes.tolist(),
                    "negative_flip_rate": result.negative_flip_rate,
                },
                handle,
            )
    dist.barrier()  # no process tears gloo down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
