"""The IKD distiller: one mmdet detector that holds a frozen teacher, a trainable student and a
list of feature losses between them (mmrazor's configurable distiller, in small).

Registered as ``IKDDistiller`` in mmdet's DETECTORS. Each entry of ``losses`` names a registered
loss, the levels (feature modules) it applies to, the image it sees, and the loss's own weights::

    dict(type="FGDLoss", levels=[...], image="clean", temp=0.5, alpha_fgd=1e-3, ...)
    dict(type="AdvFeatureLoss", levels=[...], image="adv", loss_type="mse", alpha_adv=1e-5)

One loss module is built per level, keyed ``loss_<kind>_<level>`` (also the key of its log
line). ``image="clean"`` losses are added to the student's detection losses on every step;
``image="adv"`` ones only in stage 1 (``dfa`` on; the runner's stage hook switches it) and only
when the batch carries the adversarial image ``adv_img``. A level is ``feat.i`` (the i-th map the
model's ``extract_feat`` returns), the name of a module of both models, or ``dict(student=...,
teacher=...)``; ``levels="auto"`` is every ``feat.i`` (:mod:`.levels`). Channels come from one
dry forward of each model when the distiller is built. The teacher's features are computed on
exactly the tensor the student's ``extract_feat`` received (YOLOX resizes its batch inside
``forward_train``). ``student_checkpoint`` starts the whole student from a
checkpoint (``ikd backdoor defend``: the victim). Testing is the student alone, so EvalHook and
``ikd evaluate`` see a plain detector.
"""

from __future__ import annotations

import inspect

import torch
from mmcv.runner import load_state_dict
from mmdet.models import DETECTORS, build_detector
from mmdet.models.builder import LOSSES, build_loss
from mmdet.models.detectors import BaseDetector

from ikd_cli.config.distillers import DISTILLERS
from ikd_cli.core.checkpoints import load_weights, read_checkpoint
from ikd_cli.core.errors import IkdError
from ikd_cli.distill import losses as _losses  # noqa: F401  (registers the losses of the package)
from ikd_cli.distill.diagnostics import adversarial_diagnostics
from ikd_cli.distill.levels import FEAT, Recorder, feat_name, probe, resolve

IMAGES = ("clean", "adv")  # what a loss entry may see: the training image, or its adversarial copy
# Short names in the loss keys (the log's column names): a distiller's is its method's name
# (loss_fgd_..., loss_cwd_...); other types: the name less "Loss".
KINDS = {**{entry.loss: name for name, entry in DISTILLERS.items()},
         "AdvFeatureLoss": "adv", "AttentionTransferLoss": "at"}
# Checkpoints written before the loss list kept each kind in its own ModuleDict.
_OLD_PREFIXES = ("fgd_losses.", "adv_losses.", "at_losses.")


def loss_key(module_name: str, kind: str) -> str:
    """``neck.fpn_convs.0.conv`` -> ``loss_fgd_neck_fpn_convs_0_conv`` (a valid ModuleDict key)."""
    return f"loss_{kind}_" + module_name.replace(".", "_")


@DETECTORS.register_module()
class IKDDistiller(BaseDetector):
    def __init__(self, teacher: dict, student: dict, losses: list, teacher_checkpoint: str | None = None,
                 init_student: bool = True, student_checkpoint: str | None = None, no_adv=(),
                 teacher_input: dict | None = None, train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__(init_cfg)
        # the student's normalisation -> the teacher's, where they differ (distill/config.teacher_input)
        self.teacher_input = teacher_input
        self.no_adv = frozenset(no_adv)  # images without an adversarial copy (ikd attack --skip-bad)
        self.student_checkpoint = student_checkpoint
        self.teacher = build_detector(teacher)
        self.student = build_detector(student)
        self.teacher_checkpoint = teacher_checkpoint
        self.init_student = init_student
        # key -> (image, student level, teacher level), in the order of the entries
        self.entries: dict[str, tuple[str, str, str]] = {}
        self.distill_losses = torch.nn.ModuleDict()
        probes = {"student": probe(self.student), "teacher": probe(self.teacher)}  # channels, valid names
        self._recorders = {"student": Recorder(self.student), "teacher": Recorder(self.teacher)}
        for entry in losses:
            self._add_entry(dict(entry), probes)
        self.dfa = True  # stage 1; the runner switches it off after --dfa-until epochs
        self.diagnose = False  # measure the adversarial term this step (distill/diagnostics.py)
        self._features = {"student": {}, "teacher": {}}  # the named modules' outputs (forward hooks)
        for role, net in (("student", self.student), ("teacher", self.teacher)):
            names = sorted({(s, t)[role == "teacher"] for _, s, t in self.entries.values()})
            for name in names:
                if not name.startswith(FEAT):
                    net.get_submodule(name).register_forward_hook(self._saver(role, name))
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self._register_load_state_dict_pre_hook(_rename_old_keys)

    def _add_entry(self, entry: dict, probes: dict) -> None:
        """One loss module per level of a ``losses`` entry (see the module docstring)."""
        kind_type = entry.get("type")
        if kind_type not in LOSSES.module_dict:
            raise IkdError(f"distill loss type {kind_type!r} is not registered; "
                           f"known: {', '.join(sorted(set(KINDS) | set(LOSSES.module_dict)))}")
        image = entry.pop("image", "clean")
        if image not in IMAGES:
            raise IkdError(f"a distill loss sees image 'clean' or 'adv', got {image!r} ({kind_type})")
        levels = entry.pop("levels", None)
        if not levels:
            raise IkdError(f"the distill loss {kind_type} names no levels")
        pairs = resolve(levels, probes["student"], probes["teacher"], where=f"the distill loss {kind_type}'s levels")
        kind = KINDS.get(kind_type, kind_type.removesuffix("Loss").lower())
        takes_channels = "student_channels" in inspect.signature(LOSSES.get(kind_type)).parameters
        for s, t in pairs:
            key = loss_key(s, kind)
            if key in self.entries:
                raise IkdError(f"two distill losses {kind_type} on the level {s}")
            channels = dict(student_channels=probes["student"].maps[s].channels,
                            teacher_channels=probes["teacher"].maps[t].channels) if takes_channels else {}
            self.distill_losses[key] = build_loss(dict(entry, name=key, **channels))
            self.entries[key] = (image, s, t)

    def _saver(self, role, name):
        def hook(module, inputs, output):
            self._features[role][name] = output
        return hook

    # ------------------------------------------------------------------------------- weights
    def init_weights(self):
        self.student.init_weights()
        for loss in self.distill_losses.values():
            if hasattr(loss, "init_weights"):
                loss.init_weights()
        # what init_student did, for the run to say and record (distill/hooks.py: RunChecksHook)
        self.inherited = None
        if self.teacher_checkpoint:
            ckpt = read_checkpoint(self.teacher_checkpoint)
            load_weights(self.teacher, ckpt["state_dict"], self.teacher_checkpoint)
            # a student checkpoint replaces every student weight: inheriting first would be undone
            if self.init_student and not self.student_checkpoint:
                self.inherited = self._copy_teacher_into_student(ckpt["state_dict"])
        if self.student_checkpoint:  # the whole student, checked to fit
            load_weights(self.student, read_checkpoint(self.student_checkpoint)["state_dict"], self.student_checkpoint)

    def _copy_teacher_into_student(self, teacher_state: dict) -> dict:
        """``init_student``: every teacher weight but the backbone's goes into the student, where
        the student has a tensor of that name and shape (neck and head). Returns the counts over
        the student's neck and head tensors: inherited, of, and the others skipped for their
        ``shape`` or ``missing`` from the teacher."""
        student_state = self.student.state_dict()
        own = [k for k in student_state if not k.startswith("backbone.")]
        copied = {k: teacher_state[k] for k in own
                  if k in teacher_state and teacher_state[k].shape == student_state[k].shape}
        if not copied:
            raise IkdError("init_student found no teacher weights that fit the student's neck or head; "
                           "set distill.init_student=false")
        load_state_dict(self.student, copied, strict=False)
        shape = sum(k in teacher_state for k in own) - len(copied)
        return dict(inherited=len(copied), of=len(own), shape=shape, missing=len(own) - len(copied) - shape)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen batch norm and no dropout, always
        return self

    # ------------------------------------------------------------------------------ training
    def extract_feat(self, img):
        return self.student.extract_feat(img)

    def _features_of(self, role: str) -> dict:
        """The levels of ``role``'s last extract_feat: its outputs as ``feat.i``, the named modules'."""
        recorder = self._recorders[role]
        if recorder.outputs is None:
            raise IkdError(f"the {role}'s {type(getattr(self, role)).__name__} did not call extract_feat in its "
                           "forward, so its features cannot be distilled")
        return {**{feat_name(i): f for i, f in enumerate(recorder.outputs)}, **self._features[role]}

    def _teacher_features(self):
        """The teacher's features of exactly the tensor the student's extract_feat last received."""
        with torch.no_grad():
            self.teacher.extract_feat(self._as_teacher_input(self._recorders["student"].input))
        return {k: v.detach() for k, v in self._features_of("teacher").items()}

    def _as_teacher_input(self, img):
        """The student's normalised batch as the teacher's normalisation makes it (the same pixels)."""
        if not self.teacher_input:
            return img
        mean_in, std_in, mean_out, std_out = (img.new_tensor(self.teacher_input[k]).view(1, -1, 1, 1)
                                              for k in ("mean_in", "std_in", "mean_out", "std_out"))
        pixels = img * std_in + mean_in
        if self.teacher_input["swap"]:
            pixels = pixels.flip(1)
        return (pixels - mean_out) / std_out

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, adv_img=None, **kwargs):
        try:
            # a copy of the boxes: YOLOX scales them in place with the batch it resizes, and the
            # distillation losses map them onto the features by the images' own shapes
            losses = self.student.forward_train(img, img_metas, [b.clone() for b in gt_bboxes], gt_labels, **kwargs)
            clean = (self._features_of("student"), self._teacher_features())
            self._add_losses(losses, "clean", *clean, gt_bboxes, img_metas)
            if self.dfa and adv_img is not None and any(e[0] == "adv" for e in self.entries.values()):
                # the student's batch as its forward_train saw it (YOLOX resizes it): the same size
                adv = self._add_adv_losses(losses, _resized(adv_img, self._recorders["student"].input),
                                           gt_bboxes, img_metas)
                if self.diagnose and adv is not None:  # set for the logged iterations by DiagnosticsHook
                    losses.update(adversarial_diagnostics(self.entries, losses, clean, adv))
        finally:  # the features of a step are not kept until the next one
            for recorder in self._recorders.values():
                recorder.clear()
            self._features = {"student": {}, "teacher": {}}
        return losses

    def _add_adv_losses(self, losses: dict, adv_img, gt_bboxes, img_metas):
        """The adversarial losses over the images of the batch that have an adversarial copy
        (the others carry their clean image in ``adv_img``, only so that the batch stacks).
        Returns the (student, teacher) features of the adversarial images when the whole batch
        had them (what the diagnostics compare with the clean ones), else None."""
        keep = [i for i, meta in enumerate(img_metas) if meta.get("ori_filename") not in self.no_adv]
        if not keep:  # every key still logged, so that all ranks log the same ones
            losses.update({k: adv_img.new_zeros(()) for k, e in self.entries.items() if e[0] == "adv"})
            return None
        whole = len(keep) == len(img_metas)
        if not whole:
            adv_img = adv_img[keep]
            gt_bboxes, img_metas = [gt_bboxes[i] for i in keep], [img_metas[i] for i in keep]
        self.student.extract_feat(adv_img)
        adv = (self._features_of("student"), self._teacher_features())
        self._add_losses(losses, "adv", *adv, gt_bboxes, img_metas)
        return adv if whole else None

    def _add_losses(self, losses: dict, image: str, student: dict, teacher: dict, gt_bboxes, img_metas) -> None:
        """The entries' losses on ``image``'s features, in the order of the entries."""
        for key, (seen, s, t) in self.entries.items():
            if seen != image:
                continue
            loss = self.distill_losses[key]
            extra = (gt_bboxes, img_metas) if getattr(loss, "needs_boxes", False) else ()
            try:
                losses[key] = loss(student[s], teacher[t], *extra)
            except ValueError as err:  # e.g. feature maps of different spatial sizes
                raise IkdError(f"cannot distil teacher '{t}' into student '{s}': {err}") from None

    # ------------------------------------------------------------------------------- testing
    def simple_test(self, img, img_metas, **kwargs):
        return self.student.simple_test(img, img_metas, **kwargs)

    def aug_test(self, imgs, img_metas, **kwargs):
        return self.student.aug_test(imgs, img_metas, **kwargs)

    def show_result(self, *args, **kwargs):
        return self.student.show_result(*args, **kwargs)


def _rename_old_keys(state_dict, prefix, *_):
    """Load a checkpoint written before the loss list (``fgd_losses.*`` etc. -> ``distill_losses.*``)."""
    for key in [k for k in state_dict if k.startswith(tuple(prefix + p for p in _OLD_PREFIXES))]:
        rest = key[len(prefix):].split(".", 1)[1]
        state_dict[f"{prefix}distill_losses.{rest}"] = state_dict.pop(key)


def _resized(adv_img, seen):
    """``adv_img`` at the spatial size of ``seen`` (the clean batch the student's extract_feat
    received), resized as YOLOX resizes its batch (bilinear); itself where the sizes agree."""
    if seen is None or adv_img.shape[-2:] == seen.shape[-2:]:
        return adv_img
    return torch.nn.functional.interpolate(adv_img, size=tuple(seen.shape[-2:]), mode="bilinear", align_corners=False)
