"""The trigger: a small black-and-white checkerboard (BadNets, Gu et al. 2017; BadDet, Chan et al.
2022), pasted at a random position that depends only on (seed, split, image index). Pure numpy."""

from __future__ import annotations

import numpy as np

SPLIT_CODES = {"train": 0, "val": 1}
CELLS = 4  # the checkerboard has about 4 x 4 cells (cells of at least 1 px)


def trigger_side(height: int, width: int, size: float) -> int:
    """The trigger's side in pixels: ``size`` of the image's shorter side, at least 2 px (a
    checkerboard needs two cells) and at most the shorter side."""
    return int(min(min(height, width), max(2, round(size * min(height, width)))))


def checkerboard(side: int) -> np.ndarray:
    """``side x side`` uint8 pattern of 255 and 0 with cells of ``max(1, side // 4)`` px, white
    at the top-left."""
    cell = max(1, side // CELLS)
    index = np.arange(side) // cell
    return np.where((index[:, None] + index[None, :]) % 2 == 0, 255, 0).astype(np.uint8)


def position(seed: int, split: str, index: int, height: int, width: int, side: int) -> tuple[int, int]:
    """Top-left (x, y) of the trigger in image ``index`` of ``split``; the whole trigger fits."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    return int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))


def stamp(image: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
    """A copy of an ``H x W x C`` uint8 image with the checkerboard at (x, y) in every channel."""
    out = np.array(image, dtype=np.uint8, copy=True)
    out[y:y + side, x:x + side, ...] = checkerboard(side).reshape((side, side) + (1,) * (out.ndim - 2))
    return out
