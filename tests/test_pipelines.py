"""IKD's stage-1 data pipeline on real mmdet transforms and the tiny shapes data."""

import shutil

import numpy as np
import pytest

from ikd_cli.config import presets
from ikd_cli.core.errors import IkdError
from ikd_cli.distill.config import build_distill_config


def _dfa_dataset(shapes_root, adv_dir, tiny_sets, **distill):
    import ikd_cli.distill.pipelines  # noqa: F401  (registers the steps)
    from mmdet.datasets import build_dataset

    sets = [s for s in tiny_sets if s != "--set"] + [f"attack.out={adv_dir}"]
    sets += [f"distill.{k}={v}" for k, v in distill.items()]
    cfg = build_distill_config(presets.load("shapes", presets.parse_set(sets)))
    return build_dataset(cfg.data.train_dfa)


@pytest.fixture(scope="module")
def clean_copy_as_adv(shapes_root, tmp_path_factory):
    """An 'adversarial' set that is a lossless copy of the clean images."""
    adv = tmp_path_factory.mktemp("adv-copy")
    for png in (shapes_root / "train").glob("*.png"):
        shutil.copy(png, adv / png.name)
    return adv


def test_adversarial_image_gets_exactly_the_clean_images_geometry(shapes_root, clean_copy_as_adv, tiny_sets):
    dataset = _dfa_dataset(shapes_root, clean_copy_as_adv, tiny_sets, corruption_prob=0.0)
    np.random.seed(0)
    flipped = cropped = 0
    for i in range(len(dataset)):
        out = dataset[i]
        img, adv = out["img"].data, out["adv_img"].data
        assert img.shape == adv.shape
        assert np.array_equal(img.numpy(), adv.numpy())  # same resize, flip, crop, normalise, pad
        meta = out["img_metas"].data
        flipped += bool(meta["flip"])
        cropped += meta["img_shape"][:2] != (96, 96)
    assert flipped > 0 and cropped > 0  # the random steps did run


def test_instance_corruption_only_on_all_small_images(shapes_root, clean_copy_as_adv, tiny_sets):
    from ikd_cli.distill.pipelines import InstanceCorruption

    step = InstanceCorruption(prob=1.0, severity=1, small_area=32 * 32)
    rng_img = np.full((64, 64, 3), 128, np.uint8)
    small = dict(img=rng_img.copy(), gt_bboxes=np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32))
    big = dict(img=rng_img.copy(), gt_bboxes=np.array([[0, 0, 10, 10], [0, 0, 50, 50]], np.float32))
    np.random.seed(0)
    out = step(small)
    noise = out["img"].astype(float) - 128
    assert out.get("corrupted") and abs(noise.std() - 0.08 * 255) < 1.0  # ImageNet-C severity 1
    assert np.array_equal(step(big)["img"], rng_img)
    never = InstanceCorruption(prob=0.0)
    assert np.array_equal(never(dict(img=rng_img.copy(), gt_bboxes=small["gt_bboxes"]))["img"], rng_img)


def test_adaptive_crop_never_crops_all_small_images():
    from ikd_cli.distill.pipelines import AdaptiveCrop, all_boxes_small

    crop = AdaptiveCrop(crop_range=0.8, small_area=32 * 32)
    img = np.zeros((100, 100, 3), np.uint8)

    def sample(boxes, scale=(1.0, 1.0, 1.0, 1.0)):
        return dict(img=img.copy(), img_shape=img.shape, img_fields=["img"], bbox_fields=["gt_bboxes"],
                    gt_bboxes=np.array(boxes, np.float32), gt_labels=np.zeros(len(boxes), np.int64),
                    scale_factor=np.array(scale, np.float32))

    np.random.seed(1)
    for _ in range(20):
        out = crop(sample([[10, 10, 30, 30], [50, 50, 70, 70]]))
        assert out["img"].shape == (100, 100, 3)
    sizes = set()
    for _ in range(20):
        out = crop(sample([[10, 10, 90, 90]]))
        if out is not None:
            h, w = out["img"].shape[:2]
            assert 80 <= h <= 100 and 80 <= w <= 100
            assert (out["gt_bboxes"][:, 2] <= w).all() and (out["gt_bboxes"][:, 3] <= h).all()
            sizes.add((h, w))
    assert len(sizes) > 1
    # "Small" is measured in original pixels: a 20 px box upscaled 2x is still small.
    assert all_boxes_small(sample([[0, 0, 40, 40]], scale=(2, 2, 2, 2)), 32 * 32)
    assert not all_boxes_small(sample([[0, 0, 40, 40]]), 32 * 32)


def test_missing_adversarial_image_names_the_file(shapes_root, tiny_sets, tmp_path):
    dataset = _dfa_dataset(shapes_root, tmp_path, tiny_sets)
    with pytest.raises(IkdError, match="adversarial image missing"):
        dataset.pipeline(_results(dataset, 0))


def _results(dataset, index):
    results = dict(img_info=dataset.data_infos[index], ann_info=dataset.get_ann_info(index))
    dataset.pre_pipeline(results)
    return results
