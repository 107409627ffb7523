"""``flipless predict`` and ``flipless ensemble``: prediction files from checkpoints, and their
output ensembles; both write what ``compare``, ``gate`` and ``report`` read."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from flipless.cli.common import (
    ClassNames,
    IdColumn,
    LabelColumn,
    PredictionColumn,
    ScoreColumns,
    console,
    logs,
    reports_errors,
    split_list,
    with_example,
)

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
#: Data sources whose class names may be set (``classes``): the model's then name them.
LABELLED_TABLES = ("table", "hf-disk")

Out = Annotated[
    str,
    typer.Option(
        "--out", help="The prediction file to write: .parquet, .csv, .jsonl or .npz (by suffix)."
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace --out (and its sidecar) if it exists.")
]


@reports_errors
@with_example(
    "flipless predict old.safetensors texts.csv --out old.parquet --logits\n\n"
    "flipless predict run.toml --split test --out new.parquet   (the model run.toml trained)"
)
def predict(
    model: Annotated[
        str,
        typer.Argument(
            help="A flipless checkpoint (.safetensors), a Hugging Face model folder, or a "
            "run config (.toml/.yaml): the model `flipless train CONFIG` kept."
        ),
    ],
    out: Out,
    data: Annotated[
        str | None,
        typer.Argument(
            help="A table file or folder (csv, tsv, parquet, jsonl), a datasets.save_to_disk "
            "folder, an image folder, digits, or NAME:PATH (banking77:/data/b77). Default with "
            "a config: the data its data section names."
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Which split of DATA to predict.")] = "test",
    logits: Annotated[bool, typer.Option("--logits", help="Also write the logits.")] = False,
    probabilities: Annotated[
        bool, typer.Option("--probabilities", help="Also write the softmax probabilities.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Samples per forward pass.")
    ] = 256,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda (or cuda:N), or auto (cuda if present).")
    ] = "cpu",
    overwrite: Overwrite = False,
    id_col: IdColumn = None,
    label_col: Annotated[
        str | None, typer.Option("--label-col", help="Column of true labels (default: label).")
    ] = None,
    input_col: Annotated[
        str | None,
        typer.Option("--input-col", help="Column of inputs (default: text, else image)."),
    ] = None,
    input_type: Annotated[
        str | None, typer.Option("--input-type", help="text, image or features (default: guessed).")
    ] = None,
    split_col: Annotated[
        str | None,
        typer.Option("--split-col", help="Column naming each row's split (default: split)."),
    ] = None,
    features: Annotated[
        str | None, typer.Option("--features", help="Comma-separated numeric input columns.")
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Comma-separated class names in index order."),
    ] = None,
) -> None:
    """Write a model's predictions of a data split: id, label, prediction (and scores)."""
    from flipless.data.sources import load_splits
    from flipless.errors import InputError
    from flipless.inference import in_data_order, resolve_device
    from flipless.inference import predict as run_model
    from flipless.io import check_output, write_predictions
    from flipless.models.sources import source_class_names

    if logits and probabilities:
        raise InputError(
            "--logits and --probabilities both given; a prediction file holds one set of "
            "scores (compare would not know which to use). Pick one."
        )
    check_output(out, overwrite)
    target = resolve_device(device)
    columns = {
        "id_column": id_col,
        "label_column": label_col,
        "input_column": input_col,
        "input_type": input_type,
        "split_column": split_col,
        "features": split_list(features) if features else None,
        "classes": split_list(classes) if classes else None,
    }
    checkpoint, data_config, seed = _sources(
        model, data, {k: v for k, v in columns.items() if v is not None}
    )
    model_classes = source_class_names(checkpoint)
    if data_config.name in LABELLED_TABLES and data_config.classes is None and model_classes:
        # The model's classes are the label space: a file holding some of them reads as such.
        data_config = dataclasses.replace(data_config, classes=list(model_classes))
    splits = load_splits(data_config, seed)
    if split not in splits:
        raise InputError(
            f"--split {split!r}: the data has the split(s) {', '.join(map(repr, splits))}; pass "
            "--split with one of them."
        )
    chosen = splits[split]
    network = _load_model(checkpoint, chosen.num_classes, model_classes, target)
    logs.print(
        f"predicting {len(chosen)} samples of {chosen.name} with {checkpoint} on {target} …",
        markup=False,
        soft_wrap=True,
    )
    with _progress_bar(len(chosen)) as advance:
        predictions = run_model(
            network, chosen, batch_size=batch_size, device=target, on_batch=advance
        )
    predictions = in_data_order(predictions, model_classes)
    ids = splits.original_ids(predictions.ids)  # a file's text ids as it wrote them
    scores = None
    if logits or probabilities:
        scores = predictions.probabilities() if probabilities else predictions.logits
    written = write_predictions(
        out,
        ids,
        predictions.predicted,
        labels=predictions.labels,
        scores=scores,
        scores_kind="probabilities" if probabilities else "logits",
        class_names=predictions.class_names,
        overwrite=overwrite,
    )
    accuracy = float((predictions.predicted == predictions.labels).mean()) if len(chosen) else 0
    console.print(
        f"Wrote {written}: {len(chosen)} predictions of {chosen.name} "
        f"({chosen.num_classes} classes), accuracy {100 * accuracy:.2f} %.",
        markup=False,
        soft_wrap=True,
    )


def _sources(model: str, data: str | None, columns: dict[str, Any]) -> tuple[str, Any, int]:
    """The checkpoint to load, the DataConfig of DATA (or of the config's [data]), its seed."""
    from flipless.data.sources import data_config_from_path
    from flipless.errors import InputError, MissingFileError
    from flipless.remote import is_file, join, suffix_of

    if suffix_of(model).lower() in CONFIG_SUFFIXES:
        from flipless.train.config import load_config

        run = load_config(model)
        checkpoint = join(run.output_dir, "model.safetensors")  # output_dir may be a URL
        if not is_file(checkpoint):
            raise MissingFileError(
                f"{model} has not been trained yet: {checkpoint} does not exist. Run `flipless "
                f"train {model}` first, or pass the checkpoint or model folder itself."
            )
        if data is None:
            if columns:
                raise InputError(
                    f"{', '.join(sorted(columns))} given without DATA; the config's [data] says "
                    "how its columns are read. Pass DATA too, or change the config."
                )
            return str(checkpoint), run.data, run.seed
        return str(checkpoint), data_config_from_path(data, **columns), run.seed
    if data is None:
        raise InputError(
            f"no DATA to predict: pass it after {model} (a table file or folder, a "
            "datasets.save_to_disk folder, digits, or NAME:PATH); only a run config brings its "
            "own [data]."
        )
    return model, data_config_from_path(data, **columns), 0


def _load_model(
    checkpoint: str, num_classes: int, model_classes: tuple[str, ...] | None, device: Any
) -> Any:
    """The model in eval mode on ``device``. A Hugging Face folder that names no classes gets a
    head of the data's width when its own head has another size."""
    from flipless.models.sources import load_model_source

    network = load_model_source(checkpoint, device=str(device))
    if model_classes is None and getattr(network, "num_classes", num_classes) != num_classes:
        network = load_model_source(checkpoint, num_classes=num_classes, device=str(device))
    return network


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int], None]]:
    """A transient rich bar of predicted samples on standard error (silenced by --quiet);
    yields the function that advances it by a batch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("predicting", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=logs, transient=True) as bar:
        task = bar.add_task("predict", total=total)
        yield lambda done: bar.advance(task, done)


@reports_errors
@with_example(
    "flipless ensemble old.parquet new.parquet --out ensemble.parquet\n\n"
    "flipless compare old.parquet ensemble.parquet"
)
def ensemble(
    files: Annotated[
        list[str], typer.Argument(help="Two or more prediction files of the same samples.")
    ],
    out: Out,
    average: Annotated[
        str,
        typer.Option(
            "--average",
            help="probabilities (mean softmax), logits (mean logits) or vote (weighted vote, "
            "ties by the mean probability).",
        ),
    ] = "probabilities",
    weights: Annotated[
        str | None, typer.Option("--weights", help="One weight per file, comma-separated: 1,2.")
    ] = None,
    overwrite: Overwrite = False,
    id_col: IdColumn = None,
    label_col: LabelColumn = None,
    pred_col: PredictionColumn = None,
    score_cols: ScoreColumns = None,
    class_names: ClassNames = None,
) -> None:
    """Write the output ensemble of prediction files joined by id (usable as old or new)."""
    from flipless.errors import InputError
    from flipless.io import check_output
    from flipless.posthoc import ensemble_files

    check_output(out, overwrite)
    numbers = None
    if weights is not None:
        try:
            numbers = [float(value) for value in split_list(weights)]
        except ValueError:
            raise InputError(
                f"--weights {weights!r}; expected numbers separated by commas, one per file "
                "(e.g. --weights 1,2)."
            ) from None
    columns: list[str] | str | None = score_cols
    if score_cols and "," in score_cols:
        columns = split_list(score_cols)
    result = ensemble_files(
        files,
        average=average,
        weights=numbers,
        id_column=id_col,
        label_column=label_col,
        prediction_column=pred_col,
        score_columns=columns,
        class_names=split_list(class_names) if class_names else None,
    )
    written = result.write(out, overwrite=overwrite)
    console.print(
        f"Wrote {written}: the {average} ensemble of {len(files)} files, {len(result.ids)} "
        "samples.",
        markup=False,
        soft_wrap=True,
    )
