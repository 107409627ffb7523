"""Run under torchrun with 2 processes: CNA over uneven local batches (3 and 2 rows).

Each rank computes the per-sample CNA of its rows against the gathered global batch and
backpropagates the sum of its losses, and writes its losses and feature gradients to
OUT.json.<rank>.

Usage: torchrun --nproc_per_node=2 distributed_cna_worker.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

COUNTS = (3, 2)


def shared_features() -> tuple[torch.Tensor, torch.Tensor]:
    """The same seeded global batch on every rank: new [5, 4] and old [5, 6] features."""
    generator = torch.Generator().manual_seed(7)
    new = torch.randn(sum(COUNTS), 4, generator=generator, dtype=torch.float64)
    old = torch.randn(sum(COUNTS), 6, generator=generator, dtype=torch.float64)
    return new, old


def main(out: str) -> None:
    from flipless.losses.features import _batch_counts, contrastive_neighbourhood_alignment

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    new, old = shared_features()
    start = sum(COUNTS[:rank])
    local_new = new[start : start + COUNTS[rank]].clone().requires_grad_()
    local_old = old[start : start + COUNTS[rank]]
    losses = contrastive_neighbourhood_alignment(local_new, local_old, 0.05)
    losses.sum().backward()
    result = {
        "losses": losses.detach().tolist(),
        "gradients": local_new.grad.tolist(),
        "counts": _batch_counts(COUNTS[rank], local_new.device),
    }
    with open(f"{out}.{rank}", "w") as handle:
        json.dump(result, handle)
    dist.barrier()  # no process tears gloo down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
