"""A picture of the backdoor at work: for a few val images, the clean image and its triggered copy
side by side with the model's detections (score >= the ASR's threshold). Drawn from what
``ikd backdoor evaluate`` already has on disk (the two image folders and the two ``.bbox.json``
files), without running the model again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ikd_cli.attack.preview import draw_detections
from ikd_cli.core.figures import new_figure, save_png

_TILE_INCHES = 3.2


def per_class(detections: list, image_id: int, category_ids: list[int]) -> list[np.ndarray]:
    """One image's COCO results (x, y, w, h) as mmdet's per-class (k, 5) [x1, y1, x2, y2, score]."""
    out = [[] for _ in category_ids]
    index = {cat: i for i, cat in enumerate(category_ids)}
    for det in detections:
        if det["image_id"] == image_id and det["category_id"] in index:
            x, y, w, h = det["bbox"]
            out[index[det["category_id"]]].append([x, y, x + w, y + h, det["score"]])
    return [np.asarray(boxes, dtype=float).reshape(-1, 5) for boxes in out]


def write_backdoor_preview(path: Path, gt: dict, clean_images: Path, triggered_images: Path, dets_clean: list,
                           dets_triggered: list, score_thr: float, title: str, count: int = 4) -> None:
    """A PNG grid: one row per val image (the first ``count``), clean | triggered."""
    from PIL import Image

    categories = sorted(gt["categories"], key=lambda c: c["id"])
    ids, names = [c["id"] for c in categories], [c["name"] for c in categories]
    images = gt["images"][:count]
    fig = new_figure(2 * _TILE_INCHES, max(1, len(images)) * _TILE_INCHES)
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(max(1, len(images)), 2, squeeze=False)
    for row, info in zip(axes, images):
        for ax, folder, dets, what in ((row[0], clean_images, dets_clean, "clean"),
                                       (row[1], triggered_images, dets_triggered, "triggered")):
            with Image.open(Path(folder) / info["file_name"]) as image:
                ax.imshow(np.asarray(image.convert("RGB")))
            drawn = draw_detections(ax, per_class(dets, info["id"], ids), names, score_thr)
            ax.set_title(f"{info['file_name']}: {what}, {drawn} det ≥ {score_thr:g}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    save_png(fig, path)
