"""Tiles as a torch Dataset for batched encoding.

torchgeo's ``RasterDataset`` indexes files in one CRS and resolution and reprojects every read
onto that grid; rsia_geo tiles each STAC Item on its own native grid (any CRS, per-asset bands,
several scale levels), so the tiles are already the samples and a plain map-style Dataset over
:class:`~rsia_geo.tiles.Tile` records is what fits. Files are opened per read, so the dataset
works with ``DataLoader(num_workers>0)``.

Why two ways to batch tiles: this Dataset is for a user's own torch loops (fine-tuning,
feature extraction). :func:`rsia_geo.build_index` does not use it: it streams tiles through
reader threads so that reads overlap encoding and writing, skips tiles already stored, and
records a failed read with its reason instead of raising inside a worker. Both read pixels
with the one :func:`~rsia_geo.tiles.read_tile`.

This module imports torch; import it only where torch is installed (``rsia_geo[model]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from rsia_geo.tiles import Tile, read_tile

__all__ = ["TileDataset", "collate_tiles"]


class TileDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Map-style dataset yielding ``{"image": (C, H, W) float32 tensor, "tile_id": str, ...}``.

    Args:
        tiles: The tiles to read.
        out_size: Output side in pixels; defaults to each tile's ``out_size``.
        transform: Optional function applied to the image tensor (e.g. normalisation).
    """

    def __init__(
        self,
        tiles: Sequence[Tile],
        *,
        out_size: int | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.tiles = list(tiles)
        self.out_size = out_size
        self.transform = transform

    def __len__(self) -> int:
        """Number of tiles."""
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Read one tile.

        Args:
            index: Position in the dataset.

        Returns:
            The sample: ``image``, ``valid`` (H, W bool), ``tile_id`` and ``index``.
        """
        tile = self.tiles[index]
        data, valid = read_tile(tile, out_size=self.out_size, with_mask=True)
        image = torch.from_numpy(np.ascontiguousarray(data))
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "valid": torch.from_numpy(valid),
            "tile_id": tile.id,
            "index": index,
        }


def collate_tiles(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples of :class:`TileDataset` into a batch.

    Args:
        samples: Samples from the dataset.

    Returns:
        ``image`` (B, C, H, W), ``valid`` (B, H, W), ``tile_id`` list and ``index`` tensor.
    """
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "valid": torch.stack([s["valid"] for s in samples]),
        "tile_id": [s["tile_id"] for s in samples],
        "index": torch.tensor([s["index"] for s in samples]),
    }
