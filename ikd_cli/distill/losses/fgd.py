"""FGD: Focal and Global Distillation (Yang et al., "Focal and Global Knowledge Distillation for
Detectors", CVPR 2022), the base distiller IKD builds on, for ONE feature level of the clean image.
Registered as ``FGDLoss`` in mmdet's ``LOSSES``; conventions in :mod:`.common`."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from mmdet.models.builder import LOSSES
from torch import Tensor, nn

from ikd_cli.config.schema import check, default

from .common import aligned_features, channel_align, run_module
from .masks import background_mask, foreground_mask


def spatial_channel_attention(feat: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """FGD attention maps of a feature map ``(N, C, H, W)`` at temperature ``temp``.

    Returns ``(S, C)``: spatial attention ``S = H*W * softmax_hw(mean_c |F| / T)`` of shape
    ``(N, H, W)`` and channel attention ``C = C * softmax_c(mean_hw |F| / T)`` of shape ``(N, C)``.
    Both average to 1, so a uniform map leaves the features unweighted.
    """
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = value.mean(dim=1).reshape(n, h * w)
    S = (h * w) * F.softmax(spatial / temp, dim=1)
    channel = value.mean(dim=(2, 3))
    C = c * F.softmax(channel / temp, dim=1)
    return S.reshape(n, h, w), C


class _GlobalContext(nn.Module):
    """GcBlock-style global context (GCNet): attention pooling + channel-add transform.

    ``context(x) = channel_add(sum_hw softmax_hw(conv_mask(x)) * x)``, shape ``(N, C, 1, 1)``, where
    ``channel_add = conv1x1(C->C/2) -> LayerNorm([C/2,1,1]) -> ReLU -> conv1x1(C/2->C)``.

    Init (as GCNet and FGD): ``conv_mask`` kaiming-normal (fan_in, relu gain) with zero bias; the
    first channel_add conv keeps PyTorch's default init; the LAST channel_add conv is zero (weight and
    bias), so the context is exactly 0 at the start and the relation loss starts as plain feature MSE.
    """

    def __init__(self, channels: int):
        super().__init__()
        planes = max(channels // 2, 1)
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, planes, kernel_size=1),
            nn.LayerNorm([planes, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, channels, kernel_size=1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        self.channel_add[0].reset_parameters()
        self.channel_add[1].reset_parameters()
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        weights = F.softmax(self.conv_mask(x).reshape(n, 1, h * w), dim=2)  # (N, 1, HW)
        pooled = torch.bmm(x.reshape(n, c, h * w), weights.transpose(1, 2))  # (N, C, 1)
        return self.channel_add(pooled.reshape(n, c, 1, 1))


@LOSSES.register_module()
class FGDLoss(nn.Module):
    """Focal and Global Distillation loss for one feature level.

    ``loss = alpha_fgd * fg + beta_fgd * bg + gamma_fgd * attention + lambda_fgd * global``:

    * ``fg``/``bg``: squared difference of student and teacher features, both weighted by
      ``sqrt(S_t) * sqrt(C_t) * sqrt(mask)`` (teacher spatial/channel attention at temperature
      ``temp``; foreground or background mask), summed and divided by the batch size.
    * ``attention``: ``(sum|C_s - C_t| + sum|S_s - S_t|) / N``.
    * ``global``: ``sum((F_s + ctx_s(F_s) - F_t - ctx_t(F_t))^2) / N`` with two separate learnable
      GcBlock contexts (one for the student, one for the teacher features).

    Args:
        student_channels, teacher_channels: feature channels; when they differ a 1x1 conv ``align``
            (PyTorch default init, as in FGD) maps the student to the teacher's channels.
        name: the feature this loss applies to (e.g. ``'neck.fpn_convs.0.conv'``); kept for the
            distiller, unused by the maths.
        temp, alpha_fgd, beta_fgd, gamma_fgd, lambda_fgd: FGD hyperparameters (RetinaNet defaults).
        mask_shape: meta key whose (h, w) scales the boxes onto the feature map. ``'img_shape'``
            (default) is what FGD does and what its hyperparameters were tuned with; ``'pad_shape'``
            is geometrically exact when batches are padded.

    ``forward(preds_S, preds_T, gt_bboxes, img_metas)`` returns a scalar tensor.

    Mask convention (the FGD reference's, same numbers): a box covers cells ``floor(min)..ceil(max)``
    inclusive (clamped to the map) with value ``1 / (box_h * box_w)``, the size counted from the
    unclamped bounds; see :func:`.masks.box_cell_bounds`.
    """

    needs_boxes = True  # the distiller passes gt_bboxes and img_metas after the features

    def __init__(self, student_channels: int, teacher_channels: int, name: str = "",
                 temp: float = default("distill.fgd.temp"), alpha_fgd: float = default("distill.fgd.alpha"),
                 beta_fgd: float = default("distill.fgd.beta"), gamma_fgd: float = default("distill.fgd.gamma"),
                 lambda_fgd: float = default("distill.fgd.lambda"), mask_shape: str = "img_shape"):
        super().__init__()
        if mask_shape not in ("img_shape", "pad_shape"):
            raise ValueError(f"FGDLoss: mask_shape must be 'img_shape' or 'pad_shape', got {mask_shape!r}")
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.name = name
        # each weight checked where its default lives (the settings schema: distill.fgd.*)
        self.temp = check("distill.fgd.temp", temp)
        self.alpha_fgd = check("distill.fgd.alpha", alpha_fgd)
        self.beta_fgd = check("distill.fgd.beta", beta_fgd)
        self.gamma_fgd = check("distill.fgd.gamma", gamma_fgd)
        self.lambda_fgd = check("distill.fgd.lambda", lambda_fgd)
        self.mask_shape = mask_shape
        self.align = channel_align(self.student_channels, self.teacher_channels)
        self.context_s = _GlobalContext(self.teacher_channels)
        self.context_t = _GlobalContext(self.teacher_channels)

    def masks(self, gt_bboxes: Sequence[Tensor], img_metas: Sequence[dict], H: int, W: int,
              device=None) -> tuple[Tensor, Tensor]:
        """Foreground and background masks ``(N, H, W)`` for this loss's ``mask_shape``."""
        metas = img_metas
        if self.mask_shape != "img_shape":
            metas = [dict(m, img_shape=m[self.mask_shape]) for m in img_metas]
        fg = foreground_mask(gt_bboxes, metas, H, W, device)
        return fg, background_mask(fg)

    def forward(self, preds_S: Tensor, preds_T: Tensor, gt_bboxes: Sequence[Tensor],
                img_metas: Sequence[dict]) -> Tensor:
        what = f"FGDLoss({self.name})" if self.name else "FGDLoss"
        feat_s, feat_t = aligned_features(self, preds_S, preds_T, what)
        if len(gt_bboxes) != preds_S.shape[0] or len(img_metas) != preds_S.shape[0]:
            raise ValueError(f"{what}: {preds_S.shape[0]} images but {len(gt_bboxes)} gt_bboxes entries "
                             f"and {len(img_metas)} img_metas")
        n, _, h, w = feat_t.shape

        S_t, C_t = spatial_channel_attention(feat_t, self.temp)
        S_s, C_s = spatial_channel_attention(feat_s, self.temp)
        fg_mask, bg_mask = self.masks(gt_bboxes, img_metas, h, w, feat_t.device)

        # focal feature loss: teacher attention weights both maps
        weight = (S_t.sqrt()[:, None] * C_t.sqrt()[:, :, None, None])  # (N, C, H, W)
        diff_sq = (feat_s * weight - feat_t * weight).pow(2)
        fg_loss = (diff_sq * fg_mask[:, None]).sum() / n
        bg_loss = (diff_sq * bg_mask[:, None]).sum() / n

        # attention loss
        mask_loss = ((C_s - C_t).abs().sum() + (S_s - S_t).abs().sum()) / n

        # global relation loss
        out_s = feat_s + run_module(self.context_s, feat_s)
        out_t = feat_t + run_module(self.context_t, feat_t)
        rela_loss = (out_s - out_t).pow(2).sum() / n

        return (self.alpha_fgd * fg_loss + self.beta_fgd * bg_loss + self.gamma_fgd * mask_loss
                + self.lambda_fgd * rela_loss)
