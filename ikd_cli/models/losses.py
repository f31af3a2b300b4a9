"""Feature-distillation losses for IKD, registered into MMDetection's ``LOSSES`` registry.

Two losses, each for ONE feature level (the distiller builds one per FPN output):

* :class:`FGDLoss` - Focal and Global Distillation (Yang et al., "Focal and Global Knowledge
  Distillation for Detectors", CVPR 2022), the base distiller IKD builds on. Used on the clean image.
* :class:`AdvFeatureLoss` - IKD's adversarial feature distillation (``mse``, ``l1`` or ``cwd``),
  used on the features of the adversarial image.

Both are plain ``nn.Module``s whose maths lives in ``forward``; they hold learnable parameters
(the 1x1 ``align`` conv when channels differ and, for FGD, the two global-context blocks), so the
optimiser must see them next to the student's parameters.

Conventions shared by both losses:

* ``preds_S``/``preds_T`` are ``(N, C, H, W)`` feature maps of the student / teacher for the same
  images. The teacher features are detached here again (defensively): no gradient ever reaches
  ``preds_T``.
* The maths runs in float32 whatever the feature dtype (sums over a whole FPN level overflow fp16).
* "Divided by N" means divided by the batch size, as in the reference implementations.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from mmdet.models.builder import LOSSES
from torch import Tensor, nn

__all__ = ["FGDLoss", "AdvFeatureLoss", "foreground_mask", "background_mask", "spatial_channel_attention"]

# The vectorised mask paints boxes in chunks whose (k, H, W) temporary holds at most this many
# elements: ~4 MiB of float32 on CPU (stays in cache; bigger chunks get slower there), more on GPU
# (fewer kernel launches).
_MASK_BUDGET_CPU = 1 << 20
_MASK_BUDGET_GPU = 1 << 24


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _check_features(preds_S: Tensor, preds_T: Tensor, student_channels: int, what: str) -> None:
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


def _run_module(module: nn.Module, x: Tensor) -> Tensor:
    """Run ``module`` in the dtype of its parameters (fp16 under mmcv's fp16 wrapper), return float32."""
    param = next(module.parameters())
    return module(x.to(param.dtype)).float()


def spatial_channel_attention(feat: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """FGD attention maps of a feature map ``(N, C, H, W)`` at temperature ``temp``.

    Returns ``(S, C)``: spatial attention ``S = H*W * softmax_hw(mean_c |F| / T)`` of shape
    ``(N, H, W)`` and channel attention ``C = C * softmax_c(mean_hw |F| / T)`` of shape ``(N, C)``.
    Both average to 1, so a uniform map leaves the features unweighted.
    """
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = value.mean(dim=1).reshape(n, h * w)
    S = (h * w) * F.softmax(spatial / temp, dim=1)
    channel = value.mean(dim=(2, 3))
    C = c * F.softmax(channel / temp, dim=1)
    return S.reshape(n, h, w), C


def _img_hw(meta: dict, key: str = "img_shape") -> tuple[float, float]:
    shape = meta[key]
    return float(shape[0]), float(shape[1])


def _box_cell_bounds(boxes: Tensor, img_h: float, img_w: float, H: int, W: int):
    """Inclusive feature-cell bounds and mask values of ``boxes`` (k, 4) xyxy in image pixels.

    A box is scaled to the feature map (x by ``W/img_w``, y by ``H/img_h``); its first cell is
    ``floor`` of the scaled min and its last cell ``ceil`` of the scaled max, both INCLUSIVE (FGD's
    convention). Its value is ``1 / (box_h * box_w)`` with ``box_h = ceil(y2') - floor(y1') + 1`` (and
    likewise ``box_w``) counted BEFORE clamping, exactly as the FGD reference does: a box reaching the
    right/bottom edge of the map counts one cell beyond it. The bounds are then clamped to the map for
    painting. Boxes wholly outside the map (or inverted / NaN) are invalid and paint nothing (the
    reference would wrap around with negative slice indices; mmdet clips boxes, so this never
    happens in training).

    Returns ``hmin, hmax, wmin, wmax`` (int64, clamped), ``values`` (float32) and ``valid`` (bool),
    each of shape (k,). Shared by the vectorised and the loop mask, so both see identical numbers.
    """
    boxes = boxes.detach().float()
    x1 = torch.floor(boxes[:, 0] / img_w * W)
    y1 = torch.floor(boxes[:, 1] / img_h * H)
    x2 = torch.ceil(boxes[:, 2] / img_w * W)
    y2 = torch.ceil(boxes[:, 3] / img_h * H)
    valid = (x2 >= x1) & (y2 >= y1) & (x1 <= W - 1) & (y1 <= H - 1) & (x2 >= 0) & (y2 >= 0)
    values = torch.where(valid, 1.0 / ((y2 - y1 + 1) * (x2 - x1 + 1)), torch.zeros_like(x1))
    wmin = x1.nan_to_num(0).clamp(0, W - 1).long()
    wmax = x2.nan_to_num(0).clamp(0, W - 1).long()
    hmin = y1.nan_to_num(0).clamp(0, H - 1).long()
    hmax = y2.nan_to_num(0).clamp(0, H - 1).long()
    return hmin, hmax, wmin, wmax, values, valid


def foreground_mask(gt_bboxes: Sequence[Tensor], img_metas: Sequence[dict], H: int, W: int,
                    device=None) -> Tensor:
    """FGD foreground mask ``(N, H, W)``, vectorised over the boxes of each image.

    Every cell covered by a ground-truth box gets ``1 / (box_h * box_w)`` (box size in feature cells);
    where boxes overlap the largest value wins; uncovered cells are 0. Boxes are scaled with
    ``img_meta['img_shape']`` (see :func:`_box_cell_bounds`).

    All boxes of an image are broadcast against the row and column coordinates of the map at once
    (a ``(k, H, W)`` tensor, chunked for crowded images) and reduced with ``max``.
    """
    n = len(gt_bboxes)
    if device is None:
        device = gt_bboxes[0].device if n else "cpu"
    mask = torch.zeros(n, H, W, dtype=torch.float32, device=device)
    ys = torch.arange(H, device=device)
    xs = torch.arange(W, device=device)
    budget = _MASK_BUDGET_CPU if mask.device.type == "cpu" else _MASK_BUDGET_GPU
    chunk = max(1, budget // max(H * W, 1))
    for i, (boxes, meta) in enumerate(zip(gt_bboxes, img_metas)):
        if boxes.numel() == 0:
            continue
        img_h, img_w = _img_hw(meta)
        hmin, hmax, wmin, wmax, values, _ = _box_cell_bounds(boxes.to(device), img_h, img_w, H, W)
        for start in range(0, values.numel(), chunk):
            sl = slice(start, start + chunk)
            # (k, H): the box's value on the rows it covers; (k, W): 1 on the columns it covers
            rows = ((ys[None, :] >= hmin[sl, None]) & (ys[None, :] <= hmax[sl, None])) * values[sl, None]
            cols = ((xs[None, :] >= wmin[sl, None]) & (xs[None, :] <= wmax[sl, None])).float()
            painted = (rows[:, :, None] * cols[:, None, :]).amax(dim=0)  # max over the boxes
            mask[i] = painted if start == 0 else torch.maximum(mask[i], painted)
    return mask


def _foreground_mask_loop(gt_bboxes: Sequence[Tensor], img_metas: Sequence[dict], H: int, W: int,
                          device=None) -> Tensor:
    """Reference implementation of :func:`foreground_mask`: one slice assignment per box.

    Kept only to test the vectorised version against (it is what the FGD reference does, and slow).
    """
    n = len(gt_bboxes)
    if device is None:
        device = gt_bboxes[0].device if n else "cpu"
    mask = torch.zeros(n, H, W, dtype=torch.float32, device=device)
    for i, (boxes, meta) in enumerate(zip(gt_bboxes, img_metas)):
        if boxes.numel() == 0:
            continue
        img_h, img_w = _img_hw(meta)
        hmin, hmax, wmin, wmax, values, valid = _box_cell_bounds(boxes.to(device), img_h, img_w, H, W)
        for j in range(boxes.shape[0]):
            if not bool(valid[j]):
                continue
            h0, h1, w0, w1 = int(hmin[j]), int(hmax[j]) + 1, int(wmin[j]), int(wmax[j]) + 1
            mask[i, h0:h1, w0:w1] = torch.clamp(mask[i, h0:h1, w0:w1], min=float(values[j]))
    return mask


def background_mask(fg_mask: Tensor) -> Tensor:
    """FGD background mask from a foreground mask ``(N, H, W)``.

    1 on the cells no box covers, normalised to sum to 1 per image; an image whose every cell is
    covered gets an all-zero background mask.
    """
    bg = (fg_mask <= 0).float()
    count = bg.sum(dim=(1, 2), keepdim=True)
    return torch.where(count > 0, bg / count.clamp(min=1), bg)


# --------------------------------------------------------------------------------------------
# FGD
# --------------------------------------------------------------------------------------------

class _GlobalContext(nn.Module):
    """GcBlock-style global context (GCNet): attention pooling + channel-add transform.

    ``context(x) = channel_add(sum_hw softmax_hw(conv_mask(x)) * x)``, shape ``(N, C, 1, 1)``, where
    ``channel_add = conv1x1(C->C/2) -> LayerNorm([C/2,1,1]) -> ReLU -> conv1x1(C/2->C)``.

    Init (as GCNet and FGD): ``conv_mask`` kaiming-normal (fan_in, relu gain) with zero bias; the
    first channel_add conv keeps PyTorch's default init; the LAST channel_add conv is zero (weight and
    bias), so the context is exactly 0 at the start and the relation loss starts as plain feature MSE.
    """

    def __init__(self, channels: int):
        super().__init__()
        planes = max(channels // 2, 1)
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, planes, kernel_size=1),
            nn.LayerNorm([planes, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, channels, kernel_size=1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        self.channel_add[0].reset_parameters()
        self.channel_add[1].reset_parameters()
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        weights = F.softmax(self.conv_mask(x).reshape(n, 1, h * w), dim=2)  # (N, 1, HW)
        pooled = torch.bmm(x.reshape(n, c, h * w), weights.transpose(1, 2))  # (N, C, 1)
        return self.channel_add(pooled.reshape(n, c, 1, 1))


@LOSSES.register_module()
class FGDLoss(nn.Module):
    """Focal and Global Distillation loss for one feature level.

    ``loss = alpha_fgd * fg + beta_fgd * bg + gamma_fgd * attention + lambda_fgd * global``:

    * ``fg``/``bg``: squared difference of student and teacher features, both weighted by
      ``sqrt(S_t) * sqrt(C_t) * sqrt(mask)`` (teacher spatial/channel attention at temperature
      ``temp``; foreground or background mask), summed and divided by the batch size.
    * ``attention``: ``(sum|C_s - C_t| + sum|S_s - S_t|) / N``.
    * ``global``: ``sum((F_s + ctx_s(F_s) - F_t - ctx_t(F_t))^2) / N`` with two separate learnable
      GcBlock contexts (one for the student, one for the teacher features).

    Args:
        student_channels, teacher_channels: feature channels; when they differ a 1x1 conv ``align``
            (PyTorch default init, as in FGD) maps the student to the teacher's channels.
        name: the feature this loss applies to (e.g. ``'neck.fpn_convs.0.conv'``); kept for the
            distiller, unused by the maths.
        temp, alpha_fgd, beta_fgd, gamma_fgd, lambda_fgd: FGD hyperparameters (RetinaNet defaults).
        mask_shape: meta key whose (h, w) scales the boxes onto the feature map. ``'img_shape'``
            (default) is what FGD does and what its hyperparameters were tuned with; ``'pad_shape'``
            is geometrically exact when batches are padded.

    ``forward(preds_S, preds_T, gt_bboxes, img_metas)`` returns a scalar tensor.

    Mask convention (the FGD reference's, same numbers): a box covers cells ``floor(min)..ceil(max)``
    inclusive (clamped to the map) with value ``1 / (box_h * box_w)``, the size counted from the
    unclamped bounds; see :func:`_box_cell_bounds`.
    """

    def __init__(self, student_channels: int, teacher_channels: int, name: str = "", temp: float = 0.5,
                 alpha_fgd: float = 1e-3, beta_fgd: float = 5e-4, gamma_fgd: float = 5e-4,
                 lambda_fgd: float = 5e-6, mask_shape: str = "img_shape"):
        super().__init__()
        if temp <= 0:
            raise ValueError(f"FGDLoss: temp must be positive, got {temp}")
        if mask_shape not in ("img_shape", "pad_shape"):
            raise ValueError(f"FGDLoss: mask_shape must be 'img_shape' or 'pad_shape', got {mask_shape!r}")
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.name = name
        self.temp = float(temp)
        self.alpha_fgd = float(alpha_fgd)
        self.beta_fgd = float(beta_fgd)
        self.gamma_fgd = float(gamma_fgd)
        self.lambda_fgd = float(lambda_fgd)
        self.mask_shape = mask_shape
        if self.student_channels != self.teacher_channels:
            self.align = nn.Conv2d(self.student_channels, self.teacher_channels, kernel_size=1)
        else:
            self.align = None
        self.context_s = _GlobalContext(self.teacher_channels)
        self.context_t = _GlobalContext(self.teacher_channels)
        # The foreground-mask builder; tests swap in ``_foreground_mask_loop`` to compare.
        self._fg_mask_fn: Callable[..., Tensor] = foreground_mask

    def masks(self, gt_bboxes: Sequence[Tensor], img_metas: Sequence[dict], H: int, W: int,
              device=None) -> tuple[Tensor, Tensor]:
        """Foreground and background masks ``(N, H, W)`` for this loss's ``mask_shape``."""
        metas = img_metas
        if self.mask_shape != "img_shape":
            metas = [dict(m, img_shape=m[self.mask_shape]) for m in img_metas]
        fg = self._fg_mask_fn(gt_bboxes, metas, H, W, device)
        return fg, background_mask(fg)

    def forward(self, preds_S: Tensor, preds_T: Tensor, gt_bboxes: Sequence[Tensor],
                img_metas: Sequence[dict]) -> Tensor:
        what = f"FGDLoss({self.name})" if self.name else "FGDLoss"
        _check_features(preds_S, preds_T, self.student_channels, what)
        if len(gt_bboxes) != preds_S.shape[0] or len(img_metas) != preds_S.shape[0]:
            raise ValueError(f"{what}: {preds_S.shape[0]} images but {len(gt_bboxes)} gt_bboxes entries "
                             f"and {len(img_metas)} img_metas")
        preds_T = preds_T.detach()
        if preds_T.shape[1] != self.teacher_channels:
            raise ValueError(f"{what}: teacher features have {preds_T.shape[1]} channels but the loss "
                             f"was built with teacher_channels={self.teacher_channels}")
        feat_s = _run_module(self.align, preds_S) if self.align is not None else preds_S.float()
        feat_t = preds_T.float()
        n, _, h, w = feat_t.shape

        S_t, C_t = spatial_channel_attention(feat_t, self.temp)
        S_s, C_s = spatial_channel_attention(feat_s, self.temp)
        fg_mask, bg_mask = self.masks(gt_bboxes, img_metas, h, w, feat_t.device)

        # focal feature loss: teacher attention weights both maps
        weight = (S_t.sqrt()[:, None] * C_t.sqrt()[:, :, None, None])  # (N, C, H, W)
        diff_sq = (feat_s * weight - feat_t * weight).pow(2)
        fg_loss = (diff_sq * fg_mask[:, None]).sum() / n
        bg_loss = (diff_sq * bg_mask[:, None]).sum() / n

        # attention loss
        mask_loss = ((C_s - C_t).abs().sum() + (S_s - S_t).abs().sum()) / n

        # global relation loss
        out_s = feat_s + _run_module(self.context_s, feat_s)
        out_t = feat_t + _run_module(self.context_t, feat_t)
        rela_loss = (out_s - out_t).pow(2).sum() / n

        return (self.alpha_fgd * fg_loss + self.beta_fgd * bg_loss + self.gamma_fgd * mask_loss
                + self.lambda_fgd * rela_loss)


# --------------------------------------------------------------------------------------------
# IKD adversarial feature distillation
# --------------------------------------------------------------------------------------------

_ADV_TYPES = ("mse", "l1", "cwd")


@LOSSES.register_module()
class AdvFeatureLoss(nn.Module):
    """IKD's adversarial feature distillation for one feature level (on the adversarial image).

    * ``mse``: ``alpha_adv * sum((F_s - F_t)^2) / N`` (the IKD default)
    * ``l1``:  ``alpha_adv * sum(|F_s - F_t|) / N``
    * ``cwd``: channel-wise distillation: per channel, softmax over H*W at temperature ``tau``;
      ``alpha_adv * tau^2 * sum_{n,c} KL(p_t || p_s) / (N * C)``.

    A 1x1 conv ``align`` (PyTorch default init) maps student to teacher channels when they differ.
    ``forward(preds_S, preds_T)`` returns a scalar tensor; ``preds_T`` gets no gradient.
    """

    def __init__(self, student_channels: int, teacher_channels: int, name: str = "", loss_type: str = "mse",
                 alpha_adv: float = 1e-5, tau: float = 1.0):
        super().__init__()
        if loss_type not in _ADV_TYPES:
            raise ValueError(f"AdvFeatureLoss: unknown loss_type {loss_type!r}; "
                             f"choose one of {', '.join(_ADV_TYPES)}")
        if tau <= 0:
            raise ValueError(f"AdvFeatureLoss: tau must be positive, got {tau}")
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.name = name
        self.loss_type = loss_type
        self.alpha_adv = float(alpha_adv)
        self.tau = float(tau)
        if self.student_channels != self.teacher_channels:
            self.align = nn.Conv2d(self.student_channels, self.teacher_channels, kernel_size=1)
        else:
            self.align = None

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        what = f"AdvFeatureLoss({self.name})" if self.name else "AdvFeatureLoss"
        _check_features(preds_S, preds_T, self.student_channels, what)
        if preds_T.shape[1] != self.teacher_channels:
            raise ValueError(f"{what}: teacher features have {preds_T.shape[1]} channels but the loss "
                             f"was built with teacher_channels={self.teacher_channels}")
        feat_s = _run_module(self.align, preds_S) if self.align is not None else preds_S.float()
        feat_t = preds_T.detach().float()
        n, c, h, w = feat_t.shape
        if self.loss_type == "mse":
            loss = (feat_s - feat_t).pow(2).sum() / n
        elif self.loss_type == "l1":
            loss = (feat_s - feat_t).abs().sum() / n
        else:  # cwd
            logp_s = F.log_softmax(feat_s.reshape(n * c, h * w) / self.tau, dim=1)
            logp_t = F.log_softmax(feat_t.reshape(n * c, h * w) / self.tau, dim=1)
            kl = (logp_t.exp() * (logp_t - logp_s)).sum()
            loss = kl * (self.tau ** 2) / (n * c)
        return self.alpha_adv * loss
