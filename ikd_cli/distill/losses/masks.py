"""FGD's foreground and background masks: where the ground-truth boxes lie on a feature map.

The foreground mask gives each feature cell covered by a box ``1 / (box_h * box_w)`` (the largest
where boxes overlap), so small objects weigh as much as large ones; the background mask spreads 1
evenly over the cells no box covers. The FGD reference paints one box at a time in a Python loop;
here all the boxes of an image are painted at once (same numbers, see the tests).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

# The vectorised mask paints boxes in chunks whose (k, H, W) temporary holds at most this many
# elements: ~4 MiB of float32 on CPU (stays in cache; bigger chunks get slower there), more on GPU
# (fewer kernel launches).
_MASK_BUDGET_CPU = 1 << 20
_MASK_BUDGET_GPU = 1 << 24


def img_hw(meta: dict, key: str = "img_shape") -> tuple[float, float]:
    shape = meta[key]
    return float(shape[0]), float(shape[1])


def box_cell_bounds(boxes: Tensor, img_h: float, img_w: float, H: int, W: int):
    """Inclusive feature-cell bounds and mask values of ``boxes`` (k, 4) xyxy in image pixels.

    A box is scaled to the feature map (x by ``W/img_w``, y by ``H/img_h``); its first cell is
    ``floor`` of the scaled min and its last cell ``ceil`` of the scaled max, both INCLUSIVE (FGD's
    convention). Its value is ``1 / (box_h * box_w)`` with ``box_h = ceil(y2') - floor(y1') + 1`` (and
    likewise ``box_w``) counted BEFORE clamping, exactly as the FGD reference does: a box reaching the
    right/bottom edge of the map counts one cell beyond it. The bounds are then clamped to the map for
    painting. Boxes wholly outside the map (or inverted / NaN) are invalid and paint nothing (the
    reference would wrap around with negative slice indices; mmdet clips boxes, so this never
    happens in training).

    Returns ``hmin, hmax, wmin, wmax`` (int64, clamped), ``values`` (float32) and ``valid`` (bool),
    each of shape (k,). Shared with the tests' per-box loop, so both see identical numbers.
    """
    boxes = boxes.detach().float()
    x1 = torch.floor(boxes[:, 0] / img_w * W)
    y1 = torch.floor(boxes[:, 1] / img_h * H)
    x2 = torch.ceil(boxes[:, 2] / img_w * W)
    y2 = torch.ceil(boxes[:, 3] / img_h * H)
    valid = (x2 >= x1) & (y2 >= y1) & (x1 <= W - 1) & (y1 <= H - 1) & (x2 >= 0) & (y2 >= 0)
    values = torch.where(valid, 1.0 / ((y2 - y1 + 1) * (x2 - x1 + 1)), torch.zeros_like(x1))
    wmin = x1.nan_to_num(0).clamp(0, W - 1).long()
    wmax = x2.nan_to_num(0).clamp(0, W - 1).long()
    hmin = y1.nan_to_num(0).clamp(0, H - 1).long()
    hmax = y2.nan_to_num(0).clamp(0, H - 1).long()
    return hmin, hmax, wmin, wmax, values, valid


def foreground_mask(gt_bboxes: Sequence[Tensor], img_metas: Sequence[dict], H: int, W: int,
                    device=None) -> Tensor:
    """FGD foreground mask ``(N, H, W)``, vectorised over the boxes of each image.

    Every cell covered by a ground-truth box gets ``1 / (box_h * box_w)`` (box size in feature cells);
    where boxes overlap the largest value wins; uncovered cells are 0. Boxes are scaled with
    ``img_meta['img_shape']`` (see :func:`box_cell_bounds`).

    All boxes of an image are broadcast against the row and column coordinates of the map at once
    (a ``(k, H, W)`` tensor, chunked for crowded images) and reduced with ``max``.
    """
    n = len(gt_bboxes)
    if device is None:
        device = gt_bboxes[0].device if n else "cpu"
    mask = torch.zeros(n, H, W, dtype=torch.float32, device=device)
    ys = torch.arange(H, device=device)
    xs = torch.arange(W, device=device)
    budget = _MASK_BUDGET_CPU if mask.device.type == "cpu" else _MASK_BUDGET_GPU
    chunk = max(1, budget // max(H * W, 1))
    for i, (boxes, meta) in enumerate(zip(gt_bboxes, img_metas)):
        if boxes.numel() == 0:
            continue
        img_h, img_w = img_hw(meta)
        hmin, hmax, wmin, wmax, values, _ = box_cell_bounds(boxes.to(device), img_h, img_w, H, W)
        for start in range(0, values.numel(), chunk):
            sl = slice(start, start + chunk)
            # (k, H): the box's value on the rows it covers; (k, W): 1 on the columns it covers
            rows = ((ys[None, :] >= hmin[sl, None]) & (ys[None, :] <= hmax[sl, None])) * values[sl, None]
            cols = ((xs[None, :] >= wmin[sl, None]) & (xs[None, :] <= wmax[sl, None])).float()
            painted = (rows[:, :, None] * cols[:, None, :]).amax(dim=0)  # max over the boxes
            mask[i] = painted if start == 0 else torch.maximum(mask[i], painted)
    return mask


def background_mask(fg_mask: Tensor) -> Tensor:
    """FGD background mask from a foreground mask ``(N, H, W)``.

    1 on the cells no box covers, normalised to sum to 1 per image; an image whose every cell is
    covered gets an all-zero background mask.
    """
    bg = (fg_mask <= 0).float()
    count = bg.sum(dim=(1, 2), keepdim=True)
    return torch.where(count > 0, bg / count.clamp(min=1), bg)
