"""PKD: distillation by the Pearson correlation coefficient (Cao et al., "PKD: General
Distillation Framework for Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022),
for ONE feature level of the clean image. Registered as ``PKDLoss`` in mmdet's ``LOSSES``;
conventions in :mod:`.common`."""

from __future__ import annotations

import torch.nn.functional as F
from mmdet.models.builder import LOSSES
from torch import Tensor, nn

from ikd_cli.config.schema import check, default

from .common import aligned_features, channel_align

EPS = 1e-6  # added to the standard deviation: a constant channel normalises to 0, not NaN


def channel_standardised(feat: Tensor) -> Tensor:
    """Each channel of an ``(N, C, H, W)`` map to zero mean and unit (unbiased) standard
    deviation over the batch and the positions together (PKD's normalisation)."""
    mean = feat.mean(dim=(0, 2, 3), keepdim=True)
    std = feat.std(dim=(0, 2, 3), keepdim=True)
    return (feat - mean) / (std + EPS)


@LOSSES.register_module()
class PKDLoss(nn.Module):
    """Pearson correlation distillation loss for one feature level.

    ``loss = alpha_pkd * mean((z(S) - z(T))^2) / 2`` with ``z`` the per-channel standardisation
    (:func:`channel_standardised`). With M = N*H*W values per channel this equals
    ``alpha_pkd * (M - 1) / M * (1 - mean_c r_c)``, r_c the Pearson correlation of student and
    teacher in channel c: the student is asked to correlate with the teacher, not to match its
    magnitudes. Where the maps differ in size the student's is
    resized (bilinear) to the teacher's; a 1x1 conv ``align`` (PyTorch default init) maps student
    to teacher channels where those differ.

    Args:
        student_channels, teacher_channels: feature channels of the two models.
        name: the feature this loss applies to; kept for the distiller, unused by the maths.
        alpha_pkd: weight of the loss (mmrazor's RetinaNet config: 10 per FPN level).
    """

    def __init__(self, student_channels: int, teacher_channels: int, name: str = "",
                 alpha_pkd: float = default("distill.pkd.alpha")):
        super().__init__()
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.name = name
        self.alpha_pkd = check("distill.pkd.alpha", alpha_pkd)
        self.align = channel_align(self.student_channels, self.teacher_channels)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        what = f"PKDLoss({self.name})" if self.name else "PKDLoss"
        if preds_S.dim() == 4 and preds_T.dim() == 4 and preds_S.shape[-2:] != preds_T.shape[-2:]:
            preds_S = F.interpolate(preds_S, size=preds_T.shape[-2:], mode="bilinear", align_corners=False)
        feat_s, feat_t = aligned_features(self, preds_S, preds_T, what)
        return self.alpha_pkd * F.mse_loss(channel_standardised(feat_s), channel_standardised(feat_t)) / 2
