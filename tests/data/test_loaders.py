"""Tests of flipless.data.loaders: every loader, on real data where it is here and on small
files written in the real formats."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flipless.data import loaders as datasets
from flipless.data.loaders import (
    FASHION_MNIST_CLASSES,
    load_arrays,
    load_banking77,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    load_massive,
)
from flipless.errors import FileFormatError, InputError, MismatchError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MASSIVE_OLD = SHARED / "massive-add-data" / "old"
BANKING77 = SHARED / "banking77"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not here")


def assert_ids_disjoint_and_running(splits: dict) -> None:
    """Ids of the splits, in order, are 0..N-1 without gaps or repeats."""
    ids = np.concatenate([data.ids.numpy() for data in splits.values()])
    assert ids.tolist() == list(range(ids.size))


# --------------------------------------------------------------------------- digits


def test_load_digits_split_sizes_values_and_ids() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    splits = load_digits(test_fraction=0.25, seed=0)
    train, test = splits["train"], splits["test"]
    # per class: ⌊0.25·n_c + ½⌋ go to test
    per_class = np.bincount(bunch.target)
    expected_test = np.floor(0.25 * per_class + 0.5).astype(int)
    assert test.class_counts().tolist() == expected_test.tolist()
    assert len(train) + len(test) == 1797 and len(test) == expected_test.sum()
    assert train.inputs.shape == (len(train), 1, 8, 8) and train.inputs.dtype == torch.float32
    assert float(train.inputs.min()) == 0.0 and float(train.inputs.max()) == 1.0
    all_ids = sorted(train.ids.tolist() + test.ids.tolist())
    assert all_ids == list(range(1797))
    row = int(test.ids[3])
    expected = torch.from_numpy(bunch.images[row] / 16.0).float()
    assert torch.equal(test.inputs[3, 0], expected)
    assert int(test.labels[3]) == bunch.target[row]
    assert train.class_names == tuple("0123456789")
    assert (train.name, test.name) == ("digits/train", "digits/test")


def test_load_digits_is_seeded() -> None:
    first, again = load_digits(seed=3)["test"], load_digits(seed=3)["test"]
    assert first.ids.tolist() == again.ids.tolist()
    assert first.ids.tolist() != load_digits(seed=4)["test"].ids.tolist()


@pytest.mark.parametrize("fraction", [0, 1, 1.2])
def test_load_digits_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(InputError, match=r"test_fraction=.*\(0, 1\)"):
        load_digits(test_fraction=fraction)


# --------------------------------------------------------------------------- Fashion-MNIST


def idx_bytes(array: np.ndarray, magic_dims: int | None = None) -> bytes:
    dims = array.ndim if magic_dims is None else magic_dims
    return bytes([0, 0, 8, dims]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fashion(folder: Path, n_train: int = 3, n_test: int = 2, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(9, 9 - n_test, -1, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        raw = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_written_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = write_fashion(tmp_path, gz=gz)
    splits = load_fashion_mnist(tmp_path)
    train, test = splits["train"], splits["test"]
    assert train.inputs.shape == (3, 1, 5, 4) and test.inputs.shape == (2, 1, 5, 4)
    expected = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255
    np.testing.assert_allclose(train.inputs[:, 0].numpy(), expected, rtol=1e-6, atol=0)
    assert train.labels.tolist() == [0, 1, 2] and test.labels.tolist() == [9, 8]
    assert train.ids.tolist() == [0, 1, 2] and test.ids.tolist() == [3, 4]
    assert train.class_names == FASHION_MNIST_CLASSES and train.class_names[9] == "Ankle boot"


def test_idx_header_is_read_big_endian(tmp_path: Path) -> None:
    # hand-written header: magic 0x00000803 = 2051, sizes 2, 1, 3 (big-endian)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(bytes.fromhex("00000803000000020000000100000003") + bytes(range(6)))
    array = datasets.read_idx(path, datasets.IDX_IMAGES_MAGIC)
    assert array.shape == (2, 1, 3) and array[1, 0].tolist() == [3, 4, 5]
    assert datasets.IDX_IMAGES_MAGIC == 0x803 and datasets.IDX_LABELS_MAGIC == 0x801


def test_fashion_mnist_truncated_and_swapped_files(tmp_path: Path) -> None:
    arrays = write_fashion(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    full = images.read_bytes()
    images.write_bytes(full[:-1])
    with pytest.raises(FileFormatError, match=r"holds 59 data bytes; expected 60.*truncated"):
        load_fashion_mnist(tmp_path)
    images.write_bytes(full + b"\0")
    with pytest.raises(FileFormatError, match="longer than its header says"):
        load_fashion_mnist(tmp_path)
    images.write_bytes(full[:10])
    with pytest.raises(FileFormatError, match="expected a 16-byte header"):
        load_fashion_mnist(tmp_path)
    images.write_bytes(idx_bytes(arrays["train-labels-idx1-ubyte"]))
    with pytest.raises(FileFormatError, match=r"magic number 2049; expected 2051.*swapped"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_truncated_gzip(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-6])
    with pytest.raises(FileFormatError, match=r"t10k-labels-idx1-ubyte\.gz could not be read"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_count_mismatch_and_bad_label(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=False)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.array([1, 2, 3], dtype=np.uint8)))
    with pytest.raises(FileFormatError, match=r"holds 2 images but .* holds 3 labels"):
        load_fashion_mnist(tmp_path)
    labels.write_bytes(idx_bytes(np.array([1, 10], dtype=np.uint8)))
    with pytest.raises(FileFormatError, match=r"labels 10 at positions 1; expected .*\[0, 10\)"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_missing_files_and_folders(tmp_path: Path, monkeypatch) -> None:
    write_fashion(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileFormatError, match=r"no t10k-images-idx3-ubyte\.gz or t10k-images"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(FileFormatError, match="is not a folder"):
        load_fashion_mnist(tmp_path / "nowhere")
    monkeypatch.setattr(datasets, "FASHION_MNIST_DEBIAN_PATH", tmp_path / "absent")
    with pytest.raises(FileFormatError, match=r"apt-get install dataset-fashion-mnist.*path="):
        load_fashion_mnist()


@pytest.mark.system_package("dataset-fashion-mnist")
def test_load_fashion_mnist_real_debian_files() -> None:
    splits = load_fashion_mnist()
    train, test = splits["train"], splits["test"]
    assert train.inputs.shape == (60000, 1, 28, 28) and test.inputs.shape == (10000, 1, 28, 28)
    assert train.class_counts().tolist() == [6000] * 10
    assert test.class_counts().tolist() == [1000] * 10
    assert int(train.labels[0]) == 9 and int(test.labels[0]) == 9  # both start with ankle boots
    assert float(train.inputs.min()) == 0.0 and float(train.inputs.max()) == 1.0
    assert int(train.ids[-1]) == 59999 and int(test.ids[0]) == 60000


# --------------------------------------------------------------------------- CIFAR-10


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as in the real CIFAR-10 files (protocol 2)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def python2_pickle(content: object) -> bytes:
    """The bytes a Python 2 / numpy 1 ``cPickle.dump(content, f, 2)`` would write."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(content)
    return buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]


def write_cifar(folder: Path, dump=python2_pickle, per_batch: int = 2) -> dict[str, dict]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for index, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        count = per_batch + (1 if name == "test_batch" else 0)
        batches[name] = {
            b"batch_label": f"batch {index}".encode(),
            b"labels": [(index + k) % 5 for k in range(count)],
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            b"filenames": [f"img{k}.png".encode() for k in range(count)],
        }
        (folder / name).write_bytes(dump(batches[name]))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": CIFAR_NAMES, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(dump(meta))
    return batches


@pytest.mark.parametrize(
    "dump",
    [python2_pickle, lambda c: pickle.dumps(c, protocol=2), lambda c: pickle.dumps(c, protocol=5)],
    ids=["python2", "python3-protocol2", "protocol5"],
)
def test_load_cifar10_from_batches_in_the_real_format(tmp_path: Path, dump) -> None:
    batches = write_cifar(tmp_path, dump)
    if dump is python2_pickle:  # the exact form of the published files
        assert b"cnumpy.core.multiarray\n_reconstruct" in (tmp_path / "data_batch_1").read_bytes()
        assert b"_codecs" not in (tmp_path / "data_batch_1").read_bytes()
    splits = load_cifar10(tmp_path)
    train, test = splits["train"], splits["test"]
    assert train.inputs.shape == (10, 3, 32, 32) and test.inputs.shape == (3, 3, 32, 32)
    assert train.class_names == ("airplane", "automobile", "bird", "cat", "deer")
    assert train.ids.tolist() == list(range(10)) and test.ids.tolist() == [10, 11, 12]
    expected_labels = [y for k in range(1, 6) for y in batches[f"data_batch_{k}"][b"labels"]]
    assert train.labels.tolist() == expected_labels
    # row layout: 1024 red values, then green, then blue, each row-major over 32×32
    data = batches["data_batch_3"][b"data"]
    for channel, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 31)]:
        raw = data[1, channel * 1024 + y * 32 + x]
        assert float(train.inputs[5, channel, y, x]) == pytest.approx(raw / 255, abs=1e-7)


def test_cifar_meta_with_str_names_and_fine_labels(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    meta = {"label_names": [n.decode() for n in CIFAR_NAMES]}
    (tmp_path / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    batch = pickle.loads((tmp_path / "test_batch").read_bytes(), encoding="bytes")
    batch[b"fine_labels"] = batch.pop(b"labels")
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    splits = load_cifar10(tmp_path)
    assert splits["test"].labels.tolist() == [0, 1, 2]  # index 5: (5 + k) % 5
    assert splits["test"].class_names[4] == "deer"


class Exploit:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_cifar_malicious_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": Exploit(f"touch {marker}"), b"labels": [0]}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(FileFormatError, match=r"data_batch_2 .*asks for (posix|nt|os)\.system"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_cifar_codecs_encode_is_limited_to_latin1(tmp_path: Path) -> None:
    class Rot13:
        def __reduce__(self):
            return (codecs.encode, ("uryyb", "rot13"))

    write_cifar(tmp_path)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": Rot13()}, protocol=2))
    with pytest.raises(FileFormatError, match=r"_codecs.encode\(str, 'rot13'\) is refused"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({b"data": np.zeros((1, 3072), np.uint8)}, "no labels or fine_labels entry"),
        ({b"labels": [0]}, "no data entry"),
        ({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}, "expected a uint8 array"),
        ({b"data": np.zeros((1, 100), np.uint8), b"labels": [0]}, "100 values per image"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0.5]}, "not a list of integers"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [7]}, r"labels 7 .*\[0, 5\)"),
        ([1, 2], "holds a list; expected a dict"),
    ],
)
def test_cifar_bad_batches(tmp_path: Path, batch: object, match: str) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(FileFormatError, match=match):
        load_cifar10(tmp_path)


def test_cifar_missing_and_garbage_files(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_4").write_bytes(b"not a pickle")
    with pytest.raises(FileFormatError, match="data_batch_4 could not be loaded"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(FileFormatError, match="data_batch_4 does not exist"):
        load_cifar10(tmp_path)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}, protocol=2))
    with pytest.raises(FileFormatError, match="non-empty list of class names"):
        load_cifar10(tmp_path)


# --------------------------------------------------------------------------- MASSIVE


@needs_shared
def test_load_massive_real_old_version() -> None:
    splits = load_massive(MASSIVE_OLD)
    assert {name: len(data) for name, data in splits.items()} == {
        "train": 1000,
        "dev": 333,
        "test": 4000,
    }
    info = json.loads((MASSIVE_OLD / "info.json").read_text())
    train = splits["train"]
    assert train.class_names == tuple(info["labels"]) and train.num_classes == 60
    assert train.inputs[0] == "book a taxi for me" and int(train.ids[0]) == 12276
    assert train.class_names[int(train.labels[0])] == "transport_taxi"
    assert train.name == "old/train"


def write_massive(folder: Path, lines: dict[str, list], labels=("greet", "bye", "ask")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "info.json").write_text(json.dumps({"labels": list(labels)}))
    for split, rows in lines.items():
        text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
        (folder / f"{split}.jsonl").write_text(text)
    return folder


def good_massive(folder: Path) -> Path:
    return write_massive(
        folder,
        {
            "train": [
                {"id": "5", "text": "hi", "label": 0, "label_name": "greet"},
                "",
                {"id": 7, "text": "see you", "label_name": "bye"},
            ],
            "test": [{"id": "12", "text": "what?", "label": 2}],
        },
    )


def test_load_massive_written_files_without_dev(tmp_path: Path) -> None:
    splits = load_massive(good_massive(tmp_path / "v1"))
    assert list(splits) == ["train", "test"]
    assert splits["train"].inputs == ["hi", "see you"]
    assert splits["train"].labels.tolist() == [0, 1] and splits["train"].ids.tolist() == [5, 7]
    assert splits["test"].ids.tolist() == [12] and splits["test"].labels.tolist() == [2]
    assert splits["test"].class_names == ("greet", "bye", "ask")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ('{"id": "1", "text": "x", "label": 0', r"line 2 is not valid JSON"),
        ('["id", 1]', "line 2 is a JSON list; expected an object"),
        ({"id": "1", "label": 0}, r"line 2 has no 'text' string \(got None\)"),
        (
            {"id": "1", "text": "x", "label": 3},
            r"line 2 has label 3; expected an index in \[0, 3\)",
        ),
        ({"id": "1", "text": "x", "label": "0"}, "line 2 has label '0'; expected an integer"),
        ({"id": "1", "text": "x"}, "line 2 has neither 'label' nor 'label_name'"),
        (
            {"id": "1", "text": "x", "label_name": "hey"},
            r"line 2 has label_name 'hey', which info\.json",
        ),
        (
            {"id": "1", "text": "x", "label": 0, "label_name": "bye"},
            r"line 2 has label 0 \('greet' in info\.json\) but label_name 'bye' \(index 1\)",
        ),
        ({"id": "a1", "text": "x", "label": 0}, "line 2 has id 'a1'; expected an integer or"),
        ({"id": "-1", "text": "x", "label": 0}, "line 2 has id '-1'"),
        ({"id": 1.5, "text": "x", "label": 0}, "line 2 has id 1.5"),
    ],
)
def test_load_massive_bad_lines_name_file_and_line(tmp_path: Path, row, match: str) -> None:
    folder = write_massive(
        tmp_path, {"train": [{"id": 0, "text": "ok", "label": 0}, row], "test": []}
    )
    with pytest.raises(FileFormatError, match=rf"train\.jsonl, {match}"):
        load_massive(folder)


def test_load_massive_duplicate_ids_across_splits(tmp_path: Path) -> None:
    folder = good_massive(tmp_path)
    (folder / "dev.jsonl").write_text(json.dumps({"id": 7, "text": "x", "label": 1}) + "\n")
    with pytest.raises(FileFormatError, match=r"dev\.jsonl repeats id 7, already in train\.jsonl"):
        load_massive(folder)


def test_load_massive_missing_pieces(tmp_path: Path) -> None:
    folder = good_massive(tmp_path)
    (folder / "test.jsonl").unlink()
    with pytest.raises(FileFormatError, match=r"has no test\.jsonl"):
        load_massive(folder)
    (folder / "info.json").write_text(json.dumps({"names": ["a"]}))
    with pytest.raises(FileFormatError, match="no usable 'labels' entry"):
        load_massive(folder)
    (folder / "info.json").write_text("{")
    with pytest.raises(FileFormatError, match=r"info\.json is not valid JSON"):
        load_massive(folder)
    (folder / "info.json").unlink()
    with pytest.raises(FileFormatError, match=r"info\.json does not exist"):
        load_massive(folder)


# --------------------------------------------------------------------------- Banking77


@needs_shared
def test_load_banking77_real() -> None:
    splits = load_banking77(BANKING77)
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (10003, 3080)
    categories = json.loads((BANKING77 / "categories.json").read_text())
    assert train.class_names == tuple(categories) and train.num_classes == 77
    assert train.inputs[0] == "I am still waiting on my card?"
    assert train.class_names[int(train.labels[0])] == "card_arrival"
    assert int(train.ids[0]) == 0 and test.ids[[0, -1]].tolist() == [10003, 13082]
    with (BANKING77 / "test.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [train.class_names[k] for k in test.labels.tolist()] == [r["category"] for r in rows]
    assert test.inputs == [r["text"] for r in rows]


def write_banking(folder: Path, train: str, test: str, categories: list | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text(train)
    (folder / "test.csv").write_text(test)
    if categories is not None:
        (folder / "categories.json").write_text(json.dumps(categories))
    return folder


def test_load_banking77_written_files_without_categories(tmp_path: Path) -> None:
    folder = write_banking(
        tmp_path,
        'text,category\n"Hi, where is my card?",zeta\nrefund please,alpha\n"say ""hi""",zeta\n',
        "text,category\nwhere card,zeta\n",
    )
    splits = load_banking77(folder)
    train = splits["train"]
    assert train.class_names == ("alpha", "zeta")  # sorted categories of train
    assert train.inputs == ["Hi, where is my card?", "refund please", 'say "hi"']
    assert train.labels.tolist() == [1, 0, 1] and train.ids.tolist() == [0, 1, 2]
    assert splits["test"].ids.tolist() == [3] and splits["test"].labels.tolist() == [1]


def test_load_banking77_categories_json_sets_the_order(tmp_path: Path) -> None:
    folder = write_banking(
        tmp_path, "text,category\na,x\nb,y\n", "text,category\nc,y\n", categories=["y", "x", "z"]
    )
    splits = load_banking77(folder)
    assert splits["train"].class_names == ("y", "x", "z")
    assert splits["train"].labels.tolist() == [1, 0]


def test_load_banking77_errors(tmp_path: Path) -> None:
    folder = write_banking(tmp_path, "text,category\na,x\nb,y\n", "text,category\nc,y\nd,w\n")
    with pytest.raises(FileFormatError, match=r"test\.csv, line 3 has category 'w'.*train\.csv"):
        load_banking77(folder)
    (folder / "categories.json").write_text(json.dumps(["x"]))
    with pytest.raises(FileFormatError, match=r"train\.csv, line 3 has category 'y'.*categories"):
        load_banking77(folder)
    (folder / "categories.json").write_text(json.dumps({"x": 0}))
    with pytest.raises(FileFormatError, match="is not a list of strings"):
        load_banking77(folder)
    (folder / "categories.json").unlink()
    (folder / "test.csv").write_text("sentence,intent\nc,y\n")
    with pytest.raises(FileFormatError, match=r"columns \['sentence', 'intent'\]; expected"):
        load_banking77(folder)
    (folder / "test.csv").write_text("text,category\nonly text\n")
    with pytest.raises(FileFormatError, match="line 2 has too few fields"):
        load_banking77(folder)
    (folder / "test.csv").unlink()
    with pytest.raises(FileFormatError, match=r"test\.csv does not exist"):
        load_banking77(folder)


# --------------------------------------------------------------------------- image folders


def png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (3, 2)) -> None:
    """A solid-colour PNG of ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_load_image_folder_with_splits(tmp_path: Path) -> None:
    png(tmp_path / "train" / "dog" / "b.png", (0, 255, 51))
    png(tmp_path / "train" / "dog" / "a.png", (10, 20, 30))
    png(tmp_path / "train" / "cat" / "z.png", (255, 0, 0))
    png(tmp_path / "test" / "cat" / "c.png", (1, 2, 3))
    (tmp_path / "test" / "dog").mkdir()
    png(tmp_path / "val" / "dog" / "v.png", (4, 5, 6))
    (tmp_path / "val" / "cat").mkdir()
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"junk")
    splits = load_image_folder(tmp_path)
    assert list(splits) == ["train", "val", "test"]
    train = splits["train"]
    assert train.class_names == ("cat", "dog")
    assert train.inputs.shape == (3, 3, 2, 3) and train.inputs.dtype == torch.float32
    assert train.labels.tolist() == [0, 1, 1]  # cat/z, dog/a, dog/b
    expected_first_pixels = [[1.0, 0.0, 0.0], [10 / 255, 20 / 255, 30 / 255], [0.0, 1.0, 0.2]]
    np.testing.assert_allclose(train.inputs[:, :, 1, 2].numpy(), expected_first_pixels, atol=1e-7)
    assert_ids_disjoint_and_running(splits)
    assert splits["val"].ids.tolist() == [3] and splits["test"].ids.tolist() == [4]
    assert splits["test"].name == f"{tmp_path.name}/test"


def test_load_image_folder_classes_only_grayscale_and_resize(tmp_path: Path) -> None:
    png(tmp_path / "a" / "1.png", (90, 90, 90), size=(5, 5))
    png(tmp_path / "b" / "1.png", (30, 30, 30), size=(8, 3))
    with pytest.raises(MismatchError, match=r"is 8×3 pixels but .*1\.png is 5×5.*image_size"):
        load_image_folder(tmp_path)
    splits = load_image_folder(tmp_path, image_size=(4, 6), grayscale=True)
    assert list(splits) == ["train"]
    train = splits["train"]
    assert train.inputs.shape == (2, 1, 4, 6)
    np.testing.assert_allclose(train.inputs[0].numpy(), 90 / 255, atol=1e-7)  # grey stays grey
    np.testing.assert_allclose(train.inputs[1].numpy(), 30 / 255, atol=1e-7)
    assert load_image_folder(tmp_path, image_size=7)["train"].inputs.shape == (2, 3, 7, 7)


def test_load_image_folder_errors(tmp_path: Path) -> None:
    png(tmp_path / "train" / "cat" / "1.png", (0, 0, 0))
    png(tmp_path / "test" / "dog" / "1.png", (0, 0, 0))
    with pytest.raises(MismatchError, match=r"only in train: \['cat'\]; only in test: \['dog'\]"):
        load_image_folder(tmp_path)
    (tmp_path / "test" / "dog" / "1.png").unlink()
    (tmp_path / "test" / "dog").rmdir()
    png(tmp_path / "test" / "cat" / "1.png", (0, 0, 0))
    (tmp_path / "test" / "cat" / "notes.png").write_text("not an image")
    with pytest.raises(FileFormatError, match=r"notes\.png could not be read as an image"):
        load_image_folder(tmp_path)
    (tmp_path / "test" / "cat" / "notes.png").unlink()
    (tmp_path / "test" / "cat" / "nested").mkdir()
    with pytest.raises(FileFormatError, match="holds folders 'nested'; expected image files"):
        load_image_folder(tmp_path)
    (tmp_path / "test" / "cat" / "nested").rmdir()
    (tmp_path / "extra").mkdir()
    with pytest.raises(FileFormatError, match="has a train folder and also 'extra'"):
        load_image_folder(tmp_path)
    (tmp_path / "extra").rmdir()
    (tmp_path / "test" / "readme.txt").write_text("x")
    with pytest.raises(FileFormatError, match=r"holds files 'readme\.txt' next to class folders"):
        load_image_folder(tmp_path)
    with pytest.raises(InputError, match=r"image_size=\(0, 3\); expected a positive int"):
        load_image_folder(tmp_path, image_size=(0, 3))
    with pytest.raises(FileFormatError, match="is not a folder"):
        load_image_folder(tmp_path / "absent")


def test_load_image_folder_empty_split_and_no_classes(tmp_path: Path) -> None:
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileFormatError, match="holds no images"):
        load_image_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileFormatError, match="has no class folders"):
        load_image_folder(empty)


# --------------------------------------------------------------------------- arrays


def test_load_arrays_offsets_ids_and_shares_class_names() -> None:
    splits = load_arrays(
        train=(np.zeros((3, 2)), np.array([0, 1, 0])),
        val=(torch.ones(1, 2), torch.tensor([4])),
        test=(["a", "b"], [1, 1]),
        name="mine",
    )
    assert list(splits) == ["train", "val", "test"]
    assert_ids_disjoint_and_running(splits)
    assert all(d.class_names == ("0", "1", "2", "3", "4") for d in splits.values())
    assert splits["val"].name == "mine/val" and splits["test"].inputs == ["a", "b"]
    named = load_arrays(train=(np.zeros((1, 1)), [0]), class_names=["x", "y"])
    assert named["train"].class_names == ("x", "y")


def test_load_arrays_errors() -> None:
    with pytest.raises(InputError, match="got no splits"):
        load_arrays()
    with pytest.raises(InputError, match=r"train= is ndarray; expected an \(inputs, labels\)"):
        load_arrays(train=np.zeros(3))
    with pytest.raises(InputError, match="arrays/test: labels holds non-integer"):
        load_arrays(train=(np.zeros((1, 1)), [0]), test=(np.zeros((1, 1)), [0.5]))
    with pytest.raises(InputError, match="got no labels; pass class_names"):
        load_arrays(train=(np.zeros((0, 1)), []))
