"""Distill levels found, not guessed (issue 33, part 1): ``distill.levels: auto`` takes the maps a
detector's extract_feat returns, on any family; named levels get their channels from a dry forward
(SSD's ``neck.l2_norm``, a ``backbone.layer3``, DETR's ``backbone.layer4``); bad names are one line
naming them all with the closest valid ones, where the preset is resolved and before ``train`` and
``attack``; a name inside a ConvModule before its norm/activation is a warning; a
``{student, teacher}`` pair is a valid preset level; and YOLOX's teacher sees the batch its student
resized. Real mmdet models, shrunk (ResNet-18, narrow YOLOX), built in-process; no training."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mmdet")

from mmdet.models import build_detector  # noqa: E402

from helpers import run_cli  # noqa: E402
from ikd_cli.config import presets  # noqa: E402
from ikd_cli.config.presets import resolve_config_path  # noqa: E402
from ikd_cli.core.errors import IkdError  # noqa: E402
from ikd_cli.distill import levels as L  # noqa: E402
from ikd_cli.distill.config import build_distill_config  # noqa: E402

OLD_DEFAULT = [f"neck.fpn_convs.{i}.conv" for i in range(5)]  # the schema's default before `auto`
R18 = "dict(type='ResNet', depth=18, num_stages=4, out_indices={out}, frozen_stages=-1, norm_eval=False, " \
      "style='pytorch', init_cfg=None)"
# model config name -> (base in mmdet, overrides): each family shrunk to seconds on 2 CPU cores
CONFIGS = {
    "faster": ("faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py",
               f"model = dict(backbone={R18.format(out=(0, 1, 2, 3))}, neck=dict(in_channels=[64, 128, 256, 512]))"),
    "yolov3": ("yolo/yolov3_mobilenetv2_320_300e_coco.py", "model = dict(backbone=dict(init_cfg=None))"),
    # SSD's neck on a ResNet: layer3 and layer4 into SSDNeck, L2-normalised first level
    "ssd": ("ssd/ssd300_coco.py",
            f"model = dict(backbone=dict(_delete_=True, **{R18.format(out=(2, 3))}), neck=dict(in_channels=(256, 512), "
            "out_channels=(256, 512, 256, 256), level_strides=(2, 2), level_paddings=(1, 1), l2_norm_scale=20), "
            "bbox_head=dict(in_channels=(256, 512, 256, 256), anchor_generator=dict(strides=[16, 32, 64, 128], "
            "ratios=[[2], [2, 3], [2, 3], [2]], min_sizes=[30, 60, 111, 162], max_sizes=[60, 111, 162, 213])))"),
    "detr": ("detr/detr_r50_8x2_150e_coco.py",
             f"model = dict(backbone={R18.format(out=(3,))}, bbox_head=dict(in_channels=512))"),
    # a backbone for 4-channel images: no dry forward on an RGB image runs
    "rgbd": ("retinanet/retinanet_r50_fpn_1x_coco.py", f"model = dict(backbone=dict(in_channels=4, depth=18, "
             "init_cfg=None), neck=dict(in_channels=[64, 128, 256, 512]))"),
    "yolox": ("yolox/yolox_tiny_8x8_300e_coco.py",
              "model = dict(backbone=dict(widen_factor=0.125), neck=dict(in_channels=[32, 64, 128], out_channels=32), "
              "bbox_head=dict(num_classes=4, in_channels=32, feat_channels=32))"),
}
# what auto finds: (channels, stride) of each extract_feat output
AUTO = {"faster": [(256, s) for s in (4, 8, 16, 32, 64)],
        "yolov3": [(96, 32), (96, 16), (96, 8)],
        "ssd": [(256, 16), (512, 32), (256, 64), (256, 128)],
        "detr": [(512, 32)],
        "yolox": [(32, 8), (32, 16), (32, 32)]}


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("level-configs")
    for name, (base, overrides) in CONFIGS.items():
        (folder / f"{name}.py").write_text(f"_base_ = '{resolve_config_path('mmdet::' + base)}'\n{overrides}\n")
    return folder


def _preset(folder, family: str, levels, student: str = "") -> str:
    """A preset YAML of ``family`` (teacher and student, or ``student``'s config), with ``levels``."""
    path = folder / f"{family}-{student}-{abs(hash(repr(levels))) % 10**8}.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"teacher": {"config": str(folder / f"{family}.py")},
                                    "student": {"config": str(folder / f"{student or family}.py")},
                                    "work_dir": str(folder / "work"), "distill": {"levels": levels}}))
    return str(path)


def _probe(folder, family: str) -> L.Probe:
    return L.probe(L.build_model(presets.load(_preset(folder, family, "auto")), "student"))


def _one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    return " ".join(lines)


# ------------------------------------------------------------------- bad names, all at once
def test_faster_rcnn_old_default_is_one_error_naming_the_fifth_level(configs):
    """Faster R-CNN's FPN has four fpn_convs (its fifth map is a max-pool): the old default's
    fifth name, and a second typo, are one line each with their closest names; before, the
    distillation died on the first bad name after train and attack."""
    preset = _preset(configs, "faster", OLD_DEFAULT + ["neck.fpn_conv.1.conv"])
    result = run_cli("presets", "show", preset, "--model", "distill", expect=1)
    text = _one_line(result)
    assert text.count("error:") == 1 and "Traceback" not in result.output
    assert "'neck.fpn_convs.4.conv' is no feature map of the student and the teacher" in text
    assert "did you mean neck.fpn_convs.3.conv" in text
    assert "'neck.fpn_conv.1.conv'" in text and "did you mean neck.fpn_convs.1.conv" in text
    # the preset's YAML is still shown, with the same line as a warning
    shown = run_cli("presets", "show", preset)
    assert "levels:" in shown.output and "warning" in shown.output and "neck.fpn_convs.4.conv" in shown.output
    # and train and attack refuse before their work starts (no run folder made)
    for command in (("train", "--preset", preset, "--model", "teacher"), ("attack", "--preset", preset)):
        assert "'neck.fpn_convs.4.conv' is no feature map" in _one_line(run_cli(*command, expect=1))
    assert not (configs / "work").exists()


def test_a_model_the_dry_forward_cannot_run(configs, capsys):
    """Refused in one line where the levels are asked for; only a warning before train and attack
    (a model may run where the check cannot)."""
    preset = _preset(configs, "rgbd", "auto")
    result = run_cli("presets", "levels", preset, expect=1)
    assert "a dry forward of RetinaNet's extract_feat on a 320x320 image failed" in _one_line(result)
    L.check_before_run(presets.load(preset), "train")
    assert "not checked before `ikd train`" in capsys.readouterr().out


def test_refusals_say_why(configs):
    found = _probe(configs, "faster")
    pairs = [("neck", "neck"), ("rpn_head.rpn_cls", "rpn_head.rpn_cls"), ("backbone.layer1.0.relu",) * 2]
    with pytest.raises(IkdError) as err:
        L.resolve([p[0] for p in pairs], found, found)
    text = str(err.value)
    assert "'neck' is no feature map" in text and "tuple of 5 values" in text
    assert "'rpn_head.rpn_cls'" in text and "does not run in extract_feat" in text
    assert "'backbone.layer1.0.relu'" in text and "runs 2 times" in text
    with pytest.raises(IkdError, match="stride 8, the teacher's"):  # a pair of other strides
        L.resolve([{"student": "feat.1", "teacher": "feat.0"}], found, found)


# --------------------------------------------------------------------------------------- auto
@pytest.mark.parametrize("family", sorted(AUTO))
def test_auto_takes_the_extract_feat_outputs(configs, family):
    """Every family's extract_feat outputs, channels and strides from the dry forward."""
    found = _probe(configs, family)
    assert [(m.channels, m.stride) for m in found.outputs] == AUTO[family]
    pairs = L.resolve("auto", found, found)
    assert pairs == [(f"feat.{i}", f"feat.{i}") for i in range(len(AUTO[family]))]


def test_auto_refuses_models_of_other_output_counts(configs):
    with pytest.raises(IkdError, match="the student's gives 1 and the teacher's 5"):
        L.resolve("auto", _probe(configs, "detr"), _probe(configs, "faster"))


def test_the_modules_that_produce_each_output(configs):
    """``ikd presets levels`` lists beside feat.i the modules whose output is that very tensor."""
    faster, detr = _probe(configs, "faster"), _probe(configs, "detr")
    assert faster.producers(0) == ["neck.fpn_convs.0.conv", "neck.fpn_convs.0"]
    assert faster.producers(4) == []  # the max-pooled fifth level: no module makes it
    assert "backbone.layer4" in detr.producers(0)


# ---------------------------------------------------------------- named levels: the dry forward
def test_ssd_l2_norm_and_a_resnet_layer3_are_levels(configs):
    """Refused before ('cannot tell the output channels'): their channels come from the forward."""
    found = _probe(configs, "ssd")
    assert L.resolve(["neck.l2_norm", "backbone.layer3"], found, found)
    assert (found.maps["neck.l2_norm"].channels, found.maps["neck.l2_norm"].stride) == (256, 16)
    assert (found.maps["backbone.layer3"].channels, found.maps["backbone.layer3"].stride) == (256, 16)
    preset = presets.load(_preset(configs, "ssd", ["neck.l2_norm", "backbone.layer3"]), {"distill.method": "mgd"})
    model = _models_only(preset)
    assert model.distill_losses["loss_mgd_neck_l2_norm"].student_channels == 256


def test_detr_backbone_layer4_is_a_level(configs):
    found = _probe(configs, "detr")
    assert L.resolve(["backbone.layer4"], found, found) == [("backbone.layer4", "backbone.layer4")]
    assert found.maps["backbone.layer4"].channels == 512 and found.maps["backbone.layer4"].output == 0


def test_a_name_inside_a_convmodule_before_its_activation_warns(configs):
    """YOLOv3's neck: ConvModules of conv, BN and LeakyReLU. ``X.conv`` is pre-activation: one
    warning, shown by ``presets show``; RetinaNet's fpn_convs.N.conv (no norm or act) says nothing."""
    found = _probe(configs, "yolov3")
    pairs = L.resolve(["neck.detect1.conv5.conv", "neck.detect2.conv5"], found, found)
    lines = L.warnings(pairs, found, found)
    assert len(lines) == 1  # for student and teacher alike; the ConvModule's own output is no warning
    assert "'neck.detect1.conv5.conv' of the student and the teacher" in lines[0] and "pre-activation" in lines[0] and "'neck.detect1.conv5'" in lines[0]
    result = run_cli("presets", "show", _preset(configs, "yolov3", ["neck.detect1.conv5.conv"]))
    assert "pre-activation" in result.output
    shapes = presets.load("shapes")  # five neck.fpn_convs.N.conv
    assert L.check_preset(shapes)[1] == []


# ------------------------------------------------------------------------- the preset's levels
def test_a_level_pair_in_a_preset_builds(configs):
    levels = [{"student": "neck.fpn_convs.0.conv", "teacher": "neck.fpn_convs.0"}, "feat.1"]
    preset = presets.load("shapes", {"distill.levels": levels})
    model = build_detector(build_distill_config(preset).model)
    assert model.entries["loss_fgd_neck_fpn_convs_0_conv"] == ("clean", "neck.fpn_convs.0.conv", "neck.fpn_convs.0")
    assert model.entries["loss_adv_feat_1"] == ("adv", "feat.1", "feat.1")
    with pytest.raises(IkdError, match="distill.levels must be auto or a list of"):
        presets.load("shapes", {"distill.levels": [{"student": "feat.0"}]})
    assert presets.load(_preset(configs, "faster", levels))["distill"]["levels"] == levels


def test_presets_levels_lists_both_models(configs):
    preset = _preset(configs, "detr", [{"student": "neck.fpn_convs.4.conv", "teacher": "backbone.layer4"}],
                     student="faster")
    result = run_cli("presets", "levels", preset, expect=1)  # a DETR teacher, a Faster R-CNN student
    assert "feat.4" in result.output and "extract_feat output 4" in result.output
    assert "neck.fpn_convs.3.conv" in result.output and "backbone.layer4" in result.output
    assert "'neck.fpn_convs.4.conv' is no feature map of the student:" in _one_line(result)
    from ikd_cli import api

    found = api.levels(_preset(configs, "faster", "auto"), every=True)
    assert [r["name"] for r in found["student"] if r["picked"]] == [f"feat.{i}" for i in range(5)]
    assert {"backbone.layer4", "neck.lateral_convs.0"} <= {r["name"] for r in found["teacher"]}
    assert not found["error"] and found["pairs"][0] == ("feat.0", "feat.0")


# ------------------------------------------------------------------- distilling with auto
def _batch(n: int = 2, side: int = 96, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 3, side, side, generator=gen)
    metas = [dict(img_shape=(side, side, 3), pad_shape=(side, side, 3), ori_shape=(side, side, 3), flip=False,
                  scale_factor=1.0, ori_filename=f"{i}.png") for i in range(n)]
    boxes = [torch.tensor([[8.0, 10.0, 40.0, 50.0], [50.0, 30.0, 80.0, 70.0]]) * side / 96 for _ in range(n)]
    labels = [torch.tensor([0, 2]) for _ in range(n)]
    return img, metas, boxes, labels


def _distiller(preset: dict, seed: int = 0):
    torch.manual_seed(seed)
    return build_detector(build_distill_config(preset).model)


def _models_only(preset: dict):
    """The distiller of the preset's two model configs as they are (no data pipeline: YOLOX's
    and SSD's own augmentation are another part of issue 33)."""
    from ikd_cli.config.mmdet import load_mmdet_config
    from ikd_cli.distill import distiller  # noqa: F401  (registers IKDDistiller)
    from ikd_cli.distill.config import distill_losses

    models = [load_mmdet_config(resolve_config_path(preset[role]["config"])).model for role in ("teacher", "student")]
    return build_detector(dict(type="IKDDistiller", teacher=models[0], student=models[1], losses=distill_losses(preset)))


def test_one_distillation_iteration_with_auto():
    """The shapes preset with ``distill.levels: auto``: finite FGD and adversarial terms on the
    five FPN maps, keyed by feat.i; and the features are the fpn_convs.N.conv outputs (the same
    losses, to the last bit, as the preset's own explicit names)."""
    auto = _distiller(presets.load("shapes", {"distill.levels": "auto"}))
    img, metas, boxes, labels = _batch()
    losses = auto.forward_train(img, metas, boxes, labels, adv_img=img + 0.1)
    for kind in ("fgd", "adv"):
        keys = [k for k in losses if k.startswith(f"loss_{kind}_")]
        assert keys == [f"loss_{kind}_feat_{i}" for i in range(5)]
        assert all(math.isfinite(losses[k].item()) and losses[k].item() > 0 for k in keys)
    named = _distiller(presets.load("shapes"))
    named_losses = named.forward_train(img, metas, boxes, labels, adv_img=img + 0.1)
    for i in range(5):
        for kind in ("fgd", "adv"):
            assert losses[f"loss_{kind}_feat_{i}"].item() == named_losses[f"loss_{kind}_neck_fpn_convs_{i}_conv"].item()


def test_yolox_teacher_sees_the_batch_its_student_resized(configs):
    """YOLOX resizes its batch inside forward_train (every 10 iterations to a random size): the
    teacher's features are computed on that same tensor, so their sizes agree (before: the
    teacher saw the batch as loaded, 'different spatial sizes' after iteration 10)."""
    preset = presets.load(_preset(configs, "yolox", "auto"))
    model = _models_only(preset)
    model.student._input_size = (128, 128)  # what YOLOX's _random_resize sets; the batch is 64 x 64
    sizes = {"student": [], "teacher": []}
    for role in sizes:
        getattr(model, role).neck.register_forward_hook(
            lambda module, inputs, out, role=role: sizes[role].append([tuple(f.shape[-2:]) for f in out]))
    model.diagnose = True  # the adversarial image's features are compared with the clean ones
    img, metas, boxes, labels = _batch(side=64)
    losses = model.forward_train(img, metas, boxes, labels, adv_img=img + 0.1)
    assert sizes["student"][0] == [(16, 16), (8, 8), (4, 4)]  # stride 8 of the resized 128 x 128 batch
    assert sizes["teacher"] == sizes["student"]  # clean, then the adversarial batch resized alike
    assert all(math.isfinite(v.item()) for k, v in losses.items() if k.startswith(("loss_fgd", "loss_adv", "diag_")))
    assert any(k.startswith("diag_teacher_dist") for k in losses)
