"""Data sources and model sources given as URLs (memory:// and a real S3 server): downloaded
once per process, then read as local files."""

from __future__ import annotations

import uuid
from pathlib import Path

import torch

from flipless import remote
from flipless.data.sources import DataConfig, check_data, data_config_from_path, load_splits
from flipless.models import build_model, save_model
from flipless.models.sources import load_model_source

ROWS = "id,text,label,split\nq7,hello,pos,train\nb2,bad,neg,train\na1,hi,pos,test\nz9,007,neg,val\n"


def test_a_table_and_a_folder_of_tables_from_urls(s3_bucket):
    url = f"{s3_bucket}/data/rows.csv"
    remote.write_text(url, ROWS)
    splits = load_splits(DataConfig(name="table", path=url))
    assert list(splits) == ["train", "validation", "test"]
    assert splits.original_ids(splits["train"].ids) == ["q7", "b2"]
    assert splits["train"].inputs == ["hello", "bad"]
    summary = check_data(DataConfig(name="table", path=url))
    assert summary.splits == {"train": 2, "validation": 1, "test": 1}
    assert summary.class_names == ("neg", "pos")
    folder = f"memory://tables-{uuid.uuid4().hex[:8]}"
    remote.write_text(f"{folder}/train.csv", "text,label\na,x\nb,y\n")
    remote.write_text(f"{folder}/test.csv", "text,label\nc,x\n")
    config = data_config_from_path(folder)
    assert config.name == "table"
    by_folder = load_splits(config)
    assert by_folder["train"].inputs == ["a", "b"] and by_folder["test"].inputs == ["c"]


def test_a_model_source_from_a_url(s3_bucket):
    torch.manual_seed(0)
    model = build_model("mlp", in_features=4, num_classes=3, hidden=[5])
    save_model(model, f"{s3_bucket}/old.safetensors")
    loaded = load_model_source(f"{s3_bucket}/old.safetensors", num_classes=3)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_a_model_folder_given_by_url_is_downloaded_for_the_registry():
    from flipless.data.labeled import LabeledData
    from flipless.models.sources import ModelConfig, model_settings

    folder = f"memory://hf-{uuid.uuid4().hex[:8]}/model"
    remote.write_text(f"{folder}/config.json", '{"model_type": "bert"}')
    remote.write_text(f"{folder}/vocab/words.txt", "a\nb\n")
    sample = LabeledData.from_arrays(["a", "b"], [0, 1], class_names=["x", "y"])
    settings = model_settings(ModelConfig(name="hf", path=folder), sample)
    local = Path(settings["path"])
    assert local.name == "model" and (local / "config.json").read_text() == '{"model_type": "bert"}'
    assert (local / "vocab" / "words.txt").read_text() == "a\nb\n"
    assert settings["num_classes"] == 2
