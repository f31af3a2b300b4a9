"""IKD's sample-specific data augmentation, as MMDetection pipeline steps (registered into
mmdet's PIPELINES). Used only by stage 1 (DFA) of ``ikd distill``:

    LoadImageFromFile, LoadAnnotations, LoadAdversarialImage, InstanceCorruption,
    Resize, RandomFlip, AdaptiveCrop, Normalize, Pad, DefaultFormatBundle, FormatAdversarialImage,
    Collect(+adv_img)

The adversarial image is an extra entry of ``img_fields``, so mmdet's own Resize, RandomFlip,
RandomCrop, Normalize and Pad transform it exactly as they transform the clean image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mmdet.datasets.builder import PIPELINES
from mmdet.datasets.pipelines import RandomCrop

from ikd_cli.core.errors import IkdError

# ImageNet-C gaussian noise: standard deviation (on [0, 1] pixels) for severities 1-5.
GAUSSIAN_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)


def all_boxes_small(results: dict, small_area: float) -> bool:
    """True when the image has boxes and every one is smaller than ``small_area`` in ORIGINAL
    pixels (boxes are divided back by the resize factor when the image was already resized)."""
    boxes = results.get("gt_bboxes")
    if boxes is None or len(boxes) == 0:
        return False
    scale = np.asarray(results.get("scale_factor", [1.0, 1.0, 1.0, 1.0]), dtype=np.float32).reshape(-1)[:4]
    original = boxes / scale if scale.size == 4 else boxes
    areas = (original[:, 2] - original[:, 0]) * (original[:, 3] - original[:, 1])
    return bool((areas < small_area).all())


@PIPELINES.register_module()
class LoadAdversarialImage:
    """Read the adversarial copy made by ``ikd attack`` of the image just loaded (a delta file
    rebuilt on ``results['img']``, or a PNG; see :mod:`ikd_cli.attack.storage`) as
    ``results['adv_img']``, an extra image field. With ``replace`` it takes the place of the
    clean image instead (``ikd evaluate --images`` on a delta set). ``skipped``: images the
    set has no copy of (``ikd attack --skip-bad``); the clean image stands in, so that the batch
    stacks, and the distiller leaves them out of the adversarial loss (its ``no_adv``)."""

    def __init__(self, adv_dir: str, replace: bool = False, skipped=()):
        from ikd_cli.attack.manifest import set_budget

        self.adv_dir = Path(adv_dir)
        self.replace = replace
        self.skipped = frozenset(skipped)
        self.eps = set_budget(self.adv_dir)  # every image is held to the set's budget

    def __call__(self, results):
        from ikd_cli.attack.storage import find_adversarial, read_adversarial

        if results["img_info"]["filename"] in self.skipped and not self.replace:
            adv = results["img"].copy()
        else:
            path, fmt = find_adversarial(self.adv_dir, results["img_info"]["filename"])
            adv = read_adversarial(path, results["img"], fmt=fmt, eps=self.eps)
        if self.replace:
            results["img"] = adv
            return results
        results["adv_img"] = adv
        results["img_fields"] = list(results.get("img_fields", ["img"])) + ["adv_img"]
        return results

    def __repr__(self):
        return f"{self.__class__.__name__}(adv_dir='{self.adv_dir}', replace={self.replace})"


@PIPELINES.register_module()
class InstanceCorruption:
    """With probability ``prob``, on an image whose boxes are ALL small, replace the clean image
    by a gaussian-noise corrupted copy (ImageNet-C definition, ``severity`` 1-5). The adversarial
    image is left as it is."""

    def __init__(self, prob: float = 0.3, severity: int = 1, small_area: float = 32 * 32):
        if not 1 <= severity <= 5:
            raise ValueError("severity must be 1-5")
        self.prob, self.severity, self.small_area = prob, severity, small_area

    def __call__(self, results):
        if np.random.rand() < self.prob and all_boxes_small(results, self.small_area):
            img = results["img"].astype(np.float32) / 255.0
            noisy = img + np.random.normal(size=img.shape, scale=GAUSSIAN_NOISE_STD[self.severity - 1])
            results["img"] = (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)
            results["corrupted"] = True
        return results

    def __repr__(self):
        return f"{self.__class__.__name__}(prob={self.prob}, severity={self.severity}, small_area={self.small_area})"


@PIPELINES.register_module()
class AdaptiveCrop(RandomCrop):
    """mmdet's RandomCrop with a relative range (each side cropped to [crop_range, 1] of itself,
    boxes clipped, emptied boxes dropped), except on images whose boxes are all small: cropping
    those would only throw small objects away."""

    def __init__(self, crop_range: float = 0.8, small_area: float = 32 * 32, **kwargs):
        super().__init__(crop_size=(crop_range, crop_range), crop_type="relative_range", **kwargs)
        self.small_area = small_area

    def __call__(self, results):
        if all_boxes_small(results, self.small_area):
            return results
        return super().__call__(results)

    def _crop_data(self, results, crop_size, allow_negative_crop):
        # mmdet 2.28's RandomCrop draws a new offset for EACH image field, which would crop the
        # adversarial image somewhere else than the clean one. Same maths, one offset for all.
        h, w = results["img"].shape[:2]
        offset_h = np.random.randint(0, max(h - crop_size[0], 0) + 1)
        offset_w = np.random.randint(0, max(w - crop_size[1], 0) + 1)
        y1, y2 = offset_h, offset_h + crop_size[0]
        x1, x2 = offset_w, offset_w + crop_size[1]
        for key in results.get("img_fields", ["img"]):
            results[key] = results[key][y1:y2, x1:x2, ...]
        img_shape = results["img"].shape
        results["img_shape"] = img_shape
        for key in results.get("bbox_fields", []):
            boxes = results[key] - np.array([offset_w, offset_h, offset_w, offset_h], dtype=np.float32)
            if self.bbox_clip_border:
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, img_shape[1])
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, img_shape[0])
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if key == "gt_bboxes" and not valid.any() and not allow_negative_crop:
                return None
            results[key] = boxes[valid, :]
            label_key = self.bbox2label.get(key)
            if label_key in results:
                results[label_key] = results[label_key][valid]
            mask_key = self.bbox2mask.get(key)
            if mask_key in results:
                results[mask_key] = results[mask_key][valid.nonzero()[0]].crop(np.asarray([x1, y1, x2, y2]))
                if self.recompute_bbox:
                    results[key] = results[mask_key].get_bboxes()
        for key in results.get("seg_fields", []):
            results[key] = results[key][y1:y2, x1:x2]
        return results


@PIPELINES.register_module()
class FormatAdversarialImage:
    """DefaultFormatBundle for ``adv_img``: HWC array -> CHW tensor in a stacked DataContainer."""

    def __call__(self, results):
        import torch
        from mmcv.parallel import DataContainer

        if "adv_img" in results:
            img = np.ascontiguousarray(results["adv_img"].transpose(2, 0, 1))
            results["adv_img"] = DataContainer(torch.from_numpy(img), padding_value=0, stack=True)
        return results
