"""`ikd train` and `ikd evaluate` on the real stack with the tiny shapes data."""

import json
import shutil

import pytest

from helpers import DEVICE, run_cli


def test_train_writes_checkpoint_config_and_keeps_chatter_in_the_log(trained_teacher):
    work = trained_teacher.parent
    assert (work / "config.py").read_text().count("RetinaNet") >= 1
    assert "name: shapes" in (work / "preset.yaml").read_text()
    log = (work / "train.log").read_text()
    assert "mmdet" in log or "mmcv" in log  # MMDetection's own logging landed in the file
    assert list(work.glob("epoch_*.pth")) and list(work.glob("best_bbox_mAP_epoch_*.pth"))
    import torch

    meta = torch.load(trained_teacher, map_location="cpu", weights_only=False)["meta"]
    assert meta["ikd_role"] == "teacher" and meta["CLASSES"] == ("circle", "square", "triangle", "cross")


def test_train_terminal_output_is_quiet(tmp_path, tiny_sets):
    result = run_cli("train", "--preset", "shapes", "--model", "student", "--work-dir", tmp_path,
                     "--device", DEVICE, *tiny_sets)
    assert "mmcv - INFO" not in result.output and "initialized by" not in result.output
    assert "done" in result.output


def test_evaluate_matches_pycocotools_exactly(own_teacher, shapes_root):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    result = run_cli("evaluate", own_teacher, "--device", DEVICE)
    assert "AP50" in result.output
    report = json.loads(own_teacher.with_name("latest.eval-val.json").read_text())
    detections = own_teacher.with_name("latest.eval-val.bbox.json")
    assert report["bbox"]["detections"] > 0
    gt = COCO(str(shapes_root / "annotations" / "instances_val.json"))
    ev = COCOeval(gt, gt.loadRes(str(detections)), "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
    for i, name in enumerate(("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")):
        assert report["bbox"][name] == pytest.approx(float(ev.stats[i]), abs=0), name


def test_evaluate_on_another_copy_of_the_images(own_teacher, shapes_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(shapes_root / "val", copy)
    run_cli("evaluate", own_teacher, "--device", DEVICE)
    run_cli("evaluate", own_teacher, "--images", copy, "--device", DEVICE)
    clean = json.loads(own_teacher.with_name("latest.eval-val.json").read_text())
    same = json.loads(own_teacher.with_name("latest.eval-val-copy.json").read_text())
    assert same["images"].rstrip("/").endswith("copy")
    assert same["bbox"]["detections"] == clean["bbox"]["detections"] > 0
    assert same["bbox"]["AP"] == clean["bbox"]["AP"]  # identical pixels, identical detections


def test_corrupt_and_mismatched_checkpoints(trained_teacher, tmp_path, tiny_sets):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    result = run_cli("evaluate", corrupt, expect=1)
    assert "not a readable checkpoint" in result.output and "Traceback" not in result.output

    import torch

    ckpt = torch.load(trained_teacher, map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    state.pop(next(k for k in state if k.startswith("bbox_head.")))
    state["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(ckpt, broken)
    result = run_cli("evaluate", broken, "--device", DEVICE, expect=1)
    assert "missing keys: bbox_head." in result.output and "unexpected keys: extra.weight" in result.output


def test_bad_data_is_one_line(tmp_path, tiny_sets, shapes_root):
    result = run_cli("train", "--preset", "shapes", "--work-dir", tmp_path, "--device", DEVICE, *tiny_sets,
                     "--set", f"data.root={tmp_path / 'nowhere'}", expect=1)
    assert "annotation file not found" in result.output

    broken_root = tmp_path / "broken"
    shutil.copytree(shapes_root, broken_root)
    (broken_root / "annotations" / "instances_train.json").write_text("{ not json")
    result = run_cli("train", "--preset", "shapes", "--work-dir", tmp_path / "w", "--device", DEVICE, *tiny_sets,
                     "--set", f"data.root={broken_root}", expect=1)
    assert "is not valid JSON (line 1" in result.output and "instances_train.json" in result.output


def test_corrupt_image_is_one_line(trained_teacher, shapes_root, tmp_path):
    images = tmp_path / "val"
    shutil.copytree(shapes_root / "val", images)
    victim = sorted(images.glob("*.png"))[0]
    victim.write_bytes(b"\x89PNG garbage")
    result = run_cli("evaluate", trained_teacher, "--images", images, "--device", DEVICE, expect=1)
    assert "cannot read image" in result.output and victim.name in result.output


def test_unwritable_work_dir(tmp_path, tiny_sets):
    # A path below a plain file cannot be created, even by root (CI runs as root).
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli("train", "--preset", "shapes", "--work-dir", blocker / "x", *tiny_sets, expect=1)
    assert "not writable" in result.output


def test_a_validation_after_the_last_epoch_changes_no_weight(tmp_path, tiny_sets):
    """What lets the backdoor defences skip their end-of-training validation (``ikd backdoor
    evaluate`` scores them anyway): a run validated only after its last epoch and the same run
    never validated end with the same weights, to the bit (one thread, same seed)."""
    import torch

    weights = {}
    for interval in (1, 0):  # tiny_sets: one epoch
        work = tmp_path / f"eval{interval}"
        run_cli("train", "--preset", "shapes", "--model", "student", "--work-dir", work, "--device", DEVICE,
                *tiny_sets, "--set", f"train.eval_interval={interval}")
        (log,) = (work / "student").glob("*.log.json")
        assert ('"mode": "val"' in log.read_text()) == bool(interval)  # it did validate, or not
        weights[interval] = torch.load(work / "student" / "latest.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert weights[1].keys() == weights[0].keys()
    assert all(torch.equal(weights[1][k], weights[0][k]) for k in weights[1])
