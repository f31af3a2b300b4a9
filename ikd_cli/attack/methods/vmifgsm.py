"""VMI-FGSM: momentum with variance tuning (Wang & He, CVPR 2021)."""

from __future__ import annotations

import torch

from .base import D, l1_normalise, option, own
from .momentum import MIFGSM


class VMIFGSM(MIFGSM):
    """Variance-tuned MI-FGSM.

    Each step t uses ``g_t = (grad(x_t) + v_t) / mean(|grad(x_t) + v_t|) + decay * g_{t-1}``, and
    then sets ``v_{t+1} = mean_i grad(x_t + r_i) - grad(x_t)`` over ``N`` neighbours
    ``r_i ~ U(-beta*eps, beta*eps)^d`` of the same iterate x_t (v_1 = 0). The neighbours are not
    clipped to [0, 255], as in the paper. The variance after the last step would never be used,
    so it is not computed: a run costs ``steps + (steps - 1) * N`` gradient evaluations.
    """

    name = "vmifgsm"

    def __init__(self, loss_fn, eps: float = D["eps"], alpha: float = D["alpha"], steps: int = D["steps"],
                 decay: float = own("decay", name), beta: float = D["beta"], N: int = D["n"],
                 random_start: bool = own("random_start", name)):
        super().__init__(loss_fn, eps=eps, alpha=alpha, steps=steps, decay=decay, random_start=random_start)
        self.beta = float(option("beta", beta))
        self.N = option("n", N)

    def variance(self, x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        radius = self.beta * self.eps
        total = torch.zeros_like(x_adv)
        for _ in range(self.N):
            neighbour = x_adv + torch.empty_like(x_adv).uniform_(-radius, radius)
            g, _ = self.gradient(neighbour)
            total += g
        return total / self.N - grad

    def perturb(self, x0: torch.Tensor) -> torch.Tensor:
        x_adv = self.start(x0)
        momentum = torch.zeros_like(x0)
        v = torch.zeros_like(x0)
        for t in range(self.steps):
            grad, _ = self.gradient(x_adv)
            momentum = l1_normalise(grad + v) + self.decay * momentum
            if t + 1 < self.steps:
                v = self.variance(x_adv, grad)
            x_adv = self.step(x_adv, momentum, x0, self.alpha)
        return x_adv
