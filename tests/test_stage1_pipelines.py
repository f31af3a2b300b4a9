"""Stage 1 (IKD's adversarial image) on a family's own training pipeline: every step treats the
adversarial image exactly as the clean one (the same random draw; SSD's augmentation, YOLOX's
Mosaic and MixUp, DETR's AutoAugment), or is refused in one line naming it; the stage-1 set
keeps the training set's RepeatDataset (a stage-1 epoch is a stage-2 epoch), and plain
distillation (dfa_until 0) builds none. Real mmdet transforms, the tiny shapes data, no model."""

import hashlib
import random

import numpy as np
import pytest
import torch

from helpers import REPO

from ikd_cli.config import presets
from ikd_cli.core.errors import IkdError
from ikd_cli.distill.config import build_distill_config

# sha256 of stage 1's output for the shapes preset on the noisy set below (seed 0, every image
# once, in order), as the pipeline gave it before the family's own pipelines were supported.
SHAPES_STAGE1_DIGEST = "403dc4420883865ec2ef9b0f818ff4382810b7f55c445497eda492d05b3d04cd"


def _preset(tiny_sets, adv_dir, *sets):
    args = [s for s in tiny_sets if s != "--set"] + [f"attack.out={adv_dir}", *sets]
    return presets.load("shapes", presets.parse_set(args))


def _dataset(tiny_sets, adv_dir, *sets):
    import ikd_cli.distill.pipelines  # noqa: F401  (registers the steps)
    from mmdet.datasets import build_dataset

    return build_dataset(build_distill_config(_preset(tiny_sets, adv_dir, *sets)).data.train_dfa)


def _copy_set(shapes_root, folder, noise: int):
    """An 'adversarial' set: each training image plus seeded uniform noise in [-noise, noise]
    (a lossless PNG of the same name, as ``ikd attack --format png`` writes)."""
    import cv2

    rng = np.random.default_rng(0)
    for png in sorted((shapes_root / "train").glob("*.png")):
        img = cv2.imread(str(png), cv2.IMREAD_COLOR).astype(np.int16)
        img += rng.integers(-noise, noise + 1, size=img.shape, dtype=np.int16)
        cv2.imwrite(str(folder / png.name), np.clip(img, 0, 255).astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def same_set(shapes_root, tmp_path_factory):
    """Adversarial images equal to the clean ones: stage 1's two outputs must then be equal."""
    return _copy_set(shapes_root, tmp_path_factory.mktemp("adv-same"), noise=0)


@pytest.fixture(scope="module")
def noisy_set(shapes_root, tmp_path_factory):
    return _copy_set(shapes_root, tmp_path_factory.mktemp("adv-noisy"), noise=4)


def _fingerprint(dataset) -> str:
    np.random.seed(0)
    random.seed(0)
    digest = hashlib.sha256()
    for i in range(len(dataset)):
        out = dataset[i]
        meta = out["img_metas"].data
        for part in (out["img"].data, out["adv_img"].data, out["gt_bboxes"].data, out["gt_labels"].data):
            digest.update(part.numpy().tobytes())
        digest.update(repr((meta["img_shape"], meta["flip"])).encode())
    return digest.hexdigest()


def _with_train(tiny_sets, adv_dir, train_of, *sets):
    """Stage 1's dataset when the student's training set config is ``train_of(its own)``."""
    import ikd_cli.distill.pipelines  # noqa: F401
    from mmdet.datasets import build_dataset

    from ikd_cli.distill.config import dfa_dataset

    preset = _preset(tiny_sets, adv_dir, *sets)
    cfg = build_distill_config(preset)
    return build_dataset(dfa_dataset(train_of(cfg.data.train), preset, str(adv_dir)))


def _samples(dataset):
    np.random.seed(0)
    random.seed(0)
    return [dataset[i] for i in range(len(dataset))]


def _step_names(dataset):
    """The steps' names, the dataset's inside a wrapper's first (SameDraw: the step it runs);
    a wrapper without steps (RepeatDataset) adds none."""
    inner = getattr(dataset, "dataset", None)
    steps = _step_names(inner) if inner is not None else []
    own = getattr(dataset, "pipeline", [])
    own = own if isinstance(own, list) else own.transforms
    return steps + [getattr(step, "name", type(step).__name__) for step in own]


SSD = "student.config=mmdet::ssd/ssd300_coco.py"
DETR = f"student.config={REPO / 'tests' / 'configs' / 'families' / 'detr.py'}"


def test_ssd_stage1_epoch_is_its_training_epoch(tiny_sets, same_set, tmp_path):
    """SSD's training set is its images 5 times (RepeatDataset): stage 1's is too, so that
    distill.dfa_until epochs are as much data as the same epochs of stage 2."""
    import ikd_cli.distill.pipelines  # noqa: F401
    from mmdet.datasets import build_dataset

    from ikd_cli.distill.run import check_adversarial_set

    (tmp_path / "teacher.pth").write_bytes(b"a teacher")  # what the check hashes
    preset = _preset(tiny_sets, same_set, SSD, f"teacher.checkpoint={tmp_path / 'teacher.pth'}")
    cfg = build_distill_config(preset)
    stage1, stage2 = build_dataset(cfg.data.train_dfa), build_dataset(cfg.data.train)
    assert type(stage1).__name__ == type(stage2).__name__ == "RepeatDataset"
    assert len(stage1) == len(stage2) == 5 * 24
    # the run's check of the adversarial set reads the images inside (this set has no attack records)
    with pytest.raises(IkdError, match="24 of 24 training images have no adversarial copy"):
        check_adversarial_set(stage1, same_set, preset)


def test_ssd_own_augmentation_gives_the_adversarial_image_the_same_draw(tiny_sets, same_set):
    dataset = _dataset(tiny_sets, same_set, SSD, "distill.corruption_prob=0").dataset  # each image once
    wrapped = [step.name for step in dataset.pipeline.transforms if type(step).__name__ == "SameDraw"]
    assert wrapped == ["Expand", "MinIoURandomCrop", "PhotoMetricDistortion"]
    shapes = set()
    for out in _samples(dataset):
        img, adv = out["img"].data, out["adv_img"].data
        # the adversarial files are the clean images: one expansion, crop, flip and colour draw
        # for both gives the same pixels
        assert img.shape == adv.shape and np.array_equal(img.numpy(), adv.numpy())
        shapes.add(tuple(img.shape))
    assert len(shapes) > 3  # the random crops did run


def test_ssd_own_augmentation_keeps_an_adversarial_set_aligned(tiny_sets, noisy_set):
    for out in _samples(_dataset(tiny_sets, noisy_set, SSD, "distill.corruption_prob=0").dataset):
        img, adv = out["img"].data, out["adv_img"].data
        assert img.shape == adv.shape
        # +-4 of noise, scaled by at most the contrast draw: another brightness draw would be up to 32
        assert 0 < (img - adv).abs().mean() < 4


def test_detr_autoaugment_gives_the_adversarial_image_the_same_draw(tiny_sets, same_set):
    """DETR's Resize and RandomCrop (which draws an offset per image field) sit inside
    AutoAugment's policies, after RandomFlip: AutoAugment runs in SameDraw, one policy and one
    draw for both images."""
    dataset = _dataset(tiny_sets, same_set, DETR, "distill.corruption_prob=0")
    names = _step_names(dataset)
    assert "Resize" not in names and names[names.index("RandomFlip"):][:3] == ["RandomFlip", "AdaptiveCrop",
                                                                               "AutoAugment"]
    shapes = set()
    for out in _samples(dataset):
        img, adv = out["img"].data, out["adv_img"].data
        assert img.shape == adv.shape and np.array_equal(img.numpy(), adv.numpy())
        shapes.add(tuple(img.shape))
    assert len(shapes) > 3  # the policies' multi-scale resizes and crops did run


def _mixing(with_hsv=True):
    """The student's training set inside a MultiImageMixDataset (and a RepeatDataset) with
    YOLOX-like steps at the tiny data's scale, and mmdet's RandomCrop, which draws a new offset
    per image field, in the dataset's own pipeline."""

    def wrap(train):
        inner = dict(train, pipeline=[train.pipeline[0], train.pipeline[1],
                                      dict(type="RandomCrop", crop_size=(0.7, 0.7), crop_type="relative_range")])
        steps = [dict(type="Mosaic", img_scale=(96, 96), pad_val=114.0),
                 dict(type="RandomAffine", scaling_ratio_range=(0.5, 1.5), max_rotate_degree=20, border=(-48, -48)),
                 dict(type="MixUp", img_scale=(96, 96), ratio_range=(0.8, 1.6), pad_val=114.0)]
        steps += [dict(type="YOLOXHSVRandomAug")] if with_hsv else []
        steps += [dict(type="RandomFlip", flip_ratio=0.5), dict(type="Resize", img_scale=(96, 96), keep_ratio=True),
                  dict(type="Pad", size=(96, 96), pad_val=114), dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1)),
                  dict(type="DefaultFormatBundle"), dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"])]
        mix = dict(type="MultiImageMixDataset", dataset=inner, pipeline=steps)
        return dict(type="RepeatDataset", times=2, dataset=mix)

    return wrap


def test_mosaic_mixup_and_wrapper_steps_give_the_same_draw(tiny_sets, same_set):
    repeated = _with_train(tiny_sets, same_set, _mixing(), "distill.corruption_prob=0")
    assert type(repeated).__name__ == "RepeatDataset" and repeated.times == 2  # kept around the mixing wrapper
    dataset = repeated.dataset
    assert type(dataset).__name__ == "IKDMultiImageMixDataset" and len(repeated) == 2 * len(dataset)
    assert _step_names(dataset)[:9] == ["LoadImageFromFile", "LoadAnnotations", "LoadAdversarialImage",
                                        "InstanceCorruption", "RandomCrop", "Mosaic", "RandomAffine", "MixUp",
                                        "YOLOXHSVRandomAug"]
    for out in _samples(dataset):
        assert np.array_equal(out["img"].data.numpy(), out["adv_img"].data.numpy())


def test_images_mixed_in_bring_their_adversarial_copies(tiny_sets, shapes_root, tmp_path):
    """Adversarial copies all black: the adversarial mosaic holds black and padding (114) only,
    none of the clean images' brighter pixels."""
    import cv2

    for png in (shapes_root / "train").glob("*.png"):
        cv2.imwrite(str(tmp_path / png.name), np.zeros_like(cv2.imread(str(png))))
    dataset = _with_train(tiny_sets, tmp_path, _mixing(with_hsv=False), "distill.corruption_prob=0").dataset
    for out in _samples(dataset)[:8]:
        assert out["img"].data.max() > 120 and out["adv_img"].data.max() <= 114
        # no Normalize here: DefaultFormatBundle makes the clean image float, and the copy too
        assert out["img"].data.dtype == out["adv_img"].data.dtype == torch.float32


def test_yolox_own_pipeline_runs_in_stage1(tiny_sets, same_set):
    import ikd_cli.distill.pipelines  # noqa: F401
    from ikd_cli.data.loading import build_dataset_checked
    from ikd_cli.train.engine import build_train_loader

    cfg = build_distill_config(_preset(tiny_sets, same_set, "student.config=mmdet::yolox/yolox_tiny_8x8_300e_coco.py",
                                             "distill.corruption_prob=0"))
    dataset = build_dataset_checked(cfg.data.train_dfa, "training (DFA)")  # as stage 1 builds it
    assert len(dataset.data_infos) == 24  # what stage 1 checks the adversarial set against
    np.random.seed(0)
    random.seed(0)
    batch = next(iter(build_train_loader(dataset, cfg, False)))
    assert torch.equal(batch["img"].data[0], batch["adv_img"].data[0])
    # YOLOX's mode switch leaves Mosaic and RandomAffine out of its last epochs, by name: a sample
    # then holds one image's boxes, not four images'
    own = len(dataset.dataset.get_ann_info(0)["bboxes"])
    np.random.seed(0)
    assert len(dataset[0]["gt_bboxes"].data) > own
    dataset.update_skip_type_keys(["Mosaic", "RandomAffine"])
    plain = dataset[0]
    assert len(plain["gt_bboxes"].data) == own
    assert np.array_equal(plain["img"].data.numpy(), plain["adv_img"].data.numpy())


def test_adaptive_crop_leaves_a_sample_without_boxes_whole():
    """A mosaic whose objects the affine warp moved out: mmdet's crop refuses it (None), which a
    MultiImageMixDataset retries 15 times and then stops the run."""
    from ikd_cli.distill.pipelines import AdaptiveCrop

    img = np.zeros((64, 64, 3), np.uint8)
    empty = dict(img=img, img_shape=img.shape, img_fields=["img"], bbox_fields=["gt_bboxes"],
                 gt_bboxes=np.zeros((0, 4), np.float32), gt_labels=np.zeros(0, np.int64))
    assert AdaptiveCrop()(empty)["img"].shape == (64, 64, 3)


class CropAtBrightPixel:
    """A random crop centred on a random pixel brighter than the image's mean: which pixels
    qualify depends on the pixels, so the adversarial copy is cut somewhere else."""

    def __call__(self, results):
        img = results["img"]
        bright = np.argwhere(img.mean(-1) > img.mean())
        y, x = bright[np.random.randint(len(bright))]
        top, left = max(0, y - 32), max(0, x - 32)
        results["img"] = img[top:top + 64, left:left + 64]
        results["img_shape"] = results["img"].shape
        for key in results.get("bbox_fields", []):
            results[key] = results[key] - np.array([left, top, left, top], np.float32)
        return results


class SpeckleOnHighlights:
    """Noise on the pixels brighter than 200 only: how many random numbers it draws depends on
    the pixels."""

    def __call__(self, results):
        img = results["img"].astype(np.float32)
        bright = img > 200
        img[bright] += np.random.normal(0, 8, int(bright.sum()))
        results["img"] = np.clip(img, 0, 255).astype(np.uint8)
        return results


@pytest.mark.parametrize("step, why", [(CropAtBrightPixel, "image where the clean one is"),
                                       (SpeckleOnHighlights, "a different number of random numbers")])
def test_a_step_whose_draw_depends_on_the_pixels_is_refused(tiny_sets, noisy_set, step, why):
    from mmdet.datasets.builder import PIPELINES

    PIPELINES.register_module(module=step, force=True)

    def with_step(train):
        pipeline = list(train.pipeline)
        return dict(train, pipeline=pipeline[:2] + [dict(type=step.__name__)] + pipeline[2:])

    dataset = _with_train(tiny_sets, noisy_set, with_step, "distill.corruption_prob=0")
    assert _step_names(dataset)[4] == step.__name__
    with pytest.raises(IkdError, match=f"training step {step.__name__}: .*{why}.*depends on the pixels"):
        _samples(dataset)


def test_shapes_stage1_output_is_what_it_was(tiny_sets, noisy_set):
    dataset = _dataset(tiny_sets, noisy_set)
    assert _step_names(dataset) == ["LoadImageFromFile", "LoadAnnotations", "LoadAdversarialImage",
                                    "InstanceCorruption", "Resize", "RandomFlip", "AdaptiveCrop", "Normalize",
                                    "Pad", "DefaultFormatBundle", "FormatAdversarialImage", "Collect"]
    assert _fingerprint(dataset) == SHAPES_STAGE1_DIGEST


@pytest.mark.parametrize("change, says", [
    (lambda t: dict(type="MyMixDataset", dataset=t, pipeline=[dict(type="RandomFlip")]),
     "does not know the student's dataset wrapper MyMixDataset, which has training steps of its own"),
    (lambda t: dict(t, pipeline=[t.pipeline[0], dict(type="PhotoMetricDistortion")] + t.pipeline[1:]),
     "has PhotoMetricDistortion before LoadAnnotations"),
    (lambda t: dict(t, pipeline=[s for s in t.pipeline if s["type"] != "RandomFlip"]),
     "has no RandomFlip step; IKD's stage 1 needs one")])
def test_what_stage1_cannot_pair_is_refused_when_the_config_is_built(tiny_sets, same_set, change, says):
    from ikd_cli.distill.config import dfa_dataset

    preset = _preset(tiny_sets, same_set)
    train = build_distill_config(preset).data.train
    with pytest.raises(IkdError, match=says) as err:
        dfa_dataset(change(train), preset, str(same_set))
    assert "\n" not in str(err.value)


def test_images_mixed_in_without_their_copies_are_refused(tiny_sets, same_set):
    """LoadAnnotations in the wrapper's pipeline: the images Mosaic mixes in were loaded before
    IKD reads the adversarial copies."""
    mixing = _mixing()

    def late_annotations(train):
        wrapper = mixing(train)["dataset"]
        wrapper["dataset"]["pipeline"] = wrapper["dataset"]["pipeline"][:1]
        wrapper["pipeline"] = [dict(type="LoadAnnotations", with_bbox=True)] + wrapper["pipeline"]
        return wrapper

    dataset = _with_train(tiny_sets, same_set, late_annotations)
    with pytest.raises(IkdError, match="training step Mosaic: the images it mixes in have no adversarial copy"):
        dataset[0]


def test_plain_distillation_builds_no_stage1_set(tiny_sets, same_set, tmp_path):
    """--dfa-until 0 (plain FGD, MGD, ...) reads no adversarial image: a student pipeline that
    stage 1 refuses (here without RandomFlip) still distils."""
    from mmcv import Config

    own = Config.fromfile(str(REPO / "configs" / "models" / "shapes_retinanet_r18.py"))
    own.data.train.pipeline = [step for step in own.data.train.pipeline if step["type"] != "RandomFlip"]
    own.dump(str(tmp_path / "no_flip.py"))
    student = f"student.config={tmp_path / 'no_flip.py'}"
    with pytest.raises(IkdError, match="has no RandomFlip step"):
        build_distill_config(_preset(tiny_sets, same_set, student, "distill.dfa_until=1"))
    cfg = build_distill_config(_preset(tiny_sets, same_set, student, "distill.dfa_until=0"))
    assert "train_dfa" not in cfg.data and cfg.dfa_until == 0
