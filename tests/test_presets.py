"""Presets resolve into real MMDetection configs (the ones mmdet ships), with overrides."""


import pytest

from helpers import run_cli
from ikd_cli.config import presets
from ikd_cli.core.errors import IkdError
from ikd_cli.config.mmdet import build_config
from ikd_cli.distill.config import build_distill_config


MODEL_TYPES = {"retinanet": {"teacher": "RetinaNet", "student": "RetinaNet"},
               "reppoints": {"teacher": "RepPointsDetector", "student": "RepPointsDetector"},
               "mask-rcnn": {"teacher": "CascadeRCNN", "student": "MaskRCNN"},
               "shapes": {"teacher": "RetinaNet", "student": "RetinaNet"}}


@pytest.mark.parametrize("name", ["retinanet", "reppoints", "mask-rcnn", "shapes"])
def test_every_preset_resolves_to_real_mmdet_configs(name):
    preset = presets.load(name)
    for role in ("teacher", "student"):
        cfg = build_config(preset, role)
        assert cfg.model.type == MODEL_TYPES[name][role]  # the named mmdet model config, built
        # a teacher may have its own, longer schedule (shapes: 36 epochs against the students' 12)
        assert cfg.runner.max_epochs == (preset[role].get("epochs") or preset["train"]["epochs"])
        assert cfg.optimizer.lr == preset["train"]["lr"]
        assert cfg.data.train.ann_file.endswith(preset["data"]["train_ann"])


def test_reference_hyperparameters():
    rtn = presets.load("retinanet")
    assert "retinanet_x101_64x4d_fpn_1x_coco" in rtn["teacher"]["config"]
    assert rtn["teacher"]["checkpoint"].endswith("20200130-366f5af1.pth")
    assert rtn["distill"]["fgd"] == {"temp": 0.5, "alpha": 1e-3, "beta": 5e-4, "gamma": 5e-4, "lambda": 5e-6}
    assert rtn["distill"]["alpha_adv"] == 1e-5 and rtn["distill"]["dfa_until"] == 16
    assert (rtn["attack"]["method"], rtn["attack"]["eps"], rtn["attack"]["alpha"], rtn["attack"]["steps"]) == \
        ("difgsm", 8.0, 2.0, 5)
    assert presets.load("reppoints")["distill"]["fgd"]["alpha"] == 1.6e-3
    mrc = presets.load("mask-rcnn")
    assert mrc["distill"]["alpha_adv"] == 2.5e-7 and mrc["train"]["lr"] == 0.02
    assert len(mrc["distill"]["levels"]) == 4
    cfg = build_config(mrc, "student")
    assert cfg.evaluation.metric == ["bbox", "segm"]


def test_overrides_reach_the_mmdet_config(tmp_path):
    preset = presets.load("retinanet", presets.parse_set(
        ["data.root=/data/coco2017", "train.lr=0.005", "train.epochs=3", "data.classes=[a, b]"]))
    cfg = build_config(preset, "student")
    assert cfg.data.train.ann_file == "/data/coco2017/annotations/instances_train2017.json"
    assert cfg.optimizer.lr == 0.005 and cfg.runner.max_epochs == 3
    assert cfg.model.bbox_head.num_classes == 2 and cfg.data.val.classes == ("a", "b")


def test_type_and_key_errors():
    with pytest.raises(IkdError, match="did you mean attack.eps"):
        presets.load("shapes", presets.parse_set(["eps=4"]))
    with pytest.raises(IkdError, match="must be true/false"):
        presets.load("shapes", presets.parse_set(["distill.init_student=3"]))
    with pytest.raises(IkdError, match="KEY=VALUE"):
        presets.parse_set(["novalue"])


def test_broken_preset_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(IkdError, match="not valid YAML"):
        presets.load(str(bad))
    odd = tmp_path / "odd.yaml"
    odd.write_text("teacher:\n  weights: x.pth\n")
    with pytest.raises(IkdError, match="unknown key 'teacher.weights'"):
        presets.load(str(odd))
    with pytest.raises(IkdError, match="preset file not found"):
        presets.load(str(tmp_path / "none.yaml"))


def test_presets_cli_list_and_show():
    out = run_cli("presets", "list").output
    for name in ("retinanet", "reppoints", "mask-rcnn", "shapes"):
        assert name in out
    shown = run_cli("presets", "show", "retinanet", "--model", "teacher").output
    assert "ResNeXt" in shown and "instances_train2017.json" in shown


@pytest.mark.parametrize("name", ["retinanet", "reppoints", "mask-rcnn"])
def test_reference_distill_configs_resolve(name):
    preset = presets.load(name)
    cfg = build_distill_config(preset)
    assert cfg.model.type == "IKDDistiller" and cfg.dfa_until == 16
    clean, adv = cfg.model.losses
    assert clean["type"] == "FGDLoss" and clean["alpha_fgd"] == preset["distill"]["fgd"]["alpha"]
    assert adv == dict(type="AdvFeatureLoss", image="adv", levels=preset["distill"]["levels"],
                       loss_type="mse", alpha_adv=preset["distill"]["alpha_adv"])
    steps = [step["type"] for step in cfg.data.train_dfa.pipeline]
    assert steps.index("LoadAdversarialImage") == steps.index("LoadAnnotations") + 1
    assert steps.index("AdaptiveCrop") == steps.index("RandomFlip") + 1
    assert steps.index("FormatAdversarialImage") == steps.index("Collect") - 1
    assert "adv_img" in cfg.data.train_dfa.pipeline[-1]["keys"]
    assert cfg.adv_dir == preset["attack"]["out"].format(**preset["attack"])  # where `ikd attack` writes
    assert "adv_img" not in str(cfg.data.train.pipeline)  # stage 2 is the stock pipeline


def test_reference_retinanet_distiller_builds_from_mmdet_configs():
    """X101-64x4d teacher and R50 student from mmdet's own configs (random weights, no download)."""
    import ikd_cli.distill.distiller  # noqa: F401
    from mmdet.models import build_detector

    cfg = build_distill_config(presets.load("retinanet"))
    cfg.model.teacher_checkpoint = None
    cfg.model.student.backbone.init_cfg = None
    model = build_detector(cfg.model)
    assert type(model.teacher.backbone).__name__ == "ResNeXt" and model.student.backbone.depth == 50
    kinds = [type(loss).__name__ for loss in model.distill_losses.values()]
    assert kinds == ["FGDLoss"] * 5 + ["AdvFeatureLoss"] * 5  # FGD on the clean image, then IKD's loss
    assert all(loss.align is None for loss in model.distill_losses.values())  # 256 = 256 channels
    assert [image for image, _, _ in model.entries.values()] == ["clean"] * 5 + ["adv"] * 5


@pytest.mark.parametrize("name,alpha,levels", [("retinanet", 2e-5, 5), ("reppoints", 2e-5, 5),
                                               ("mask-rcnn", 5e-7, 4)])
def test_reference_mgd_distillers(name, alpha, levels):
    """IKD on MGD: the reference's alpha_mgd and levels, everything else as for FGD."""
    fgd = build_distill_config(presets.load(name))
    mgd = build_distill_config(presets.load(name, {"distill.method": "mgd"}))
    clean, adv = mgd.model.losses
    assert clean == dict(type="MGDLoss", alpha_mgd=alpha, lambda_mgd=0.65, image="clean",
                         levels=[f"neck.fpn_convs.{i}.conv" for i in range(levels)])
    assert adv == fgd.model.losses[1]  # the adversarial feature loss is the same entry
    assert mgd.dfa_until == fgd.dfa_until == 16 and mgd.optimizer == fgd.optimizer
    assert mgd.data.train_dfa.pipeline == fgd.data.train_dfa.pipeline


def test_reference_retinanet_mgd_distiller_builds():
    import ikd_cli.distill.distiller  # noqa: F401
    from mmdet.models import build_detector

    cfg = build_distill_config(presets.load("retinanet", {"distill.method": "mgd"}))
    cfg.model.teacher_checkpoint = None
    cfg.model.student.backbone.init_cfg = None
    model = build_detector(cfg.model)
    mgd = [loss for loss in model.distill_losses.values() if type(loss).__name__ == "MGDLoss"]
    assert len(mgd) == 5 and all(m.align is None and m.generation[0].in_channels == 256 for m in mgd)
    assert "loss_mgd_neck_fpn_convs_4_conv" in model.distill_losses


def test_presets_show_prints_the_resolved_distiller():
    out = run_cli("presets", "show", "retinanet", "--model", "distill", "--set", "distill.method=mgd").output
    assert "MGDLoss" in out and "lambda_mgd=0.65" in out and "FGDLoss" not in out
    assert "distill.method must be one of fgd, mgd" in run_cli(
        "presets", "show", "shapes", "--set", "distill.method=xyz", expect=1).output


def test_schema_checks_types_choices_and_bounds_once():
    """Each key's rules come from config/schema.py, on a preset file and on --set alike."""
    cases = {"teacher.epochs=2.5": "teacher.epochs must be an integer >= 1 or null, got 2.5",
             "attack.eps=0": "attack.eps must be a number > 0 and <= 255, got 0",
             "attack.method=cw": "attack.method must be one of difgsm, mifgsm",
             "distill.dfa_until=-1": "distill.dfa_until must be an integer >= 0, got -1",
             "distill.mgd.lambda=1": r"distill.mgd.lambda must be a number >= 0 and < 1, got 1",
             "train.lr_steps=[8, x]": r"train.lr_steps must be a list of epochs \(integers\)",
             "data.shapes.num_val=0": "data.shapes.num_val must be an integer >= 1, got 0"}
    for item, message in cases.items():
        with pytest.raises(IkdError, match=message):
            presets.load("shapes", presets.parse_set([item]))
    assert presets.load("shapes", presets.parse_set(["data.classes=auto"]))["data"]["classes"] == "auto"
    assert presets.load("shapes", presets.parse_set(["attack.steps=3e0"]))["attack"]["steps"] == 3


def test_help_and_keys_show_the_schema_defaults():
    from ikd_cli.config.schema import SETTINGS

    keys = run_cli("presets", "keys", "distill").output
    assert "distill.alpha_adv" in keys and "1e-05" in keys and "attack.eps" not in keys
    run_cli("presets", "keys", "nosuch", expect=1)
    helptext = " ".join(run_cli("attack", "--help").output.split())
    for option in ("eps", "steps", "resize_rate"):
        s = SETTINGS[f"attack.{option}"]
        shown = f"{s.default:g}" if isinstance(s.default, float) else str(s.default)
        assert f"{shown} unless the preset sets it" in helptext.replace("│ ", "").replace(" │", ""), option


def test_presets_show_path_is_the_layout():
    from ikd_cli.config.layout import adversarial_set_dir, final_checkpoint

    tree = presets.load("shapes", {"work_dir": "w"})
    assert run_cli("presets", "show", "shapes", "--path", "attack.out").output.strip() == \
        str(adversarial_set_dir(tree, "train"))
    assert run_cli("presets", "show", "shapes", "--path", "distill", "--work-dir", "w").output.strip() == \
        str(final_checkpoint(tree, "distill")) == "w/distill/student_latest.pth"
    assert run_cli("presets", "show", "shapes", "--path", "work_dir", "--work-dir", "w").output.strip() == "w"
    assert run_cli("presets", "show", "shapes", "--path", "data.val_images", "--data-root", "d").output.strip() == \
        str(presets.data_path(presets.load("shapes", {"data.root": "d"}), "val_images")) == "d/val"
    assert "--path takes" in run_cli("presets", "show", "shapes", "--path", "nope", expect=1).output
