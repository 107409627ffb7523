"""Model checkpoints saved to and loaded from URLs: a real S3 server (moto) and memory://."""

from __future__ import annotations

import uuid

import pytest
import torch

from flipless import remote
from flipless.errors import FileFormatError
from flipless.models import build_model
from flipless.models.files import load_model, read_model_info, save_model


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", in_features=4, num_classes=3, hidden=[5])


def assert_same_weights(left: torch.nn.Module, right: torch.nn.Module) -> None:
    left_state, right_state = left.state_dict(), right.state_dict()
    assert left_state.keys() == right_state.keys()
    for name, tensor in left_state.items():
        assert torch.equal(tensor, right_state[name]), name


@pytest.mark.parametrize("where", ["s3", "memory"])
def test_checkpoint_round_trip(where, request):
    folder = (
        request.getfixturevalue("s3_bucket")
        if where == "s3"
        else f"memory://checkpoints-{uuid.uuid4().hex[:8]}"
    )
    url = f"{folder}/runs/old.safetensors"
    model = tiny_model()
    assert save_model(model, url, {"epoch": 3}) == url
    info = read_model_info(url)
    assert info.architecture == "mlp" and info.metadata == {"epoch": 3}
    loaded = load_model(url)
    assert_same_weights(model, loaded)
    assert not loaded.training


def test_interrupted_save_leaves_no_checkpoint(s3_bucket, monkeypatch):
    import safetensors.torch

    def crash(model, filename, metadata=None):
        with open(filename, "wb") as stream:
            stream.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_model", crash)
    url = f"{s3_bucket}/old.safetensors"
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny_model(), url)
    assert not remote.exists(url)


def test_missing_remote_checkpoint(s3_bucket):
    with pytest.raises(
        FileFormatError, match=r"no model checkpoint at s3://.*missing\.safetensors"
    ):
        load_model(f"{s3_bucket}/missing.safetensors")
