"""Checkpoints: safetensors weights plus a JSON configuration, never pickles.

A checkpoint is a folder (or a pair of files sharing a stem) with

* ``model.safetensors``: the model's tensors (persistent parameters and buffers);
* ``config.json``: ``{"format": "rsia-alac", "format_version": 1, "config": {...},
  "weights_sha256": ..., ...}`` with the full :class:`~rsia_geo.models.alac.ALACConfig`
  (architecture, preprocessing, audio front end, embedding size, model id and version,
  training summary), from which the model is rebuilt before the tensors are loaded strictly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from rsia_geo.errors import CheckpointError, CheckpointNotFoundError
from rsia_geo.models.alac import ALACConfig, ALACModel

__all__ = ["build_model", "image_side_sha256", "load_checkpoint", "save_checkpoint"]

FORMAT = "rsia-alac"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
BANK_NAME = "audio_bank.safetensors"


def build_model(config: ALACConfig, *, pretrained: bool = True) -> ALACModel:
    """Build a model from a configuration.

    Args:
        config: The configuration.
        pretrained: Load the backbone's pretrained weights named in the configuration (a
            packaged ImageNet model or a local weights file). False builds random weights,
            e.g. before loading a checkpoint.

    Returns:
        The model (train mode).
    """
    if pretrained:
        return ALACModel(config)
    opts = {
        k: v for k, v in config.backbone.options.items() if k not in ("weights_path", "weights")
    }
    opts["pretrained"] = False
    model = ALACModel(
        dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, options=opts))
    )
    model.config = config  # record the configuration as given, not the no-download variant
    return model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    model: ALACModel,
    path: str | Path,
    *,
    half: bool = False,
    extra: dict[str, Any] | None = None,
    audio_bank: torch.Tensor | None = None,
) -> Path:
    """Save a model as ``path/model.safetensors`` + ``path/config.json``.

    Args:
        model: The model.
        path: Output folder (created).
        half: Store floating-point tensors as float16 (half the size; loaded back as float32).
        extra: Additional JSON metadata (metrics, run info).
        audio_bank: Raw audio embeddings of reference clips ``(n, dim)``, saved as
            ``audio_bank.safetensors`` for the BSWFR rerank at search time.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    from rsia_geo import __version__

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        if half and t.is_floating_point():
            t = t.half()
        state[name] = t
    weights = out / WEIGHTS_NAME
    save_file(state, str(weights), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rsia_geo_version": __version__,
        "dtype": "float16" if half else "float32",
        "weights_sha256": _sha256(weights),
        "config": model.config.to_dict(),
        **(extra or {}),
    }
    if audio_bank is not None:
        save_file({"audio": audio_bank.detach().cpu().half().contiguous()}, str(out / BANK_NAME))
        meta["audio_bank"] = {"file": BANK_NAME, "clips": int(audio_bank.shape[0])}
    (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2, default=str))
    return out


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's ``config.json``.

    Args:
        path: The checkpoint folder.

    Returns:
        The metadata.

    Raises:
        CheckpointNotFoundError: The folder or one of its files is missing.
        CheckpointError: The metadata is not an rsia_geo checkpoint of a known version.
    """
    p = Path(path)
    cfg_path, weights = p / CONFIG_NAME, p / WEIGHTS_NAME
    for f in (cfg_path, weights):
        if not f.exists():
            raise CheckpointNotFoundError(
                f"checkpoint file {str(f)!r} is missing; a checkpoint folder holds "
                f"{CONFIG_NAME} and {WEIGHTS_NAME}"
            )
    try:
        meta: dict[str, Any] = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(cfg_path)!r} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(cfg_path)!r} is not an rsia_geo ALAC checkpoint (format "
            f"{meta.get('format')!r} v{meta.get('format_version')!r})"
        )
    return meta


def load_checkpoint(
    path: str | Path, *, verify: bool = True, map_location: str = "cpu"
) -> ALACModel:
    """Rebuild a model from a checkpoint folder, in eval mode.

    Args:
        path: The checkpoint folder.
        verify: Check the weights' SHA-256 against the metadata.
        map_location: Device for the tensors.

    Returns:
        The model with every tensor loaded (strict).

    Raises:
        CheckpointNotFoundError: Files are missing.
        CheckpointError: Bad metadata, hash mismatch, or tensors that do not fit the model.
    """
    from safetensors.torch import load_file

    p = Path(path)
    meta = read_checkpoint_meta(p)
    weights = p / WEIGHTS_NAME
    if verify and meta.get("weights_sha256") and _sha256(weights) != meta["weights_sha256"]:
        raise CheckpointError(f"{str(weights)!r} does not match its recorded SHA-256; corrupt?")
    config = ALACConfig.from_dict(meta["config"])
    model = build_model(config, pretrained=False)
    state = load_file(str(weights), device=map_location)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {str(p)!r} do not fit its config: {exc}") from exc
    model.eval()
    model.checkpoint_meta = meta  # type: ignore[assignment]
    model.checkpoint_path = str(p.resolve())  # type: ignore[assignment]
    return model


def image_side_sha256(model: ALACModel) -> str | None:
    """Which checkpoint's image side a model carries: that checkpoint's ``weights_sha256``.

    A model trained with ``image_from`` (a new audio branch against a frozen image side) carries
    its source's image side exactly and names it in ``training.image_from``; any other
    checkpoint carries its own. Indexes and text routes made for one serve the other.

    Args:
        model: A loaded model.

    Returns:
        The SHA-256, or None for a model not loaded from a checkpoint.
    """
    source = (model.config.training or {}).get("image_from") or {}
    own = (getattr(model, "checkpoint_meta", None) or {}).get("weights_sha256")
    return source.get("weights_sha256") or own


def model_signature(model: ALACModel) -> dict[str, Any]:
    """What an index must record to refuse vectors from another model.

    Args:
        model: The model.

    Returns:
        Model id, version, embedding size and preprocessing, the weights' hash and the image
        side's (:func:`image_side_sha256`).
    """
    c = model.config
    return {
        "model_id": c.model_id,
        "version": c.version,
        "embed_dim": c.embed_dim,
        "backbone": c.backbone.name,
        "input_size": c.backbone.input_size,
        "in_chans": c.backbone.in_chans,
        "frontend": c.frontend.kind,
        "weights_sha256": getattr(model, "checkpoint_meta", {}).get("weights_sha256"),
        "image_side": image_side_sha256(model),
    }
