"""MGD: Masked Generative Distillation (Yang et al., "Masked Generative Distillation", ECCV 2022),
the reference's second base distiller, for ONE feature level of the clean image. Registered as
``MGDLoss`` in mmdet's ``LOSSES``; conventions in :mod:`.common`."""

from __future__ import annotations

import torch
from mmdet.models.builder import LOSSES
from torch import Tensor, nn

from ikd_cli.config.schema import check, default

from .common import aligned_features, channel_align, run_module


def random_pixel_mask(n: int, h: int, w: int, lambda_mgd: float, device=None) -> Tensor:
    """MGD's mask ``(N, 1, H, W)``: 0 (dropped) with probability ``lambda_mgd``, else 1.

    Drawn on the CPU from torch's global generator, which the run seeds (``train.seed``): two runs
    with one seed draw the same masks, on a CPU or a GPU alike. A pixel is dropped where the
    uniform draw exceeds ``1 - lambda_mgd``, the reference's rule, so the same generator state
    gives the reference's mask.
    """
    draw = torch.rand((n, 1, h, w))
    return (draw <= 1 - lambda_mgd).float().to(device)


@LOSSES.register_module()
class MGDLoss(nn.Module):
    """Masked Generative Distillation loss for one feature level.

    ``loss = alpha_mgd * sum_{c,h,w}(G(M * S) - T)^2 / N``: the student features ``S`` (aligned to
    the teacher's channels by a 1x1 conv ``align`` when they differ), a random pixel mask ``M`` per
    image (:func:`random_pixel_mask`), and a generation block
    ``G = conv3x3(Ct, Ct) -> ReLU -> conv3x3(Ct, Ct)`` that has to rebuild the teacher features
    ``T`` from what is left. Every learnable part keeps PyTorch's default init (as MGD).

    Args:
        student_channels, teacher_channels: feature channels of the two models.
        name: the feature this loss applies to; kept for the distiller, unused by the maths.
        alpha_mgd: weight of the loss (RetinaNet/RepPoints 2e-5, Mask R-CNN 5e-7).
        lambda_mgd: share of the pixels masked out, in [0, 1) (MGD: 0.65).

    ``forward(preds_S, preds_T, mask=None)`` returns a scalar tensor; ``mask`` (N x 1 x H x W)
    replaces the random draw (tests give one to check the maths).
    """

    def __init__(self, student_channels: int, teacher_channels: int, name: str = "",
                 alpha_mgd: float = default("distill.mgd.alpha"), lambda_mgd: float = default("distill.mgd.lambda")):
        super().__init__()
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.name = name
        self.alpha_mgd = check("distill.mgd.alpha", alpha_mgd)
        self.lambda_mgd = check("distill.mgd.lambda", lambda_mgd)  # the share of pixels masked out
        self.align = channel_align(self.student_channels, self.teacher_channels)
        c = self.teacher_channels
        self.generation = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, kernel_size=3, padding=1),
        )

    def forward(self, preds_S: Tensor, preds_T: Tensor, mask: Tensor | None = None) -> Tensor:
        what = f"MGDLoss({self.name})" if self.name else "MGDLoss"
        feat_s, feat_t = aligned_features(self, preds_S, preds_T, what)
        n, _, h, w = feat_t.shape
        if mask is None:
            mask = random_pixel_mask(n, h, w, self.lambda_mgd, feat_s.device)
        elif tuple(mask.shape) != (n, 1, h, w):
            raise ValueError(f"{what}: the mask must be {(n, 1, h, w)}, got {tuple(mask.shape)}")
        rebuilt = run_module(self.generation, feat_s * mask)
        return self.alpha_mgd * (rebuilt - feat_t).pow(2).sum() / n
