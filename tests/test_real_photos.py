"""Real photographs through the whole pipeline, and the odd image files real datasets contain.

The data are the six COCO 2017 photos vendored in ``tests/data/coco`` (80 categories with ids
1-90, crowd boxes, one image without any box per split), copied into a temporary folder. A
preset written here uses them with ``data.classes: auto`` and a tiny RetinaNet R18 as teacher and
student (``tests/configs/photo_retinanet_r18.py``: the shapes R18 with a lower test score
threshold), 160x128 px, one epoch: one teacher is trained once for the whole module.

The first tests run train -> evaluate -> attack (both storage formats) -> distill (stage 1) ->
evaluate on the photos. The others each replace one training photo (``000000403013.jpg``, the
first image of the file) by an odd variant made here with Pillow, and run ``ikd data check`` and
``ikd attack --limit 1`` on it: the image is either used as it is displayed (its adversarial copy
verifies within eps) or the command fails cleanly (non-zero exit, one ``error:`` line naming the
image, no traceback). """

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from helpers import DEVICE, REPO, adversarial_files, read_adversarial_image, run_cli, verify_adversarial_set
from ikd_cli.attack.manifest import read_records

COCO = REPO / "tests" / "data" / "coco"
MODEL = REPO / "tests" / "configs" / "photo_retinanet_r18.py"
TRAIN_ANN = "annotations/instances_train2017.json"
VAL_ANN = "annotations/instances_val2017.json"
METRICS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
VICTIM = "000000403013.jpg"  # 301 x 450 (w x h), 5 boxes; the first image of the training file
VICTIM_SHAPE = (450, 301, 3)  # as decoded (BGR, what LoadImageFromFile and the attack see)
EMPTY_TRAIN = "000000262284.jpg"  # the training photo without any box
EMPTY_VAL = "000000226111.jpg"  # the val photo without any box


def _names(ann_file: Path, with_boxes: bool = True) -> list[str]:
    """File names of the images that have (or have not) any annotation, in file order."""
    data = json.loads(Path(ann_file).read_text())
    annotated = {a["image_id"] for a in data["annotations"]}
    return [im["file_name"] for im in data["images"] if (im["id"] in annotated) == with_boxes]


def _assert_coco_metrics(report: dict) -> None:
    """COCOeval's six bbox numbers: each a float in [0, 1], or -1 (no ground truth in that range)."""
    bbox = report["bbox"]
    for name in METRICS:
        value = bbox[name]
        assert isinstance(value, float) and (0.0 <= value <= 1.0 or value == -1.0), (name, value)


def _assert_clean_failure(result, name: str) -> None:
    """Non-zero exit, exactly one line starting with 'error:', naming the image, no traceback."""
    out = result.output
    assert result.exit_code not in (0, None), out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert name in errors[0], out
    assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The photos copied, the preset, and a teacher trained on them for one epoch."""
    base = tmp_path_factory.mktemp("photos")
    root = base / "coco"
    shutil.copytree(COCO, root)
    work, adv = base / "work", base / "adv"
    preset = base / "photos.yaml"
    preset.write_text(
        f"teacher: {{config: '{MODEL}', checkpoint: '{work}/teacher/latest.pth'}}\n"
        f"student: {{config: '{MODEL}'}}\n"
        f"work_dir: '{work}'\n"
        f"data: {{root: '{root}', train_ann: {TRAIN_ANN}, train_images: train2017/,\n"
        f"       val_ann: {VAL_ANN}, val_images: val2017/, classes: auto,\n"
        "       img_scale: [160, 128], samples_per_gpu: 2, workers_per_gpu: 0}\n"
        # the SGD recipe these tests were written with (lr 0.01, not the model config's 0.04)
        "train: {optimizer: sgd, epochs: 1, warmup_iters: 2, log_interval: 1, lr: 0.01}\n"
        # a one-epoch teacher on a few photos scores 0 AP: these tests are about the photos, the
        # teacher check has its own (test_before_training.py)
        "distill: {teacher_check_min_ap: 0}\n"
        f"attack: {{out: '{adv}', batch_size: 2, steps: 2}}\n")
    saved = os.environ.get("IKD_CACHE")
    os.environ["IKD_CACHE"] = str(base / "cache")  # the data check's cache of clean results stays here
    try:
        run_cli("train", "--preset", preset, "--model", "teacher", "--device", DEVICE)
        yield SimpleNamespace(base=base, root=root, preset=preset, work=work, adv=adv,
                              teacher=work / "teacher" / "latest.pth")
    finally:
        if saved is None:
            os.environ.pop("IKD_CACHE", None)
        else:
            os.environ["IKD_CACHE"] = saved


@pytest.fixture(scope="module")
def train_sets(photos):
    """The training split attacked twice with the same settings: delta (default, the preset's
    attack.out, which distill reads) and PNG."""
    png = photos.base / "adv_png"
    common = ("attack", "--preset", photos.preset, "--device", DEVICE, "--workers", "0")
    delta_run = run_cli(*common)
    png_run = run_cli(*common, "--format", "png", "--out", png)
    return SimpleNamespace(delta=photos.adv, png=png, outputs=(delta_run.output, png_run.output))


@pytest.fixture(scope="module")
def val_set(photos):
    run_cli("attack", "--preset", photos.preset, "--device", DEVICE, "--workers", "0", "--split", "val")
    return Path(f"{photos.adv}_val")


# ------------------------------------------------------------------ the pipeline on real photos
def test_classes_auto_are_the_80_coco_categories_in_id_order(photos, tmp_path):
    import torch

    from ikd_cli.config import presets
    from ikd_cli.config.mmdet import build_config

    cats = json.loads((photos.root / TRAIN_ANN).read_text())["categories"]
    names = tuple(c["name"] for c in sorted(cats, key=lambda c: c["id"]))
    assert len(names) == 80 and max(c["id"] for c in cats) == 90  # COCO's ids have gaps
    tree = presets.load(str(photos.preset))
    for role in ("teacher", "student"):
        cfg = build_config(tree, role)
        assert cfg.model.bbox_head.num_classes == 80
        for split in ("train", "val", "test"):
            assert tuple(cfg.data[split].classes) == names, split
    meta = torch.load(photos.teacher, map_location="cpu", weights_only=False)["meta"]
    assert tuple(meta["CLASSES"]) == names
    # id order, not the order the file lists them in
    shuffled = tmp_path / "annotations"
    shuffled.mkdir()
    data = json.loads((photos.root / TRAIN_ANN).read_text())
    data["categories"] = data["categories"][::-1]
    (shuffled / "instances_train2017.json").write_text(json.dumps(data))
    assert tuple(presets.preset_classes(presets.load(str(photos.preset), {"data.root": str(tmp_path)}))) == names


def test_teacher_trains_and_evaluates_on_the_photos(photos):
    from pycocotools.coco import COCO as CocoApi
    from pycocotools.cocoeval import COCOeval

    assert photos.teacher.is_file() and (photos.work / "teacher" / "train.log").is_file()
    # the preset names a local .py model config: from the checkpoint it would need trust
    # (docs/promises.md), so the preset is given, as a user of their own config does
    result = run_cli("evaluate", photos.teacher, "--preset", photos.preset, "--model", "teacher", "--device", DEVICE)
    assert "AP50" in result.output
    report = json.loads(photos.teacher.with_name("latest.eval-val.json").read_text())
    assert report["num_images"] == 3  # the val photo without any box is evaluated too
    _assert_coco_metrics(report)
    detections_file = photos.teacher.with_name("latest.eval-val.bbox.json")
    detections = json.loads(detections_file.read_text())
    assert report["bbox"]["detections"] == len(detections) > 0
    gt = CocoApi(str(photos.root / VAL_ANN))
    assert {d["image_id"] for d in detections} <= set(gt.getImgIds())
    assert {d["category_id"] for d in detections} <= set(gt.getCatIds())  # COCO ids, not 0-79 labels
    ev = COCOeval(gt, gt.loadRes(str(detections_file)), "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
    for i, name in enumerate(METRICS):
        assert report["bbox"][name] == pytest.approx(float(ev.stats[i]), abs=0), name


def test_attack_covers_every_training_photo_with_boxes(photos, train_sets):
    """mmdet's training set drops images without any annotation (filter_empty_gt), so the attack
    does too: every photo with boxes gets an adversarial copy in both formats, the photo without
    boxes none (not a failure, and not counted); the copies keep the budget on disk."""
    images = photos.root / "train2017"
    with_boxes = _names(photos.root / TRAIN_ANN)
    assert _names(photos.root / TRAIN_ANN, with_boxes=False) == [EMPTY_TRAIN]
    for folder, fmt, suffix in ((train_sets.delta, "delta", ".ikdd"), (train_sets.png, "png", ".png")):
        done, failed = read_records(folder)
        assert set(done) == set(with_boxes) and not failed, fmt
        assert all(0 < rec["linf"] <= 8 for rec in done.values())
        summary = json.loads((folder / "summary.json").read_text())
        assert (summary["images"], summary["attacked"], summary["failed"]) == (2, 2, 0)
        assert json.loads((folder / "attack.json").read_text())["format"] == fmt
        files = adversarial_files(folder)
        assert len(files) == 2 and all(p.suffix == suffix for p in files)
        assert not any(p.name.startswith(Path(EMPTY_TRAIN).stem) for p in files)
        assert verify_adversarial_set(folder, images, with_boxes, eps=8) == []
    assert all("could not be read" not in out for out in train_sets.outputs)


def test_delta_set_rebuilds_the_png_set_bit_for_bit_and_is_smaller(photos, train_sets):
    images = photos.root / "train2017"
    names = _names(photos.root / TRAIN_ANN)
    for name in names:
        rebuilt = read_adversarial_image(train_sets.delta, images, name)
        png = cv2.imread(str(train_sets.png / Path(name).with_suffix(".png")), cv2.IMREAD_COLOR)
        assert rebuilt.dtype == np.uint8 and rebuilt.shape == png.shape
        assert np.array_equal(rebuilt, png), name
    delta_bytes = sum(p.stat().st_size for p in adversarial_files(train_sets.delta))
    png_bytes = sum(p.stat().st_size for p in adversarial_files(train_sets.png))
    jpeg_bytes = sum((images / name).stat().st_size for name in names)
    sizes = (f"delta {delta_bytes} B, png {png_bytes} B, source JPEGs {jpeg_bytes} B: delta/png "
             f"{delta_bytes / png_bytes:.2f}, delta/jpeg {delta_bytes / jpeg_bytes:.2f}, png/jpeg "
             f"{png_bytes / jpeg_bytes:.2f}")
    print(sizes)
    assert delta_bytes < png_bytes, sizes


def test_stage_1_distillation_on_the_photos(photos, train_sets):
    distill = photos.work / "distill"
    result = run_cli("distill", "--preset", photos.preset, "--device", DEVICE, "--epochs", "1", "--dfa-until", "1")
    assert "stage 1" in result.output
    assert "loss_adv_feat_0" in (distill / "train.log").read_text()  # levels: auto (extract_feat outputs)
    student = distill / "student_latest.pth"
    assert student.is_file()
    run_cli("evaluate", student, "--preset", photos.preset, "--model", "student", "--device", DEVICE)
    report = json.loads((distill / "student_latest.eval-val.json").read_text())
    assert report["num_images"] == 3
    _assert_coco_metrics(report)


def test_attack_of_the_val_split(photos, val_set):
    """The val split is attacked whole, the photo without boxes included (evaluation scores every
    val image; on the train split mmdet's training drops such images, and so does the attack)."""
    done, failed = read_records(val_set)
    assert _names(photos.root / VAL_ANN, with_boxes=False) == [EMPTY_VAL]
    assert set(done) == set(_names(photos.root / VAL_ANN)) | {EMPTY_VAL} and not failed
    assert verify_adversarial_set(val_set, photos.root / "val2017", sorted(done), eps=8) == []


def test_evaluate_on_the_attacked_val_split(photos, val_set):
    """Every val image is evaluated (COCOeval counts false positives on images without boxes),
    so an adversarial val set must let evaluate read every one of them."""
    run_cli("evaluate", photos.teacher, "--preset", photos.preset, "--model", "teacher", "--device", DEVICE,
            "--images", val_set)
    report = json.loads(photos.teacher.with_name(f"latest.eval-val-{val_set.name}.json").read_text())
    assert report["num_images"] == 3
    _assert_coco_metrics(report)


# ----------------------------------------------------------------------------- odd images
def _copy(tmp_path) -> Path:
    root = tmp_path / "coco"
    shutil.copytree(COCO, root)
    return root


def _photo():
    """The victim photo as Pillow decodes it (RGB)."""
    from PIL import Image

    with Image.open(COCO / "train2017" / VICTIM) as im:
        return im.convert("RGB")


def _data_check(photos, root):
    return run_cli("data", "check", "--preset", photos.preset, "--data-root", root, expect=None)


def _attack_one(photos, root, out, expect=0):
    return run_cli("attack", "--preset", photos.preset, "--data-root", root, "--out", out, "--device", DEVICE,
                   "--workers", "0", "--limit", "1", "--steps", "1", "--no-record-loss", expect=expect)


def _check_split(root):
    from ikd_cli.data.check import check_split

    return check_split("train", root / TRAIN_ANN, root / "train2017", None)


def _assert_used(photos, root, tmp_path, name: str = VICTIM) -> np.ndarray:
    """The data check finds nothing wrong with the image (no error, JSON size = displayed size),
    the attack takes it, and its adversarial copy verifies within eps; returns the decoded source."""
    result = _data_check(photos, root)
    assert result.exit_code == 0 and "verdict: usable" in result.output, result.output
    assert "differ from the file" not in result.output and "error" not in result.output, result.output
    out = tmp_path / "adv"
    _attack_one(photos, root, out)
    done, failed = read_records(out)
    assert set(done) == {name} and not failed
    assert 0 < done[name]["linf"] <= 8
    images = root / "train2017"
    assert verify_adversarial_set(out, images, [name], eps=8) == []
    src = cv2.imread(str(images / name), cv2.IMREAD_COLOR)
    assert src.shape == VICTIM_SHAPE and read_adversarial_image(out, images, name).shape == VICTIM_SHAPE
    return src


def _assert_refused(photos, root, tmp_path, problem: str) -> None:
    """The data check names the image under ``problem`` (an error), and the attack stops before
    it starts: one line naming the image, nothing written."""
    result = _data_check(photos, root)
    assert result.exit_code == 1, result.output
    assert problem in result.output and "verdict: not usable" in result.output, result.output
    report = _check_split(root)
    errors = {p.what: p.examples for p in report.errors}
    assert list(errors) == [problem] and VICTIM in errors[problem][0]
    out = tmp_path / "adv"
    result = _attack_one(photos, root, out, expect=None)
    _assert_clean_failure(result, VICTIM)
    assert "data check: train: 1 of " in result.output and f"({problem}: 1): {VICTIM}" in result.output
    assert not (out / "attack.json").exists()
    assert not out.exists() or not adversarial_files(out)


def test_grayscale_jpeg_is_used_as_three_equal_channels(photos, tmp_path):
    """A mode-L JPEG (COCO has a few hundred): decoded as colour (IMREAD_COLOR), grey in all
    three channels; attacked like any photo."""
    root = _copy(tmp_path)
    _photo().convert("L").save(root / "train2017" / VICTIM, "JPEG", quality=90)
    src = _assert_used(photos, root, tmp_path)
    assert np.array_equal(src[..., 0], src[..., 1]) and np.array_equal(src[..., 1], src[..., 2])


def test_cmyk_jpeg_is_used_in_its_colours(photos, tmp_path):
    """A CMYK JPEG (print workflows, a few in ImageNet): libjpeg converts it to BGR; the colours
    stay those of the photo (mean difference of a few levels, JPEG re-encoding)."""
    from PIL import Image

    root = _copy(tmp_path)
    _photo().convert("CMYK").save(root / "train2017" / VICTIM, "JPEG", quality=95)
    with Image.open(root / "train2017" / VICTIM) as im:
        assert im.mode == "CMYK"
    src = _assert_used(photos, root, tmp_path)
    original = cv2.imread(str(COCO / "train2017" / VICTIM), cv2.IMREAD_COLOR)
    assert np.abs(src.astype(int) - original.astype(int)).mean() < 8


def test_rgba_png_is_used_without_its_alpha(photos, tmp_path):
    """An RGBA PNG, stored as ``.png`` with the JSON's file_name changed to match: a dataset that
    mixes formats names each file by its format, and this exercises the adversarial copy's name
    for a .png source (``x.png.ikdd``). The alpha channel is dropped, not composited: the pixels
    are the RGB values exactly (PNG is lossless), whatever the alpha."""
    from PIL import Image

    root = _copy(tmp_path)
    rgba = np.array(_photo().convert("RGBA"))
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1]).astype(np.uint8)[None, :]  # transparent on the left
    name = Path(VICTIM).with_suffix(".png").name
    Image.fromarray(rgba, "RGBA").save(root / "train2017" / name)
    (root / "train2017" / VICTIM).unlink()
    ann = root / TRAIN_ANN
    data = json.loads(ann.read_text())
    for im in data["images"]:
        if im["file_name"] == VICTIM:
            im["file_name"] = name
    ann.write_text(json.dumps(data))
    src = _assert_used(photos, root, tmp_path, name=name)
    assert np.array_equal(src, rgba[..., 2::-1])
    assert (tmp_path / "adv" / (name + ".ikdd")).is_file()


def test_grey_alpha_png_under_a_jpg_name_is_used(photos, tmp_path):
    """A grey+alpha (LA) PNG under the photo's ``.jpg`` name, the JSON unchanged: files whose
    extension lies about their format are common in scraped datasets, and mmcv (cv2), Pillow and
    the data check all decode by content. Grey in three channels, alpha dropped."""
    from PIL import Image

    root = _copy(tmp_path)
    grey = np.array(_photo().convert("L"))
    la = np.stack([grey, np.full_like(grey, 128)], axis=-1)
    Image.fromarray(la, "LA").save(root / "train2017" / VICTIM, "PNG")
    with Image.open(root / "train2017" / VICTIM) as im:
        assert (im.format, im.mode) == ("PNG", "LA")
    src = _assert_used(photos, root, tmp_path)
    assert np.array_equal(src, np.repeat(grey[..., None], 3, axis=-1))


def test_16_bit_png_is_used_as_8_bit(photos, tmp_path):
    """A 16-bit greyscale PNG (mode I;16, scientific and medical sources) under the ``.jpg`` name:
    IMREAD_COLOR reduces it to 8 bits (the high byte), so the attack works on uint8 as always."""
    from PIL import Image

    root = _copy(tmp_path)
    grey = np.array(_photo().convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(root / "train2017" / VICTIM, "PNG")
    with Image.open(root / "train2017" / VICTIM) as im:
        assert im.mode == "I;16"
    src = _assert_used(photos, root, tmp_path)
    assert src.dtype == np.uint8 and np.array_equal(src, np.repeat(grey[..., None], 3, axis=-1))


def test_exif_rotated_jpeg_is_used_as_displayed(photos, tmp_path):
    """A camera JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to
    display): its header says 450 x 301, the displayed image (and the JSON, and the boxes) is
    301 x 450. Right behaviour: every reader sees the displayed image, so the boxes fall on the
    objects: the data check compares the JSON with the EXIF-applied size (no warning), mmcv's cv2
    backend applies the orientation (IMREAD_COLOR), and the attack and its verification read the
    same pixels. A JSON that gives the stored size instead is warned about."""
    from PIL import Image

    root = _copy(tmp_path)
    exif = Image.Exif()
    exif[0x0112] = 6
    _photo().transpose(Image.Transpose.ROTATE_90).save(root / "train2017" / VICTIM, "JPEG", quality=95,
                                                        exif=exif.tobytes())
    with Image.open(root / "train2017" / VICTIM) as im:
        assert im.size == (450, 301) and im.getexif()[0x0112] == 6
    src = _assert_used(photos, root, tmp_path)
    original = cv2.imread(str(COCO / "train2017" / VICTIM), cv2.IMREAD_COLOR)
    assert np.abs(src.astype(int) - original.astype(int)).mean() < 4  # upright, not mirrored or upside down
    # the JSON with the stored (un-rotated) size: a warning naming the image
    ann = root / TRAIN_ANN
    data = json.loads(ann.read_text())
    for im in data["images"]:
        if im["file_name"] == VICTIM:
            im["width"], im["height"] = 450, 301
    ann.write_text(json.dumps(data))
    warnings = {p.what: p.examples for p in _check_split(root).warnings}
    assert warnings["image sizes in the JSON that differ from the file"] == [f"{VICTIM}: JSON 450x301, file 301x450"]


def test_only_crowd_boxes_is_attacked_like_mmdet_trains_it(photos, tmp_path):
    """An image whose every annotation is a crowd region: no usable box for the data check, but
    mmdet's filter_empty_gt keeps it (it has annotations) and trains on it with every anchor a
    negative; the attack takes it too, so that distillation finds its adversarial copy."""
    root = _copy(tmp_path)
    ann = root / TRAIN_ANN
    data = json.loads(ann.read_text())
    victim_id = next(im["id"] for im in data["images"] if im["file_name"] == VICTIM)
    for a in data["annotations"]:
        if a["image_id"] == victim_id:
            a["iscrowd"] = 1
    ann.write_text(json.dumps(data))
    assert _check_split(root).boxes == 19 - 5
    _assert_used(photos, root, tmp_path)


def test_truncated_jpeg_stops_the_attack_cleanly(photos, tmp_path):
    """The first half of the photo's bytes: a valid header over half a scan. It must never be
    used (libjpeg would fill the missing half with grey); whether the data check or the decoding
    catches it, the attack ends non-zero with one line naming the image, and writes no copy."""
    root = _copy(tmp_path)
    whole = (COCO / "train2017" / VICTIM).read_bytes()
    (root / "train2017" / VICTIM).write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "adv"
    result = _attack_one(photos, root, out, expect=None)
    _assert_clean_failure(result, VICTIM)
    assert not out.exists() or not any(p.name.startswith(VICTIM) for p in adversarial_files(out))


def test_truncated_jpeg_is_an_error_of_the_data_check(photos, tmp_path):
    root = _copy(tmp_path)
    whole = (COCO / "train2017" / VICTIM).read_bytes()
    (root / "train2017" / VICTIM).write_bytes(whole[: len(whole) // 2])
    errors = {p.what: p.examples for p in _check_split(root).errors}
    assert "unreadable or truncated images" in errors and VICTIM in errors["unreadable or truncated images"][0], errors
    result = _data_check(photos, root)
    assert result.exit_code == 1 and "verdict: not usable" in result.output


def test_zero_byte_file_is_an_unreadable_image(photos, tmp_path):
    """An empty file (an interrupted download): an error of the data check; the attack stops
    before it starts, in one line naming the image."""
    root = _copy(tmp_path)
    (root / "train2017" / VICTIM).write_bytes(b"")
    _assert_refused(photos, root, tmp_path, "unreadable or truncated images")


def test_missing_file_is_a_missing_image(photos, tmp_path):
    """An image of the JSON that is not on disk: an error of the data check; the attack stops
    before it starts, in one line naming the image."""
    root = _copy(tmp_path)
    (root / "train2017" / VICTIM).unlink()
    _assert_refused(photos, root, tmp_path, "missing images")


def test_data_check_names_the_missing_image_in_an_80_column_terminal(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    root = _copy(tmp_path)
    (root / "train2017" / VICTIM).unlink()
    result = _data_check(photos, root)
    assert result.exit_code == 1 and "missing images" in result.output
    assert VICTIM in result.output, result.output
