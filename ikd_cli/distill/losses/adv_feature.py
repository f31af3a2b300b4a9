"""IKD's adversarial feature distillation for ONE feature level: the student's features of the
adversarial image pulled to the teacher's. Registered as ``AdvFeatureLoss`` in mmdet's ``LOSSES``;
conventions in :mod:`.common`."""

from __future__ import annotations

from mmdet.models.builder import LOSSES
from torch import Tensor, nn

from ikd_cli.config.schema import check, default

from .common import aligned_features, channel_align
from .cwd import channel_wise_divergence


@LOSSES.register_module()
class AdvFeatureLoss(nn.Module):
    """IKD's adversarial feature distillation for one feature level (on the adversarial image).

    * ``mse``: ``alpha_adv * sum((F_s - F_t)^2) / N`` (the IKD default)
    * ``l1``:  ``alpha_adv * sum(|F_s - F_t|) / N``
    * ``cwd``: CWD's channel-wise divergence (:func:`.cwd.channel_wise_divergence`): per channel,
      softmax over H*W at temperature ``tau``; ``alpha_adv * tau^2 * sum_{n,c} KL(p_t || p_s) / (N * C)``.

    A 1x1 conv ``align`` (PyTorch default init) maps student to teacher channels when they differ.
    ``forward(preds_S, preds_T)`` returns a scalar tensor; ``preds_T`` gets no gradient.
    """

    def __init__(self, student_channels: int, teacher_channels: int, name: str = "", loss_type: str = default("distill.adv_loss"),
                 alpha_adv: float = default("distill.alpha_adv"), tau: float = 1.0):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"AdvFeatureLoss: tau must be positive, got {tau}")
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.name = name
        self.loss_type = check("distill.adv_loss", loss_type)  # the choices: AdvLoss
        self.alpha_adv = check("distill.alpha_adv", alpha_adv)
        self.tau = float(tau)
        self.align = channel_align(self.student_channels, self.teacher_channels)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        what = f"AdvFeatureLoss({self.name})" if self.name else "AdvFeatureLoss"
        feat_s, feat_t = aligned_features(self, preds_S, preds_T, what)
        n = feat_t.shape[0]
        if self.loss_type == "mse":
            loss = (feat_s - feat_t).pow(2).sum() / n
        elif self.loss_type == "l1":
            loss = (feat_s - feat_t).abs().sum() / n
        else:  # cwd: CWD's channel-wise divergence
            loss = channel_wise_divergence(feat_s, feat_t, self.tau)
        return self.alpha_adv * loss
