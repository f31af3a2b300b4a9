"""FGSM and PGD: plain sign-of-gradient attacks."""

from __future__ import annotations

import torch

from .base import D, Attack, own


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., ICLR 2015): one step of size ``eps``."""

    name = "fgsm"

    def __init__(self, loss_fn, eps: float = D["eps"]):
        super().__init__(loss_fn, eps=eps, alpha=eps, steps=1, random_start=False)

    def perturb(self, x0: torch.Tensor) -> torch.Tensor:
        grad, _ = self.gradient(x0)
        return self.step(x0, grad, x0, self.eps)


class PGD(Attack):
    """Projected Gradient Descent, L-inf (Madry et al., ICLR 2018): ``steps`` signed steps of
    ``alpha``. ``random_start`` (uniform in the eps-ball) defaults to True, as in the paper."""

    name = "pgd"

    def __init__(self, loss_fn, eps: float = D["eps"], alpha: float = D["alpha"], steps: int = D["steps"],
                 random_start: bool = own("random_start", name)):
        super().__init__(loss_fn, eps=eps, alpha=alpha, steps=steps, random_start=random_start)

    def perturb(self, x0: torch.Tensor) -> torch.Tensor:
        x_adv = self.start(x0)
        for _ in range(self.steps):
            grad, _ = self.gradient(x_adv)
            x_adv = self.step(x_adv, grad, x0, self.alpha)
        return x_adv
