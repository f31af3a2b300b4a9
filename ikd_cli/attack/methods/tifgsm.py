"""TI-FGSM: translation-invariant attack (Dong et al., CVPR 2019)."""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from .base import D, option, own
from .momentum import DIFGSM


def gaussian_kernel(kernel_len: int = D["kernel_len"], nsig: float = D["nsig"]) -> torch.Tensor:
    """The TI paper's smoothing kernel: a 1-D normal pdf sampled at ``kernel_len`` points on
    [-nsig, nsig], outer product with itself, normalised to sum 1. (kernel_len, kernel_len)."""
    kernel_len = option("kernel_len", kernel_len)
    nsig = float(option("nsig", nsig))
    t = torch.linspace(-nsig, nsig, kernel_len, dtype=torch.float64)
    pdf = torch.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    kernel = torch.outer(pdf, pdf)
    return (kernel / kernel.sum()).float()


class TIFGSM(DIFGSM):
    """Translation-Invariant FGSM, combined with input diversity and momentum as in the TI paper's
    TI-DIM and in torchattacks.

    Each step's gradient (taken through input diversity) is smoothed per channel by a depthwise
    convolution with :func:`gaussian_kernel` (zero padding, same size), then L1-normalised and
    added to ``decay`` x the previous one before the sign step.

    ``decay`` defaults to 0.0 (no momentum), like torchattacks' TIFGSM; pass ``decay=1.0`` for the
    momentum variant (TI-DIM).
    """

    name = "tifgsm"

    def __init__(self, loss_fn, eps: float = D["eps"], alpha: float = D["alpha"], steps: int = D["steps"],
                 decay: float = own("decay", name), kernel_len: int = D["kernel_len"], nsig: float = D["nsig"],
                 resize_rate: float = D["resize_rate"], diversity_prob: float = D["diversity_prob"],
                 random_start: bool = own("random_start", name)):
        super().__init__(loss_fn, eps=eps, alpha=alpha, steps=steps, decay=decay, resize_rate=resize_rate,
                         diversity_prob=diversity_prob, random_start=random_start)
        self.kernel_len = int(kernel_len)
        self.nsig = float(nsig)
        self._kernel = gaussian_kernel(kernel_len, nsig)

    def smooth(self, grad: torch.Tensor) -> torch.Tensor:
        """Depthwise gaussian smoothing of a (B, C, H, W) gradient, same size out."""
        channels = grad.shape[1]
        weight = self._kernel.to(device=grad.device, dtype=grad.dtype)
        weight = weight.expand(channels, 1, *weight.shape).contiguous()
        return F.conv2d(grad, weight, padding="same", groups=channels)

    def direction(self, x_adv: torch.Tensor) -> Tuple[torch.Tensor, float]:
        grad, loss = self.diverse_gradient(x_adv)
        return self.smooth(grad), loss
