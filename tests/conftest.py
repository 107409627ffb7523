"""Shared test helpers (pytest loads this file; test modules cannot import each other)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

#: System packages some tests need, by the file or folder each installs. Where one is missing
#: the tests that need it skip, naming the package and how to install it; with
#: ``FLIPLESS_REQUIRE_SYSTEM_PACKAGES=1`` (set by ``.ci/run``, which installs them) they fail.
SYSTEM_PACKAGES = {
    "chromium": Path("/usr/bin/chromium"),
    "dataset-fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
}
REQUIRE_SYSTEM_PACKAGES = "FLIPLESS_REQUIRE_SYSTEM_PACKAGES"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "system_package(name): needs a Debian package of SYSTEM_PACKAGES in tests/conftest.py "
        "(skipped without it, unless FLIPLESS_REQUIRE_SYSTEM_PACKAGES=1)",
    )


def needed_system_packages(item: pytest.Item) -> list[str]:
    """The system packages ``item`` needs: its ``system_package`` marks, and chromium for the
    ``browser`` mark."""
    names = [mark.args[0] for mark in item.iter_markers("system_package")]
    if item.get_closest_marker("browser") is not None:
        names.append("chromium")
    unknown = [name for name in names if name not in SYSTEM_PACKAGES]
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: unknown system_package {unknown}.")
    return names


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, when CI requires them, fail) a test whose system package is missing."""
    for name in needed_system_packages(item):
        path = SYSTEM_PACKAGES[name]
        if path.exists():
            continue
        reason = (
            f"needs the Debian package {name} ({path} is missing); install it with "
            f"`sudo apt-get install {name}`"
        )
        if os.environ.get(REQUIRE_SYSTEM_PACKAGES) == "1":
            pytest.fail(f"{reason} ({REQUIRE_SYSTEM_PACKAGES}=1 requires it)", pytrace=False)
        pytest.skip(reason)


#: What a rank prints when torch's gloo backend aborts it as the run ends (a thread object
#: destroyed unjoined): seen in about one clean CI run in two, in a different torchrun test
#: each time, with or without a barrier before destroy_process_group.
TEARDOWN_ABORT = "terminate called without an active exception"


@pytest.fixture
def torchrun() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a script under ``torchrun --standalone`` on the CPU; fail with its stderr if it fails.

    Each process gets one thread (``OMP_NUM_THREADS=1``), as torchrun sets by default. A run
    that fails only by :data:`TEARDOWN_ABORT` is repeated once; any other failure, or the
    abort twice, fails the test.
    """

    def run(
        script: Path, *args: object, processes: int = 2, timeout: float = 230
    ) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            str(script),
            *map(str, args),
        ]
        for _ in range(2):
            completed = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if completed.returncode == 0 or TEARDOWN_ABORT not in completed.stderr:
                break
        assert completed.returncode == 0, completed.stderr[-3000:]
        return completed

    return run


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one torch thread (small models run faster so); restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_bert() -> Callable[..., object]:
    """``build(vocab, length, classes, seed=0)``: a seeded two-layer BERT sequence classifier
    (hidden size 16, 2 heads, feed-forward 24, dropout off) for tests of Hugging Face paths."""
    transformers = pytest.importorskip("transformers")

    def build(vocab: int, length: int, classes: int, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        config = transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=24,
            max_position_embeddings=length,
            num_labels=classes,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        return transformers.BertForSequenceClassification(config)

    return build


@pytest.fixture(scope="session")
def s3_server() -> str:
    """A real S3 protocol server (moto's server mode) on 127.0.0.1; its endpoint URL.

    For the session, the AWS environment points every S3 client at it (``AWS_ENDPOINT_URL``)
    with dummy credentials, and ignores the user's AWS files, so no request leaves the machine.
    """
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "flipless-test",
            "AWS_SECRET_ACCESS_KEY": "flipless-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1",
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A new, empty bucket on the test S3 server, as a URL (``s3://<name>``)."""
    import uuid

    import s3fs

    name = f"flipless-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    return f"s3://{name}"
