"""The IKD distiller: one mmdet detector that holds a frozen teacher and a trainable student.

Registered as ``IKDDistiller`` in mmdet's DETECTORS. Training adds to the student's own
detection losses:
  * FGD on each configured feature module (default: the FPN outputs) of the clean image;
  * in stage 1 (DFA) only, the adversarial feature loss between the student's and the teacher's
    features of the adversarial image (``adv_img`` from the data pipeline).
``feature_loss`` (default ``fgd``) can swap FGD for NAD's attention transfer on the ``attention``
levels (``attention``) or add it (``fgd+attention``); ``student_checkpoint`` starts the whole
student from a checkpoint (``ikd backdoor defend``: the victim). The defaults build exactly the
FGD distiller, module for module.
Testing is the student alone, so EvalHook and ``ikd evaluate`` see a plain detector.
"""

from __future__ import annotations

import torch
from mmcv.runner import load_state_dict
from mmdet.models import DETECTORS, build_detector
from mmdet.models.builder import build_loss
from mmdet.models.detectors import BaseDetector

from ikd_cli.core.checkpoints import read_checkpoint
from ikd_cli.core.errors import IkdError
from ikd_cli.distill import losses as _losses  # noqa: F401  (registers FGDLoss and AdvFeatureLoss)
from ikd_cli.distill.losses import attention as _attention  # noqa: F401  (registers AttentionTransferLoss)

FEATURE_LOSSES = ("fgd", "attention", "fgd+attention")  # what is distilled on the clean image


def loss_key(module_name: str, kind: str) -> str:
    """``neck.fpn_convs.0.conv`` -> ``loss_fgd_neck_fpn_convs_0_conv`` (a valid ModuleDict key)."""
    return f"loss_{kind}_" + module_name.replace(".", "_")


@DETECTORS.register_module()
class IKDDistiller(BaseDetector):
    def __init__(self, teacher: dict, student: dict, levels: list, fgd: dict, adv: dict,
                 teacher_checkpoint: str | None = None, init_student: bool = True,
                 feature_loss: str = "fgd", attention: dict | None = None, student_checkpoint: str | None = None,
                 train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__(init_cfg)
        if feature_loss not in FEATURE_LOSSES:
            raise IkdError(f"feature_loss must be one of {', '.join(FEATURE_LOSSES)}, got {feature_loss!r}")
        self.student_checkpoint = student_checkpoint
        self.teacher = build_detector(teacher)
        self.student = build_detector(student)
        self.teacher_checkpoint = teacher_checkpoint
        self.init_student = init_student
        self.levels = [lvl if isinstance(lvl, dict) else dict(student=lvl, teacher=lvl) for lvl in levels]
        self.fgd_losses = torch.nn.ModuleDict()
        self.adv_losses = torch.nn.ModuleDict()
        for lvl in self.levels:
            s_ch = _out_channels(self.student, lvl["student"])
            t_ch = _out_channels(self.teacher, lvl["teacher"])
            key = lvl["student"]
            if "fgd" in feature_loss.split("+"):
                self.fgd_losses[loss_key(key, "fgd")] = build_loss(dict(
                    type="FGDLoss", student_channels=s_ch, teacher_channels=t_ch, name=loss_key(key, "fgd"), **fgd))
            self.adv_losses[loss_key(key, "adv")] = build_loss(dict(
                type="AdvFeatureLoss", student_channels=s_ch, teacher_channels=t_ch, name=loss_key(key, "adv"), **adv))
        self.at_levels, self.at_losses = _attention_losses(feature_loss, attention)
        self.dfa = True  # stage 1; the runner switches it off after --dfa-until epochs
        self._features = {"student": {}, "teacher": {}}
        for role, net in (("student", self.student), ("teacher", self.teacher)):
            for lvl in self.levels:
                _module(net, lvl[role]).register_forward_hook(self._saver(role, lvl[role]))
            for name in sorted({lvl[role] for lvl in self.at_levels} - {lvl[role] for lvl in self.levels}):
                _module(net, name).register_forward_hook(self._saver(role, name))
        for param in self.teacher.parameters():
            param.requires_grad_(False)

    def _saver(self, role, name):
        def hook(module, inputs, output):
            self._features[role][name] = output
        return hook

    # ------------------------------------------------------------------------------- weights
    def init_weights(self):
        self.student.init_weights()
        for loss in list(self.fgd_losses.values()) + list(self.adv_losses.values()):
            if hasattr(loss, "init_weights"):
                loss.init_weights()
        if self.teacher_checkpoint:
            ckpt = read_checkpoint(self.teacher_checkpoint)
            from ikd_cli.core.checkpoints import load_weights

            load_weights(self.teacher, ckpt["state_dict"], self.teacher_checkpoint)
            if self.init_student:
                self._copy_teacher_into_student(ckpt["state_dict"])
        if self.student_checkpoint:  # the whole student, checked to fit (after init_student: it wins)
            from ikd_cli.core.checkpoints import load_weights

            load_weights(self.student, read_checkpoint(self.student_checkpoint)["state_dict"], self.student_checkpoint)

    def _copy_teacher_into_student(self, teacher_state: dict) -> None:
        """``init_student``: every teacher weight but the backbone's goes into the student, where
        the student has a parameter of that name and shape (neck and head)."""
        student_state = self.student.state_dict()
        copied = {k: v for k, v in teacher_state.items()
                  if not k.startswith("backbone.") and k in student_state and student_state[k].shape == v.shape}
        if not copied:
            raise IkdError("init_student found no teacher weights that fit the student's neck or head; "
                           "set distill.init_student=false")
        load_state_dict(self.student, copied, strict=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen batch norm and no dropout, always
        return self

    # ------------------------------------------------------------------------------ training
    def extract_feat(self, img):
        return self.student.extract_feat(img)

    def _teacher_features(self, img):
        with torch.no_grad():
            self.teacher.extract_feat(img)
        return {k: v.detach() for k, v in self._features["teacher"].items()}

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, adv_img=None, **kwargs):
        losses = self.student.forward_train(img, img_metas, gt_bboxes, gt_labels, **kwargs)
        student_clean = dict(self._features["student"])
        teacher_clean = self._teacher_features(img)
        for lvl in self.levels if self.fgd_losses else ():
            s, t = lvl["student"], lvl["teacher"]
            try:
                losses[loss_key(s, "fgd")] = self.fgd_losses[loss_key(s, "fgd")](
                    student_clean[s], teacher_clean[t], gt_bboxes, img_metas)
            except ValueError as err:  # e.g. feature maps of different spatial sizes
                raise IkdError(f"cannot distil teacher '{t}' into student '{s}': {err}") from None
        for lvl in self.at_levels:
            s, t = lvl["student"], lvl["teacher"]
            try:
                losses[loss_key(s, "at")] = self.at_losses[loss_key(s, "at")](student_clean[s], teacher_clean[t])
            except ValueError as err:
                raise IkdError(f"cannot distil teacher '{t}' into student '{s}': {err}") from None
        if self.dfa and adv_img is not None:
            self.student.extract_feat(adv_img)
            student_adv = dict(self._features["student"])
            teacher_adv = self._teacher_features(adv_img)
            for lvl in self.levels:
                s, t = lvl["student"], lvl["teacher"]
                losses[loss_key(s, "adv")] = self.adv_losses[loss_key(s, "adv")](student_adv[s], teacher_adv[t])
        return losses

    # ------------------------------------------------------------------------------- testing
    def simple_test(self, img, img_metas, **kwargs):
        return self.student.simple_test(img, img_metas, **kwargs)

    def aug_test(self, imgs, img_metas, **kwargs):
        return self.student.aug_test(imgs, img_metas, **kwargs)

    def show_result(self, *args, **kwargs):
        return self.student.show_result(*args, **kwargs)


def _attention_losses(feature_loss: str, attention: dict | None):
    """The levels and :class:`AttentionTransferLoss` modules of ``feature_loss`` ``attention`` or
    ``fgd+attention``: ``attention = dict(levels=[...], betas=[...], p=2.0)`` (one beta per level,
    or one for all); none for plain FGD."""
    losses = torch.nn.ModuleDict()
    if "attention" not in feature_loss.split("+"):
        return [], losses
    attention = dict(attention or {})
    levels = [lvl if isinstance(lvl, dict) else dict(student=lvl, teacher=lvl) for lvl in attention.get("levels") or []]
    betas = attention.get("betas", 1.0)
    betas = [betas] * len(levels) if isinstance(betas, (int, float)) else list(betas)
    if not levels or len(betas) != len(levels):
        raise IkdError(f"attention transfer needs levels and one beta per level; got {len(levels)} level(s) and "
                       f"{len(betas)} beta(s)")
    for lvl, beta in zip(levels, betas):
        key = loss_key(lvl["student"], "at")
        losses[key] = build_loss(dict(type="AttentionTransferLoss", name=key, p=attention.get("p", 2.0),
                                      beta=float(beta)))
    return levels, losses


def _module(net, name: str):
    try:
        return net.get_submodule(name)
    except AttributeError:
        raise IkdError(f"distill level '{name}' is not a module of {type(net).__name__}") from None


def _out_channels(net, name: str) -> int:
    module = _module(net, name)
    for attr in ("out_channels", "num_features", "out_features"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    raise IkdError(f"cannot tell the output channels of '{name}'")
