"""Attention transfer for ONE feature level, as Neural Attention Distillation uses it to erase
backdoors (Li et al., "Neural Attention Distillation: Erasing Backdoor Triggers from Deep Neural
Networks", ICLR 2021; the attention maps of Zagoruyko and Komodakis, ICLR 2017). Registered as
``AttentionTransferLoss`` in mmdet's ``LOSSES``; conventions in :mod:`.common`."""

from __future__ import annotations

import torch.nn.functional as F
from mmdet.models.builder import LOSSES
from torch import Tensor, nn

from ikd_cli.config.schema import check, default


def attention_map(feat: Tensor, p: float, eps: float = 1e-12) -> Tensor:
    """NAD's attention map of ``(N, C, H, W)`` features: ``a = A / ||A||_2`` with
    ``A = mean_c |F|^p`` flattened over H*W; shape ``(N, H*W)``, float32, unit L2 norm per image
    (an all-zero map stays zero)."""
    n = feat.shape[0]
    value = feat.float().abs().pow(p).mean(dim=1).reshape(n, -1)
    return F.normalize(value, p=2, dim=1, eps=eps)


@LOSSES.register_module()
class AttentionTransferLoss(nn.Module):
    """NAD's attention distillation loss for one feature level.

    ``loss = beta * mean_n ||a_s(n) - a_t(n)||_2``, where ``a`` is :func:`attention_map` of the
    student's / teacher's features at power ``p`` (NAD: p = 2). That is NAD's loss as its paper
    writes it (the L2 distance of the L2-normalised maps, per image, averaged over the batch);
    NAD's code uses the mean squared difference instead, so its betas (500-5000 on CIFAR) do not
    carry over. The maps are channel means, so student and teacher may have different channel
    counts; their spatial sizes must match. ``preds_T`` gets no gradient.

    Args:
        name: the feature this loss applies to (kept for the distiller, unused by the maths).
        p: power of ``|F|`` before the channel mean (> 0).
        beta: weight of the loss (>= 0).
    """

    def __init__(self, name: str = "", p: float = default("backdoor.nad.p"), beta: float = 1.0):
        super().__init__()
        self.name = name
        self.p = check("backdoor.nad.p", p)
        if beta < 0:  # one entry of backdoor.nad.betas (the schema checks the list)
            raise ValueError(f"AttentionTransferLoss: beta must not be negative, got {beta}")
        self.beta = float(beta)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        what = f"AttentionTransferLoss({self.name})" if self.name else "AttentionTransferLoss"
        if preds_S.dim() != 4 or preds_T.dim() != 4:
            raise ValueError(f"{what}: expected (N, C, H, W) feature maps, got student "
                             f"{tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)}")
        if preds_S.shape[0] != preds_T.shape[0] or preds_S.shape[-2:] != preds_T.shape[-2:]:
            raise ValueError(f"{what}: student {tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)} "
                             "features differ in batch or spatial size")
        a_s = attention_map(preds_S, self.p)
        a_t = attention_map(preds_T.detach(), self.p)
        return self.beta * (a_s - a_t).norm(p=2, dim=1).mean()
