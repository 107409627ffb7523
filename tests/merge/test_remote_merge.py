"""flipless interpolate with checkpoints and output on s3:// (a real S3 server, moto)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from flipless import remote
from flipless.cli import app
from flipless.errors import InputError
from flipless.merge.files import interpolate_files
from flipless.merge.policy import MergePolicy
from flipless.models import build_model, load_model, save_model

runner = CliRunner()


def tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_features=6, num_classes=3, hidden=[8])


@pytest.fixture
def s3_checkpoints(s3_bucket):
    old, new = tiny(0), tiny(1)
    save_model(old, f"{s3_bucket}/old.safetensors")
    save_model(new, f"{s3_bucket}/new.safetensors")
    return s3_bucket, old, new


def expected(old: torch.nn.Module, new: torch.nn.Module, old_weight: float) -> dict:
    """θ = α θ_old + (1 − α) θ_new, in float64."""
    new_state = new.state_dict()
    return {
        name: old_weight * tensor.double() + (1 - old_weight) * new_state[name].double()
        for name, tensor in old.state_dict().items()
    }


def check_merged(model: torch.nn.Module, reference: dict) -> None:
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor.double(), reference[name], rtol=0, atol=1e-6)


def test_interpolate_cli_reads_and_writes_s3(s3_checkpoints):
    bucket, old, new = s3_checkpoints
    out = f"{bucket}/merged"
    result = runner.invoke(
        app,
        [
            "interpolate",
            f"{bucket}/old.safetensors",
            f"{bucket}/new.safetensors",
            "--old-weight",
            "0.3",
            "--out",
            out,
        ],
    )
    assert result.exit_code == 0, result.output
    check_merged(load_model(f"{out}/model.safetensors"), expected(old, new, 0.3))
    files = [f"{bucket}/old.safetensors", f"{bucket}/new.safetensors"]
    again = runner.invoke(app, ["interpolate", *files, "--old-weight", "0.3", "--out", out])
    assert again.exit_code == 2 and "already exists" in again.output


def test_sharded_output_and_input_on_s3(s3_checkpoints):
    bucket, old, new = s3_checkpoints
    sharded = f"{bucket}/sharded"
    policy = MergePolicy(0.5)
    args = [f"{bucket}/old.safetensors", [f"{bucket}/new.safetensors"]]
    assert interpolate_files(*args, sharded, policy=policy, max_shard_bytes=64) == sharded
    index = json.loads(remote.read_text(f"{sharded}/model.safetensors.index.json"))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(remote.is_file(f"{sharded}/{name}") for name in shards)
    # the sharded merge (α = 0.5) merged again with the new model at α = 0.5: 0.25 old
    twice = f"{bucket}/twice"
    interpolate_files(
        sharded,  # a folder URL: downloaded whole
        [f"{bucket}/new.safetensors"],
        twice,
        policy=policy,
    )
    check_merged(load_model(f"{twice}/model.safetensors"), expected(old, new, 0.25))


def test_a_remote_output_folder_that_exists_is_refused_before_any_work(s3_checkpoints):
    bucket, _, _ = s3_checkpoints
    with pytest.raises(InputError, match="already exists"):
        interpolate_files(
            f"{bucket}/old.safetensors",
            [f"{bucket}/new.safetensors"],
            bucket,
            policy=MergePolicy(0.5),
        )
