"""flipless predict and flipless ensemble: files that compare reads, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from flipless import Comparison, compare
from flipless.cli import app
from flipless.data.loaders import load_digits
from flipless.inference import predict
from flipless.io import compare_files, read_predictions
from flipless.models import build_model, save_model

runner = CliRunner()


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory) -> tuple[Path, Path]:
    """Two small MLP checkpoints (different seeds) for the digits, with their class names."""
    folder = tmp_path_factory.mktemp("models")
    names = list(load_digits()["train"].class_names)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("mlp", in_features=64, num_classes=10, hidden=[8])
        paths.append(save_model(model, folder / f"m{seed}.safetensors", {"class_names": names}))
    return paths[0], paths[1]


def invoke(*arguments: object):
    return runner.invoke(app, [str(argument) for argument in arguments])


def test_predict_then_compare_gives_the_comparison_computed_in_memory(tmp_path, digits_models):
    old_path, new_path = digits_models
    old_file, new_file = tmp_path / "old.parquet", tmp_path / "new.csv"

    first = invoke("predict", old_path, "digits", "--out", old_file, "--logits", "--batch-size", 64)
    second = invoke("predict", new_path, "digits", "--out", new_file, "--probabilities")
    compared = invoke("compare", old_file, new_file, "--json", tmp_path / "c.json")

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert compared.exit_code == 0, compared.output
    assert "Wrote" in first.stdout and "451 predictions of digits/test" in first.stdout
    assert "predicting 451 samples" in first.stderr  # progress and logs on standard error
    test = load_digits()["test"]
    from flipless.models import load_model

    old = predict(load_model(old_path), test)
    new = predict(load_model(new_path), test)
    in_memory = compare(
        old.logits, new.probabilities(), old.labels, ids=old.ids, class_names=list(old.class_names)
    )
    stored = Comparison.from_json(str(tmp_path / "c.json"))
    assert stored.to_dict(instances=False) == in_memory.to_dict(instances=False)
    assert compare_files(old_file, new_file).to_dict() == in_memory.to_dict()  # per instance too
    table = read_predictions(new_file)
    np.testing.assert_array_equal(table.scores, new.probabilities())  # float64, exact
    assert list(pd.read_csv(new_file, nrows=0).columns[:3]) == ["id", "label", "prediction"]


def test_quiet_leaves_only_the_result(tmp_path, digits_models):
    result = invoke("--quiet", "predict", digits_models[0], "digits", "--out", tmp_path / "p.csv")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no log line, no progress bar
    assert result.stdout.startswith("Wrote ")


def test_an_existing_output_is_an_error_unless_overwrite(tmp_path, digits_models):
    out = tmp_path / "p.jsonl"
    assert invoke("predict", digits_models[0], "digits", "--out", out).exit_code == 0
    before = out.read_bytes()

    again = invoke("predict", digits_models[1], "digits", "--out", out)

    assert again.exit_code == 2
    assert "already exist" in again.stderr and "--overwrite" in again.stderr
    assert "predicting" not in again.stderr  # refused before any work
    assert out.read_bytes() == before
    replaced = invoke("predict", digits_models[1], "digits", "--out", out, "--overwrite")
    assert replaced.exit_code == 0 and out.read_bytes() != before


@pytest.mark.slow  # transformers' import and a tiny BERT: about 9 s on 2 cores
def test_a_hugging_face_folder_on_a_csv_of_texts_takes_its_classes_from_the_model(
    tmp_path, tiny_bert
):
    import transformers

    words = ["my", "card", "was", "stolen", "reset", "password", "hello", "there"]
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(special + words) + "\n")
    transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True).save_pretrained(
        folder
    )
    model = tiny_bert(len(special) + len(words), 16, 3)
    model_classes = ("password", "card", "other")
    model.config.id2label = dict(enumerate(model_classes))
    model.config.label2id = {name: k for k, name in enumerate(model_classes)}
    model.save_pretrained(folder)
    texts = ["my card was stolen", "reset password", "hello there", "my password", "card"]
    pd.DataFrame(
        {
            "uid": ["a-1", "b-2", "c-3", "d-4", "e-5"],
            "text": texts,
            "label": ["card", "password", "card", "password", "card"],  # no "other" here
        }
    ).to_csv(tmp_path / "test.csv", index=False)
    from flipless.models.sources import load_model_source

    with torch.no_grad():
        own_order = load_model_source(folder)(texts).numpy()

    as_the_model = invoke(
        "predict",
        folder,
        tmp_path / "test.csv",
        "--out",
        tmp_path / "p.npz",
        "--id-col",
        "uid",
        "--logits",
    )
    reordered = invoke(
        "predict",
        folder,
        tmp_path / "test.csv",
        "--out",
        tmp_path / "q.jsonl",
        "--id-col",
        "uid",
        "--logits",
        "--classes",
        "card,other,password",
    )

    assert as_the_model.exit_code == 0, as_the_model.output
    table = read_predictions(tmp_path / "p.npz")
    assert table.ids.tolist() == ["a-1", "b-2", "c-3", "d-4", "e-5"]  # the file's own ids
    assert table.class_names == model_classes  # all three, though the file holds two
    assert table.labels.tolist() == [1, 0, 1, 0, 1]
    np.testing.assert_allclose(table.scores, own_order, rtol=1e-5, atol=1e-6)
    assert reordered.exit_code == 0, reordered.output
    table = read_predictions(tmp_path / "q.jsonl")
    assert table.class_names == ("card", "other", "password")
    assert table.labels.tolist() == [0, 2, 0, 2, 0]
    # data class card is the model's row 1, other its row 2, password its row 0
    np.testing.assert_allclose(table.scores, own_order[:, [1, 2, 0]], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # trains an old and a new digits MLP for one epoch each
def test_a_config_predicts_with_the_model_it_trained_on_its_own_data(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        'output_dir = "run"\n[data]\nname = "digits"\n[model]\nname = "mlp"\nhidden = [8]\n'
        '[old]\ntrain_epochs = 1\n[train]\nepochs = 1\nprogress = "none"\n'
    )
    untrained = invoke("predict", config, "--out", tmp_path / "p.parquet")
    assert untrained.exit_code == 2 and "flipless train" in untrained.stderr

    assert invoke("train", config).exit_code == 0
    result = invoke("predict", config, "--out", tmp_path / "p.parquet", "--split", "train")

    assert result.exit_code == 0, result.output
    assert "predictions of digits/train" in result.stdout
    assert len(read_predictions(tmp_path / "p.parquet")) == len(load_digits()["train"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--logits", "--probabilities"], "one set of scores"),
        (["--split", "dev"], "the data has the split(s) 'train', 'test'"),
        (["--device", "tpu"], "expected one of cpu, cuda, auto"),
        (["--out", "p.txt"], "suffix '.txt'"),
    ],
)
def test_bad_options_exit_2_with_the_reason(tmp_path, digits_models, arguments, message):
    command = ["predict", digits_models[0], "digits", "--out", tmp_path / "p.csv", *arguments]
    if "--out" in arguments:
        command[3:5] = []
        command[-1] = tmp_path / "p.txt"

    result = invoke(*command)

    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_cuda_where_there_is_none_and_a_missing_data_argument(tmp_path, digits_models, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cuda = invoke(
        "predict", digits_models[0], "digits", "--out", tmp_path / "p.csv", "--device", "cuda"
    )
    assert cuda.exit_code == 2 and "CUDA is not available" in cuda.stderr
    no_data = invoke("predict", digits_models[0], "--out", tmp_path / "p.csv")
    assert no_data.exit_code == 2 and "no DATA to predict" in no_data.stderr


def test_ensemble_writes_a_file_compare_takes_as_the_new_side(tmp_path, digits_models):
    files = []
    for number, model in enumerate(digits_models):
        files.append(tmp_path / f"m{number}.parquet")
        assert invoke("predict", model, "digits", "--out", files[-1], "--logits").exit_code == 0
    out = tmp_path / "e.parquet"

    result = invoke("ensemble", *files, "--out", out, "--average", "logits", "--weights", "1,3")
    compared = invoke("compare", files[0], out, "--json", "-")

    assert result.exit_code == 0, result.output
    assert "the logits ensemble of 2 files, 451 samples" in result.stdout
    first, second = (read_predictions(path) for path in files)
    mean = (first.scores + 3 * second.scores) / 4
    np.testing.assert_allclose(read_predictions(out).scores, mean, rtol=1e-15)
    assert compared.exit_code == 0, compared.output
    document = json.loads(compared.stdout)
    by_hand = int(
        ((first.scores.argmax(1) == first.labels) & (mean.argmax(1) != first.labels)).sum()
    )
    assert document["counts"]["negative_flips"] == by_hand


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--weights", "1,x"], "expected numbers separated by commas"),
        (["--weights", "1"], "1 weight(s) for 2 prediction files"),
        (["--average", "median"], "average='median'"),
    ],
)
def test_ensemble_bad_options_exit_2(tmp_path, options, message):
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("id,label,prediction\n1,0,0\n2,1,0\n")
    result = invoke(
        "ensemble",
        tmp_path / "a.csv",
        tmp_path / "b.csv",
        "--out",
        tmp_path / "e.csv",
        "--average",
        "vote",
        *options,
    )
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
