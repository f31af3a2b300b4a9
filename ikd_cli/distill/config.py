"""Preset -> the MMDetection config of an IKD distillation run.

The run is the student's config (data, schedule, evaluation) with the model replaced by an
``IKDDistiller`` holding teacher and student, plus ``data.train_dfa``: the student's training
set with IKD's stage-1 pipeline (adversarial image, instance corruption, adaptive crop), when
the run has a stage 1 (``distill.dfa_until`` > 0).
"""

from __future__ import annotations

import copy

from ikd_cli.config.distillers import DISTILLERS
from ikd_cli.config.layout import adversarial_set_dir, run_dir
from ikd_cli.config.mmdet import base_dataset, build_config, normalisation, pipeline_steps


def dfa_dataset(train: dict, preset: dict, adv_dir: str, skipped=()) -> dict:
    """Stage 1's training set config: the student's training set config ``train`` with IKD's steps
    added, each of its own steps paired or refused (:mod:`ikd_cli.distill.stage1`)."""
    from mmcv import ConfigDict

    from ikd_cli.distill.stage1 import stage1_dataset

    return ConfigDict(stage1_dataset(train, preset["distill"], adv_dir, skipped))


def clean_loss(preset: dict) -> dict:
    """The loss entry of ``distill.method`` on the clean image: its loss type, each weight
    ``distill.<method>.<key>`` under the loss argument the method table names."""
    method = preset["distill"]["method"]
    weights = preset["distill"][method]
    entry = DISTILLERS[method]
    return dict(type=entry.loss, **{w.arg: weights[key] for key, w in entry.weights.items()})


def levels(preset: dict):
    """``distill.levels`` as the distiller takes it: ``"auto"`` (the maps the models' extract_feat
    return, found when it is built) or a copy of the list of names and {student, teacher} pairs."""
    value = preset["distill"]["levels"]
    return value if isinstance(value, str) else [dict(v) if isinstance(v, dict) else v for v in value]


def adv_loss(preset: dict) -> dict:
    """IKD's adversarial feature loss entry (active in stage 1 only)."""
    d = preset["distill"]
    return dict(type="AdvFeatureLoss", image="adv", levels=levels(preset), loss_type=d["adv_loss"],
                alpha_adv=d["alpha_adv"])


def distill_losses(preset: dict) -> list[dict]:
    """The distiller's loss entries: the method's loss on the clean image, then IKD's adversarial
    feature loss, both on ``distill.levels``."""
    return [dict(clean_loss(preset), image="clean", levels=levels(preset)), adv_loss(preset)]


def skipped_images(preset: dict) -> dict:
    """The training images the preset's adversarial set skipped (``ikd attack --skip-bad``)."""
    from ikd_cli.attack.manifest import read_skipped

    adv_dir = adversarial_set_dir(preset, "train")
    return read_skipped(adv_dir) if adv_dir.is_dir() else {}


def teacher_input(student_cfg, teacher_cfg) -> dict | None:
    """How the student's training batch becomes the teacher's input where the two configs
    normalise images otherwise (a caffe-style teacher: BGR, std 1, beside an ImageNet-normalised
    student): the student's mean, std and channel order, the teacher's, and whether to swap the
    channels; None where they are alike (the batch is fed to the teacher as it is)."""
    student, teacher = (normalisation(pipeline_steps(base_dataset(c.data.train).pipeline))
                        for c in (student_cfg, teacher_cfg))
    if student == teacher:
        return None
    return dict(mean_in=list(student["mean"]), std_in=list(student["std"]), mean_out=list(teacher["mean"]),
                std_out=list(teacher["std"]), swap=student["to_rgb"] != teacher["to_rgb"])


def build_distill_config(preset: dict):
    teacher = build_config(preset, "teacher")
    cfg = build_config(preset, "student")
    d = preset["distill"]
    student_model = copy.deepcopy(cfg.model)
    teacher_model = copy.deepcopy(teacher.model)
    for model in (student_model, teacher_model):
        model.pop("pretrained", None)
    # The teacher's weights come from its checkpoint; no ImageNet download for its backbone.
    if teacher_model.get("backbone", {}).get("init_cfg"):
        teacher_model.backbone.init_cfg = None
    cfg.model = dict(
        type="IKDDistiller",
        teacher=teacher_model,
        student=student_model,
        teacher_checkpoint=preset["teacher"]["checkpoint"],
        init_student=d["init_student"],
        losses=distill_losses(preset),
    )
    converted = teacher_input(cfg, teacher)
    if converted:
        cfg.model.teacher_input = converted
    if preset["student"]["checkpoint"]:  # the whole student starts from it (checked to fit)
        cfg.model.student_checkpoint = preset["student"]["checkpoint"]
    adv_dir = str(adversarial_set_dir(preset, "train"))
    skipped = sorted(skipped_images(preset)) if d["dfa_until"] > 0 else []
    if skipped:  # the set's unreadable images: no adversarial loss, and dropped where they cannot load
        cfg.model.no_adv = skipped
        cfg.ikd_skipped = skipped
    if d["dfa_until"] > 0:  # plain distillation (0) neither reads nor checks a stage-1 set
        cfg.data.train_dfa = dfa_dataset(cfg.data.train, preset, adv_dir, skipped)
    cfg.dfa_until = d["dfa_until"]
    cfg.adv_dir = adv_dir
    cfg.work_dir = str(run_dir(preset, "distill"))
    cfg.custom_imports = dict(imports=["ikd_cli.distill.distiller", "ikd_cli.distill.pipelines"], allow_failed_imports=False)
    cfg.find_unused_parameters = True
    cfg.ikd = dict(preset=preset["name"], role="distill")
    return cfg
