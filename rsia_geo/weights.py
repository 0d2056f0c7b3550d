"""Checkpoints shipped with rsia_geo, and the reference audio bank of a checkpoint.

Models as data live in three places, each for one question: :mod:`rsia_geo.models.registry`
names architectures (configurations to train from), :mod:`rsia_geo.models.checkpoint` writes
and reads a trained model's files (safetensors + JSON), and this module names the trained
checkpoints shipped in the package (in ``rsia_geo/weights/<name>/``). It stays light (torch
only inside :func:`audio_bank`), so the CLI, the service and the search resolve the default
model without importing the model code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rsia_geo.errors import CheckpointNotFoundError

__all__ = [
    "FIRST_STARTER",
    "PREVIOUS_STARTER",
    "STARTER",
    "audio_bank",
    "default_checkpoint",
    "hub_bank",
    "recogniser_prompt",
    "shipped_checkpoint",
    "shipped_checkpoints",
    "text_encoder",
    "tile_hubness",
]

_WEIGHTS = Path(__file__).resolve().parent / "weights"
STARTER = "alac-efficientnet-lite0-whisper-mix-ucm"
"""Name of the starter checkpoint (v0.3.2: trained on UCM-Captions train, voiced, with scene
mixing and a caption term for its image side, then its voice side fine-tuned with voice pairs;
its image side is new, so indexes built with v0.3.0 or v0.3.1 must be built again; see
docs/model_card.md)."""

PREVIOUS_STARTER = "alac-efficientnet-lite0-whisper-ucm"
"""The previous starter (v0.2.0, the same model trained without scene mixing), still shipped
so that indexes built with it can be searched:
``rsia_geo.search(..., model=shipped_checkpoint(PREVIOUS_STARTER))``."""

FIRST_STARTER = "alac-efficientnet-lite0-ucm"
"""The first starter (from-scratch audio encoder), still shipped so that indexes built with it
can be searched: ``rsia_geo.search(..., model=shipped_checkpoint(FIRST_STARTER))``."""


def shipped_checkpoints() -> list[str]:
    """Names of the checkpoints shipped in the package.

    Returns:
        Folder names under ``rsia_geo/weights``.
    """
    if not _WEIGHTS.exists():
        return []
    return sorted(p.name for p in _WEIGHTS.iterdir() if (p / "config.json").exists())


def shipped_checkpoint(name: str) -> Path:
    """Folder of a checkpoint shipped in the package.

    Args:
        name: A name from :func:`shipped_checkpoints`.

    Returns:
        The checkpoint folder.

    Raises:
        CheckpointNotFoundError: No such shipped checkpoint (the message lists them).
    """
    path = _WEIGHTS / name
    if not (path / "config.json").exists():
        raise CheckpointNotFoundError(
            f"no shipped checkpoint {name!r}; shipped: {', '.join(shipped_checkpoints())}"
        )
    return path


def default_checkpoint() -> Path:
    """Folder of the starter checkpoint.

    Returns:
        The checkpoint folder.

    Raises:
        CheckpointNotFoundError: The package was installed without it.
    """
    path = _WEIGHTS / STARTER
    if not (path / "config.json").exists():
        raise CheckpointNotFoundError(
            f"the starter checkpoint {STARTER!r} is not in {str(_WEIGHTS)!r}; pass a "
            "checkpoint folder (model=...) or train one with `rsia-geo train`"
        )
    return path


_BESIDE: dict[tuple[str, str, int, int], Any] = {}


def _read_beside(model: Any, name: str, read: Any) -> Any:
    """``read(path)`` of a file beside a model's checkpoint, once per file version.

    Returns None when the model was not loaded from a folder or the file is absent; the model
    object is left as it is.
    """
    folder = getattr(model, "checkpoint_path", None)
    path = Path(folder) / name if folder else None
    if path is None or not path.exists():
        return None
    stat = path.stat()
    key = (name, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _BESIDE:
        _BESIDE[key] = read(path)
    return _BESIDE[key]


def audio_bank(model: Any) -> Any:
    """The reference clips' raw audio embeddings saved with a model's checkpoint.

    Args:
        model: A model loaded with :func:`rsia_geo.models.load_checkpoint`.

    Returns:
        float32 tensor ``(n, dim)``.

    Raises:
        CheckpointNotFoundError: The checkpoint has no audio bank.
    """
    from safetensors.torch import load_file

    bank = _read_beside(
        model, "audio_bank.safetensors", lambda p: load_file(str(p))["audio"].float()
    )
    if bank is None:
        raise CheckpointNotFoundError(
            "the BSWFR rerank needs the checkpoint's audio_bank.safetensors (reference clips' "
            "embeddings), which this model lacks; search with rerank=False or add a bank"
        )
    return bank


_HUB: dict[tuple[str, int, int], tuple[Any, str]] = {}


def hub_bank(model: Any) -> tuple[Any, str] | None:
    """The checkpoint's reference clips as unit vectors, and which bank they are.

    What the hubness of an image is measured against (:func:`rsia_geo.rerank.hubness`).

    Args:
        model: A model loaded with :func:`rsia_geo.models.load_checkpoint`.

    Returns:
        ``(unit bank (n, dim) float32 numpy, the first 12 hex digits of the bank file's
        sha256)``, or None when the checkpoint has no ``audio_bank.safetensors``.
    """
    import hashlib

    import numpy as np

    folder = getattr(model, "checkpoint_path", None)
    path = Path(folder) / "audio_bank.safetensors" if folder else None
    if path is None or not path.exists():
        return None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HUB:
        bank = audio_bank(model).numpy().astype(np.float32)
        unit = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        _HUB[key] = (unit, hashlib.sha256(path.read_bytes()).hexdigest()[:12])
    return _HUB[key]


def tile_hubness(model: Any, raw_vectors: Any) -> Any:
    """The hubness of image embeddings against a checkpoint's bank (None: it has no bank).

    Args:
        model: A loaded model.
        raw_vectors: ``(n, dim)`` image embeddings (raw or unit).

    Returns:
        ``(n,)`` float64 numpy (:func:`rsia_geo.rerank.hubness`), or None.
    """
    import numpy as np

    from rsia_geo.rerank import hubness

    found = hub_bank(model)
    if found is None:
        return None
    v = np.asarray(raw_vectors, dtype=np.float32)
    return hubness(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12), found[0])


def text_encoder(model: Any) -> Any:
    """The text route shipped beside a model's checkpoint (``text.safetensors``), or None.

    Read once per file version. The text encoder embeds transcripts and typed queries into the
    checkpoint's image space (:mod:`rsia_geo.models.text`).

    Args:
        model: A model loaded with :func:`rsia_geo.models.load_checkpoint`.

    Returns:
        A :class:`~rsia_geo.models.text.TextEncoder` in eval mode, or None when the checkpoint
        has none (or the model was not loaded from a folder).

    Raises:
        CheckpointError: The text route belongs to other image weights, or is unreadable.
    """
    from rsia_geo.models.checkpoint import image_side_sha256
    from rsia_geo.models.text import TEXT_WEIGHTS_NAME, load_text_encoder

    sha = image_side_sha256(model)  # a route made for the image side serves every such model
    return _read_beside(
        model, TEXT_WEIGHTS_NAME, lambda p: load_text_encoder(p.parent, image_sha256=sha)
    )


def recogniser_prompt(model: Any) -> str:
    """What the speech recogniser reads as said before a spoken query, for this model.

    ``RSIA_RECOGNISER_PROMPT`` when set (an empty value: no prompt; any text: that text, e.g.
    the words of your own imagery), else the prompt the checkpoint's text route ships in
    ``text.json`` (its training captions, one per class:
    :func:`rsia_geo.training.transcripts.domain_prompt`), else none. Read without loading the
    route's weights, so transcripts are heard the same way with ``text_weight=0``.

    Args:
        model: A model loaded with :func:`rsia_geo.models.load_checkpoint`.

    Returns:
        The prompt ("" for none).

    Raises:
        CheckpointError: The checkpoint's ``text.json`` is unreadable.
    """
    return _prompt_and_source(model)[0]


def _prompt_and_source(model: Any) -> tuple[str, str]:
    """:func:`recogniser_prompt` and where it came from.

    The source is ``environment``, ``checkpoint`` or ``none``; search reports it as
    ``attrs["query"]["heard_prompt"]``.
    """
    import os

    from rsia_geo.models.text import TEXT_CONFIG_NAME
    from rsia_geo.models.text import recogniser_prompt as read_prompt

    env = os.environ.get("RSIA_RECOGNISER_PROMPT")
    if env is not None:
        prompt = " ".join(env.split())
        return prompt, "environment" if prompt else "none"
    prompt = str(_read_beside(model, TEXT_CONFIG_NAME, lambda p: read_prompt(p.parent)) or "")
    return prompt, "checkpoint" if prompt else "none"
