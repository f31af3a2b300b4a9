"""The shared parts of every attack: the budget, the gradient, the projection, input diversity.

Conventions (the same for every method in this package):

* ``x`` is a float tensor (B, 3, H, W) of PIXEL values in [0, 255], at the image's original
  resolution; a batch of mixed sizes is zero-padded at the bottom/right.
* ``loss_fn(x, box_affine)`` returns a scalar: the SUM over the batch of the teacher's
  classification loss against the ground truth. Attacks maximise it. ``box_affine`` is ``None``
  or a :class:`BoxAffine` that says how input diversity moved the image content, so the loss can
  move the gt boxes the same way.
* ``eps`` and ``alpha`` are in pixel units (0-255); after every step the image is projected to
  ``[x0 - eps, x0 + eps]`` and clipped to [0, 255].

Only torch is needed here (no mmcv/mmdet), so the attacks can be tested on toy losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from ikd_cli.config.schema import SETTINGS, check, default, pixel_options

# The attack options' defaults, from their one home (the settings schema, ``attack.*``): what a
# method uses when built without them. ``decay`` and ``random_start`` are each method's own
# there (their ``per_method``; :func:`own`).
D = {name: default(f"attack.{name}") for name in pixel_options()}


def own(option: str, method: str):
    """The default of ``attack.<option>`` for ``method``, whose constructor it is the default of."""
    return SETTINGS[f"attack.{option}"].per_method[method]


def option(name: str, value):
    """``attack.<name>`` checked against the schema (type and bounds): one readable IkdError line."""
    return check(f"attack.{name}", value)


LossFn = Callable[[torch.Tensor, Optional["BoxAffine"]], torch.Tensor]


@dataclass(frozen=True)
class BoxAffine:
    """A per-batch geometric transform that input diversity applied to the image.

    A point (u, v) in pixel-edge coordinates of the input (pixel i covers [i, i+1), the
    convention of mmdet's xyxy boxes) lands at (u * scale + left, v * scale + top). Boxes map
    the same way: ``box' = box * scale + (left, top, left, top)``.
    """

    scale: float
    left: float
    top: float

    def apply(self, boxes: torch.Tensor) -> torch.Tensor:
        """Move (..., 4) xyxy boxes the way the image content moved."""
        shift = boxes.new_tensor([self.left, self.top, self.left, self.top])
        return boxes * self.scale + shift


def input_diversity(x: torch.Tensor, resize_rate: float = D["resize_rate"], diversity_prob: float = D["diversity_prob"],
                    generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, Optional[BoxAffine]]:
    """Random resize-and-pad of the whole batch (Xie et al., "Improving Transferability of
    Adversarial Examples with Input Diversity", CVPR 2019), differentiable w.r.t. ``x``.

    With probability ``diversity_prob`` the batch is shrunk (bilinear) by one factor ``s`` drawn
    uniformly from [resize_rate, 1.0] (the same for height and width, so boxes map by a single
    factor) and zero-padded back to (H, W) at a random integer offset (left, top). Otherwise the
    batch is returned unchanged with ``None``.

    The resize is done with ``scale_factor=s`` (not a rounded output size), so the sampling grid
    maps coordinates by exactly ``s``; the output is floor(H*s) x floor(W*s) before padding.
    Random numbers come from ``generator`` or torch's global CPU generator (so the draw does not
    depend on the device).
    """
    resize_rate, diversity_prob = option("resize_rate", resize_rate), option("diversity_prob", diversity_prob)
    if diversity_prob == 0.0 or float(torch.rand((), generator=generator)) >= diversity_prob:
        return x, None
    height, width = x.shape[-2:]
    scale = resize_rate + (1.0 - resize_rate) * float(torch.rand((), generator=generator))
    new_h, new_w = math.floor(height * scale), math.floor(width * scale)
    if new_h < 1 or new_w < 1:
        return x, None
    top = int(torch.randint(0, height - new_h + 1, (), generator=generator))
    left = int(torch.randint(0, width - new_w + 1, (), generator=generator))
    if new_h == height and new_w == width:
        resized = x
    else:
        resized = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False,
                                recompute_scale_factor=False)
    padded = F.pad(resized, (left, width - new_w - left, top, height - new_h - top), value=0.0)
    return padded, BoxAffine(scale=scale, left=float(left), top=float(top))


def to_uint8(x_adv: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Round an adversarial image to 8-bit so the budget holds exactly on disk.

    ``x0`` is the clean image (integer-valued pixels). The rounded image is clipped to the
    integers inside the budget, ``[ceil(x0 - eps), floor(x0 + eps)]``, and to [0, 255], so
    ``|out - x0| <= eps`` holds exactly for any eps (also a fractional one). Returns uint8.
    """
    x0 = x0.detach().to(device=x_adv.device, dtype=torch.float32)
    low = torch.ceil(x0 - eps)
    high = torch.floor(x0 + eps)
    out = torch.round(x_adv.detach().float())
    out = torch.minimum(torch.maximum(out, low), high).clamp_(0.0, 255.0)
    return out.to(torch.uint8)


def l1_normalise(grad: torch.Tensor) -> torch.Tensor:
    """Divide each image's gradient by its mean absolute value (MI-FGSM's normalisation).
    An all-zero gradient stays zero instead of turning into NaN."""
    dims = tuple(range(1, grad.dim()))
    return grad / grad.abs().mean(dim=dims, keepdim=True).clamp_min(1e-12)


class Attack:
    """Base of every L-inf attack: budget, projection, gradient w.r.t. the input only.

    Subclasses implement :meth:`perturb` (``x0 -> x_adv``, both float pixels). ``loss_fn`` may be
    ``None`` when the attack is built and set later (``attack.loss_fn = ...``), one per batch.
    After a call, ``self.losses`` holds the loss value of every gradient evaluation, in order
    (one per step for most methods; input-diversity draws and VMI neighbours add more).
    """

    name = "attack"

    def __init__(self, loss_fn: Optional[LossFn], eps: float = D["eps"], alpha: float = D["alpha"], steps: int = D["steps"],
                 random_start: bool = False):
        self.loss_fn = loss_fn
        self.eps = float(option("eps", eps))
        self.alpha = float(option("alpha", alpha))
        self.steps = option("steps", steps)
        self.random_start = bool(random_start)
        self.losses: list = []

    # -- public API ---------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is None:
            raise RuntimeError(f"{type(self).__name__} has no loss_fn; set attack.loss_fn first")
        x0 = x.detach()
        if not x0.is_floating_point():
            x0 = x0.float()
        self.losses = []
        with torch.no_grad():
            x_adv = self.perturb(x0)
        return x_adv.detach()

    def perturb(self, x0: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def gradient(self, x: torch.Tensor, box_affine: Optional[BoxAffine] = None) -> Tuple[torch.Tensor, float]:
        """Gradient of ``loss_fn(x, box_affine)`` w.r.t. ``x`` only, and the loss value."""
        return self._input_gradient(x, lambda xg: (xg, box_affine))

    def project(self, x_adv: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Back into the L-inf ball around ``x0`` and into [0, 255]."""
        return torch.minimum(torch.maximum(x_adv, x0 - self.eps), x0 + self.eps).clamp_(0.0, 255.0)

    def settings(self) -> dict:
        """The values that decide the pixels: what an adversarial set records as its settings."""
        return {"method": self.name, **{k: v for k, v in vars(self).items()
                                        if k not in ("loss_fn", "losses") and not k.startswith("_")}}

    def __repr__(self) -> str:
        values = {k: v for k, v in self.settings().items() if k != "method"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in values.items())})"

    # -- helpers for subclasses ------------------------------------------------------------------
    def start(self, x0: torch.Tensor) -> torch.Tensor:
        """The first iterate: ``x0``, or ``x0 + U(-eps, eps)`` projected when random_start."""
        if not self.random_start:
            return x0.clone()
        noise = torch.empty_like(x0).uniform_(-self.eps, self.eps)
        return self.project(x0 + noise, x0)

    def step(self, x_adv: torch.Tensor, direction: torch.Tensor, x0: torch.Tensor, size: float) -> torch.Tensor:
        """One signed step of ``size`` pixels, then projection."""
        return self.project(x_adv + size * direction.sign(), x0)

    def _input_gradient(self, x: torch.Tensor, transform) -> Tuple[torch.Tensor, float]:
        """Gradient of ``loss_fn(*transform(x))`` w.r.t. ``x``: the transform (input diversity)
        is inside the graph. ``torch.autograd.grad`` w.r.t. the input only, so no gradient is
        ever accumulated into the model's parameters."""
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            x_in, affine = transform(xg)
            loss = self.loss_fn(x_in, affine)
            if loss.dim() > 0:
                loss = loss.sum()
            (grad,) = torch.autograd.grad(loss, xg, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(x)
        value = float(loss.detach())
        self.losses.append(value)
        return grad.detach(), value
