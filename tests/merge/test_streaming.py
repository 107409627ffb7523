"""Streaming merge: the safetensors writer, shard plans, stream_merge against in-memory merges,
mismatches, crashes that leave nothing behind, and the peak memory of a real merge."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from flipless.errors import FileFormatError, InputError, MismatchError
from flipless.merge.streaming import (
    INDEX_FILE,
    SAFETENSORS_DTYPES,
    SafetensorsWriter,
    TensorEntry,
    open_checkpoint,
    read_safetensors_header,
    shard_plan,
    stream_merge,
)
from flipless.merge.tensors import merge_tensor

OLD_WEIGHT = 0.3


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random bits of any dtype (0/1 for bool); NaNs included for floats, so compare bytes."""
    generator = torch.Generator().manual_seed(seed)
    count = torch.Size(shape).numel()
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    raw = torch.randint(0, 256, (count * dtype.itemsize,), dtype=torch.uint8, generator=generator)
    return raw.view(dtype).reshape(shape)


def same_bytes(left: torch.Tensor, right: torch.Tensor) -> bool:
    return (
        left.dtype == right.dtype
        and left.shape == right.shape
        and torch.equal(
            left.contiguous().reshape(-1).view(torch.uint8),
            right.contiguous().reshape(-1).view(torch.uint8),
        )
    )


def write_all(path: Path, tensors: dict[str, torch.Tensor], metadata=None) -> Path:
    entries = [TensorEntry(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()]
    with SafetensorsWriter(path, entries, metadata=metadata) as writer:
        for name, tensor in tensors.items():
            writer.write(name, tensor)
    return path


def model_state(seed: int) -> dict[str, torch.Tensor]:
    """A small model's tensors: float32 weights, a float16 one, a float64 one, an int buffer."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "encoder.weight": torch.randn(6, 5, generator=generator),
        "encoder.bias": torch.randn(6, generator=generator),
        "head.weight": torch.randn(3, 6, generator=generator).half(),
        "head.scale": torch.randn((), generator=generator, dtype=torch.float64),
        "norm.num_batches_tracked": torch.tensor(seed + 10),
        "decoder.weight": torch.randn(4, 6, generator=generator),
    }


def interpolate(name: str, old: torch.Tensor, news: list[torch.Tensor]) -> torch.Tensor:
    """Floating tensors interpolated; integer buffers taken from the old model."""
    if not old.is_floating_point():
        return old
    return merge_tensor(old, news, OLD_WEIGHT, name=name)


def load_output(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a merged folder, read with safetensors itself."""
    index = folder / INDEX_FILE
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(folder / file))
    return tensors


def expected_merge(old: dict, news: list[dict]) -> dict[str, torch.Tensor]:
    """The interpolation computed in float64 by hand, cast to each tensor's dtype."""
    result = {}
    for name, tensor in old.items():
        if not tensor.is_floating_point():
            result[name] = tensor
            continue
        mean_new = sum(new[name].double() for new in news) / len(news)
        exact = OLD_WEIGHT * tensor.double() + (1 - OLD_WEIGHT) * mean_new
        result[name] = exact.to(tensor.dtype)
    return result


def assert_close_to(merged: dict, expected: dict) -> None:
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        assert merged[name].dtype == tensor.dtype, name
        if tensor.is_floating_point():
            tolerance = 1e-3 if tensor.dtype == torch.float16 else 1e-6
            torch.testing.assert_close(merged[name], tensor, rtol=tolerance, atol=tolerance)
        else:
            assert torch.equal(merged[name], tensor), name


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- the writer


@pytest.mark.parametrize("dtype", list(SAFETENSORS_DTYPES), ids=str)
def test_writer_round_trips_every_dtype_through_safetensors(tmp_path, dtype):
    tensors = {
        "matrix": random_tensor(dtype, (3, 5), seed=1),
        "scalar": random_tensor(dtype, (), seed=2),
        "empty": random_tensor(dtype, (0, 4), seed=3),
        "odd": random_tensor(dtype, (7,), seed=4),
    }
    path = write_all(tmp_path / "x.safetensors", tensors, metadata={"format": "pt", "k": "v"})

    loaded = load_file(path)
    with safe_open(path, framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "k": "v"}
        opened = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    stored, metadata = read_safetensors_header(path)
    assert metadata == {"format": "pt", "k": "v"}
    assert [s.entry.name for s in stored] == list(tensors)  # file order is the written order
    mine = {s.entry.name: s.read() for s in stored}
    for name, tensor in tensors.items():
        assert same_bytes(loaded[name], tensor), name
        assert same_bytes(opened[name], tensor), name
        assert same_bytes(mine[name], tensor), name


def test_writer_layout_is_the_safetensors_format(tmp_path):
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.tensor([1, 2], dtype=torch.int16)
    path = write_all(tmp_path / "x.safetensors", {"a": a, "b": b})
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert length % 8 == 0
    header = json.loads(raw[8 : 8 + length])
    assert header == {
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "I16", "shape": [2], "data_offsets": [24, 28]},
    }
    data = raw[8 + length :]
    assert data == struct.pack("<6f", 0, 1, 2, 3, 4, 5) + struct.pack("<2h", 1, 2)


def test_tensor_entries_take_any_shape_sequence():
    entry = TensorEntry("a", torch.float16, [2, 3])
    assert entry.shape == (2, 3) == TensorEntry("a", torch.float16, torch.Size([2, 3])).shape
    assert entry.nbytes == 12
    assert TensorEntry("s", torch.float64, ()).nbytes == 8


def test_writer_takes_non_contiguous_and_autograd_tensors(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    weight = torch.nn.Parameter(torch.ones(2, 2))
    path = write_all(tmp_path / "x.safetensors", {"t": base.t(), "w": weight})
    loaded = load_file(path)
    assert torch.equal(loaded["t"], base.t().contiguous())
    assert torch.equal(loaded["w"], torch.ones(2, 2))


def test_writer_reads_misaligned_tensors_by_copying(tmp_path):
    # 3 bytes of uint8 first: the float32 tensor starts at an odd offset.
    tensors = {"bytes": torch.tensor([1, 2, 3], dtype=torch.uint8), "x": torch.tensor([1.5, -2.0])}
    path = write_all(tmp_path / "x.safetensors", tensors)
    stored, _ = read_safetensors_header(path)
    assert stored[1].start % 4 != 0
    assert torch.equal(stored[1].read(), tensors["x"])
    assert torch.equal(load_file(path)["x"], tensors["x"])


def test_writer_is_atomic_and_checks_every_tensor(tmp_path):
    path = tmp_path / "x.safetensors"
    entries = [TensorEntry("a", torch.float32, (2,)), TensorEntry("b", torch.int64, ())]
    writer = SafetensorsWriter(path, entries)
    writer.write("a", torch.zeros(2))
    assert not path.exists() and writer.temporary_path.exists()
    with pytest.raises(MismatchError, match=r"header declares I64 \[\] but the tensor is F32 \[\]"):
        writer.write("b", torch.tensor(1.0))
    assert listing(tmp_path) == []  # aborted: no temporary file, no output
    with pytest.raises(InputError, match="closed or aborted"):
        writer.write("b", torch.tensor(1))


@pytest.mark.parametrize(
    ("name", "tensor", "error", "message"),
    [
        ("b", torch.zeros(2), MismatchError, r"got tensor 'b' but the header declares 'a' next"),
        ("a", torch.zeros(3), MismatchError, r"declares F32 \[2\] but the tensor is F32 \[3\]"),
        ("a", torch.zeros(2, dtype=torch.float64), MismatchError, r"tensor is F64 \[2\]"),
        ("a", [0.0, 0.0], InputError, "expected a torch.Tensor; got list"),
    ],
)
def test_writer_rejects_a_wrong_tensor_and_leaves_nothing(tmp_path, name, tensor, error, message):
    entries = [TensorEntry("a", torch.float32, (2,)), TensorEntry("b", torch.float32, (1,))]
    writer = SafetensorsWriter(tmp_path / "x.safetensors", entries)
    with pytest.raises(error, match=message):
        writer.write(name, tensor)
    assert listing(tmp_path) == []


def test_writer_close_needs_every_tensor_and_context_manager_aborts(tmp_path):
    entries = [TensorEntry("a", torch.float32, (2,)), TensorEntry("b", torch.float32, (1,))]
    writer = SafetensorsWriter(tmp_path / "x.safetensors", entries)
    writer.write("a", torch.zeros(2))
    with pytest.raises(InputError, match="after 1 of 2 declared tensors; missing b"):
        writer.close()
    assert listing(tmp_path) == []
    with pytest.raises(RuntimeError, match="boom"), SafetensorsWriter(tmp_path / "y", entries) as w:
        w.write("a", torch.zeros(2))
        raise RuntimeError("boom")
    assert listing(tmp_path) == []
    full = SafetensorsWriter(tmp_path / "z", entries[:1])
    full.write("a", torch.zeros(2))
    with pytest.raises(InputError, match="all 1 declared tensors are written already"):
        full.write("b", torch.zeros(1))


@pytest.mark.parametrize(
    ("entries", "metadata", "message"),
    [
        ([TensorEntry("a", torch.float32, (1,))] * 2, None, "'a' appears twice"),
        ([TensorEntry("a", torch.complex128, (1,))], None, "complex128 cannot be stored"),
        ([TensorEntry("a", torch.float32, (-1,))], None, "expected non-negative integers"),
        ([TensorEntry("__metadata__", torch.float32, (1,))], None, "other than '__metadata__'"),
        ([("a", torch.float32, (1,))], None, r"expected TensorEntry\(name, dtype, shape\)"),
        ([TensorEntry("a", torch.float32, (1,))], {"step": 3}, "must map strings to strings"),
    ],
)
def test_writer_rejects_bad_declarations(tmp_path, entries, metadata, message):
    with pytest.raises(InputError, match=message):
        SafetensorsWriter(tmp_path / "x.safetensors", entries, metadata=metadata)
    assert listing(tmp_path) == []


def test_writer_needs_an_existing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        SafetensorsWriter(tmp_path / "no" / "x.safetensors", [])


# ---------------------------------------------------------------- shard plans


def test_shard_plan_keeps_order_and_packs_greedily():
    entries = [
        TensorEntry("a", torch.float32, (2,)),  # 8 bytes
        TensorEntry("b", torch.float32, (1,)),  # 4
        TensorEntry("c", torch.float64, (1,)),  # 8
        TensorEntry("huge", torch.float32, (10,)),  # 40 > limit: a shard of its own
        TensorEntry("d", torch.uint8, (0,)),  # 0
        TensorEntry("e", torch.int16, (6,)),  # 12
    ]
    assert shard_plan(entries, 12) == [["a", "b"], ["c"], ["huge"], ["d", "e"]]
    assert shard_plan(entries, 1000) == [["a", "b", "c", "huge", "d", "e"]]
    assert shard_plan([], 10) == []
    for bad in (0, -5, 2.5, True):
        with pytest.raises(InputError, match="expected a positive integer"):
            shard_plan(entries, bad)


# ---------------------------------------------------------------- stream_merge


def test_stream_merge_of_single_files_equals_the_in_memory_merge(tmp_path):
    old, news = model_state(0), [model_state(1), model_state(2)]
    save_file(old, tmp_path / "old.safetensors", metadata={"format": "pt"})
    for index, new in enumerate(news):
        save_file(new, tmp_path / f"new{index}.safetensors")

    out = stream_merge(
        tmp_path / "old.safetensors",
        [tmp_path / "new0.safetensors", tmp_path / "new1.safetensors"],
        tmp_path / "merged",
        interpolate,
    )

    assert out == tmp_path / "merged"
    assert listing(out) == ["model.safetensors"]
    merged = load_output(out)
    assert_close_to(merged, expected_merge(old, news))
    for name, tensor in old.items():  # and bit for bit what merge_tensor gives in memory
        assert torch.equal(merged[name], interpolate(name, tensor, [n[name] for n in news]))
    with safe_open(out / "model.safetensors", framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_stream_merge_reads_sharded_folders_and_copies_model_files(tmp_path):
    old, new = model_state(0), model_state(1)
    for label, state in (("old", old), ("new", new)):
        folder = tmp_path / label
        folder.mkdir()
        names = list(state)
        first, second = names[:3], names[3:]
        save_file({n: state[n] for n in first}, folder / "model-00001-of-00002.safetensors")
        save_file({n: state[n] for n in second}, folder / "model-00002-of-00002.safetensors")
        weight_map = {n: "model-00001-of-00002.safetensors" for n in first}
        weight_map.update({n: "model-00002-of-00002.safetensors" for n in second})
        (folder / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp_path / "old" / "config.json").write_text('{"model_type": "tiny"}')
    (tmp_path / "old" / "tokenizer.json").write_text("{}")
    (tmp_path / "old" / "README.md").write_text("not copied")

    out = stream_merge(tmp_path / "old", tmp_path / "new", tmp_path / "merged", interpolate)

    assert listing(out) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (out / "config.json").read_text() == '{"model_type": "tiny"}'
    assert_close_to(load_output(out), expected_merge(old, [new]))


def test_stream_merge_writes_shards_and_an_index_that_load_back(tmp_path):
    old, new = model_state(0), model_state(1)
    (tmp_path / "old").mkdir()
    save_file(old, tmp_path / "old" / "model.safetensors")
    save_file(new, tmp_path / "new.safetensors")

    out = stream_merge(
        tmp_path / "old",
        [tmp_path / "new.safetensors"],
        tmp_path / "merged",
        interpolate,
        max_shard_bytes=100,
        metadata={"merged_with": "flipless", "old_weight": str(OLD_WEIGHT)},
    )

    # File order of the input is kept: save_file stores tensors by (size of dtype, name).
    stored, _ = read_safetensors_header(tmp_path / "old" / "model.safetensors")
    entries = [s.entry for s in stored]
    plan = shard_plan(entries, 100)
    assert len(plan) > 2
    shard_names = [f"model-{i:05d}-of-{len(plan):05d}.safetensors" for i in range(1, len(plan) + 1)]
    assert listing(out) == sorted([*shard_names, INDEX_FILE])
    index = json.loads((out / INDEX_FILE).read_text())
    assert index["metadata"] == {"total_size": sum(e.nbytes for e in entries)}
    assert index["weight_map"] == {
        name: shard_names[i] for i, shard in enumerate(plan) for name in shard
    }
    with safe_open(out / shard_names[0], framework="pt") as handle:
        assert handle.metadata() == {"merged_with": "flipless", "old_weight": "0.3"}
    merged = load_output(out)
    assert_close_to(merged, expected_merge(old, [new]))

    # The sharded output is itself an input: an identity merge copies it exactly.
    copy = stream_merge(out, [out], tmp_path / "copy", lambda name, o, news: o)
    assert listing(copy) == ["model.safetensors"]
    again = load_output(copy)
    assert all(same_bytes(again[name], tensor) for name, tensor in merged.items())


def test_stream_merge_shows_progress_when_asked(tmp_path, capsys):
    save_file(model_state(0), tmp_path / "old.safetensors")
    old = tmp_path / "old.safetensors"
    stream_merge(old, [old], tmp_path / "quiet", interpolate)
    assert capsys.readouterr().err == ""
    stream_merge(old, [old], tmp_path / "loud", interpolate, progress=True)
    assert "merging: 100%" in capsys.readouterr().err


def test_stream_merge_into_an_existing_empty_folder(tmp_path):
    save_file(model_state(0), tmp_path / "old.safetensors")
    (tmp_path / "merged").mkdir()
    stream_merge(
        tmp_path / "old.safetensors",
        [tmp_path / "old.safetensors"],
        tmp_path / "merged",
        interpolate,
    )
    assert listing(tmp_path / "merged") == ["model.safetensors"]
    assert_close_to(load_output(tmp_path / "merged"), model_state(0))


@pytest.mark.parametrize("sharded_output", [False, True])
def test_a_crash_mid_merge_leaves_no_output_and_no_temporary_files(tmp_path, sharded_output):
    save_file(model_state(0), tmp_path / "old.safetensors")
    save_file(model_state(1), tmp_path / "new.safetensors")
    before = listing(tmp_path)
    calls = []

    def failing(name, old, news):
        calls.append(name)
        if len(calls) == 3:
            raise RuntimeError("merge failed on the third tensor")
        return interpolate(name, old, news)

    with pytest.raises(RuntimeError, match="third tensor"):
        stream_merge(
            tmp_path / "old.safetensors",
            [tmp_path / "new.safetensors"],
            tmp_path / "merged",
            failing,
            max_shard_bytes=40 if sharded_output else 2**30,  # 40: the first shard is finished
        )
    assert len(calls) == 3
    assert listing(tmp_path) == before


def test_merge_fn_must_keep_dtype_and_shape(tmp_path):
    save_file(model_state(0), tmp_path / "old.safetensors")
    with pytest.raises(MismatchError, match=r"encoder.weight: the header declares F32 \[6, 5\]"):
        stream_merge(
            tmp_path / "old.safetensors",
            [tmp_path / "old.safetensors"],
            tmp_path / "merged",
            lambda name, old, news: old.double() if name == "encoder.weight" else old,
        )
    assert listing(tmp_path) == ["old.safetensors"]


def write_pair(tmp_path: Path, old: dict, new: dict) -> tuple[Path, Path]:
    save_file(old, tmp_path / "old.safetensors")
    save_file(new, tmp_path / "new.safetensors")
    return tmp_path / "old.safetensors", tmp_path / "new.safetensors"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("head.weight"), r"lacks 1 tensors of the old one: head.weight"),
        (lambda s: s.update(extra=torch.zeros(1)), r"has 1 tensors the old one lacks: extra"),
        (
            lambda s: s.update({"encoder.weight": torch.zeros(5, 6)}),
            r"encoder.weight \(old F32 \[6, 5\], new F32 \[5, 6\]\)",
        ),
        (
            lambda s: s.update({"encoder.bias": torch.zeros(6, dtype=torch.bfloat16)}),
            r"encoder.bias \(old F32 \[6\], new BF16 \[6\]\)",
        ),
    ],
)
def test_mismatched_checkpoints_are_refused(tmp_path, change, message):
    new = model_state(1)
    change(new)
    old_path, new_path = write_pair(tmp_path, model_state(0), new)
    with pytest.raises(MismatchError, match=message):
        stream_merge(old_path, [old_path, new_path], tmp_path / "merged", interpolate)
    assert not (tmp_path / "merged").exists()


def test_every_difference_is_listed_in_one_error(tmp_path):
    new = {f"extra{i}": torch.zeros(1) for i in range(7)}
    old_path, new_path = write_pair(tmp_path, {"a": torch.zeros(1)}, new)
    with pytest.raises(MismatchError, match=r"lacks 1 tensors.*: a; .* has 7 .*extra4 and 2 more"):
        stream_merge(old_path, [new_path], tmp_path / "merged", interpolate)


def test_bad_arguments_are_refused(tmp_path):
    old_path, new_path = write_pair(tmp_path, model_state(0), model_state(1))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not an empty folder"):
        stream_merge(old_path, [new_path], tmp_path / "busy", interpolate)
    with pytest.raises(InputError, match="not an empty folder"):
        stream_merge(old_path, [new_path], old_path, interpolate)
    with pytest.raises(InputError, match="no new checkpoint given"):
        stream_merge(old_path, [], tmp_path / "merged", interpolate)
    with pytest.raises(InputError, match="merge_fn must be callable"):
        stream_merge(old_path, [new_path], tmp_path / "merged", "average")
    with pytest.raises(InputError, match="must map strings to strings"):
        stream_merge(old_path, [new_path], tmp_path / "merged", interpolate, metadata={"a": 1})
    with pytest.raises(InputError, match="max_shard_bytes=0"):
        stream_merge(old_path, [new_path], tmp_path / "merged", interpolate, max_shard_bytes=0)
    save_file({}, tmp_path / "empty.safetensors")
    with pytest.raises(InputError, match="holds no tensors"):
        stream_merge(
            tmp_path / "empty.safetensors",
            [tmp_path / "empty.safetensors"],
            tmp_path / "m",
            interpolate,
        )
    assert not (tmp_path / "merged").exists() and not (tmp_path / "m").exists()


def test_unreadable_checkpoints_are_file_format_errors(tmp_path):
    with pytest.raises(FileFormatError, match="No such checkpoint"):
        open_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileFormatError, match=r"holds neither model\.safetensors\.index\.json"):
        open_checkpoint(tmp_path / "folder")

    def corrupt(data: bytes) -> Path:
        path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.safetensors"
        path.write_bytes(data)
        return path

    def with_header(header: dict, data: bytes = b"") -> Path:
        text = json.dumps(header).encode()
        return corrupt(struct.pack("<Q", len(text)) + text + data)

    cases = [
        (corrupt(b"abc"), "shorter than the 8-byte header length"),
        (corrupt(struct.pack("<Q", 10**6) + b"{}"), "claims 1000000 bytes in a 10-byte file"),
        (corrupt(struct.pack("<Q", 4) + b"nope"), "header is not JSON"),
        (with_header([1]), "not a JSON object"),
        (with_header({"__metadata__": {"a": 1}}), "__metadata__ is not a map of strings"),
        (with_header({"a": {"dtype": "F32"}}), "lacks dtype, shape or data_offsets"),
        (with_header({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}), "'F99'"),
        (with_header({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}), "shape"),
        (with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}), r"\[4, 0\]"),
        (
            with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"1234"),
            r"8 bytes\) has data_offsets \[0, 8\] in a file with 4 data bytes",
        ),
    ]
    for path, message in cases:
        with pytest.raises(FileFormatError, match=message):
            open_checkpoint(path)


def test_an_index_that_disagrees_with_its_shards_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a": torch.zeros(1)}, folder / "part.safetensors")
    (folder / INDEX_FILE).write_text(
        json.dumps({"weight_map": {"a": "part.safetensors", "b": "part.safetensors"}})
    )
    with pytest.raises(
        FileFormatError, match=r"places b in part\.safetensors, which does not hold"
    ):
        open_checkpoint(folder)
    (folder / INDEX_FILE).write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(FileFormatError, match=r"No such checkpoint file: .*gone\.safetensors"):
        open_checkpoint(folder)
    (folder / INDEX_FILE).write_text("[]")
    with pytest.raises(FileFormatError, match="not a safetensors index"):
        open_checkpoint(folder)


@pytest.mark.slow
def test_a_hugging_face_model_folder_stays_loadable(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path / "old")
    torch.manual_seed(1)
    transformers.BertModel(config).save_pretrained(tmp_path / "new")

    stream_merge(tmp_path / "old", [tmp_path / "new"], tmp_path / "merged", interpolate)

    merged = transformers.BertModel.from_pretrained(tmp_path / "merged").state_dict()
    old = load_file(tmp_path / "old" / "model.safetensors")
    new = load_file(tmp_path / "new" / "model.safetensors")
    expected = expected_merge(old, [new])
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- peak memory

MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import load_file, save_file
    from flipless.merge.streaming import stream_merge

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    def peak_growth(work):
        open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
        before = status("VmRSS")
        work()
        return status("VmHWM") - before

    old, new, folder = sys.argv[1:]
    merge = lambda name, o, ns: torch.lerp(ns[0], o, 0.3)  # 0.3 old + 0.7 new, one pass

    def load_everything():
        olds, news = load_file(old), load_file(new)
        save_file({k: merge(k, v, [news[k]]) for k, v in olds.items()}, folder + "/plain.safetensors")

    print(json.dumps({
        "stream": peak_growth(lambda: stream_merge(old, [new], folder + "/streamed", merge)),
        "plain": peak_growth(load_everything),
    }))
    """
)


@pytest.mark.slow
def test_peak_memory_stays_near_one_tensor_not_the_model(tmp_path):
    clear_refs = Path("/proc/self/clear_refs")
    if not clear_refs.exists() or not os.access(clear_refs, os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    count, shape = 38, (1024, 2048)  # 38 tensors of 8 MiB: 304 MiB per checkpoint
    entries = [TensorEntry(f"layer{i}.weight", torch.float32, shape) for i in range(count)]
    for label, sign in (("old", 1.0), ("new", -1.0)):
        with SafetensorsWriter(tmp_path / f"{label}.safetensors", entries) as writer:
            for index, entry in enumerate(entries):
                writer.write(entry.name, torch.full(shape, sign * index))
    size = (tmp_path / "old.safetensors").stat().st_size

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_PROBE,
            str(tmp_path / "old.safetensors"),
            str(tmp_path / "new.safetensors"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    growth = json.loads(result.stdout)

    assert growth["stream"] < 0.35 * size, growth
    assert growth["plain"] > 1.0 * size, growth
    streamed = load_file(tmp_path / "streamed" / "model.safetensors")
    plain = load_file(tmp_path / "plain.safetensors")
    assert all(torch.equal(streamed[name], plain[name]) for name in plain)
