"""The IKD distiller: one mmdet detector that holds a frozen teacher and a trainable student.

Registered as ``IKDDistiller`` in mmdet's DETECTORS. Training adds to the student's own
detection losses:
  * FGD on each configured feature module (default: the FPN outputs) of the clean image;
  * in stage 1 (DFA) only, the adversarial feature loss between the student's and the teacher's
    features of the adversarial image (``adv_img`` from the data pipeline).
Testing is the student alone, so EvalHook and ``ikd evaluate`` see a plain detector.
"""

from __future__ import annotations

import torch
from mmcv.runner import load_state_dict
from mmdet.models import DETECTORS, build_detector
from mmdet.models.builder import build_loss
from mmdet.models.detectors import BaseDetector

from .checkpoints import read_checkpoint
from .errors import IkdError
from .models import losses as _losses  # noqa: F401  (registers FGDLoss and AdvFeatureLoss)


def loss_key(module_name: str, kind: str) -> str:
    """``neck.fpn_convs.0.conv`` -> ``loss_fgd_neck_fpn_convs_0_conv`` (a valid ModuleDict key)."""
    return f"loss_{kind}_" + module_name.replace(".", "_")


@DETECTORS.register_module()
class IKDDistiller(BaseDetector):
    def __init__(self, teacher: dict, student: dict, levels: list, fgd: dict, adv: dict,
                 teacher_checkpoint: str | None = None, init_student: bool = True,
                 train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__(init_cfg)
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
            self.fgd_losses[loss_key(key, "fgd")] = build_loss(dict(
                type="FGDLoss", student_channels=s_ch, teacher_channels=t_ch, name=loss_key(key, "fgd"), **fgd))
            self.adv_losses[loss_key(key, "adv")] = build_loss(dict(
                type="AdvFeatureLoss", student_channels=s_ch, teacher_channels=t_ch, name=loss_key(key, "adv"), **adv))
        self.dfa = True  # stage 1; the runner switches it off after --dfa-until epochs
        self._features = {"student": {}, "teacher": {}}
        for role, net in (("student", self.student), ("teacher", self.teacher)):
            for lvl in self.levels:
                _module(net, lvl[role]).register_forward_hook(self._saver(role, lvl[role]))
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
            from .checkpoints import load_weights

            load_weights(self.teacher, ckpt["state_dict"], self.teacher_checkpoint)
            if self.init_student:
                self._copy_teacher_into_student(ckpt["state_dict"])

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
        for lvl in self.levels:
            s, t = lvl["student"], lvl["teacher"]
            try:
                losses[loss_key(s, "fgd")] = self.fgd_losses[loss_key(s, "fgd")](
                    student_clean[s], teacher_clean[t], gt_bboxes, img_metas)
            except ValueError as err:  # e.g. feature maps of different spatial sizes
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
