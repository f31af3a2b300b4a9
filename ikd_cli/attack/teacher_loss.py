"""What ``ikd attack`` maximises: the teacher's classification loss against the ground truth,
as a differentiable function of the ORIGINAL-resolution pixels. Nothing here is particular to
the teacher: ``ikd evaluate --robustness`` attacks any detector checkpoint with it (white-box).

The attack perturbs the image as it lies on disk (so the budget holds on disk exactly). The
teacher's own test-time preprocessing (keep-ratio resize, normalise, pad) is redone here with
differentiable tensor ops, so gradients flow back to the original pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ikd_cli.core.errors import IkdError


@dataclass(frozen=True)
class Preprocess:
    """The teacher's test-time image preprocessing, read from its mmdet config."""

    scale: tuple  # (long, short) edge limits, as mmdet's keep-ratio Resize takes them
    mean: tuple
    std: tuple
    to_rgb: bool
    size_divisor: int

    @classmethod
    def from_config(cls, cfg) -> "Preprocess":
        from ikd_cli.config.mmdet import normalisation

        scale, divisor = None, 32
        def walk(pipeline):
            nonlocal scale, divisor
            for step in pipeline:
                if step.get("type") in ("Resize", "MultiScaleFlipAug") and step.get("img_scale") is not None:
                    s = step["img_scale"]
                    scale = tuple(s[0]) if isinstance(s, list) else tuple(s)
                if step.get("type") == "Pad" and step.get("size_divisor"):
                    divisor = step["size_divisor"]
                walk(step.get("transforms", []))
        walk(cfg.data.test.pipeline)
        if scale is None:
            raise IkdError("the teacher's test pipeline has no Resize scale")
        norm = normalisation(cfg)
        return cls(scale=scale, mean=tuple(norm["mean"]), std=tuple(norm["std"]), to_rgb=norm["to_rgb"],
                   size_divisor=divisor)

    def resized_size(self, h: int, w: int) -> tuple[int, int, float, float]:
        """mmdet's keep-ratio resize: new (h, w) and the per-axis scale factors."""
        long_edge, short_edge = max(self.scale), min(self.scale)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
        new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
        return new_h, new_w, new_w / w, new_h / h


class TeacherClassificationLoss:
    """``loss_fn(x, box_affine)`` for one batch: x is (B, 3, H, W) float pixels in the order the
    images were read (BGR, like mmcv), each image in its top-left (h_i, w_i) corner."""

    def __init__(self, model, prep: Preprocess, sizes, gt_bboxes, gt_labels):
        self.model = model
        self.prep = prep
        self.sizes = list(sizes)  # [(h, w)] of each original image
        self.gt_bboxes = gt_bboxes  # [Tensor (k, 4) xyxy, original pixels]
        self.gt_labels = gt_labels

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
        div = self.prep.size_divisor
        pad_h = int(math.ceil(max(im.shape[2] for im in images) / div) * div)
        pad_w = int(math.ceil(max(im.shape[3] for im in images) / div) * div)
        batch = torch.cat([F.pad(im, (0, pad_w - im.shape[3], 0, pad_h - im.shape[2])) for im in images])
        for meta in metas:
            meta["pad_shape"] = (pad_h, pad_w, 3)
            meta["batch_input_shape"] = (pad_h, pad_w)
        return batch, metas, boxes

    def __call__(self, x, box_affine=None):
        batch, metas, boxes = self._inputs(x, box_affine)
        labels = [label.to(x.device) for label in self.gt_labels]
        losses = self.model.forward_train(batch, metas, boxes, labels)
        return classification_loss(losses)


def classification_loss(losses: dict):
    """Sum of every classification term a detector reports (``loss_cls``, ``loss_rpn_cls``, and
    per-stage ``s0.loss_cls`` ... of cascades); box, mask and point terms are left out."""
    total = None
    for key, value in losses.items():
        if "loss" not in key or "cls" not in key:
            continue
        terms = value if isinstance(value, (list, tuple)) else [value]
        for term in terms:
            total = term.sum() if total is None else total + term.sum()
    if total is None:
        raise IkdError(f"the attacked detector reports no classification loss (it gives {', '.join(losses)})")
    return total


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
    return model
