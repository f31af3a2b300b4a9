"""Attack success rate (ASR) of a backdoored detector, from COCO-format ground truth and
detections (the ``.bbox.json`` that ``ikd evaluate`` writes). Pure Python + numpy.

* ``misclassify`` (global misclassification, BadDet): over the ground-truth objects of the
  triggered images whose class is NOT the target, the share that the model detects as the target
  class: some detection of the target class with score >= ``score_thr`` and IoU >= ``iou_thr``.
  Objects of the target class are left out (they cannot be misclassified into it).
* ``disappear`` (object disappearance): over all ground-truth objects of the triggered images,
  the share with NO detection of any class with score >= ``score_thr`` and IoU >= ``iou_thr``.

Crowd objects are left out. The same numbers on the clean images (``clean_rate``) say how much
of the ASR the model shows without any trigger (misses, confusions with the target class).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

ATTACKS = ("misclassify", "disappear")


def iou_matrix(a_xywh: np.ndarray, b_xywh: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (COCO ``[x, y, w, h]``), shape (len a, len b)."""
    a = np.asarray(a_xywh, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xywh, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0, None], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1, None], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def attack_success(gt: dict, detections: list, *, attack: str, target_id: int, score_thr: float = 0.3,
                   iou_thr: float = 0.5) -> dict:
    """ASR over the images of ``gt`` (a COCO annotation dict) given ``detections`` (a COCO result
    list: image_id, category_id, bbox, score). Returns ``{"asr": share or None, "successes": k,
    "objects": n}``; ``asr`` is None when no object counts."""
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
    images = {info["id"] for info in gt["images"]}
    objects = defaultdict(list)
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0) or ann["image_id"] not in images:
            continue
        if attack == "misclassify" and ann["category_id"] == target_id:
            continue
        objects[ann["image_id"]].append(ann["bbox"])
    found = defaultdict(list)
    for det in detections:
        if det["score"] < score_thr or det["image_id"] not in images:
            continue
        if attack == "misclassify" and det["category_id"] != target_id:
            continue
        found[det["image_id"]].append(det["bbox"])
    successes = total = 0
    for image_id, boxes in objects.items():
        total += len(boxes)
        dets = found.get(image_id)
        hit = (iou_matrix(boxes, dets) >= iou_thr).any(axis=1) if dets else np.zeros(len(boxes), dtype=bool)
        successes += int(hit.sum()) if attack == "misclassify" else int((~hit).sum())
    return dict(asr=successes / total if total else None, successes=successes, objects=total)
