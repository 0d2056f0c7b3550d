"""Scene mixing: training views whose footprint does not line up with one scene.

A user's tile grid never follows the scenes of the training set: a harbour sits across two
tiles, a tile covers half a farm and half a road, a coarse tile holds the airport and its
fields. Training only on whole, centred UC Merced scenes teaches the image side that a tile *is*
a scene. :func:`mixed_view` instead places the training image (the *centre*) in a 3 x 3 mosaic
of other training images (each drawn from the centre's class with probability ``same_class``,
else from any class) and cuts a window from it that is

* **shifted** by up to half a scene in each axis, so it straddles two to four scenes;
* **scaled**: its side is ``s`` times a scene's, ``s`` log-uniform in ``scale`` (below 1 the
  window zooms into the centre; above 1 it takes in the neighbours, as a coarse tile does);
* **rotated** by any angle (aerial scenes have no up; the mosaic fills the corners).

The window is kept only when the centre scene covers the largest share of it (the *dominant*
scene), so the view keeps the centre's captions; draws that fail are redrawn. Each part can be
switched off (:class:`MixSettings`) to measure what it gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from rsia_geo.errors import InvalidArgumentError

__all__ = ["MixSettings", "mixed_view", "neighbours"]

_GRID = 3  # mosaic of 3 x 3 scenes, the centre one in the middle


@dataclass(frozen=True)
class MixSettings:
    """What a mixed view may do.

    Attributes:
        views: Mixed views cached per training image (0: no scene mixing).
        shift: Shift the window by up to half a scene in each axis.
        scale: ``(low, high)`` range of the window side in scenes, drawn log-uniformly;
            ``(1.0, 1.0)`` keeps the scene's footprint.
        rotate: Rotate the window by any angle.
        same_class: Probability that a neighbour is drawn from the centre's class.
    """

    views: int = 0
    shift: bool = True
    scale: tuple[float, float] = (0.5, 2.0)
    rotate: bool = True
    same_class: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0.25 <= lo <= hi <= 2.0:
            raise InvalidArgumentError(
                f"mix scale={self.scale!r} must satisfy 0.25 <= low <= high <= 2 (window side "
                "in scenes; a window wider than 2 scenes no longer has its centre dominant)"
            )
        if not 0.0 <= self.same_class <= 1.0:
            raise InvalidArgumentError(
                f"mix same_class={self.same_class!r} must be a probability in [0, 1]"
            )
        if self.views < 0:
            raise InvalidArgumentError(f"mix views={self.views!r} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for cache keys and run settings)."""
        return asdict(self)


def neighbours(
    centre: int, labels: Sequence[str], rng: np.random.Generator, same_class: float
) -> list[int]:
    """Indices of the 8 scenes around ``centre`` (never the centre itself).

    Args:
        centre: Index of the centre image.
        labels: Class label of every image.
        rng: Random source.
        same_class: Probability that each neighbour shares the centre's class.

    Returns:
        Eight image indices.
    """
    same = [i for i, lab in enumerate(labels) if lab == labels[centre] and i != centre]
    out = []
    for _ in range(_GRID * _GRID - 1):
        if same and rng.random() < same_class:
            out.append(int(same[rng.integers(len(same))]))
        else:
            j = int(rng.integers(len(labels) - 1))
            out.append(j + 1 if j >= centre else j)
    return out


def _mosaic(centre: torch.Tensor, around: Sequence[torch.Tensor]) -> torch.Tensor:
    """A ``(C, 3S, 3S)`` canvas: ``centre`` in the middle, ``around`` in reading order."""
    s = centre.shape[-1]
    canvas = torch.empty(centre.shape[0], _GRID * s, _GRID * s, dtype=centre.dtype)
    tiles = [*around[:4], centre, *around[4:]]
    for k, tile in enumerate(tiles):
        r, c = divmod(k, _GRID)
        canvas[:, r * s : (r + 1) * s, c * s : (c + 1) * s] = tile
    return canvas


def _window_grid(
    side: float, angle: float, dx: float, dy: float, out: int, canvas: int
) -> torch.Tensor:
    """Sampling grid (normalised canvas coordinates) of a rotated square window."""
    lin = (torch.arange(out, dtype=torch.float32) + 0.5) / out - 0.5  # [-0.5, 0.5)
    yy, xx = torch.meshgrid(lin * side, lin * side, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    x = canvas / 2 + dx + cos * xx - sin * yy
    y = canvas / 2 + dy + sin * xx + cos * yy
    return torch.stack([x / canvas * 2 - 1, y / canvas * 2 - 1], dim=-1)[None]


def _draw_window(
    settings: MixSettings, scene: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Side (px), angle (rad) and offset (px) of one window inside the 3 x 3 mosaic."""
    lo, hi = settings.scale
    side = scene * float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    angle = float(rng.uniform(0, 2 * np.pi)) if settings.rotate else 0.0
    half_extent = side * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2
    room = max(0.0, _GRID * scene / 2 - half_extent)  # stay inside the canvas
    reach = min(room, scene / 2) if settings.shift else 0.0
    dx, dy = (float(v) for v in rng.uniform(-reach, reach, size=2))
    return side, angle, dx, dy


def mixed_view(
    centre: torch.Tensor,
    around: Sequence[torch.Tensor],
    settings: MixSettings,
    rng: np.random.Generator,
    tries: int = 20,
) -> tuple[torch.Tensor, float]:
    """One mixed view of ``centre``: a window of its mosaic where it is the dominant scene.

    Args:
        centre: ``(C, S, S)`` float image in [0, 1] (all scenes the same size).
        around: Its 8 neighbours, ``(C, S, S)`` each.
        settings: What the window may do.
        rng: Random source (one draw per call).
        tries: Redraws before falling back to an unshifted window.

    Returns:
        ``(view, share)``: the window at its own resolution (side rounded to pixels, at least
        32; the model's resize brings it to its input size, as serving resizes tiles) and the
        fraction of it covered by the centre scene.

    Raises:
        InvalidArgumentError: Images of different shapes, or not 8 neighbours.
    """
    if len(around) != _GRID * _GRID - 1:
        raise InvalidArgumentError(f"a mixed view needs 8 neighbours, got {len(around)}")
    shapes = {tuple(t.shape) for t in [centre, *around]}
    if len(shapes) != 1 or centre.shape[-1] != centre.shape[-2]:
        raise InvalidArgumentError(
            f"mixed views need square images of one shape, got {sorted(shapes)}; resize first"
        )
    scene = int(centre.shape[-1])
    canvas = _GRID * scene
    mosaic = _mosaic(centre, around)[None]
    rows = torch.arange(_GRID, dtype=torch.float32).repeat_interleave(scene)
    owner_map = (rows[:, None] * _GRID + rows[None, :])[None, None]  # scene index per pixel
    for attempt in range(tries + 1):
        side, angle, dx, dy = _draw_window(settings, scene, rng)
        if attempt == tries:
            dx = dy = 0.0
        probe = _window_grid(side, angle, dx, dy, 48, canvas)
        who = torch.nn.functional.grid_sample(
            owner_map, probe, mode="nearest", align_corners=False
        ).flatten()
        counts = torch.bincount(who.long(), minlength=_GRID * _GRID).float()
        share = float(counts[_GRID * _GRID // 2] / counts.sum())
        if counts.argmax() == _GRID * _GRID // 2 or attempt == tries:
            break
    out = max(32, round(side))
    grid = _window_grid(side, angle, dx, dy, out, canvas)
    view = torch.nn.functional.grid_sample(
        mosaic.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )[0]
    return view.clamp(0, 1), share
