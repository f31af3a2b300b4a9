"""What ``ikd attack`` maximises: the teacher's classification loss against the ground truth (or
the loss terms ``attack.loss_keys`` names, for heads without one: CenterNet's heatmap), as a
differentiable function of the ORIGINAL-resolution pixels. Nothing here is particular to
the teacher: ``ikd evaluate --robustness`` attacks any detector checkpoint with it (white-box).

The attack perturbs the image as it lies on disk (so the budget holds on disk exactly). The
teacher's own test-time preprocessing (keep-ratio resize to a scale or by a factor, normalise,
pad) is redone here with differentiable tensor ops, so gradients flow back to the original
pixels. A test pipeline without Normalize (YOLOX) feeds raw pixels: identity normalisation.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

from ikd_cli.config.mmdet import normalisation, pipeline_steps
from ikd_cli.core.errors import IkdError


@dataclass(frozen=True)
class Preprocess:
    """The teacher's test-time image preprocessing, read from its mmdet config."""

    scale: tuple | None  # (long, short) edge limits, as mmdet's keep-ratio Resize takes them; None: ``factor``
    mean: tuple
    std: tuple
    to_rgb: bool
    size_divisor: int
    factor: float = 1.0  # the resize factor of a pipeline that gives one instead of a scale (CenterNet's 1.0)
    pad_value: tuple = (0.0, 0.0, 0.0)  # what the padding holds after normalisation (YOLOX: 114), per channel
    pad_to_square: bool = False  # YOLOX pads each image to a square

    @classmethod
    def from_config(cls, cfg) -> "Preprocess":
        steps = pipeline_steps(cfg.data.test.pipeline)
        resize = [s for s in steps if s.get("type") in ("Resize", "MultiScaleFlipAug")]
        scales = [s["img_scale"] for s in resize if s.get("img_scale") is not None]
        factors = [s["scale_factor"] for s in resize if s.get("scale_factor") is not None]
        if not scales and not factors:
            raise IkdError("the model config's test pipeline (data.test.pipeline) gives no image size: neither its "
                           "Resize nor its MultiScaleFlipAug step has an img_scale or a scale_factor; the attack "
                           "resizes the image as the model's test does, so add one of them there")
        pad = ([s for s in steps if s.get("type") == "Pad"] or [{}])[-1]
        norm = normalisation(steps)
        return cls(scale=_first(scales[-1]) if scales else None, factor=float(_first(factors[-1])) if factors else 1.0,
                   size_divisor=pad.get("size_divisor") or 32, pad_value=_pad_value(pad, steps, norm),
                   pad_to_square=bool(pad.get("pad_to_square")), **norm)

    def resized_size(self, h: int, w: int) -> tuple[int, int, float, float]:
        """mmdet's keep-ratio resize: new (h, w) and the per-axis scale factors (a scale factor
        instead of a scale is mmdet's keep-ratio resize to that factor times the image's size)."""
        scale = self.scale or (int(w * self.factor), int(h * self.factor))
        long_edge, short_edge = max(scale), min(scale)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
        new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
        return new_h, new_w, new_w / w, new_h / h


def _first(value):
    """The first of a multi-scale test's scales (or scale factors), or the one given."""
    if isinstance(value, list):
        value = value[0]
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _pad_value(pad: dict, steps: list[dict], norm: dict) -> tuple:
    """What Pad's image fill (a number, a tuple, or mmdet's ``dict(img=...)``) is once normalised,
    per channel: as given where Pad follows Normalize (or there is none: YOLOX's 114); a pixel
    value normalised like the image where Pad comes first (Mask2Former's 128)."""
    value = pad.get("pad_val", 0)
    value = value.get("img", 0) if isinstance(value, dict) else value
    fill = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),) * 3
    normalize = next((i for i, s in enumerate(steps) if s.get("type") == "Normalize"), -1)
    if not pad or normalize < steps.index(pad):
        return fill
    fill = fill[::-1] if norm["to_rgb"] else fill
    return tuple((v - m) / d for v, m, d in zip(fill, norm["mean"], norm["std"]))


class TeacherClassificationLoss:
    """``loss_fn(x, box_affine)`` for one batch: x is (B, 3, H, W) float pixels in the order the
    images were read (BGR, like mmcv), each image in its top-left (h_i, w_i) corner."""

    def __init__(self, model, prep: Preprocess, sizes, gt_bboxes, gt_labels, loss_keys=None):
        self.model = model
        self.prep = prep
        self.sizes = list(sizes)  # [(h, w)] of each original image
        self.gt_bboxes = gt_bboxes  # [Tensor (k, 4) xyxy, original pixels]
        self.gt_labels = gt_labels
        self.loss_keys = loss_keys  # attack.loss_keys: None = the classification terms

    def _inputs(self, x, box_affine):
        import torch
        import torch.nn.functional as F

        device = x.device
        mean = torch.tensor(self.prep.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.prep.std, device=device).view(1, 3, 1, 1)
        images, metas, boxes = [], [], []
        for i, (h, w) in enumerate(self.sizes):
            box = self.gt_bboxes[i].to(device)
            if box_affine is not None:
                # Input diversity moved the content: crop what now holds it, move the boxes along.
                s, left, top = float(box_affine.scale), float(box_affine.left), float(box_affine.top)
                h = min(x.shape[2], int(math.ceil(top + s * h)))
                w = min(x.shape[3], int(math.ceil(left + s * w)))
                box = box * s + box.new_tensor([left, top, left, top])
            crop = x[i:i + 1, :, :h, :w]
            if self.prep.to_rgb:
                crop = crop.flip(1)
            new_h, new_w, sx, sy = self.prep.resized_size(h, w)
            crop = F.interpolate(crop, size=(new_h, new_w), mode="bilinear", align_corners=False)
            images.append((crop - mean) / std)
            boxes.append(box * box.new_tensor([sx, sy, sx, sy]))
            metas.append(dict(img_shape=(new_h, new_w, 3), ori_shape=(h, w, 3), scale_factor=[sx, sy, sx, sy],
                              flip=False, flip_direction=None))
        pad_h, pad_w = self._padded_size(images)
        fill = torch.tensor(self.prep.pad_value, device=device).view(1, 3, 1, 1)
        if any(self.prep.pad_value):  # the image less the fill, padded with 0, plus the fill
            images = [F.pad(im - fill, (0, pad_w - im.shape[3], 0, pad_h - im.shape[2])) + fill for im in images]
        else:
            images = [F.pad(im, (0, pad_w - im.shape[3], 0, pad_h - im.shape[2])) for im in images]
        batch = torch.cat(images)
        for meta in metas:
            meta["pad_shape"] = (pad_h, pad_w, 3)
            meta["batch_input_shape"] = (pad_h, pad_w)
        return batch, metas, boxes

    def _padded_size(self, images) -> tuple[int, int]:
        """The batch's padded (h, w): each side up to the divisor (and square where Pad makes it so)."""
        div = self.prep.size_divisor
        h, w = max(im.shape[2] for im in images), max(im.shape[3] for im in images)
        if self.prep.pad_to_square:
            h = w = max(h, w)
        return int(math.ceil(h / div) * div), int(math.ceil(w / div) * div)

    def __call__(self, x, box_affine=None):
        batch, metas, boxes = self._inputs(x, box_affine)
        labels = [label.to(x.device) for label in self.gt_labels]
        losses = self.model.forward_train(batch, metas, boxes, labels)
        return classification_loss(losses, self.loss_keys)


def classification_loss(losses: dict, loss_keys=None):
    """Sum of the terms ``attack.loss_keys`` names (names or wildcards) of a detector's losses;
    by default every classification term (``loss_cls``, ``loss_rpn_cls``, and per-stage
    ``s0.loss_cls`` ... of cascades), box, mask and point terms left out."""
    if loss_keys is None:
        picked = [key for key in losses if "loss" in key and "cls" in key]
    else:
        picked = [key for key in losses if any(fnmatch.fnmatchcase(key, pattern) for pattern in loss_keys)]
    total = None
    for key in picked:
        terms = losses[key] if isinstance(losses[key], (list, tuple)) else [losses[key]]
        for term in terms:
            total = term.sum() if total is None else total + term.sum()
    if total is None:
        raise IkdError(_no_loss_picked(losses, loss_keys))
    return total


def _no_loss_picked(losses: dict, loss_keys) -> str:
    wanted = "no classification loss (no loss key with 'cls')" if loss_keys is None else \
        f"none of attack.loss_keys {list(loss_keys)}"
    return (f"the attacked detector reports {wanted}; its losses are {', '.join(losses)}: name the ones to raise "
            "in attack.loss_keys (--set attack.loss_keys=[NAME, ...])")


def prepare_teacher(model):
    """Eval mode (frozen BN), no parameter gradients, and no mask branch: the attacked loss is
    classification only, and dropping the mask head spares loading gt masks."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    # Some heads (RepPoints) return the outputs their loss needs only when their OWN training flag
    # is set. Set that flag alone: every normalisation layer inside stays in eval mode.
    for name in ("bbox_head", "rpn_head"):
        head = getattr(model, name, None)
        if head is not None:
            head.training = True
    roi_head = getattr(model, "roi_head", None)
    if roi_head is not None and getattr(roi_head, "mask_head", None) is not None:
        roi_head.mask_head = None
    # YOLOX resizes its training batches itself, to a random size every few forward_train calls
    # (with a barrier across ranks): the attacked loss is the model's at its own input size, so
    # that draw never comes.
    if hasattr(model, "_random_size_interval"):
        model._random_size_interval = math.inf
    return model
