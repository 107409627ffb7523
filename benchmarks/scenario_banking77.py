"""Scenario 3: a text data update on Banking77: the old model sees a stratified 20 % of train.

Data: Banking77 (``../shared/data/banking77``, or ``--data PATH``; 10,003 training and 3,080
test queries, 77 intents). Per seed, :func:`flipless.train.make_update_scenario` draws a
stratified 20 % validation split from train; the new model trains on the rest (about 8,000),
the old one on a stratified 20 % of that (about 1,600); flips are counted on the test split.

Model, as in scenario 2 (``scenario_massive.py``): frozen all-MiniLM-L6-v2 embeddings
(``scenario_text_encoder.py``) and a trained MLP head 384-256-77 (AdamW lr 1e-3, batch 128;
old model 20 epochs, the updates 8); the new model is the old one fine-tuned on all of its
training data. Fine-tuning the full encoder for 3 seeds × 12 methods does not fit 30 minutes
on 2 CPU cores.

Methods: the same as scenario 2 — ``plain`` (fine-tuned), ``bcwi α=0.3``, ``bcwi``,
``bcwi-fisher``, ``bcwi-soup``, ``output-ensemble``, ``fd-kl``, ``fd-lm``, ``fd-kl (λ on
dev)``, ``fd-lm (λ on dev)``, ``ldi``,
``elodi``, ``new-error``, ``strict-imitation`` (see ``scenario_methods.py``). Seeds change
the splits, the initial weights and the batch order.

Usage: python benchmarks/scenario_banking77.py [--seeds 0 1 2] [--quick] [--output PATH]
       [--data PATH]
``--quick``: one seed, 5 / 3 epochs, an ensemble of 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flipless.train import MLP, make_update_scenario
from flipless.train.datasets import load_banking77
from scenario_common import device, parse_args
from scenario_massive import METHODS
from scenario_methods import Recipe, run_scenario
from scenario_text_encoder import embedded

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"
OLD_FRACTION = 0.2


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DATA, help="the banking77 folder")


def head(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(384, 77, hidden=(256,))


def main() -> None:
    on = device()
    args = parse_args(__doc__, "banking77", extra=options)
    raw = load_banking77(args.data)
    splits = {name: embedded(data, on) for name, data in raw.items()}
    quick = args.quick
    recipe = Recipe(
        make_old=head,
        make_new=head,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
        old_epochs=5 if quick else 20,
        new_epochs=3 if quick else 8,
        batch_size=128,
        new_from_old=True,
        ensemble_size=2 if quick else 3,
        device=on,
    )
    run_scenario(
        "banking77",
        args,
        title="Scenario 3: text data update on Banking77 (old model on 20 % of train)",
        scenario_for=lambda seed: make_update_scenario(
            splits, old_fraction=OLD_FRACTION, seed=seed
        ),
        recipe=recipe,
        methods=METHODS,
        config={
            "data": str(args.data),
            "old_fraction": OLD_FRACTION,
            "validation_fraction": 0.2,
            "encoder": "all-MiniLM-L6-v2 (frozen, mean pooling, 64 tokens)",
            "head": "MLP 384-256-77",
            "optimizer": "AdamW lr 1e-3",
        },
        notes=[
            "Banking77: per seed 20 % of train for validation, the new model on the rest, the "
            "old one on a stratified 20 % of that; flips on the 3,080 test queries (77 intents).",
            "Frozen all-MiniLM-L6-v2 encoder (embeddings computed once); only an MLP head "
            f"384-256-77 trains (AdamW lr 1e-3, batch 128; old {recipe.old_epochs} epochs, "
            f"updates {recipe.new_epochs}). The new model is the old one fine-tuned on all its "
            "data; so are the distillation runs.",
        ],
        report_inputs=lambda scenario: {"texts": list(raw["test"].inputs)},
    )


if __name__ == "__main__":
    main()
