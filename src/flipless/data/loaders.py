"""Loaders for the data sets flipless trains and benchmarks on; each returns its splits.

Every loader returns ``dict[str, LabeledData]`` keyed by split name ("train", "test", and
"dev" / "val" where the data has one). Sample ids are unique across the splits of one call:
the first split is numbered from 0 and each later split continues where the previous ended,
except MASSIVE, whose lines carry their own ids. Nothing is downloaded: every loader reads a
path (or, for the digits, data that ships with scikit-learn).

* :func:`load_digits`: scikit-learn's bundled 8×8 digits, split train/test.
* :func:`load_fashion_mnist`: the idx files of Fashion-MNIST (Debian ``dataset-fashion-mnist``).
* :func:`load_cifar10`: the CIFAR-10 python batches, read with a restricted unpickler.
* :func:`load_massive`: MASSIVE-style JSON lines with ``info.json``.
* :func:`load_banking77`: Banking77 CSV files with ``categories.json``.
* :func:`load_image_folder`: ``split/class/image`` folders of image files, read with PIL.
* :func:`load_arrays`: arrays or tensors already in memory.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import pickle
import re
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from flipless.data.labeled import LabeledData, check_fraction, stratified_split, to_int64_array
from flipless.errors import FileFormatError, InputError, MismatchError, MissingFileError
from flipless.validation import first_few

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: Where the Debian package ``dataset-fashion-mnist`` puts the idx files.
FASHION_MNIST_DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)
IMAGE_SPLITS = ("train", "val", "dev", "test")  # the split folders, in id order
_DIGITS = re.compile(r"[0-9]+")


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> dict[str, LabeledData]:
    """scikit-learn's bundled handwritten digits (1,797 images, 10 classes), train and test.

    Images are float32 [N, 1, 8, 8], the 0..16 grey levels divided by 16. ``test`` is a
    :func:`~flipless.data.labeled.stratified_split` of ``test_fraction`` of every class, seeded;
    ``train`` is the rest. Ids are the row numbers in scikit-learn's arrays.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    test_fraction = check_fraction(test_fraction, "test_fraction", allow_one=False)
    bunch = sklearn_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    everything = LabeledData.from_arrays(
        images, bunch.target, class_names=[str(d) for d in range(10)], name="digits"
    )
    test, train = stratified_split(everything, test_fraction, seed)
    return {"train": replace(train, name="digits/train"), "test": replace(test, name="digits/test")}


# --------------------------------------------------------------------------- Fashion-MNIST


def load_fashion_mnist(path: str | Path | None = None) -> dict[str, LabeledData]:
    """Fashion-MNIST from its four idx files, gzipped (``.gz``) or not.

    ``path`` holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``);
    by default the Debian package's folder ``/usr/share/datasets/fashion-mnist``. Images are
    float32 [N, 1, rows, cols] (28×28 for Fashion-MNIST) in [0, 1] (bytes / 255). Ids: train
    0..59,999, test 60,000..69,999.
    """
    if path is None:
        folder = FASHION_MNIST_DEBIAN_PATH
        if not folder.is_dir():
            raise MissingFileError(
                f"Fashion-MNIST is not installed at {folder}; expected the Debian package's idx "
                "files. Install them with `apt-get install dataset-fashion-mnist`, or pass "
                "path= a folder holding the four idx files."
            )
    else:
        folder = _existing_folder(path, "Fashion-MNIST")
    splits: dict[str, LabeledData] = {}
    first_id = 0
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
        images = read_idx(images_path, IDX_IMAGES_MAGIC)
        labels = read_idx(labels_path, IDX_LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise FileFormatError(
                f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                f"{labels.shape[0]} labels; expected one label per image. Re-download the pair."
            )
        pixels = images.astype(np.float32)[:, None, :, :]
        pixels *= np.float32(1 / 255)
        splits[split] = _split_from_arrays(
            pixels, labels, first_id, FASHION_MNIST_CLASSES, f"fashion-mnist/{split}", labels_path
        )
        first_id += images.shape[0]
    return splits


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an idx file of unsigned bytes (the MNIST format) as a uint8 array of its shape.

    The header is big-endian: a 32-bit magic number (two zero bytes, the type code 0x08, the
    number of dimensions d), then d 32-bit sizes; the data follows, exactly ∏ sizes bytes.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise FileFormatError(
            f"{path} is {len(raw)} bytes long; expected an idx header (at least 4 bytes). The "
            "file is truncated: download it again."
        )
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise FileFormatError(
            f"{path} starts with magic number {found}; expected {magic} (idx unsigned bytes, "
            f"{magic & 0xFF} dimensions). Check that images and labels files are not swapped."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FileFormatError(
            f"{path} is {len(raw)} bytes long; expected a {header}-byte header. The file is "
            "truncated: download it again."
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(shape)
    if len(raw) - header != expected:
        problem = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise FileFormatError(
            f"{path} holds {len(raw) - header} data bytes; expected {expected} for shape "
            f"{shape}. The file is {problem}: download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise MissingFileError(
        f"{folder} has no {stem}.gz or {stem}; expected the four Fashion-MNIST idx files "
        "(train/t10k images/labels). Install `apt-get install dataset-fashion-mnist`, or pass "
        "the folder that holds them."
    )


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as error:
        raise FileFormatError(
            f"{path} could not be read ({error}); expected a readable (gzip) file. Download it "
            "again."
        ) from error


# --------------------------------------------------------------------------- CIFAR-10


def load_cifar10(path: str | Path) -> dict[str, LabeledData]:
    """CIFAR-10 from the "python version" folder: ``data_batch_1``..``5``, ``test_batch``,
    ``batches.meta``.

    The batches are pickles, read with :class:`RestrictedUnpickler` (never ``pickle.load``),
    which builds only plain containers and numpy arrays. Each batch's ``data`` is uint8
    [n, 3072] (1024 red, then green, then blue values per image, row-major), its ``labels``
    (or ``fine_labels``) n ints; class names come from ``batches.meta`` ``label_names``.
    Images are float32 [N, 3, 32, 32] in [0, 1]; ids: train 0..49,999, test from 50,000.
    """
    folder = _existing_folder(path, "CIFAR-10")
    meta = _unpickle_dict(folder / "batches.meta")
    names = _entry(meta, ("label_names",), folder / "batches.meta")
    if not isinstance(names, list) or not names:
        raise FileFormatError(
            f"{folder / 'batches.meta'}: label_names is {type(names).__name__}; expected a "
            "non-empty list of class names."
        )
    class_names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    train_files = [folder / f"data_batch_{k}" for k in range(1, 6)]
    splits: dict[str, LabeledData] = {}
    first_id = 0
    for split, files in (("train", train_files), ("test", [folder / "test_batch"])):
        parts = [_cifar_batch(file) for file in files]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts])
        pixels = images.reshape(-1, 3, 32, 32).astype(np.float32)
        pixels *= np.float32(1 / 255)
        splits[split] = _split_from_arrays(
            pixels, labels, first_id, class_names, f"cifar10/{split}", files[0]
        )
        first_id += len(labels)
    return splits


def _latin1_encode(text: Any, encoding: Any) -> bytes:
    """What Python 3 pickles at protocol ≤ 2 call to rebuild bytes; latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"_codecs.encode({type(text).__name__}, {encoding!r}) is refused; only latin-1 "
            "text to bytes is allowed."
        )
    return text.encode("latin-1")


# numpy's own array-rebuilding functions, taken from what numpy itself pickles (their
# modules moved between numpy 1 and 2): ``_reconstruct`` up to pickle protocol 4,
# ``_frombuffer`` from protocol 5 on.
_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]
_NUMPY_FROMBUFFER = np.empty(0, dtype=np.uint8).__reduce_ex__(5)[0]


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, strings, numbers and numpy arrays.

    A pickle can name any importable callable (``os.system``) and have it called while
    loading; :meth:`find_class` is where those names are resolved, so it refuses all of them
    but the few a numpy array needs. An array pickles as ``_reconstruct(ndarray, shape,
    dtype)`` followed by ``__setstate__`` with its raw bytes (protocol 5:
    ``_frombuffer(bytes, dtype, shape, order)``), and its dtype as ``numpy.dtype(code)``:
    these globals only make an array from bytes or a dtype, and cannot reach anything else
    (``_reconstruct`` only accepts ndarray subclasses, and only ndarray itself is allowed).
    ``numpy.core`` is the module name in pickles written by numpy 1 (the CIFAR files),
    ``numpy._core`` by numpy 2. Python 3 writes bytes at protocol ≤ 2 as
    ``_codecs.encode(text, "latin1")``, allowed through a wrapper that accepts latin-1 only.
    Everything else raises :class:`pickle.UnpicklingError`.
    """

    ALLOWED: ClassVar[Mapping[tuple[str, str], Callable[..., Any]]] = {
        ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
        ("numpy.core.numeric", "_frombuffer"): _NUMPY_FROMBUFFER,
        ("numpy._core.numeric", "_frombuffer"): _NUMPY_FROMBUFFER,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        """Return one of :attr:`ALLOWED`, or refuse."""
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the pickle asks for {module}.{name}, which is not allowed; only numpy "
                "arrays and plain containers can be loaded."
            ) from None


def _unpickle_dict(path: Path) -> dict[Any, Any]:
    """Load a CIFAR pickle (Python 2 strings read as bytes) through the restricted unpickler."""
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist; expected the CIFAR-10 python batches (data_batch_1..5, "
            "test_batch, batches.meta). Pass the folder 'cifar-10-batches-py' of the extracted "
            "cifar-10-python.tar.gz."
        )
    try:
        with path.open("rb") as file:
            content = RestrictedUnpickler(file, encoding="bytes").load()
    except Exception as error:  # any failure to unpickle means the file is not a CIFAR batch
        raise FileFormatError(
            f"{path} could not be loaded ({type(error).__name__}: {error}); expected a CIFAR "
            "python pickle holding a dict of lists and numpy arrays. Do not load this file "
            "with pickle.load if you do not trust it."
        ) from error
    if not isinstance(content, dict):
        raise FileFormatError(
            f"{path} holds a {type(content).__name__}; expected a dict (a CIFAR batch)."
        )
    return content


def _entry(content: dict[Any, Any], keys: Sequence[str], path: Path) -> Any:
    """The first of ``keys`` present, as bytes (Python 2 pickles) or str keys."""
    for key in keys:
        for variant in (key.encode(), key):
            if variant in content:
                return content[variant]
    present = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in content)
    raise FileFormatError(
        f"{path} has no {' or '.join(keys)} entry (it has {present}); expected a CIFAR-10 "
        "batch. CIFAR-100 uses other file names and is not read by this loader."
    )


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch's uint8 images [n, 3072] and int64 labels [n]."""
    content = _unpickle_dict(path)
    data = _entry(content, ("data",), path)
    labels = _entry(content, ("labels", "fine_labels"), path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        kind = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise FileFormatError(f"{path}: data is {kind}; expected a uint8 array [n, 3072].")
    if data.shape[1] != 3 * 32 * 32:
        raise FileFormatError(
            f"{path}: data has {data.shape[1]} values per image; expected 3072 (3×32×32)."
        )
    if not isinstance(labels, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels
    ):
        raise FileFormatError(f"{path}: labels are not a list of integers; expected n class ids.")
    if len(labels) != data.shape[0]:
        raise FileFormatError(
            f"{path} holds {data.shape[0]} images but {len(labels)} labels; expected one each."
        )
    return data, np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------- MASSIVE


def load_massive(path: str | Path) -> dict[str, LabeledData]:
    """A MASSIVE-style folder: ``train.jsonl``, ``dev.jsonl`` (optional), ``test.jsonl``, and
    ``info.json`` whose ``labels`` lists the class names in index order.

    Each line is a JSON object with ``id`` (an int, or a string of digits), ``text``, and
    ``label`` (class index) and/or ``label_name`` (which must agree when both are given).
    Inputs are the texts; ids are the lines' own ids, which must be unique across the splits.
    Blank lines are skipped.
    """
    folder = _existing_folder(path, "MASSIVE")
    class_names = _massive_labels(folder / "info.json")
    index_of = {name: index for index, name in enumerate(class_names)}
    splits: dict[str, LabeledData] = {}
    first_file: dict[int, str] = {}
    for split in ("train", "dev", "test"):
        file = folder / f"{split}.jsonl"
        if not file.is_file():
            if split == "dev":
                continue
            raise MissingFileError(
                f"{folder} has no {split}.jsonl; expected train.jsonl, test.jsonl (and "
                "optionally dev.jsonl) next to info.json."
            )
        texts, labels, ids = _read_massive_lines(file, class_names, index_of)
        for sample_id in ids:
            if sample_id in first_file:
                raise FileFormatError(
                    f"{file} repeats id {sample_id}, already in {first_file[sample_id]}; "
                    "expected ids unique across the splits. Remove the duplicate line."
                )
            first_file[sample_id] = file.name
        splits[split] = LabeledData.from_arrays(
            texts, labels, ids, class_names=class_names, name=f"{folder.name}/{split}"
        )
    return splits


def _massive_labels(path: Path) -> tuple[str, ...]:
    info = _read_json(path)
    labels = info.get("labels") if isinstance(info, dict) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise FileFormatError(
            f"{path} has no usable 'labels' entry; expected a list of class names in index "
            'order, e.g. {"labels": ["alarm_set", "play_music", ...]}.'
        )
    return tuple(labels)


def _read_massive_lines(
    path: Path, class_names: tuple[str, ...], index_of: dict[str, int]
) -> tuple[list[str], list[int], list[int]]:
    texts: list[str] = []
    labels: list[int] = []
    ids: list[int] = []
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise FileFormatError(f"{where} is not valid JSON ({error}).") from error
            if not isinstance(record, dict):
                raise FileFormatError(
                    f"{where} is a JSON {type(record).__name__}; expected an object."
                )
            text = record.get("text")
            if not isinstance(text, str):
                raise FileFormatError(f"{where} has no 'text' string (got {text!r}).")
            ids.append(_massive_id(record.get("id"), where))
            labels.append(_massive_label(record, class_names, index_of, where))
            texts.append(text)
    return texts, labels, ids


def _massive_id(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise FileFormatError(
        f"{where} has id {value!r}; expected an integer or a string of digits (ids key cached "
        "teacher logits and join predictions, so they must be integers)."
    )


def _massive_label(
    record: dict[str, Any], class_names: tuple[str, ...], index_of: dict[str, int], where: str
) -> int:
    label, label_name = record.get("label"), record.get("label_name")
    if label is None and label_name is None:
        raise FileFormatError(f"{where} has neither 'label' nor 'label_name'; expected one.")
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, int):
            raise FileFormatError(f"{where} has label {label!r}; expected an integer.")
        if not 0 <= label < len(class_names):
            raise FileFormatError(
                f"{where} has label {label}; expected an index in [0, {len(class_names)}) "
                "(the classes listed in info.json)."
            )
    if label_name is not None:
        if label_name not in index_of:
            raise FileFormatError(
                f"{where} has label_name {label_name!r}, which info.json does not list; "
                "expected one of its 'labels'."
            )
        if label is not None and index_of[label_name] != label:
            raise FileFormatError(
                f"{where} has label {label} ({class_names[label]!r} in info.json) but "
                f"label_name {label_name!r} (index {index_of[label_name]}); expected them to "
                "agree. Fix the line or info.json's label order."
            )
        return index_of[label_name]
    return label


# --------------------------------------------------------------------------- Banking77


def load_banking77(path: str | Path) -> dict[str, LabeledData]:
    """Banking77: ``train.csv`` and ``test.csv`` with columns ``text,category``.

    Class names come from ``categories.json`` (a list, in index order) when present, else
    they are the sorted distinct categories of ``train.csv``. A category not among them is
    an error naming the file and line. Ids: train rows 0..n-1, test rows from n on.
    """
    folder = _existing_folder(path, "Banking77")
    rows = {split: _read_banking_csv(folder / f"{split}.csv") for split in ("train", "test")}
    categories_path = folder / "categories.json"
    if categories_path.is_file():
        categories = _read_json(categories_path)
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise FileFormatError(
                f"{categories_path} is not a list of strings; expected the category names in "
                "index order."
            )
        class_names = tuple(categories)
    else:
        class_names = tuple(sorted({category for _, category, _ in rows["train"]}))
    index_of = {name: index for index, name in enumerate(class_names)}
    splits: dict[str, LabeledData] = {}
    first_id = 0
    for split, split_rows in rows.items():
        labels = []
        for _, category, line in split_rows:
            if category not in index_of:
                source = "categories.json" if categories_path.is_file() else "train.csv"
                raise FileFormatError(
                    f"{folder / f'{split}.csv'}, line {line} has category {category!r}, which "
                    f"{source} does not list; expected one of its {len(class_names)} categories."
                )
            labels.append(index_of[category])
        texts = [text for text, _, _ in split_rows]
        ids = np.arange(first_id, first_id + len(texts), dtype=np.int64)
        splits[split] = LabeledData.from_arrays(
            texts, labels, ids, class_names=class_names, name=f"banking77/{split}"
        )
        first_id += len(texts)
    return splits


def _read_banking_csv(path: Path) -> list[tuple[str, str, int]]:
    """(text, category, line number) for each row."""
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist; expected train.csv and test.csv with columns text,category."
        )
    rows = []
    with _open_text(path) as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or not {"text", "category"} <= set(reader.fieldnames):
            raise FileFormatError(
                f"{path} has columns {reader.fieldnames}; expected a header with 'text' and "
                "'category'."
            )
        for row in reader:
            text, category = row["text"], row["category"]
            if text is None or category is None:
                raise FileFormatError(
                    f"{path}, line {reader.line_num} has too few fields; expected text,category."
                )
            rows.append((text, category, reader.line_num))
    return rows


# --------------------------------------------------------------------------- image folders


def load_image_folder(
    path: str | Path,
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
) -> dict[str, LabeledData]:
    """Images in class folders: ``path/<split>/<class>/<file>`` or ``path/<class>/<file>``.

    The split layout applies when ``path`` has a ``train`` folder; its other folders must be
    ``val``, ``dev`` or ``test``. Otherwise every folder of ``path`` is a class and there is one
    split, "train". Class names are the sorted class folder names, the same in every split.
    Files are read with PIL, converted to RGB (or L when ``grayscale``), resized to
    ``image_size`` (an int for square, or (height, width); bilinear) when given, and returned
    as float32 [N, C, H, W] in [0, 1]. Without ``image_size`` all images must share a size.
    Ids run over the splits in the order train, val, dev, test, then over the classes and
    the files in sorted order. Names starting with "." are skipped.
    """
    from PIL import Image, UnidentifiedImageError

    folder = _existing_folder(path, "image folder")
    size = _image_size(image_size)
    split_folders = _split_folders(folder)
    class_names = _common_class_names(split_folders)
    splits: dict[str, LabeledData] = {}
    first_id = 0
    shape_source: tuple[tuple[int, ...], Path] | None = None
    for split, split_folder in split_folders.items():
        arrays, labels = [], []
        for label, class_name in enumerate(class_names):
            for file in _image_files(split_folder / class_name):
                try:
                    with Image.open(file) as opened:
                        image = opened.convert("L" if grayscale else "RGB")
                    if size is not None:
                        image = image.resize(size[::-1], Image.Resampling.BILINEAR)
                    array = np.asarray(image, dtype=np.uint8)
                except (OSError, UnidentifiedImageError, ValueError) as error:
                    raise FileFormatError(
                        f"{file} could not be read as an image ({error}); expected an image "
                        "file PIL can open. Remove or fix it."
                    ) from error
                if shape_source is None:
                    shape_source = (array.shape, file)
                elif array.shape != shape_source[0]:
                    raise MismatchError(
                        f"{file} is {array.shape[1]}×{array.shape[0]} pixels but "
                        f"{shape_source[1]} is {shape_source[0][1]}×{shape_source[0][0]}; "
                        "expected one size. Pass image_size=(height, width) to resize them."
                    )
                arrays.append(array)
                labels.append(label)
        if not arrays:
            raise FileFormatError(
                f"{split_folder} holds no images; expected image files in its class folders."
            )
        stacked = np.stack(arrays)
        # grey [N, H, W] → [N, 1, H, W]; colour [N, H, W, C] → [N, C, H, W]
        stacked = stacked[:, None] if grayscale else stacked.transpose(0, 3, 1, 2)
        pixels = stacked.astype(np.float32)
        pixels *= np.float32(1 / 255)
        ids = np.arange(first_id, first_id + len(labels), dtype=np.int64)
        splits[split] = LabeledData.from_arrays(
            pixels, labels, ids, class_names=class_names, name=f"{folder.name}/{split}"
        )
        first_id += len(labels)
    return splits


def _image_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    pair = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise InputError(
            f"image_size={image_size!r}; expected a positive int or (height, width) of ints."
        )
    return pair[0], pair[1]


def _visible_children(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if not child.name.startswith("."))


def _split_folders(folder: Path) -> dict[str, Path]:
    children = _visible_children(folder)
    if not (folder / "train").is_dir():
        return {"train": folder}
    unexpected = [c.name for c in children if c.name not in IMAGE_SPLITS or not c.is_dir()]
    if unexpected:
        raise FileFormatError(
            f"{folder} has a train folder and also {first_few(unexpected)}; expected only the "
            f"split folders {', '.join(IMAGE_SPLITS)} next to train (or only class folders)."
        )
    return {split: folder / split for split in IMAGE_SPLITS if (folder / split).is_dir()}


def _common_class_names(split_folders: dict[str, Path]) -> tuple[str, ...]:
    names: dict[str, tuple[str, ...]] = {}
    for split, split_folder in split_folders.items():
        children = _visible_children(split_folder)
        files = [child.name for child in children if not child.is_dir()]
        if files:
            raise FileFormatError(
                f"{split_folder} holds files {first_few(files)} next to class folders; expected "
                "only one folder per class."
            )
        names[split] = tuple(child.name for child in children)
        if not names[split]:
            raise FileFormatError(f"{split_folder} has no class folders; expected one per class.")
    first_split, first_names = next(iter(names.items()))
    for split, split_names in names.items():
        if split_names != first_names:
            only_first = sorted(set(first_names) - set(split_names))
            only_here = sorted(set(split_names) - set(first_names))
            raise MismatchError(
                f"The {split} split has class folders that differ from {first_split}'s "
                f"(only in {first_split}: {only_first}; only in {split}: {only_here}); expected "
                "the same classes in every split. Add the missing (possibly empty) folders."
            )
    return first_names


def _image_files(class_folder: Path) -> list[Path]:
    children = _visible_children(class_folder)
    folders = [child.name for child in children if child.is_dir()]
    if folders:
        raise FileFormatError(
            f"{class_folder} holds folders {first_few(folders)}; expected image files directly "
            "in each class folder."
        )
    return children


# --------------------------------------------------------------------------- arrays


def load_arrays(
    *, class_names: Sequence[str] | None = None, name: str = "arrays", **splits: Any
) -> dict[str, LabeledData]:
    """Splits given as ``split=(inputs, labels)`` pairs of arrays, tensors or text lists.

    ``load_arrays(train=(x_train, y_train), test=(x_test, y_test))``. Inputs and labels are
    converted as by :meth:`LabeledData.from_arrays`. Ids run on across the splits in the
    order given. Class names default to "0".."K-1", K = the largest label of any split + 1.
    """
    if not splits:
        raise InputError("load_arrays got no splits; expected e.g. train=(x, y), test=(x, y).")
    pairs: dict[str, tuple[Any, np.ndarray]] = {}
    for split, pair in splits.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(
                f"{split}= is {type(pair).__name__}; expected an (inputs, labels) pair."
            )
        pairs[split] = (pair[0], to_int64_array(pair[1], f"{name}/{split}: labels"))
    if class_names is None:
        largest = max(int(labels.max(initial=-1)) for _, labels in pairs.values())
        if largest < 0:
            raise InputError("load_arrays got no labels; pass class_names.")
        class_names = [str(k) for k in range(largest + 1)]
    result: dict[str, LabeledData] = {}
    first_id = 0
    for split, (inputs, labels) in pairs.items():
        ids = np.arange(first_id, first_id + labels.shape[0], dtype=np.int64)
        result[split] = LabeledData.from_arrays(
            inputs, labels, ids, class_names=class_names, name=f"{name}/{split}"
        )
        first_id += labels.shape[0]
    return result


# --------------------------------------------------------------------------- shared helpers


def _existing_folder(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        error = FileFormatError if folder.exists() else MissingFileError
        raise error(f"{folder} is not a folder; expected the {what} data folder. Check the path.")
    return folder


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; expected a JSON file there.")
    try:
        with _open_text(path) as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise FileFormatError(f"{path} is not valid JSON ({error}).") from error


def _open_text(path: Path) -> io.TextIOWrapper:
    """Open a UTF-8 text file (a byte-order mark is skipped); csv needs ``newline=""``."""
    return path.open(encoding="utf-8-sig", newline="")


def _split_from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    first_id: int,
    class_names: Sequence[str],
    name: str,
    labels_path: Path,
) -> LabeledData:
    """A split with ids from ``first_id``; a label outside the classes names ``labels_path``."""
    outside = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if outside.size:
        raise FileFormatError(
            f"{labels_path} has labels {first_few(labels[outside])} at positions "
            f"{first_few(outside)}; expected class indices in [0, {len(class_names)})."
        )
    ids = np.arange(first_id, first_id + len(labels), dtype=np.int64)
    return LabeledData(
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.int64)),
        torch.from_numpy(ids),
        tuple(class_names),
        name,
    )
