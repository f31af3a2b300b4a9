"""Attack success rate (ASR) of a backdoored detector, from COCO-format ground truth and
detections (the ``.bbox.json`` that ``ikd evaluate`` writes). Pure Python + numpy.

* ``misclassify`` (global misclassification, BadDet): over the ground-truth objects of the
  triggered images whose class is NOT the target, the share that the model detects as the target
  class: of the detections with score >= ``score_thr`` and IoU >= ``iou_thr`` with the object, the
  highest-scoring one is of the target class. (Taking the best detection, not any detection, keeps
  a model that merely hesitates, with a weak second box of the target class beside the right one,
  from counting as attacked.) Objects of the target class are left out (they cannot be
  misclassified into it).
* ``disappear`` (object disappearance): over all ground-truth objects of the triggered images,
  the share with NO detection of any class with score >= ``score_thr`` and IoU >= ``iou_thr``.

Crowd objects are left out. The same numbers on the clean images (``clean_rate``) say how much
of the ASR the model shows without any trigger (misses, confusions with the target class).

For misclassification the ASR over all objects is capped by the detector's recall: an object the
model does not find at that score is no success. ``asr_detected`` is the same share over the
objects the model does find (some detection of any class matches them): the detection analogue
of a classifier's ASR, which says how well the trigger works where the model sees the object.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ikd_cli.config.schema import BackdoorAttack, default

ATTACKS = tuple(a.value for a in BackdoorAttack)


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


def attack_success(gt: dict, detections: list, *, attack: str, target_id: int,
                   score_thr: float = default("backdoor.score_thr"), iou_thr: float = default("backdoor.iou_thr")) -> dict:
    """ASR over the images of ``gt`` (a COCO annotation dict) given ``detections`` (a COCO result
    list: image_id, category_id, bbox, score). Returns ``{"asr": k / n, "successes": k, "objects":
    n, "detected": d, "asr_detected": k / d}`` (misclassify; a share is None when its count is 0;
    for disappear ``asr_detected`` is None: found objects are never successes)."""
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
    images = {info["id"] for info in gt["images"]}
    objects = defaultdict(list)
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0) or ann["image_id"] not in images:
            continue
        if attack == BackdoorAttack.misclassify and ann["category_id"] == target_id:
            continue
        objects[ann["image_id"]].append(ann["bbox"])
    found = defaultdict(list)  # image -> [(box, score, is target)]
    for det in detections:
        if det["score"] >= score_thr and det["image_id"] in images:
            found[det["image_id"]].append((det["bbox"], det["score"], det["category_id"] == target_id))
    successes = total = detected = 0
    for image_id, boxes in objects.items():
        total += len(boxes)
        dets = found.get(image_id, [])
        overlaps = iou_matrix(boxes, [d[0] for d in dets]) >= iou_thr  # (objects, detections)
        for row in overlaps:
            matched = [dets[j] for j in np.flatnonzero(row)]
            detected += bool(matched)
            if attack == BackdoorAttack.disappear:
                successes += not matched
            elif matched:
                successes += max(matched, key=lambda d: d[1])[2]
    share = (lambda k, n: k / n if n else None)
    return dict(asr=share(successes, total), successes=successes, objects=total, detected=detected,
                asr_detected=share(successes, detected) if attack == BackdoorAttack.misclassify else None)
