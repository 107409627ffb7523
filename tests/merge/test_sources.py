"""Tests of flipless.merge.sources: every way of storing a model gives the same tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from flipless.errors import FileFormatError, InputError
from flipless.merge.interpolate import interpolate
from flipless.merge.sources import TensorSource, open_source
from flipless.models import CHECKPOINT_FORMAT, SmallCNN, save_model


def small_cnn(seed: int = 0) -> SmallCNN:
    """A SmallCNN with non-trivial BatchNorm statistics (and an integer buffer)."""
    torch.manual_seed(seed)
    model = SmallCNN(1, 3, 8, width=2, feature_dim=4)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)
    return model


def assert_same_tensors(source: TensorSource, expected: dict[str, torch.Tensor]) -> None:
    assert sorted(source.keys()) == sorted(expected)
    assert len(source) == len(expected)
    for name, tensor in expected.items():
        assert name in source
        assert source.shape(name) == tuple(tensor.shape)
        assert source.dtype(name) == tensor.dtype
        got = source.get(name)
        assert got.dtype == tensor.dtype
        assert torch.equal(got, tensor), name


def write_sharded(state: dict[str, torch.Tensor], folder: Path) -> Path:
    """The Hugging Face sharded layout, by hand: two shards and an index with a weight map."""
    names = list(state)
    shards = {"model-00001-of-00002.safetensors": names[::2]}
    shards["model-00002-of-00002.safetensors"] = names[1::2]
    weight_map = {}
    for file_name, shard_names in shards.items():
        save_file({n: state[n].contiguous() for n in shard_names}, folder / file_name)
        weight_map.update(dict.fromkeys(shard_names, file_name))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 123}, "weight_map": weight_map}))
    return index


# --------------------------------------------------------------------------- every kind


def test_module_and_mapping_give_the_state_dict_in_its_order():
    model = small_cnn()
    state = model.state_dict()
    for source in (open_source(model), open_source(state)):
        assert source.keys() == list(state)  # the state dict's order
        assert_same_tensors(source, state)
        assert source.metadata == {}
    assert open_source(model).get("blocks.0.1.num_batches_tracked").dtype == torch.int64


def test_a_source_is_returned_as_it_is():
    source = open_source({"w": torch.ones(2)})
    assert open_source(source) is source


def test_safetensors_file_is_read_lazily_with_its_metadata(tmp_path):
    state = small_cnn().state_dict()
    path = tmp_path / "weights.safetensors"
    save_file(state, path, metadata={"note": "hello"})
    with open_source(path) as source:
        assert_same_tensors(source, state)
        assert source.metadata == {"note": "hello"}
        assert source.origin == str(path)
    with pytest.raises(InputError, match="was closed"):
        source.get("head.weight")


def test_half_precision_dtypes_come_from_the_header(tmp_path):
    tensors = {
        "a": torch.randn(3, 2).to(torch.bfloat16),
        "b": torch.randn(4).to(torch.float16),
        "c": torch.arange(5, dtype=torch.int32),
        "d": torch.tensor([True, False]),
    }
    save_file(tensors, tmp_path / "w.safetensors")
    with open_source(tmp_path / "w.safetensors") as source:
        assert [source.dtype(n) for n in "abcd"] == [
            torch.bfloat16,
            torch.float16,
            torch.int32,
            torch.bool,
        ]
        assert_same_tensors(source, tensors)


def test_flipless_model_file_is_a_safetensors_source(tmp_path):
    model = small_cnn()
    path = save_model(model, tmp_path / "old.safetensors", metadata={"epoch": 3})
    with open_source(str(path)) as source:
        assert_same_tensors(source, model.state_dict())
        assert source.metadata["format"] == CHECKPOINT_FORMAT
        assert json.loads(source.metadata["metadata"]) == {"epoch": 3}


@pytest.mark.parametrize("target", ["index", "folder"])
def test_sharded_checkpoint_reads_each_tensor_from_its_shard(tmp_path, target):
    state = small_cnn().state_dict()
    index = write_sharded(state, tmp_path)
    with open_source(index if target == "index" else tmp_path) as source:
        assert_same_tensors(source, state)
        assert source.metadata == {"total_size": 123}


@pytest.mark.parametrize("zipped", [True, False])
def test_torch_state_dict_file(tmp_path, zipped):
    state = small_cnn().state_dict()
    path = tmp_path / "weights.pt"
    torch.save(state, path, _use_new_zipfile_serialization=zipped)  # legacy: not mmap-able
    assert_same_tensors(open_source(path), state)


def test_tensors_shared_under_two_names_are_fine(tmp_path):
    shared = torch.randn(3, 2)
    state = {"embed.weight": shared, "decoder.weight": shared, "decoder.bias": torch.zeros(3)}
    assert_same_tensors(open_source(state), state)
    torch.save(state, tmp_path / "tied.pt")
    assert_same_tensors(open_source(tmp_path / "tied.pt"), state)


def test_pytorch_model_bin_folder_and_its_sharded_index(tmp_path):
    """The older Hugging Face layouts: pytorch_model.bin, or .bin shards with an index."""
    state = small_cnn().state_dict()
    single = tmp_path / "single"
    single.mkdir()
    torch.save(state, single / "pytorch_model.bin")
    assert_same_tensors(open_source(single), state)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = list(state)
    torch.save({n: state[n] for n in names[:3]}, sharded / "pytorch_model-1.bin")
    torch.save({n: state[n] for n in names[3:]}, sharded / "pytorch_model-2.bin")
    weight_map = {
        n: "pytorch_model-1.bin" if i < 3 else "pytorch_model-2.bin" for i, n in enumerate(names)
    }
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_same_tensors(open_source(sharded), state)


# --------------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=12,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["single", "sharded", "bin"])
def test_hugging_face_folder_gives_the_model_state_dict(tmp_path, tiny_bert, layout):
    if layout == "bin":  # transformers 5 writes safetensors only: the .bin layout by hand
        (tmp_path / "config.json").write_text(tiny_bert.config.to_json_string())
        torch.save(tiny_bert.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        shard = "2KB" if layout == "sharded" else "1GB"
        tiny_bert.save_pretrained(tmp_path, max_shard_size=shard)
    files = {path.name for path in tmp_path.iterdir()}
    if layout == "sharded":
        assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    with open_source(tmp_path) as source:
        assert_same_tensors(source, tiny_bert.state_dict())


# --------------------------------------------------------------------------- bad inputs


def test_unknown_source_types_are_refused():
    with pytest.raises(InputError, match=r"cannot read tensors from a int; expected an nn\.Module"):
        open_source(3)
    with pytest.raises(InputError, match=r"must map tensor names \(str\) to tensors; entries 'b'"):
        open_source({"a": torch.ones(1), "b": [1.0]})
    with pytest.raises(InputError, match=r"entries 0 do not"):
        open_source({0: torch.ones(1)})


def test_unreadable_paths_say_what_is_accepted(tmp_path):
    with pytest.raises(FileFormatError, match=r"no file or folder at .*missing"):
        open_source(tmp_path / "missing.safetensors")
    with pytest.raises(FileFormatError, match="folder without model weights: expected one of"):
        open_source(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileFormatError, match=r"unknown file type; expected an nn.Module"):
        open_source(tmp_path / "notes.txt")
    (tmp_path / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    with pytest.raises(FileFormatError, match=r"cannot read .*broken.safetensors as a safetensors"):
        open_source(tmp_path / "broken.safetensors")
    (tmp_path / "broken.pt").write_bytes(b"not a pickle")
    with pytest.raises(FileFormatError, match=r"torch.load\(weights_only=True\)"):
        open_source(tmp_path / "broken.pt")


def test_torch_file_must_hold_a_state_dict(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(FileFormatError, match="holds a list that is not a state dict"):
        open_source(tmp_path / "list.pt")
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "wrapped.pt")
    with pytest.raises(FileFormatError, match=r"pass torch.load\(path\)\['state_dict'\]"):
        open_source(tmp_path / "wrapped.pt")


def test_sharded_index_must_agree_with_its_shards(tmp_path):
    state = small_cnn().state_dict()
    index = write_sharded(state, tmp_path)
    content = json.loads(index.read_text())
    content["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(content))
    with pytest.raises(FileFormatError, match=r"1 tensor\(s\) in model-00001.* \('ghost.weight'\)"):
        open_source(index)
    content["weight_map"]["ghost.weight"] = "model-00009.safetensors"
    index.write_text(json.dumps(content))
    with pytest.raises(FileFormatError, match=r"names the shard model-00009.safetensors, which is"):
        open_source(index)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(FileFormatError, match="has no 'weight_map' object"):
        open_source(index)
    index.write_text("{not json")
    with pytest.raises(FileFormatError, match=r"cannot read .* as JSON"):
        open_source(index)


def test_asking_for_an_absent_tensor_names_what_exists():
    source = open_source({"a.weight": torch.ones(1), "a.bias": torch.ones(1)})
    with pytest.raises(InputError, match=r"has no tensor named 'b'; it has 2, e.g. 'a.weight'"):
        source.get("b")
    with pytest.raises(InputError, match="has no tensor named 'b'"):
        source.shape("b")


@pytest.mark.slow
def test_hugging_face_folders_interpolate_into_a_model(tmp_path, tiny_bert):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    other = transformers.BertModel(tiny_bert.config).eval()
    tiny_bert.save_pretrained(tmp_path / "old")
    other.save_pretrained(tmp_path / "new", max_shard_size="2KB")
    target = transformers.BertModel(tiny_bert.config)
    merged = interpolate(tmp_path / "old", tmp_path / "new", 0.3, model=target)
    expected = interpolate(tiny_bert, other, 0.3)
    assert merged is target
    for name, tensor in expected.state_dict().items():
        assert torch.equal(merged.state_dict()[name], tensor), name
