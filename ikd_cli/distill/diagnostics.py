"""Why the adversarial term adds (or does not add) anything: what stage 1 measures every
``log_interval`` iterations (``distill.diagnostics``), per distilled level:

* ``diag_teacher_dist_<level>``: how far the teacher's features of the adversarial image are
  from those of the clean image, ``||T(adv) - T(clean)|| / ||T(clean)||`` (L2 over C x H x W,
  per image, mean over the batch). Near 0: the adversarial image shows the student nothing new.
* ``diag_grad_adv_vs_distill_log10_<level>`` and ``diag_grad_adv_vs_det_log10_<level>``:
  log10 of the ratio between the gradient norm the adversarial term sends into the student's
  features at that level (of the adversarial image) and the one the clean distillation term
  (the distiller: FGD, MGD, ...) and the detection loss send (into the features of the clean image). -3: the
  adversarial term pushes a thousand times more weakly. Logged as log10 because mmcv's JSON log
  keeps 5 decimals, which would round small ratios to 0.

The gradients come from ``torch.autograd.grad`` on the student's level outputs with the graph
kept: no parameter's ``.grad`` is touched and nothing is drawn from a random generator, so the
training step that follows is exactly the one without diagnostics (a test checks the weights
are bit-identical). The keys hold no "loss", so mmdet's ``_parse_losses`` logs them without
adding them to the total.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ikd_cli.config.layout import DIAG_GRAD_VS_DET as GRAD_VS_DET
from ikd_cli.config.layout import DIAG_GRAD_VS_DISTILL as GRAD_VS_DISTILL
from ikd_cli.config.layout import DIAG_PREFIX as PREFIX
from ikd_cli.config.layout import DIAG_TEACHER_DIST as TEACHER_DIST

_TINY = 1e-30  # keeps log10 finite where a term sends no gradient at all


def level_tag(module_name: str) -> str:
    """``neck.fpn_convs.0.conv`` -> ``neck_fpn_convs_0_conv`` (as in the loss keys)."""
    return module_name.replace(".", "_")


def relative_distance(clean: Tensor, adv: Tensor) -> Tensor:
    """Per image ``||adv - clean|| / ||clean||``, averaged over the batch."""
    clean, adv = clean.detach().float().flatten(1), adv.detach().float().flatten(1)
    return ((adv - clean).norm(dim=1) / clean.norm(dim=1).clamp_min(_TINY)).mean()


def _total(values) -> Tensor | None:
    """The sum of loss tensors (mmdet's heads log lists of per-level losses)."""
    tensors = [v for value in values for v in (value if isinstance(value, (list, tuple)) else [value])
               if isinstance(v, Tensor) and v.requires_grad]
    return sum(tensors) if tensors else None


def _grad_norms(loss: Tensor | None, features: list[Tensor]) -> list[float]:
    if loss is None:
        return [0.0] * len(features)
    grads = torch.autograd.grad(loss, features, retain_graph=True, allow_unused=True)
    return [0.0 if g is None else float(g.detach().float().norm()) for g in grads]


def _log10_ratio(a: float, b: float) -> float:
    """log10(a / b), also where a gradient norm overflowed (a distillation weight of 1e30): inf,
    -inf or nan then, logged as such, so that the NaN guard, not math.log10, says what happened."""
    ratio = (a + _TINY) / (b + _TINY)
    if math.isnan(ratio) or ratio <= 0.0:
        return math.nan if math.isnan(ratio) else -math.inf
    return math.log10(ratio)


def adversarial_diagnostics(entries: dict, losses: dict, clean: tuple[dict, dict], adv: tuple[dict, dict]) -> dict:
    """The diagnostics of one stage-1 step, as 0-d tensors to log beside the losses.

    ``entries``: the distiller's key -> (image, student level, teacher level); ``losses``: the
    step's losses so far (detection, clean distillation, adversarial); ``clean`` and ``adv``:
    (student features, teacher features) of each image, keyed by level name.
    """
    adv_levels = [(key, s, t) for key, (image, s, t) in entries.items() if image == "adv"]
    levels = [s for _, s, _ in adv_levels]
    distill_keys = {key for key, (image, _, _) in entries.items() if image == "clean"}
    det = _total(v for k, v in losses.items() if k not in entries and "loss" in k)
    distill = _total(losses[k] for k in distill_keys if k in losses)
    adv_term = _total(losses[k] for k, _, _ in adv_levels if k in losses)
    g_adv = _grad_norms(adv_term, [adv[0][s] for s in levels])
    g_distill = _grad_norms(distill, [clean[0][s] for s in levels])
    g_det = _grad_norms(det, [clean[0][s] for s in levels])
    out = {}
    device = clean[0][levels[0]].device if levels else "cpu"
    for i, (_, s, t) in enumerate(adv_levels):
        tag = level_tag(s)
        out[TEACHER_DIST + tag] = relative_distance(clean[1][t], adv[1][t])
        out[GRAD_VS_DISTILL + tag] = torch.tensor(_log10_ratio(g_adv[i], g_distill[i]), device=device)
        out[GRAD_VS_DET + tag] = torch.tensor(_log10_ratio(g_adv[i], g_det[i]), device=device)
    return out
