"""One batch of ``ikd attack``: the images of a batch in, their adversarial pixels out. The
command and ``scripts/bench_attack.py`` both call :func:`attack_batch`, so the benchmark measures
exactly the work the command does."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ikd_cli.attack.methods import Attack, to_uint8
from ikd_cli.attack.teacher_loss import Preprocess, TeacherClassificationLoss


@dataclass
class AttackedImage:
    pixels: np.ndarray  # (h, w, 3) uint8, BGR like the source as read
    linf: int  # max |adversarial - clean| over the pixels, as saved
    loss_before: float | None  # the teacher's classification loss on this image, clean and adversarial
    loss_after: float | None
    seconds: float  # the batch's time per image


def pad_batch(images, device) -> torch.Tensor:
    """(B, 3, H, W) float pixels; each image in its top-left corner, zeros elsewhere."""
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    x = torch.zeros(len(images), 3, h, w, device=device)
    for i, im in enumerate(images):
        x[i, :, : im.shape[0], : im.shape[1]] = torch.from_numpy(im).to(device).permute(2, 0, 1).float()
    return x


def amp_dtype(device: str):
    """The autocast dtype of ``--amp`` on ``device``: bf16 where supported (no loss scaling
    needed: the gradient w.r.t. the pixels cannot be scaled through mmdet's losses), else fp16."""
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class Autocast:
    """``loss_fn`` run under autocast, its value returned in fp32 (the attack's own arithmetic,
    the projection and the 8-bit rounding stay in fp32, so the budget holds exactly)."""

    def __init__(self, loss_fn, device: str):
        self.loss_fn, self.device, self.dtype = loss_fn, device, amp_dtype(device)

    def __call__(self, x, box_affine=None):
        with torch.autocast(device_type=self.device, dtype=self.dtype):
            return self.loss_fn(x, box_affine).float()


def attack_batch(attack: Attack, teacher, prep: Preprocess, images, boxes, labels, *, device: str,
                 seed: int, record_loss: bool, amp: bool = False, loss_keys=None) -> list[AttackedImage]:
    """Attack ``images`` (list of (h, w, 3) uint8) against ``teacher``'s classification loss (or
    the terms ``loss_keys`` names: ``attack.loss_keys``) with their gt ``boxes``/``labels``;
    returns one :class:`AttackedImage` each, rounded into the budget.

    ``seed`` fixes the random draws (random start, input diversity), so a batch gives the same
    pixels however the work is sharded. The loss of each image before/after costs two extra
    forward passes (about a quarter of a 5-step attack); ``record_loss=False`` skips them on very
    large sets.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    boxes = [torch.as_tensor(b) for b in boxes]
    labels = [torch.as_tensor(lab, dtype=torch.long) for lab in labels]
    x0 = pad_batch(images, device)
    loss_fn = TeacherClassificationLoss(teacher, prep, [im.shape[:2] for im in images], boxes, labels, loss_keys)
    attack.loss_fn = Autocast(loss_fn, device) if amp else loss_fn
    x_adv = to_uint8(attack(x0), x0, attack.eps)
    seconds = (time.perf_counter() - start) / len(images)
    before = after = [None] * len(images)
    if record_loss:
        before = image_losses(teacher, prep, x0, images, boxes, labels, loss_keys)
        after = image_losses(teacher, prep, x_adv.float(), images, boxes, labels, loss_keys)
    adv = x_adv.permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for i, im in enumerate(images):
        pixels = np.ascontiguousarray(adv[i, : im.shape[0], : im.shape[1]])
        linf = int(np.abs(pixels.astype(np.int16) - im.astype(np.int16)).max())
        out.append(AttackedImage(pixels, linf, before[i], after[i], seconds))
    return out


def image_losses(teacher, prep: Preprocess, x: torch.Tensor, images, boxes, labels, loss_keys=None) -> list[float]:
    """The teacher's classification loss of each image on its own (a batch's loss mixes its
    images: RetinaNet normalises by the batch's positive anchors)."""
    losses = []
    with torch.no_grad():
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            fn = TeacherClassificationLoss(teacher, prep, [(h, w)], [boxes[i]], [labels[i]], loss_keys)
            losses.append(float(fn(x[i:i + 1, :, :h, :w])))
    return losses

