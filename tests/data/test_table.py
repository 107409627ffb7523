"""Tables a user brings (CSV, TSV, Parquet, JSON Lines; a file or a folder) → labelled splits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flipless.data.columns import ColumnOptions
from flipless.data.table import check_table, load_table
from flipless.errors import FileFormatError, InputError, MismatchError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def options(**values) -> ColumnOptions:
    return ColumnOptions(**values)


# --------------------------------------------------------------------------- layouts


def test_one_csv_with_a_split_column_and_string_ids(tmp_path):
    path = write(
        tmp_path / "rows.csv",
        'id,text,label,split\nq7,hello,pos,train\nb2,bad,neg,train\na1,"two\nlines",pos,test\n'
        "z9,007,neg,val\n",
    )
    splits = load_table(path)
    assert list(splits) == ["train", "validation", "test"]
    # string ids are numbered by their sorted position among all ids: a1, b2, q7, z9
    assert splits.id_names == ("a1", "b2", "q7", "z9")
    assert splits["train"].ids.tolist() == [2, 1]
    assert splits["validation"].ids.tolist() == [3]
    assert splits["test"].ids.tolist() == [0]
    assert splits.original_ids(splits["train"].ids) == ["q7", "b2"]
    assert splits["train"].inputs == ["hello", "bad"]
    assert splits["validation"].inputs == ["007"]  # a text column stays text
    assert splits["test"].inputs == ["two\nlines"]  # quoted values may span lines
    assert splits["train"].class_names == ("neg", "pos")  # sorted names from all splits
    assert splits["train"].labels.tolist() == [1, 0]
    assert splits["validation"].labels.tolist() == [0]


def test_one_file_without_a_split_column_is_a_split_named_after_it(tmp_path):
    splits = load_table(write(tmp_path / "dev.csv", "text,label\na,x\nb,y\n"))
    assert list(splits) == ["validation"]
    assert splits["validation"].ids.tolist() == [0, 1]  # row numbers
    assert splits.id_names is None
    assert list(load_table(write(tmp_path / "rows.csv", "text,label\na,x\n"))) == ["rows"]


def test_a_folder_of_split_files_numbers_rows_in_file_name_order(tmp_path):
    write(tmp_path / "train.tsv", "text\tlabel\nt0\ta\nt1\tb\nt2\ta\n")
    write(tmp_path / "val.tsv", "text\tlabel\nv0\tb\n")
    write(tmp_path / "test.tsv", "text\tlabel\ns0\ta\ns1\tb\n")
    write(tmp_path / "README.md", "not a table")
    splits = load_table(tmp_path)
    assert list(splits) == ["train", "validation", "test"]
    # files by name: test.tsv (ids 0, 1), train.tsv (2, 3, 4), val.tsv (5)
    assert splits["test"].ids.tolist() == [0, 1]
    assert splits["train"].ids.tolist() == [2, 3, 4]
    assert splits["validation"].ids.tolist() == [5]
    assert splits["validation"].inputs == ["v0"]
    assert splits["train"].labels.tolist() == [0, 1, 0]


def test_a_folder_with_one_file_uses_its_split_column(tmp_path):
    write(tmp_path / "all.csv", "text,label,split\na,x,train\nb,y,test\n")
    assert list(load_table(tmp_path)) == ["train", "test"]


def test_parquet_numeric_features_default_to_every_numeric_column(tmp_path):
    table = pa.table(
        {
            "id": [10, 11, 12],
            "a": [0.5, 1.5, -2.0],
            "name": ["x", "y", "z"],  # not numeric: not a feature
            "b": [1, 2, 3],
            "label": ["cat", "dog", "cat"],
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    data = load_table(tmp_path / "train.parquet")["train"]
    assert data.inputs.dtype.is_floating_point and tuple(data.inputs.shape) == (3, 2)
    np.testing.assert_array_equal(
        data.inputs.numpy(), np.array([[0.5, 1.0], [1.5, 2.0], [-2.0, 3.0]], dtype=np.float32)
    )
    assert data.ids.tolist() == [10, 11, 12]
    chosen = load_table(tmp_path / "train.parquet", options(features=("b",)))["train"]
    assert chosen.inputs[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_a_column_of_vectors_is_a_block_of_features(tmp_path):
    table = pa.table(
        {
            "embedding": pa.array([[0.5, 1.0, 2.0], [3.0, -1.0, 0.0]], pa.list_(pa.float32())),
            "extra": [7, 8],
            "label": ["a", "b"],
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    data = load_table(tmp_path / "train.parquet")["train"]
    np.testing.assert_array_equal(
        data.inputs.numpy(), np.array([[0.5, 1, 2, 7], [3, -1, 0, 8]], dtype=np.float32)
    )
    only = load_table(tmp_path / "train.parquet", options(input_column="embedding"))["train"]
    assert tuple(only.inputs.shape) == (2, 3)
    ragged = pa.table({"v": pa.array([[1.0, 2.0], [3.0]]), "label": [0, 1]})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(FileFormatError, match=r"row 1: column 'v' holds 1 numbers but row 0"):
        load_table(tmp_path / "ragged.parquet")
    holes = pa.table({"v": pa.array([[1.0, float("nan")]]), "label": [0]})
    pq.write_table(holes, tmp_path / "holes.parquet")
    with pytest.raises(FileFormatError, match=r"row 0: feature 'v' is nan"):
        load_table(tmp_path / "holes.parquet")


def test_splits_with_different_feature_widths_are_refused(tmp_path):
    write(tmp_path / "train.csv", "a,b,label\n1,2,x\n")
    write(tmp_path / "test.csv", "a,label\n1,x\n")
    with pytest.raises(MismatchError, match=r"no feature column 'b'"):
        load_table(tmp_path)
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0]]), "label": [0]}), vectors / "train.parquet")
    pq.write_table(pa.table({"v": pa.array([[1.0]]), "label": [0]}), vectors / "test.parquet")
    with pytest.raises(
        MismatchError, match=r"'test' split has 1 features but the 'train' split has 2"
    ):
        check_table(vectors)


def test_json_lines_integer_labels_are_class_indices(tmp_path):
    path = write(
        tmp_path / "train.jsonl",
        '{"text": "a", "label": 2}\n{"text": "b", "label": 0}\n{"text": "c", "label": 2}\n',
    )
    data = load_table(path)["train"]
    assert data.class_names == ("0", "1", "2")  # indices: "0".."K-1", K = largest + 1
    assert data.labels.tolist() == [2, 0, 2]
    named = load_table(path, options(classes=("neg", "mid", "pos")))["train"]
    assert named.class_names == ("neg", "mid", "pos") and named.labels.tolist() == [2, 0, 2]


def test_given_classes_fix_the_order_of_named_labels(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    data = load_table(path, options(classes=("pos", "neg", "neutral")))["train"]
    assert data.class_names == ("pos", "neg", "neutral") and data.labels.tolist() == [0, 1]


def test_integer_valued_float_labels_and_ids(tmp_path):
    pq.write_table(
        pa.table({"id": [3.0, 4.0], "x": [1.0, 2.0], "label": [1.0, 0.0]}),
        tmp_path / "train.parquet",
    )
    data = load_table(tmp_path / "train.parquet")["train"]
    assert data.labels.tolist() == [1, 0] and data.ids.tolist() == [3, 4]


def test_column_names_are_settable(tmp_path):
    path = write(
        tmp_path / "data.csv",
        "key,utterance,intent,part\n5,hi,greet,train\n6,bye,leave,test\n",
    )
    splits = load_table(
        path,
        options(
            id_column="key", input_column="utterance", label_column="intent", split_column="part"
        ),
    )
    assert splits["train"].inputs == ["hi"] and splits["test"].ids.tolist() == [6]
    assert splits["train"].class_names == ("greet", "leave")


def test_format_overrides_the_suffix_and_compressed_files_are_read(tmp_path):
    text = "text\tlabel\na\tx\nb\ty\n"
    assert load_table(write(tmp_path / "train.txt", text), format="tsv")["train"].inputs == [
        "a",
        "b",
    ]
    with gzip.open(tmp_path / "test.csv.gz", "wt") as file:
        file.write("text,label\nz,x\n")
    assert load_table(tmp_path / "test.csv.gz")["test"].inputs == ["z"]


def test_string_ids_in_one_file_make_every_id_a_string(tmp_path):
    write(tmp_path / "train.csv", "id,text,label\n10,a,x\n2,b,y\n")
    write(tmp_path / "test.csv", "id,text,label\nk,c,x\n")
    splits = load_table(tmp_path)
    # all ids as strings, sorted: "10" < "2" < "k"
    assert splits.id_names == ("10", "2", "k")
    assert splits["train"].ids.tolist() == [0, 1] and splits["test"].ids.tolist() == [2]


# --------------------------------------------------------------------------- images


def png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_image_paths_relative_to_the_file_are_decoded_to_float_tensors(tmp_path):
    grey = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[..., 0] = 255
    png(tmp_path / "data" / "pics" / "g.png", grey)
    png(tmp_path / "data" / "pics" / "c.png", colour)
    write(tmp_path / "data" / "train.csv", "image,label\npics/g.png,a\npics/c.png,b\n")
    data = load_table(tmp_path / "data" / "train.csv")["train"]
    assert tuple(data.inputs.shape) == (2, 3, 2, 2)  # one colour image: all RGB
    expected_grey = np.repeat((grey.astype(np.float32) / 255)[None], 3, axis=0)
    np.testing.assert_allclose(data.inputs[0].numpy(), expected_grey, rtol=0, atol=1e-7)
    np.testing.assert_allclose(data.inputs[1, 0].numpy(), np.ones((2, 2)), atol=1e-7)
    np.testing.assert_allclose(data.inputs[1, 1:].numpy(), np.zeros((2, 2, 2)), atol=1e-7)


def test_one_colour_image_in_any_split_makes_every_split_rgb(tmp_path):
    png(tmp_path / "g.png", np.full((2, 2), 10, dtype=np.uint8))
    png(tmp_path / "c.png", np.full((2, 2, 3), 20, dtype=np.uint8))
    write(tmp_path / "train.csv", "image,label\ng.png,x\n")
    write(tmp_path / "test.csv", "image,label\nc.png,x\n")
    splits = load_table(tmp_path)
    assert tuple(splits["train"].inputs.shape) == (1, 3, 2, 2)
    assert tuple(splits["test"].inputs.shape) == (1, 3, 2, 2)
    np.testing.assert_allclose(splits["train"].inputs.numpy(), 10 / 255, atol=1e-7)


def test_grey_images_stay_one_channel_and_image_size_resizes(tmp_path):
    png(tmp_path / "a.png", np.full((4, 6), 200, dtype=np.uint8))
    png(tmp_path / "b.png", np.full((3, 3), 100, dtype=np.uint8))
    path = write(tmp_path / "train.csv", "file,label\na.png,x\nb.png,y\n")
    data = load_table(path, options(input_column="file", image_size=(2, 5)))["train"]
    assert tuple(data.inputs.shape) == (2, 1, 2, 5)  # guessed as images from the suffixes
    np.testing.assert_allclose(data.inputs[0].numpy(), 200 / 255, atol=1e-6)
    with pytest.raises(MismatchError, match=r"b\.png\) is 3×3 pixels but .*a\.png\) is 6×4"):
        load_table(path, options(input_column="file"))


def test_a_missing_image_names_the_row_and_the_path(tmp_path):
    png(tmp_path / "a.png", np.zeros((2, 2), dtype=np.uint8))
    path = write(tmp_path / "train.csv", "image,label\na.png,x\nmissing.png,y\n")
    with pytest.raises(FileFormatError, match=r"train\.csv, row 1: image file .*missing\.png"):
        check_table(path)


def test_an_unreadable_image_is_found_when_decoding(tmp_path):
    png(tmp_path / "a.png", np.zeros((2, 2), dtype=np.uint8))
    write(tmp_path / "broken.png", "not an image")
    path = write(tmp_path / "train.csv", "image,label\na.png,x\nbroken.png,y\n")
    assert check_table(path).sizes() == {"train": 2}  # checking does not decode
    with pytest.raises(FileFormatError, match=r"row 1 .*broken\.png.* could not be read"):
        load_table(path)


# --------------------------------------------------------------------------- errors


def test_a_label_outside_the_classes_names_the_file_row_and_value(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,maybe\n")
    with pytest.raises(InputError, match=r"train\.csv, row 2: label 'maybe' is not a class"):
        load_table(path, options(classes=("neg", "pos")))


def test_an_index_outside_the_classes_names_the_row(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,0\nb,3\n")
    with pytest.raises(InputError, match=r"row 1: label 3 is not a class index in \[0, 2\)"):
        load_table(path, options(classes=("neg", "pos")))


def test_integer_labels_with_numbered_classes_are_ambiguous(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,1\nb,2\n")
    with pytest.raises(InputError, match="could be an index or a name"):
        load_table(path, options(classes=("1", "2", "3")))


def test_a_missing_column_lists_the_columns_present(tmp_path):
    path = write(tmp_path / "train.csv", "text,intent\na,x\n")
    with pytest.raises(InputError, match=r"no column 'label' \(label_column\).*'text', 'intent'"):
        load_table(path)
    with pytest.raises(InputError, match=r"no column 'uid' \(id_column\)"):
        load_table(path, options(label_column="intent", id_column="uid"))
    with pytest.raises(InputError, match=r"no column 'body' \(input_column\)"):
        load_table(path, options(label_column="intent", input_column="body"))
    with pytest.raises(InputError, match=r"no column 'part' \(split_column\)"):
        load_table(path, options(label_column="intent", split_column="part"))


def test_no_input_column_says_what_to_set(tmp_path):
    path = write(tmp_path / "train.csv", "name,label\na,x\n")
    with pytest.raises(InputError, match=r"found no input.*input_column.*features"):
        load_table(path)


def test_an_empty_split_is_an_error(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,x\n")
    write(tmp_path / "test.csv", "text,label\n")
    with pytest.raises(FileFormatError, match=r"test\.csv: the 'test' split has no rows"):
        load_table(tmp_path)


def test_duplicate_ids_name_both_rows(tmp_path):
    path = write(tmp_path / "train.csv", "id,text,label\n4,a,x\n5,b,x\n4,c,y\n")
    with pytest.raises(InputError, match=r"row 2: id 4 already appears at row 0"):
        load_table(path)
    path = write(tmp_path / "strings.csv", "id,text,label\nu,a,x\nv,b,x\nv,c,y\n")
    with pytest.raises(InputError, match=r"row 2: id 'v' already appears at row 1"):
        load_table(path)


def test_nan_features_name_the_row_and_column(tmp_path):
    path = write(tmp_path / "train.csv", "a,b,label\n1,2,x\n3,,y\n")
    with pytest.raises(FileFormatError, match=r"row 1: feature 'b' is nan"):
        load_table(path)
    with pytest.raises(FileFormatError, match=r"row 1: feature 'b' is nan"):
        check_table(path)  # found by the check before training, too
    pq.write_table(pa.table({"a": [1.0, float("inf")], "label": [0, 1]}), tmp_path / "i.parquet")
    with pytest.raises(FileFormatError, match=r"row 1: feature 'a' is inf"):
        load_table(tmp_path / "i.parquet")


def test_empty_cells_in_label_text_and_split_columns_name_the_rows(tmp_path):
    with pytest.raises(FileFormatError, match=r"column 'label' is empty at rows 1"):
        load_table(write(tmp_path / "a.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n'))
    with pytest.raises(FileFormatError, match=r"column 'text' is empty at rows 0"):
        load_table(write(tmp_path / "b.jsonl", '{"text": null, "label": "x"}\n'))
    with pytest.raises(FileFormatError, match=r"column 'split' is empty at rows 1"):
        load_table(write(tmp_path / "c.csv", "text,label,split\na,x,train\nb,x,\n"))


def test_non_numeric_features_and_non_text_inputs_are_refused(tmp_path):
    path = write(tmp_path / "train.csv", "a,b,label\n1,u,x\n")
    with pytest.raises(InputError, match=r"feature column 'b' holds string values"):
        load_table(path, options(features=("a", "b")))
    pq.write_table(pa.table({"text": [1, 2], "label": [0, 1]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"column 'text' holds int64 values; expected texts"):
        load_table(tmp_path / "t.parquet", options(input_type="text"))


def test_layout_errors(tmp_path):
    write(tmp_path / "both" / "val.csv", "text,label\na,x\n")
    write(tmp_path / "both" / "dev.csv", "text,label\na,x\n")
    with pytest.raises(FileFormatError, match=r"both dev\.csv and val\.csv"):
        load_table(tmp_path / "both")
    path = write(tmp_path / "s.csv", "text,label,split\na,x,val\nb,x,validation\n")
    with pytest.raises(FileFormatError, match="all mean the validation split"):
        load_table(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match="holds no table files"):
        load_table(tmp_path / "empty")
    with pytest.raises(FileFormatError, match="does not exist"):
        load_table(tmp_path / "nothing.csv")
    with pytest.raises(FileFormatError, match="unknown suffix"):
        load_table(write(tmp_path / "rows.txt", "text,label\n"))
    with pytest.raises(InputError, match="format='xlsx'; expected one of"):
        load_table(tmp_path / "s.csv", format="xlsx")
    write(tmp_path / "folder" / "train.csv", "id,text,label\n1,a,x\n")
    write(tmp_path / "folder" / "test.csv", "text,label\nb,x\n")
    with pytest.raises(InputError, match="format='csv' applies to a single file"):
        load_table(tmp_path / "folder", format="csv")
    with pytest.raises(InputError, match=r"split_column='part' but .* holds one file per split"):
        load_table(tmp_path / "folder", options(split_column="part"))
    with pytest.raises(MismatchError, match=r"train\.csv'? have an 'id' column but .*test\.csv"):
        load_table(tmp_path / "folder")


def test_an_unreadable_file_is_a_file_format_error(tmp_path):
    write(tmp_path / "train.parquet", "not parquet at all")
    with pytest.raises(FileFormatError, match=r"train\.parquet could not be read as PARQUET"):
        load_table(tmp_path / "train.parquet")
    (tmp_path / "bad.csv").write_bytes(b"text,label\n\xff\xfe,x\n")
    with pytest.raises(FileFormatError, match="could not be read as CSV"):
        load_table(tmp_path / "bad.csv")


def test_column_options_are_checked():
    with pytest.raises(InputError, match="input_type='audio'"):
        ColumnOptions(input_type="audio")
    with pytest.raises(InputError, match="features names the input columns"):
        ColumnOptions(features=("a",), input_column="text")
    with pytest.raises(InputError, match="distinct class names"):
        ColumnOptions(classes=("a", "a"))
    with pytest.raises(InputError, match="image_size"):
        ColumnOptions(image_size=0)
