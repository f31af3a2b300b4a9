"""A teacher that normalises images otherwise than its student (a caffe-style FCOS teacher, BGR
and std 1, beside an ImageNet-normalised RetinaNet student) sees the student's batch as its own
normalisation makes it: the same pixels, not the student's numbers read in another convention."""

import numpy as np
import pytest

from helpers import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

STUDENT = REPO / "configs" / "models" / "shapes_retinanet_r18.py"
CAFFE = dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False)


def _preset(tmp_path, teacher_config):
    from ikd_cli.config import presets

    tree = presets.load("shapes", {"teacher.config": str(teacher_config), "student.config": str(STUDENT),
                                   "teacher.checkpoint": "", "work_dir": str(tmp_path / "work"),
                                   "distill.dfa_until": 0})
    return tree


def _caffe_teacher(tmp_path):
    path = tmp_path / "caffe_teacher.py"
    path.write_text(
        f"_base_ = ['{STUDENT}']\n"
        f"img_norm_cfg = {CAFFE!r}\n"
        "data = dict(train=dict(pipeline=[\n"
        "    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),\n"
        "    dict(type='Resize', img_scale=(160, 160), keep_ratio=True), dict(type='RandomFlip', flip_ratio=0.5),\n"
        "    dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),\n"
        "    dict(type='DefaultFormatBundle'), dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])]))\n")
    return path


def test_alike_normalisations_feed_the_batch_as_it_is(tmp_path):
    from ikd_cli.distill.config import build_distill_config

    cfg = build_distill_config(_preset(tmp_path, STUDENT))
    assert "teacher_input" not in cfg.model


def test_a_caffe_teacher_gets_the_same_pixels_in_its_own_normalisation(tmp_path):
    import torch
    from mmdet.models import build_detector

    import ikd_cli.distill.distiller  # noqa: F401  (registers IKDDistiller)
    from ikd_cli.distill.config import build_distill_config

    cfg = build_distill_config(_preset(tmp_path, _caffe_teacher(tmp_path)))
    assert cfg.model.teacher_input["swap"] is True
    distiller = build_detector(cfg.model).eval()
    # An image as read (BGR, 0-255), normalised as the student's pipeline does (RGB, ImageNet).
    bgr = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 32, 32)).astype(np.float32))
    rgb = bgr.flip(1)
    student_in = (rgb - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)) / \
        torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    caffe_in = bgr - torch.tensor(CAFFE["mean"]).view(1, 3, 1, 1)  # what the teacher's own pipeline makes
    assert torch.allclose(distiller._as_teacher_input(student_in), caffe_in, atol=1e-3)
    # and the teacher's features in a training step are of that input
    seen = []
    distiller.teacher.backbone.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    distiller.student.extract_feat(student_in)
    distiller._teacher_features()
    assert torch.allclose(seen[-1], caffe_in, atol=1e-3)
