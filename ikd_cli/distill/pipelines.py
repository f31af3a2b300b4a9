"""IKD's sample-specific data augmentation, as MMDetection pipeline steps (registered into
mmdet's PIPELINES). Used only by stage 1 (DFA) of ``ikd distill``, inserted into the student's
own training pipeline (:mod:`ikd_cli.distill.stage1`), e.g. for RetinaNet:

    LoadImageFromFile, LoadAnnotations, LoadAdversarialImage, InstanceCorruption,
    Resize, RandomFlip, AdaptiveCrop, Normalize, Pad, DefaultFormatBundle, FormatAdversarialImage,
    Collect(+adv_img)

The adversarial image is an extra entry of ``img_fields``, so mmdet's own Resize, RandomFlip,
Normalize and Pad transform it exactly as they transform the clean image; any other step runs
inside ``SameDraw``, once per image from the same random state (Mosaic and MixUp inside
``IKDMultiImageMixDataset``, their other images with their adversarial copies).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
from mmcv.utils import build_from_cfg
from mmdet.datasets.builder import DATASETS, PIPELINES
from mmdet.datasets.dataset_wrappers import MultiImageMixDataset
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
class PixelsToFloat32:
    """Every image field as float32: what LoadImageFromFile's ``to_float32`` (CenterNet's) makes of
    the image it reads, made after the steps that need the 8-bit image (an adversarial copy is
    rebuilt on its 8-bit source; instance corruption and corruptions work on 8 bits)."""

    def __call__(self, results):
        for key in results.get("img_fields", ["img"]):
            results[key] = results[key].astype(np.float32)
        return results


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
    those would only throw small objects away (and on images without boxes)."""

    def __init__(self, crop_range: float = 0.8, small_area: float = 32 * 32, **kwargs):
        super().__init__(crop_size=(crop_range, crop_range), crop_type="relative_range", **kwargs)
        self.small_area = small_area

    def __call__(self, results):
        # A sample without boxes (a mosaic whose objects the affine warp moved out) stays whole:
        # mmdet's crop would refuse it, and MultiImageMixDataset gives up after 15 refusals.
        if all_boxes_small(results, self.small_area) or len(results.get("gt_bboxes", ())) == 0:
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
    """DefaultFormatBundle for ``adv_img``: HWC array -> CHW tensor in a stacked DataContainer,
    a uint8 image made float32 as DefaultFormatBundle's ``img_to_float`` makes the clean one
    (a pipeline without Normalize, such as YOLOX's)."""

    def __init__(self, img_to_float: bool = True):
        self.img_to_float = img_to_float

    def __call__(self, results):
        import torch
        from mmcv.parallel import DataContainer

        if "adv_img" in results:
            img = results["adv_img"]
            if self.img_to_float and img.dtype == np.uint8:
                img = img.astype(np.float32)
            img = np.ascontiguousarray(img.transpose(2, 0, 1))
            results["adv_img"] = DataContainer(torch.from_numpy(img), padding_value=0, stack=True)
        return results

    def __repr__(self):
        return f"{self.__class__.__name__}(img_to_float={self.img_to_float})"


@PIPELINES.register_module()
class SameDraw:
    """Run ``transform``, a step that knows only ``img``, on the clean image and then on the
    adversarial one (``adv_img``), from the same random state (numpy's, Python's, torch's): the
    same photometric draw, the same expansion, crop or affine warp. Its draw must not depend on
    the pixels: a run that consumed a different number of random numbers, or gave anything but
    the image itself differently (boxes, labels, masks, shapes, flip), is refused, naming the step."""

    def __init__(self, transform: dict):
        self.transform = build_from_cfg(transform, PIPELINES)
        if hasattr(self.transform, "get_indexes"):  # Mosaic, MixUp: MultiImageMixDataset asks it for images to mix in
            self.get_indexes = self.transform.get_indexes

    def __call__(self, results):
        adv = results.pop("adv_img", None)
        if adv is None:  # nothing beside the clean image
            return self.transform(results)
        fields = [key for key in results.get("img_fields", ["img"]) if key != "adv_img"]
        results["img_fields"] = fields
        twin = copy.deepcopy({key: value for key, value in results.items() if key not in ("img", "mix_results")})
        twin["img"] = adv
        if "mix_results" in results:  # the images mixed in: clean ones with the clean image, copies with the copy
            mixed = results["mix_results"]
            if any("adv_img" not in other for other in mixed):
                raise IkdError(f"stage 1 of ikd distill cannot use the student's training step {self.name}: the "
                               "images it mixes in have no adversarial copy (its dataset's own pipeline does not "
                               "load their annotations, after which IKD reads the copies)")
            results["mix_results"] = [one_side(other, "img") for other in mixed]
            twin["mix_results"] = [copy.deepcopy(one_side(other, "adv_img")) for other in mixed]
        start = rng_states()
        clean = self.transform(results)
        end = rng_states()
        set_rng_states(start)
        twin = self.transform(twin)
        problem = ("it drew a different number of random numbers" if not same_rng(end, rng_states())
                   else outcome_difference(clean, twin))
        if problem:
            raise IkdError(f"stage 1 of ikd distill cannot use the student's training step {self.name}: run on the "
                           f"adversarial image from the clean image's random state, {problem}, so its draw depends "
                           "on the pixels; remove it from the student's training pipeline")
        if clean is None:
            return None
        clean["adv_img"] = twin["img"]
        clean["img_fields"] = [key for key in clean.get("img_fields", fields) if key != "adv_img"] + ["adv_img"]
        return clean

    @property
    def name(self) -> str:
        return self.transform.__class__.__name__

    def __repr__(self):
        return f"{self.__class__.__name__}({self.transform!r})"


def one_side(results: dict, key: str) -> dict:
    """A loaded image's results with ``results[key]`` (``img`` or ``adv_img``) as its only image."""
    side = {k: v for k, v in results.items() if k not in ("img", "adv_img")}
    side["img"] = results[key]
    side["img_fields"] = [f for f in results.get("img_fields", ["img"]) if f != "adv_img"]
    return side


@DATASETS.register_module()
class IKDMultiImageMixDataset(MultiImageMixDataset):
    """mmdet's MultiImageMixDataset for stage 1: its steps run inside SameDraw, and each is still
    known by its own name (``skip_type_keys``, which YOLOX's mode switch sets for its last epochs)."""

    def __init__(self, dataset, *args, **kwargs):
        from mmdet.datasets import build_dataset

        # mmdet's build_dataset builds the inner dataset only for its own MultiImageMixDataset
        super().__init__(build_dataset(dataset) if isinstance(dataset, dict) else dataset, *args, **kwargs)
        self.pipeline_types = [step.name if isinstance(step, SameDraw) else kind
                               for step, kind in zip(self.pipeline, self.pipeline_types)]

    @property
    def data_infos(self):
        """The images of the dataset inside (stage 1 checks each has its adversarial copy)."""
        return self.dataset.data_infos


def rng_states() -> tuple:
    import torch

    return np.random.get_state(), random.getstate(), torch.get_rng_state()


def set_rng_states(states: tuple) -> None:
    import torch

    np.random.set_state(states[0])
    random.setstate(states[1])
    torch.set_rng_state(states[2])


def same_rng(a: tuple, b: tuple) -> bool:
    import torch

    (a_np, a_py, a_torch), (b_np, b_py, b_torch) = a, b
    return (np.array_equal(a_np[1], b_np[1]) and a_np[2:] == b_np[2:] and a_py == b_py
            and torch.equal(a_torch, b_torch))


def outcome_difference(clean, twin) -> str:
    """What differs between a step's two outcomes, other than the image's pixels ('' if nothing)."""
    if (clean is None) != (twin is None):
        return f"it gave {'no' if twin is None else 'a'} sample where the clean image gave {'one' if twin is None else 'none'}"
    if clean is None:
        return ""
    if set(clean) != set(twin):
        return f"it gave other keys ({', '.join(sorted(set(clean) ^ set(twin)))})"
    shapes = [tuple(np.shape(_payload(out["img"]))) for out in (clean, twin)]
    if shapes[0] != shapes[1]:
        return f"it gave a {_shape_text(shapes[1])} image where the clean one is {_shape_text(shapes[0])}"
    for key in sorted(clean):  # mix_results: the images mixed in, which MultiImageMixDataset drops next
        if key not in ("img", "mix_results") and not same_value(clean[key], twin[key]):
            return f"it gave a different {key}"
    return ""


def same_value(a, b) -> bool:
    """Exact equality through arrays, tensors, masks, DataContainers, dicts and sequences."""
    import torch

    a, b = _payload(a), _payload(b)
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and np.array_equal(a, b)
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(
            same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if hasattr(a, "masks"):  # mmdet's BitmapMasks / PolygonMasks
        return type(a) is type(b) and (a.height, a.width) == (b.height, b.width) and same_value(a.masks, b.masks)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _payload(value):
    """A DataContainer's data, anything else as it is."""
    from mmcv.parallel import DataContainer

    return value.data if isinstance(value, DataContainer) else value


def _shape_text(shape) -> str:
    return " x ".join(str(s) for s in shape)
