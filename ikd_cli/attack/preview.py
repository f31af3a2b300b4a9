"""A picture of what an attack did: per image, the clean image and the adversarial one with the
teacher's detections on each, and the perturbation itself.

The perturbation is ``adv - clean``, at most ``eps`` in each channel, mapped from
[-eps, eps] to [0, 255] (mid-grey = unchanged) so that an 8/255 attack is visible at all.
Drawn on a matplotlib ``Figure`` with its own Agg canvas (no pyplot state), written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ikd_cli.core.figures import new_figure, save_png

_TILE_INCHES = 3.2


def amplified_perturbation(clean: np.ndarray, adv: np.ndarray, eps: float) -> np.ndarray:
    """``adv - clean`` mapped from [-eps, eps] to [0, 255] as uint8 (same channel order)."""
    diff = adv.astype(np.float32) - clean.astype(np.float32)
    return np.clip((diff + eps) / (2 * eps) * 255, 0, 255).astype(np.uint8)


def draw_detections(ax, detections, class_names: list[str], score_thr: float) -> int:
    """Boxes with "class score" labels above ``score_thr``; returns how many were drawn."""
    from matplotlib.patches import Rectangle

    drawn = 0
    for label, boxes in enumerate(detections):
        for x1, y1, x2, y2, score in np.asarray(boxes, dtype=float).reshape(-1, 5):
            if score < score_thr:
                continue
            colour = f"C{label % 10}"
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.2))
            name = printable(class_names[label]) if label < len(class_names) else str(label)
            ax.text(x1, y1, f"{name} {score:.2f}", fontsize=6, color="white", va="bottom",
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.8))
            drawn += 1
    return drawn


def printable(name: str) -> str:
    """A file name as text that can be drawn or printed: one that is not UTF-8 on disk reaches
    Python with lone surrogates ('caf\\udce9.png'), which matplotlib (and a UTF-8 terminal)
    refuse; those are written as escapes instead."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def write_preview(path: Path, items: list[dict], eps: float, class_names: list[str],
                  score_thr: float = 0.3) -> None:
    """A PNG grid, one row per item (``name``, ``clean`` and ``adv`` HxWx3 uint8 BGR, ``det_clean``
    and ``det_adv`` in mmdet's per-class (k, 5) [x1, y1, x2, y2, score] format): clean with
    detections | adversarial with detections | amplified perturbation."""
    rows = max(1, len(items))
    fig = new_figure(3 * _TILE_INCHES, rows * _TILE_INCHES)
    axes = fig.subplots(rows, 3, squeeze=False)
    for row, item in zip(axes, items):
        panels = [(item["clean"], item["det_clean"], "clean"), (item["adv"], item["det_adv"], "adversarial")]
        for ax, (image, detections, what) in zip(row, panels):
            ax.imshow(image[..., ::-1])  # BGR -> RGB
            count = draw_detections(ax, detections, class_names, score_thr)
            ax.set_title(f"{printable(item['name'])}: {what}, {count} det ≥ {score_thr:g}", fontsize=8)
        row[2].imshow(amplified_perturbation(item["clean"], item["adv"], eps)[..., ::-1])
        row[2].set_title(f"perturbation (±{eps:g} → full range)", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    save_png(fig, path)
