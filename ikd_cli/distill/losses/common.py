"""What the distillation losses share: feature-shape checks with readable errors, and running a
small learnable module (an ``align`` conv, a context block) in its parameters' dtype.

Conventions of every loss in this package:

* ``preds_S``/``preds_T`` are ``(N, C, H, W)`` feature maps of the student / teacher for the same
  images. The teacher features are detached (defensively): no gradient ever reaches ``preds_T``.
* The maths runs in float32 whatever the feature dtype (sums over a whole FPN level overflow fp16).
* "Divided by N" means divided by the batch size, as in the reference implementations.
"""

from __future__ import annotations

from torch import Tensor, nn


def check_features(preds_S: Tensor, preds_T: Tensor, student_channels: int, what: str) -> None:
    """Clear errors for the shape mismatches a wrong config produces."""
    if preds_S.dim() != 4 or preds_T.dim() != 4:
        raise ValueError(f"{what}: expected (N, C, H, W) feature maps, got student "
                         f"{tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)}")
    if preds_S.shape[0] != preds_T.shape[0]:
        raise ValueError(f"{what}: student and teacher batch sizes differ "
                         f"({preds_S.shape[0]} vs {preds_T.shape[0]})")
    if preds_S.shape[-2:] != preds_T.shape[-2:]:
        raise ValueError(
            f"{what}: student and teacher feature maps have different spatial sizes "
            f"({tuple(preds_S.shape[-2:])} vs {tuple(preds_T.shape[-2:])}); distillation needs the same "
            f"input size and the same FPN strides for both models")
    if preds_S.shape[1] != student_channels:
        raise ValueError(f"{what}: student features have {preds_S.shape[1]} channels but the loss was "
                         f"built with student_channels={student_channels}")


def run_module(module: nn.Module, x: Tensor) -> Tensor:
    """Run ``module`` in the dtype of its parameters (fp16 under mmcv's fp16 wrapper), return float32."""
    param = next(module.parameters())
    return module(x.to(param.dtype)).float()


def channel_align(student_channels: int, teacher_channels: int) -> nn.Module | None:
    """The 1x1 conv (PyTorch default init) that maps student to teacher channels, or None when
    they are equal."""
    if student_channels == teacher_channels:
        return None
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1)


def aligned_features(loss: nn.Module, preds_S: Tensor, preds_T: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Shape-checked float32 features of one level for a loss with ``student_channels``,
    ``teacher_channels`` and an ``align`` module (or None): the student's mapped to the teacher's
    channels, the teacher's detached."""
    check_features(preds_S, preds_T, loss.student_channels, what)
    if preds_T.shape[1] != loss.teacher_channels:
        raise ValueError(f"{what}: teacher features have {preds_T.shape[1]} channels but the loss "
                         f"was built with teacher_channels={loss.teacher_channels}")
    feat_s = run_module(loss.align, preds_S) if loss.align is not None else preds_S.float()
    return feat_s, preds_T.detach().float()
