"""The mask-rcnn code paths on a tiny real Mask R-CNN: train, attack (RPN + RoI classification
loss, mask head dropped), distill with masks through the stage-1 pipeline, segm evaluation."""

import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from ikd_cli.attack_run import read_records


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory, shapes_root, tiny_sets):
    work = tmp_path_factory.mktemp("mrcnn")
    preset = work / "tiny-mrcnn.yaml"
    config = REPO / "tests" / "configs" / "tiny_mask_rcnn.py"
    preset.write_text(
        f"teacher: {{config: '{config}', checkpoint: '{work}/teacher/latest.pth'}}\n"
        f"student: {{config: '{config}'}}\n"
        f"work_dir: '{work}'\n"
        "data: {train_ann: annotations/instances_train.json, train_images: train/,\n"
        "       val_ann: annotations/instances_val.json, val_images: val/,\n"
        "       classes: [circle, square, triangle, cross]}\n"
        "distill:\n  levels: [neck.fpn_convs.0.conv, neck.fpn_convs.1.conv, neck.fpn_convs.2.conv, neck.fpn_convs.3.conv]\n"
        "  alpha_adv: 2.5e-7\n"
        f"attack: {{out: '{work}/adv'}}\n")
    sets = [s for s in tiny_sets]
    run_cli("train", "--preset", preset, "--model", "teacher", "--device", "cpu", *sets)
    return preset, work, sets


def test_attack_a_two_stage_teacher(two_stage, shapes_root):
    preset, work, sets = two_stage
    run_cli("attack", "--preset", preset, "--device", "cpu", "--workers", "0", "--limit", "4", "--steps", "2", *sets)
    done, failed = read_records(work / "adv")
    assert len(done) == 4 and not failed
    assert all(0 < r["linf"] <= 8 for r in done.values())
    assert all(r["loss_after"] >= 0 for r in done.values())


def test_distill_a_two_stage_student_with_masks(two_stage):
    preset, work, sets = two_stage
    run_cli("attack", "--preset", preset, "--device", "cpu", "--workers", "0", "--steps", "1", "--overwrite", *sets)
    result = run_cli("distill", "--preset", preset, "--device", "cpu", "--epochs", "1", "--dfa-until", "1", *sets)
    assert "stage 1" in result.output
    log = (work / "distill" / "train.log").read_text()
    assert "loss_adv_neck_fpn_convs_3_conv" in log and "loss_mask" in log
    ev = run_cli("evaluate", work / "distill" / "student_latest.pth", "--device", "cpu")
    assert "segm" in ev.output
    report = json.loads((work / "distill" / "student_latest.eval-val.json").read_text())
    assert set(report) >= {"bbox", "segm"}


def test_attacked_loss_is_every_classification_term_and_nothing_else():
    import torch

    from ikd_cli.errors import IkdError
    from ikd_cli.teacher_loss import classification_loss

    losses = {"loss_rpn_cls": [torch.tensor(1.0), torch.tensor(2.0)], "loss_rpn_bbox": [torch.tensor(5.0)],
              "s0.loss_cls": torch.tensor(3.0), "s1.loss_cls": torch.tensor(0.5), "s0.acc": torch.tensor(90.0),
              "loss_mask": torch.tensor(7.0), "loss_pts_init": torch.tensor(9.0)}
    assert float(classification_loss(losses)) == 6.5
    with pytest.raises(IkdError, match="no classification loss"):
        classification_loss({"loss_bbox": torch.tensor(1.0)})
