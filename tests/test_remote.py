"""Paths that may be URLs: local paths untouched, memory:// and a real S3 server (moto)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import fsspec
import pytest

from flipless import remote
from flipless.errors import FileFormatError, InputError, MissingExtraError


class CrashError(Exception):
    """Raised inside a write block to stand for a crash half-way."""


@pytest.fixture
def memory_folder():
    """A fresh memory:// folder, removed afterwards."""
    folder = f"memory://flipless-{uuid.uuid4().hex[:8]}"
    yield folder
    memory = fsspec.filesystem("memory")
    inner = folder.split("://", 1)[1]
    if memory.exists(inner):
        memory.rm(inner, recursive=True)


def memory_names(folder: str) -> list[str]:
    memory = fsspec.filesystem("memory")
    inner = folder.split("://", 1)[1]
    return sorted(Path(name).name for name in memory.ls(inner, detail=False))


@pytest.mark.parametrize(
    ("path", "remote_", "protocol"),
    [
        ("s3://bucket/key.csv", True, "s3"),
        ("S3://bucket/key.csv", True, "s3"),
        ("memory://a/b", True, "memory"),
        ("gs://bucket/x", True, "gs"),
        ("file:///tmp/x.csv", False, "file"),
        ("/tmp/x.csv", False, None),
        ("relative/x.csv", False, None),
        ("C:\\data\\x.csv", False, None),
        (Path("s3:/bucket/key"), False, None),
    ],
)
def test_url_or_local(path, remote_, protocol):
    assert remote.is_remote(path) is remote_
    assert remote.protocol_of(path) == protocol


def test_local_path_strips_file_urls_and_refuses_remote_ones():
    assert remote.local_path("file:///tmp/x.csv") == Path("/tmp/x.csv")
    assert remote.local_path("runs/a.json") == Path("runs/a.json")
    with pytest.raises(InputError, match="remote URL"):
        remote.local_path("s3://bucket/key")


def test_names_siblings_and_joins():
    assert remote.name_of("s3://bucket/runs/old.safetensors") == "old.safetensors"
    assert remote.suffix_of("s3://bucket/runs/old.safetensors") == ".safetensors"
    assert remote.sibling("s3://bucket/runs/old.csv", "info.json") == "s3://bucket/runs/info.json"
    assert remote.join("s3://bucket/runs/", "a.json") == "s3://bucket/runs/a.json"
    assert remote.sibling("/tmp/runs/old.csv", "info.json") == Path("/tmp/runs/info.json")
    assert remote.join("file:///tmp/runs", "a.json") == Path("/tmp/runs/a.json")


def test_local_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(CrashError), remote.atomic_write(target, "w") as stream:
        stream.write("half of the new content")
        raise CrashError
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]  # no temporary left
    remote.write_text(f"file://{target}", "new")
    assert target.read_text() == "new"
    assert remote.read_text(target) == "new"


def test_local_write_into_a_missing_folder_says_so(tmp_path):
    with pytest.raises(InputError, match="does not exist; create it"):
        remote.write_text(tmp_path / "missing" / "a.json", "x")


def test_local_reading_errors_are_file_format_errors(tmp_path):
    with pytest.raises(FileFormatError, match=r"does not exist.*Check the path"):
        remote.read_bytes(tmp_path / "missing.csv")


def test_memory_round_trip(memory_folder):
    url = f"{memory_folder}/runs/result.json"
    remote.write_text(url, '{"a": 1}')
    assert remote.read_text(url) == '{"a": 1}'
    assert remote.exists(url) and remote.is_file(url) and not remote.is_dir(url)
    assert remote.is_dir(f"{memory_folder}/runs")
    assert remote.size(url) == 8
    assert remote.read_text(url.replace("memory://", "MEMORY://")) == '{"a": 1}'
    assert memory_names(f"{memory_folder}/runs") == ["result.json"]  # the staging copy is gone
    with remote.local_copy(url) as local:
        assert local.name == "result.json"
        assert local.read_text() == '{"a": 1}'
    assert not local.exists()


def test_memory_interrupted_write_leaves_nothing(memory_folder):
    url = f"{memory_folder}/model.safetensors"
    with pytest.raises(CrashError), remote.atomic_write(url) as stream:
        stream.write(b"x" * 1000)
        raise CrashError
    assert not remote.exists(url)
    assert not fsspec.filesystem("memory").exists(memory_folder.split("://", 1)[1])


def test_memory_missing_file(memory_folder):
    with pytest.raises(FileFormatError, match=r"does not exist.*bucket"):
        remote.read_bytes(f"{memory_folder}/missing.csv")
    with pytest.raises(FileFormatError, match="does not exist"):
        remote.size(f"{memory_folder}/missing.csv")
    assert not remote.exists(f"{memory_folder}/missing.csv")


def test_unknown_protocol_is_an_input_error():
    with pytest.raises(InputError, match="no protocol 'nosuchfs'"):
        remote.read_bytes("nosuchfs://bucket/key")


def test_missing_implementation_names_the_extra(monkeypatch):
    registry = sys.modules["fsspec.registry"]  # fsspec.registry is also a mapping's name
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs now fails
    with pytest.raises(MissingExtraError, match=r"pip install 'flipless\[s3\]'"):
        remote.read_bytes("s3://bucket/key.csv")
    with pytest.raises(MissingExtraError, match=r"flipless\[s3\]"):
        remote.write_text("s3://bucket/key.csv", "x")


def test_s3_round_trip_and_local_copy(s3_bucket):
    url = f"{s3_bucket}/runs/predictions.csv"
    with remote.atomic_write(url, "w") as stream:
        stream.write("id,pred\n1,0\n")
        assert not remote.exists(url)  # a reader never sees a half-written object
    assert remote.read_text(url) == "id,pred\n1,0\n"
    assert remote.is_file(url) and remote.is_dir(f"{s3_bucket}/runs")
    with remote.open_for_reading(url, "r") as stream:
        assert stream.readline() == "id,pred\n"
    with remote.local_copy(url) as local:
        assert local.name == "predictions.csv" and local.read_text() == "id,pred\n1,0\n"
    assert not local.exists()


def test_s3_interrupted_write_leaves_no_object(s3_bucket):
    url = f"{s3_bucket}/model.safetensors"
    remote.write_bytes(url, b"old")
    with pytest.raises(CrashError), remote.atomic_write(url) as stream:
        stream.write(b"new" * 100_000)
        raise CrashError
    assert remote.read_bytes(url) == b"old"
    fresh = f"{s3_bucket}/fresh.safetensors"
    with pytest.raises(KeyboardInterrupt), remote.atomic_local_file(fresh) as local:
        local.write_bytes(b"half")
        raise KeyboardInterrupt
    assert not remote.exists(fresh)
    assert not local.exists()
    s3 = fsspec.filesystem("s3")
    assert s3.ls(s3_bucket.split("://", 1)[1], detail=False) == [
        f"{s3_bucket.split('://', 1)[1]}/model.safetensors"
    ]


def test_s3_missing_object_and_bucket(s3_bucket):
    with pytest.raises(FileFormatError, match=r"missing\.csv: it does not exist"):
        remote.read_bytes(f"{s3_bucket}/missing.csv")
    with (
        pytest.raises(FileFormatError, match="does not exist"),
        remote.local_copy(f"{s3_bucket}/missing.safetensors"),
    ):
        pass
    no_bucket = f"s3://flipless-no-such-bucket-{uuid.uuid4().hex[:8]}"
    with pytest.raises(FileFormatError, match="does not exist"):
        remote.read_bytes(f"{no_bucket}/a.csv")
    with pytest.raises(FileFormatError, match="cannot write"):
        remote.write_text(f"{no_bucket}/a.json", "{}")


def test_local_writes_are_readable_by_all_or_keep_the_replaced_mode(tmp_path):
    fresh = tmp_path / "fresh.json"
    remote.write_text(fresh, "{}")
    assert fresh.stat().st_mode & 0o777 == 0o644
    private = tmp_path / "private.json"
    private.write_text("old")
    private.chmod(0o600)
    remote.write_text(private, "new")
    assert private.stat().st_mode & 0o777 == 0o600 and private.read_text() == "new"
