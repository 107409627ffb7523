"""Scenario 2: a text data update on MASSIVE (the seed's BCWI notebook), with published numbers.

Data: the MASSIVE intent-classification "add data" update of the BCWI paper, as published
(``../shared/data/massive-add-data``, or ``--data PATH``): old model on ``old/train`` (1,000
utterances), new model on ``updated/train`` (1,500: the old 1,000 and 500 added), model
selection on ``updated/dev`` (500), flips counted on ``updated/test`` (4,000, 60 intents).

Model — what differs from the seed: the seed fine-tunes all of RoBERTa-base (125 M
parameters) for several epochs on a GPU. Here the encoder is all-MiniLM-L6-v2 (22 M), frozen:
every utterance is encoded once (``scenario_text_encoder.py``) and only a classifier head is
trained, an MLP 384-256-60 (AdamW lr 1e-3, batch 64; old model 30 epochs, the updates 12
epochs). As in the seed, the new model is the old model fine-tuned on the updated split.

Methods (see ``scenario_methods.py``): ``plain`` (the fine-tuned new model), ``bcwi α=0.3``
(the seed's weight), ``bcwi`` (α on dev by the stated rule), ``bcwi-fisher``, ``bcwi-soup``
(soup of 3 fine-tuned models), ``output-ensemble``, and distillation while fine-tuning:
``fd-kl``, ``fd-lm``, ``fd-kl (λ on dev)``, ``fd-lm (λ on dev)`` (the term's weight chosen on
dev), ``ldi``, ``elodi`` (teacher: mean of the 3 fine-tuned models),
``new-error``, ``strict-imitation``. Seeds change the heads' initial weights and the batch
order (the splits are fixed).

Usage: python benchmarks/scenario_massive.py [--seeds 0 1 2] [--quick] [--output PATH]
       [--data PATH]
``--quick``: one seed, 5 / 3 epochs, an ensemble of 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flipless.train import MLP, UpdateScenario
from flipless.train.scenario import massive_update_scenario
from scenario_common import device, evaluate_goal, parse_args
from scenario_methods import Recipe, run_scenario
from scenario_text_encoder import embedded

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "massive-add-data"
METHODS = (
    "plain",
    "bcwi α=0.3",
    "bcwi",
    "bcwi-fisher",
    "bcwi-soup",
    "output-ensemble",
    "fd-kl",
    "fd-lm",
    "fd-kl (λ on dev)",
    "fd-lm (λ on dev)",
    "ldi",
    "elodi",
    "new-error",
    "strict-imitation",
)
SEED_NFR = (0.0325, 0.02225)  # plain → BCWI α = 0.3, RoBERTa-base (seed notebook)
SEED_ACCURACY = (0.8255, 0.8265)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DATA, help="the massive-add-data folder")


def head(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(384, 60, hidden=(256,))


def published(table: dict) -> list[str]:
    """The seed's RoBERTa numbers beside ours, and what differs."""
    plain = table["plain"]["negative_flip_rate"]["mean"]
    lines = [
        f"Seed notebook (RoBERTa-base fine-tuned, α = 0.3): NFR {100 * SEED_NFR[0]:.2f} % → "
        f"{100 * SEED_NFR[1]:.3f} % ({100 * (1 - SEED_NFR[1] / SEED_NFR[0]):.1f} % cut), "
        f"accuracy {100 * SEED_ACCURACY[0]:.2f} % → {100 * SEED_ACCURACY[1]:.2f} %."
    ]
    for method in ("bcwi α=0.3", "bcwi", "bcwi-soup"):
        row = table[method]
        nfr = row["negative_flip_rate"]["mean"]
        lines.append(
            f"Here `{method}`: NFR {100 * plain:.2f} % → {100 * nfr:.2f} % "
            f"({100 * (1 - nfr / plain):.1f} % cut), accuracy "
            f"{100 * table['plain']['accuracy_new']['mean']:.2f} % → "
            f"{100 * row['accuracy_new']['mean']:.2f} %."
        )
    best = evaluate_goal(table, "plain", METHODS[1:])["best_compatible"]
    seed_cut = 1 - SEED_NFR[1] / SEED_NFR[0]
    if best is not None:
        verdict = "met" if best["nfr_cut"] > seed_cut else "not met"
        lines.append(
            f"Goal (beat the seed's {100 * seed_cut:.1f} % relative cut): best compatible "
            f"`{best['method']}` cuts {100 * best['nfr_cut']:.1f} % at "
            f"{100 * best['accuracy_difference']:+.2f} accuracy points — **{verdict}**."
        )
    lines.append(
        "What differs: a frozen 22 M-parameter MiniLM encoder with a trained head instead of "
        "all of RoBERTa-base (125 M) fine-tuned, so accuracies are lower and the flips come "
        "from the head alone; epochs and optimiser differ; the seeds listed above here, one run in the seed."
    )
    return lines


def main() -> None:
    on = device()
    args = parse_args(__doc__, "massive", extra=options)
    raw = massive_update_scenario(args.data)
    splits = {name: embedded(data, on) for name, data in raw.splits().items()}
    scenario = UpdateScenario(
        **splits,
        seed=None,
        description=raw.description + "; inputs: frozen all-MiniLM-L6-v2 embeddings",
    )
    quick = args.quick
    recipe = Recipe(
        make_old=head,
        make_new=head,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
        old_epochs=5 if quick else 30,
        new_epochs=3 if quick else 12,
        batch_size=64,
        new_from_old=True,
        ensemble_size=2 if quick else 3,
        device=on,
    )
    run_scenario(
        "massive",
        args,
        title="Scenario 2: text data update on MASSIVE (the BCWI notebook's setting)",
        scenario_for=lambda seed: scenario,
        recipe=recipe,
        methods=METHODS,
        config={
            "data": str(args.data),
            "encoder": "all-MiniLM-L6-v2 (frozen, mean pooling, 64 tokens)",
            "head": "MLP 384-256-60",
            "optimizer": "AdamW lr 1e-3",
            "seed_numbers": {"nfr": SEED_NFR, "accuracy": SEED_ACCURACY},
        },
        notes=[
            "MASSIVE add-data as published: old model on old/train (1,000), new on "
            "updated/train (1,500), α and kept epochs chosen on updated/dev (500), flips on "
            "updated/test (4,000, 60 intents).",
            "Frozen all-MiniLM-L6-v2 encoder (embeddings computed once); only an MLP head "
            f"384-256-60 trains (AdamW lr 1e-3, batch 64; old {recipe.old_epochs} epochs, "
            f"updates {recipe.new_epochs}). The new model is the old one fine-tuned on the "
            "updated split, as in the seed; so are the distillation runs.",
        ],
        published=published,
        report_inputs=lambda s: {"texts": list(raw.test.inputs)},
    )


if __name__ == "__main__":
    main()
