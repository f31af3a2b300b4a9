"""What the preset keeps of the model config's training recipe (``train.optimizer``): with
``config`` the optimizer (type, lr, paramwise_cfg), gradient clip, lr schedule and custom_hooks
are the model config's, a train.* value the preset sets replaces its part, and every replacement
is one line on the terminal and in run.json; with ``sgd`` the reference presets' SGD, to the digit."""

import json

import pytest
import torch

from helpers import DEVICE, REPO, run_cli
from ikd_cli.config import presets
from ikd_cli.config.mmdet import build_config
from ikd_cli.core.errors import IkdError

DETR = "mmdet::detr/detr_r50_8x2_150e_coco.py"
SHAPES_MODEL = REPO / "configs" / "models" / "shapes_retinanet_r18.py"


def _sgd(lr, steps, epochs, warmup_iters=500):
    """The reference presets' built schedule, as build_config wrote it before train.optimizer existed."""
    return dict(optimizer=dict(type="SGD", lr=lr, momentum=0.9, weight_decay=0.0001),
                optimizer_config=dict(grad_clip=dict(max_norm=35.0, norm_type=2)),
                lr_config=dict(policy="step", warmup="linear", warmup_iters=warmup_iters, warmup_ratio=0.001,
                               step=steps),
                runner=dict(type="EpochBasedRunner", max_epochs=epochs))


TODAY = {("shapes", "teacher"): _sgd(0.04, [24, 33], 36, 100), ("shapes", "student"): _sgd(0.04, [8, 11], 12, 100),
         **{(name, role): _sgd(lr, [16, 22], 24) for name, lr in (("retinanet", 0.01), ("mask-rcnn", 0.02),
                                                                  ("reppoints", 0.01))
            for role in ("teacher", "student")}}


def _schedule(cfg) -> dict:
    return {key: cfg[key].to_dict() if hasattr(cfg[key], "to_dict") else cfg[key]
            for key in ("optimizer", "optimizer_config", "lr_config", "runner")}


@pytest.mark.parametrize("name,role", sorted(TODAY))
def test_reference_presets_keep_todays_sgd_to_the_digit(name, role):
    preset = presets.load(name)
    assert preset["train"]["optimizer"] == "sgd"  # said in the preset, with why
    assert _schedule(build_config(preset, role)) == TODAY[name, role]


def _tree(config: str, **train) -> dict:
    data = dict(root="/nowhere/", train_ann="a.json", train_images="t/", val_ann="v.json", val_images="v/",
                classes=["a", "b"])
    return dict(name="mine", teacher=dict(config=config), student=dict(config=config), data=data, train=train)


def test_detr_keeps_its_adamw_paramwise_lr_and_clip():
    cfg = build_config(presets.resolve(_tree(DETR)), "student")
    assert cfg.optimizer.to_dict() == dict(type="AdamW", lr=0.0001, weight_decay=0.0001, paramwise_cfg=dict(
        custom_keys={"backbone": dict(lr_mult=0.1, decay_mult=1.0)}))
    assert cfg.optimizer_config.to_dict() == dict(grad_clip=dict(max_norm=0.1, norm_type=2))
    assert cfg.lr_config.to_dict() == dict(policy="step", step=[100])
    assert cfg.runner.max_epochs == 150
    assert [h["type"] for h in cfg.custom_hooks] == ["NumClassCheckHook"]
    assert cfg.ikd_replaced == []  # nothing replaced, nothing to say
    # and the optimizer mmcv builds from it has the backbone at a tenth of the lr
    from mmcv.runner import build_optimizer
    from mmdet.models import build_detector

    optimizer = build_optimizer(build_detector(cfg.model), cfg.optimizer)
    assert type(optimizer).__name__ == "AdamW"
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([1e-5, 1e-4])


def test_a_train_key_the_preset_sets_replaces_only_its_part_and_says_so():
    cfg = build_config(presets.resolve(_tree(DETR, lr=2e-4, grad_clip=1.0, epochs=3)), "student")
    assert cfg.optimizer.type == "AdamW" and cfg.optimizer.lr == 2e-4 and "paramwise_cfg" in cfg.optimizer
    assert cfg.optimizer_config.grad_clip.max_norm == 1.0 and cfg.runner.max_epochs == 3
    assert cfg.lr_config.to_dict() == dict(policy="step", step=[100])  # lr_steps not set: the config's
    said = "\n".join(cfg.ikd_replaced)
    assert "optimizer: AdamW lr 0.0001" in said and "-> AdamW lr 0.0002" in said and "train.lr" in said
    assert "grad clip: max_norm 0.1 (model config) -> max_norm 1 (train.grad_clip)" in said
    assert "epochs: 150 (model config) -> 3 (train.epochs)" in said
    assert len(cfg.ikd_replaced) == 3
    with pytest.raises(IkdError, match="train.momentum.*AdamW.*train.optimizer"):
        build_config(presets.resolve(_tree(DETR, momentum=0.95)), "student")


def test_sgd_replaces_detrs_recipe_one_line_each():
    cfg = build_config(presets.resolve(_tree(DETR, optimizer="sgd")), "student")
    assert cfg.optimizer.to_dict() == dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0001)
    assert cfg.optimizer_config.grad_clip.max_norm == 35.0 and cfg.runner.max_epochs == 24
    assert not cfg.get("custom_hooks")
    said = cfg.ikd_replaced
    assert ("optimizer: AdamW lr 0.0001, weight_decay 0.0001, paramwise_cfg (model config) -> SGD lr 0.01, "
            "momentum 0.9, weight_decay 0.0001 (train.optimizer: sgd)") in said
    assert "grad clip: max_norm 0.1 (model config) -> max_norm 35 (train.optimizer: sgd)" in said
    assert "custom_hooks dropped: NumClassCheckHook (train.optimizer: sgd)" in said
    assert any(line.startswith("lr_config: step [100] (model config) -> step [16, 22]") for line in said)
    assert "epochs: 150 (model config) -> 24 (train.optimizer: sgd)" in said
    assert all("\n" not in line for line in said)


def test_custom_hooks_are_run_and_every_replacement_is_on_the_terminal_and_in_run_json(tiny_sets, tmp_path):
    """A model config with its own hook (mmcv's EMAHook: its ema_ buffers land in the checkpoint)
    trains with it; the one key the run sets (train.lr) is said once, on the terminal and in run.json."""
    config = tmp_path / "with_ema.py"
    config.write_text(f"_base_ = [{str(SHAPES_MODEL)!r}]\n"
                      "custom_hooks = [dict(type='NumClassCheckHook'), dict(type='EMAHook', momentum=0.5)]\n")
    result = run_cli("train", "--preset", "shapes", "--model", "student", "--work-dir", tmp_path / "w",
                     "--device", DEVICE, *tiny_sets, "--set", f"student.config={config}",
                     "--set", "train.optimizer=config", "--set", "train.lr=0.02", "--set", "train.eval_interval=0")
    line = "optimizer: SGD lr 0.04, momentum 0.9, weight_decay 0.0001 (model config) -> SGD lr 0.02, momentum 0.9, " \
           "weight_decay 0.0001 (train.lr)"
    assert line in result.output.replace("\n", " ") or line in result.output
    run = json.loads((tmp_path / "w" / "student" / "run.json").read_text())
    assert line in run["replaced"] and not any("custom_hooks" in r for r in run["replaced"])
    state = torch.load(tmp_path / "w" / "student" / "latest.pth", map_location="cpu", weights_only=False)
    assert any(key.startswith("ema_") for key in state["state_dict"])


def test_a_run_saved_before_train_optimizer_continues_as_sgd(tmp_path):
    """A run's preset.yaml made before the key existed trained with SGD: read back so, its
    continuation is not refused as "other settings", nor rebuilt with the model config's recipe."""
    from ikd_cli.train.session import load_saved_preset, preset_difference

    preset = presets.load("shapes")
    tree = presets.load_yaml(presets.dump(preset))
    del tree["train"]["optimizer"]
    (tmp_path / "preset.yaml").write_text(presets.dump(tree))
    saved = load_saved_preset(tmp_path)
    assert saved["train"]["optimizer"] == "sgd" and preset_difference(saved, preset) == ""
    assert presets.load(str(tmp_path / "preset.yaml"))["train"]["optimizer"] == "config"  # a preset of the user's
