"""Momentum attacks: MI-FGSM, DI-FGSM (IKD's default) and M-DI-FGSM.

All three share one loop; they differ only in how a step's gradient is obtained
(:meth:`MIFGSM.direction`): at the image itself, through one input-diversity draw, or averaged
over several draws.
"""

from __future__ import annotations

from typing import Tuple

import torch

from .base import D, Attack, input_diversity, l1_normalise, option, own


class MIFGSM(Attack):
    """Momentum Iterative FGSM (Dong et al., CVPR 2018).

    Each step: ``g = grad / mean(|grad|) + decay * g_prev`` (per image), ``x += alpha * sign(g)``,
    then projection. ``decay`` is the paper's mu.
    """

    name = "mifgsm"

    def __init__(self, loss_fn, eps: float = D["eps"], alpha: float = D["alpha"], steps: int = D["steps"],
                 decay: float = own("decay", name), random_start: bool = own("random_start", name)):
        super().__init__(loss_fn, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.decay = float(option("decay", decay))

    def direction(self, x_adv: torch.Tensor) -> Tuple[torch.Tensor, float]:
        """The raw gradient a step uses (before normalisation and momentum)."""
        return self.gradient(x_adv)

    def perturb(self, x0: torch.Tensor) -> torch.Tensor:
        x_adv = self.start(x0)
        momentum = torch.zeros_like(x0)
        for _ in range(self.steps):
            grad, _ = self.direction(x_adv)
            momentum = l1_normalise(grad) + self.decay * momentum
            x_adv = self.step(x_adv, momentum, x0, self.alpha)
        return x_adv


class DIFGSM(MIFGSM):
    """Diverse-Inputs (momentum) FGSM (Xie et al., CVPR 2019); IKD's default attack.

    MI-FGSM whose gradient is taken through :func:`input_diversity`: with probability
    ``diversity_prob`` the image is shrunk to a random ``[resize_rate, 1]`` of its size and padded
    back at a random offset; the loss gets the matching :class:`BoxAffine` so the gt boxes move
    with the content. ``decay=0`` gives plain DI-FGSM; the default 1.0 is the paper's M-DI2-FGSM.
    """

    name = "difgsm"

    def __init__(self, loss_fn, eps: float = D["eps"], alpha: float = D["alpha"], steps: int = D["steps"],
                 decay: float = own("decay", name), resize_rate: float = D["resize_rate"],
                 diversity_prob: float = D["diversity_prob"], random_start: bool = own("random_start", name)):
        super().__init__(loss_fn, eps=eps, alpha=alpha, steps=steps, decay=decay, random_start=random_start)
        self.resize_rate = float(option("resize_rate", resize_rate))
        self.diversity_prob = float(option("diversity_prob", diversity_prob))

    def diverse_gradient(self, x: torch.Tensor) -> Tuple[torch.Tensor, float]:
        """Gradient w.r.t. ``x`` through one random input-diversity draw."""
        return self._input_gradient(x, lambda xg: input_diversity(xg, self.resize_rate, self.diversity_prob))

    def direction(self, x_adv: torch.Tensor) -> Tuple[torch.Tensor, float]:
        return self.diverse_gradient(x_adv)


class MDIFGSM(DIFGSM):
    """DI-FGSM with the gradient of each step averaged over ``m`` independent input-diversity
    draws (``m_difgsm``).

    One DI draw gives a noisy gradient: half the time (diversity_prob 0.5) it is the plain
    gradient, otherwise that of one particular resize/offset. Averaging ``m`` draws estimates the
    expected gradient over the transform distribution, which is what DI's transferability
    argument is about, at ``m`` forward/backward passes per step. Default ``m=4``: a small
    multiple that keeps a 5-step attack at 20 passes (the cost of VMI-FGSM's N=20 for a single
    step) while cutting the draw-to-draw variance by 4x. With ``m=1`` this is DI-FGSM.
    """

    name = "m_difgsm"

    def __init__(self, loss_fn, eps: float = D["eps"], alpha: float = D["alpha"], steps: int = D["steps"],
                 decay: float = own("decay", name), resize_rate: float = D["resize_rate"],
                 diversity_prob: float = D["diversity_prob"], m: int = D["m"],
                 random_start: bool = own("random_start", name)):
        super().__init__(loss_fn, eps=eps, alpha=alpha, steps=steps, decay=decay, resize_rate=resize_rate,
                         diversity_prob=diversity_prob, random_start=random_start)
        self.m = option("m", m)

    def direction(self, x_adv: torch.Tensor) -> Tuple[torch.Tensor, float]:
        total, loss_sum = torch.zeros_like(x_adv), 0.0
        for _ in range(self.m):
            grad, loss = self.diverse_gradient(x_adv)
            total += grad
            loss_sum += loss
        return total / self.m, loss_sum / self.m
