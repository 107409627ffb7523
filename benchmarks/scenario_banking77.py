"""Scenario 3: a text data update on Banking77: the old model sees a stratified 20 % of train.

Data: Banking77 (``../shared/data/banking77``, or ``--data PATH``; 10,003 training and 3,080
test queries, 77 intents). Per seed, :func:`flipless.train.make_update_scenario` draws a
stratified 20 % validation split from train; the new model trains on the rest (about 8,000),
the old one on a stratified 20 % of that (about 1,600); flips are counted on the test split.

Model, as in scenario 2 (``scenario_massive.py``), but on a CPU the encoder stays frozen by
default: an MLP head 384-256-77 on frozen all-MiniLM-L6-v2 sentence embeddings
(``scenario_text_encoder.py``; AdamW lr 1e-3, batch 128; old model 20 epochs, the updates 8).
Banking77 has 5 times MASSIVE's training texts, 1.7 times as long (16 tokens on average):
one epoch of the top two layers takes about 86 s on 2 CPU cores (21.4 s measured for 2,000
training texts), so 3 seeds × 9 fine-tuned models × 4 epochs would take about 2.6 hours. With a GPU (or ``--tuned-layers K``) the top K = 2 layers are
fine-tuned with a linear head (AdamW lr 3e-4, batch 32; old model 6 epochs, the updates 4),
as in scenario 2. Either way the new model is the old one fine-tuned on all of its
training data.

Methods: the same as scenario 2 — ``plain`` (fine-tuned), ``bcwi α=0.3``, ``bcwi``,
``bcwi-fisher``, ``bcwi-soup``, ``output-ensemble``, ``fd-kl``, ``fd-lm``, ``fd-kl (λ on
dev)``, ``fd-lm (λ on dev)``, ``ldi``,
``elodi``, ``new-error``, ``strict-imitation`` (see ``scenario_methods.py``; with tuned
layers without the two ``(λ on dev)`` methods, as in scenario 2). Seeds change the splits,
the initial weights and the batch order.

Usage: python benchmarks/scenario_banking77.py [--seeds 0 1 2] [--quick] [--output PATH]
       [--data PATH] [--tuned-layers K]
``--quick``: one seed, 5 / 3 epochs (tuned: 2 / 1), an ensemble of 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flipless.data.loaders import load_banking77
from flipless.train import make_update_scenario
from scenario_common import device, parse_args
from scenario_massive import METHODS, TUNED_METHODS
from scenario_methods import run_scenario
from scenario_text_encoder import (
    TUNED_LAYERS,
    Schedule,
    describe,
    encoded,
    encoder_options,
    shortest_first,
    text_recipe,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"
OLD_FRACTION = 0.2
#: The frozen encoder's MLP head: AdamW lr, batch, (old, update) epochs, and with --quick.
FROZEN_SCHEDULE = Schedule(1e-3, 128, (20, 8), (5, 3))


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DATA, help="the banking77 folder")
    encoder_options(parser, default=None)


def main() -> None:
    on = device()
    args = parse_args(__doc__, "banking77", extra=options)
    quick = args.quick
    tuned_layers = args.tuned_layers
    if tuned_layers is None:
        tuned_layers = TUNED_LAYERS if on == "cuda" else 0
    raw = load_banking77(args.data)
    texts, splits = {}, {}
    for name, data in raw.items():
        texts[name], splits[name] = shortest_first(data, encoded(data, on, tuned_layers))
    methods = TUNED_METHODS if tuned_layers else METHODS
    recipe, schedule, model_words = text_recipe(tuned_layers, 77, FROZEN_SCHEDULE, quick, on)
    run_scenario(
        "banking77",
        args,
        title="Scenario 3: text data update on Banking77 (old model on 20 % of train)",
        scenario_for=lambda seed: make_update_scenario(
            splits, old_fraction=OLD_FRACTION, seed=seed
        ),
        recipe=recipe,
        methods=methods,
        config={
            "data": str(args.data),
            "old_fraction": OLD_FRACTION,
            "validation_fraction": 0.2,
            "encoder": describe(tuned_layers),
            "tuned_layers": tuned_layers,
            "head": model_words,
            "optimizer": f"AdamW lr {schedule.learning_rate:g}",
        },
        notes=[
            "Banking77: per seed 20 % of train for validation, the new model on the rest, the "
            "old one on a stratified 20 % of that; flips on the 3,080 test queries (77 intents).",
            f"Encoder: {describe(tuned_layers)}; {model_words}. The new model "
            "is the old one fine-tuned on all its data; so are the distillation runs."
            + (
                " On 2 CPU cores the encoder stays frozen: tuning its top 2 layers takes about "
                "86 s per epoch of 8,000 queries, about 2.6 hours for 3 seeds "
                "(`--tuned-layers 2`, the default with a GPU)."
                if tuned_layers == 0
                else ""
            ),
        ],
        report_inputs=lambda scenario: {"texts": list(texts["test"].inputs)},
    )


if __name__ == "__main__":
    main()
