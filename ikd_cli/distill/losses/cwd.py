"""CWD: Channel-wise Knowledge Distillation (Shu et al., "Channel-wise Knowledge Distillation for
Dense Prediction", ICCV 2021), for ONE feature level of the clean image. Registered as
``CWDLoss`` in mmdet's ``LOSSES``; conventions in :mod:`.common`."""

from __future__ import annotations

import torch.nn.functional as F
from mmdet.models.builder import LOSSES
from torch import Tensor, nn

from ikd_cli.config.schema import check, default

from .common import aligned_features, channel_align


def channel_wise_divergence(feat_s: Tensor, feat_t: Tensor, tau: float) -> Tensor:
    """CWD's eq. (4) without its weight: each channel of each image turned into a distribution over
    the H*W positions, ``p = softmax(F / tau)``, and

        tau^2 * sum_{n,c} KL(p_t || p_s) / (N * C)

    for ``(N, C, H, W)`` maps of equal shape (also IKD's ``adv_loss: cwd``)."""
    n, c, h, w = feat_t.shape
    logp_s = F.log_softmax(feat_s.reshape(n * c, h * w) / tau, dim=1)
    logp_t = F.log_softmax(feat_t.reshape(n * c, h * w) / tau, dim=1)
    kl = (logp_t.exp() * (logp_t - logp_s)).sum()
    return kl * (tau ** 2) / (n * c)


@LOSSES.register_module()
class CWDLoss(nn.Module):
    """Channel-wise distillation loss for one feature level.

    ``loss = alpha_cwd * tau^2 * sum_{n,c} KL(softmax(T_nc / tau) || softmax(S_nc / tau)) / (N * C)``
    with the softmax over the H*W positions of channel c of image n (:func:`channel_wise_divergence`):
    the student learns where each teacher channel puts its mass. A 1x1 conv ``align`` (PyTorch
    default init) maps student to teacher channels when they differ, as CWD's own code does.

    Args:
        student_channels, teacher_channels: feature channels of the two models.
        name: the feature this loss applies to; kept for the distiller, unused by the maths.
        tau: the softmax temperature (CWD's detection configs: 1.0).
        alpha_cwd: weight of the loss (CWD's detection configs: 5.0).
    """

    def __init__(self, student_channels: int, teacher_channels: int, name: str = "",
                 tau: float = default("distill.cwd.tau"), alpha_cwd: float = default("distill.cwd.alpha")):
        super().__init__()
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.name = name
        self.tau = check("distill.cwd.tau", tau)
        self.alpha_cwd = check("distill.cwd.alpha", alpha_cwd)
        self.align = channel_align(self.student_channels, self.teacher_channels)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        what = f"CWDLoss({self.name})" if self.name else "CWDLoss"
        feat_s, feat_t = aligned_features(self, preds_S, preds_T, what)
        return self.alpha_cwd * channel_wise_divergence(feat_s, feat_t, self.tau)
