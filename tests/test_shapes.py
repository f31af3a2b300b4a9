"""The synthetic shapes dataset: COCO validity, determinism, tight boxes, size mix, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from ikd_cli.data import shapes as S
from ikd_cli.data.shapes import CLASSES, generate_shapes, is_all_small
from ikd_cli.core.errors import IkdError

SMALL = dict(num_train=40, num_val=10, image_size=96)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """One small set shared by the read-only tests."""
    root = tmp_path_factory.mktemp("shapes")
    calls = []
    layout = generate_shapes(root, seed=0, progress=lambda done, total: calls.append((done, total)), **SMALL)
    return layout, calls


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _file_times(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- layout, COCO
def test_layout_and_coco_loads(dataset):
    layout, calls = dataset
    assert layout.train_ann == layout.root / "annotations" / "instances_train.json"
    assert layout.val_ann == layout.root / "annotations" / "instances_val.json"
    assert (layout.root / "shapes.json").is_file()
    assert not (layout.root / S.PARTIAL_NAME).exists()
    assert calls == [(i, 50) for i in range(1, 51)]

    for ann_file, folder, count in ((layout.train_ann, layout.train_images, 40),
                                    (layout.val_ann, layout.val_images, 10)):
        coco = COCO(str(ann_file))
        assert len(coco.getImgIds()) == count
        assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:06d}.png" for i in range(count)]
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        ann_ids = [a["id"] for a in coco.dataset["annotations"]]
        assert sorted(ann_ids) == list(range(1, len(ann_ids) + 1))
        for img in coco.dataset["images"]:
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert 1 <= len(anns) <= S.MAX_OBJECTS
            with Image.open(folder / img["file_name"]) as im:
                assert im.mode == "RGB" and im.size == (img["width"], img["height"]) == (96, 96)
            for a in anns:
                x, y, w, h = a["bbox"]
                assert all(isinstance(v, float) for v in a["bbox"])
                assert x >= 0 and y >= 0 and w >= 1 and h >= 1
                assert x + w <= img["width"] and y + h <= img["height"]
                assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= len(CLASSES)
                assert a["area"] == w * h
                poly = np.array(a["segmentation"][0]).reshape(-1, 2)
                assert len(poly) >= 3
                assert poly.min() >= 0 and poly[:, 0].max() <= img["width"] and poly[:, 1].max() <= img["height"]
                # The polygon and the box describe the same shape (rasterising adds up to a pixel).
                assert abs(poly[:, 0].min() - x) <= 1.0 and abs(poly[:, 0].max() - (x + w)) <= 2.0
                assert abs(poly[:, 1].min() - y) <= 1.0 and abs(poly[:, 1].max() - (y + h)) <= 2.0
            # pycocotools can turn every annotation into a mask.
            assert all(coco.annToMask(a).any() for a in anns)


def test_rectangular_images(tmp_path):
    layout = generate_shapes(tmp_path, seed=1, num_train=3, num_val=2, image_size=(80, 120))
    coco = _load(layout.val_ann)
    assert {(i["height"], i["width"]) for i in coco["images"]} == {(80, 120)}
    with Image.open(layout.val_images / "000000.png") as im:
        assert im.size == (120, 80)
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert x + w <= 120 and y + h <= 80


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_differs(tmp_path, dataset):
    layout, _ = dataset
    again = generate_shapes(tmp_path / "again", seed=0, **SMALL)
    other = generate_shapes(tmp_path / "other", seed=1, **SMALL)
    for rel in ("annotations/instances_train.json", "annotations/instances_val.json",
                "train/000000.png", "train/000017.png", "val/000009.png", "shapes.json"):
        assert (layout.root / rel).read_bytes() == (again.root / rel).read_bytes(), rel
    for rel in ("annotations/instances_train.json", "train/000000.png", "val/000003.png"):
        assert (layout.root / rel).read_bytes() != (other.root / rel).read_bytes(), rel


def test_val_split_independent_of_train_size(tmp_path, dataset):
    layout, _ = dataset
    fewer = generate_shapes(tmp_path, seed=0, num_train=5, num_val=10, image_size=96)
    assert fewer.val_ann.read_bytes() == layout.val_ann.read_bytes()
    assert (fewer.val_images / "000004.png").read_bytes() == (layout.val_images / "000004.png").read_bytes()


# ---------------------------------------------------------------------------------- tight boxes
def test_saved_image_is_the_rendered_one(dataset):
    layout, _ = dataset
    coco = _load(layout.train_ann)
    for index in (0, 3, 11):
        rendered = S.render_image(S.image_rng(0, "train", index), 96, 96, S.planned_all_small(index))
        on_disk = np.asarray(Image.open(layout.train_images / f"{index:06d}.png"))
        assert np.array_equal(on_disk, rendered.image)
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == index + 1]
        assert boxes == [list(o.bbox) for o in rendered.objects]


@pytest.mark.parametrize("index", range(30))
def test_boxes_are_tight(index):
    """Every drawn pixel lies in some box, and every box edge runs over drawn pixels."""
    all_small = S.planned_all_small(index)
    rendered = S.render_image(S.image_rng(7, "train", index), 128, 128, all_small)
    drawn = np.any(rendered.image != rendered.background, axis=2)
    covered = np.zeros_like(drawn)
    assert rendered.objects
    for obj in rendered.objects:
        x, y, w, h = (int(v) for v in obj.bbox)
        assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
        inside = drawn[y:y + h, x:x + w]
        # No empty margin: the first/last row and column of the box all hold drawn pixels.
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        covered[y:y + h, x:x + w] = True
    assert not (drawn & ~covered).any(), "pixels drawn outside every box"


def test_box_edges_on_a_plain_background():
    """A hand-checked case: on a solid background the box is exactly the shape's pixel extent."""
    for index in range(200):
        rendered = S.render_image(S.image_rng(3, "val", index), 96, 96, False)
        if len(rendered.objects) == 1 and np.ptp(rendered.background.reshape(-1, 3), axis=0).max() < 40:
            break
    else:
        pytest.skip("no single-object image on a near-plain background among 200")
    drawn = np.any(rendered.image != rendered.background, axis=2)
    ys, xs = np.nonzero(drawn)
    x, y, w, h = rendered.objects[0].bbox
    assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


# ---------------------------------------------------------------------------------- size mix
def test_size_mix(dataset):
    layout, _ = dataset
    boxes_per_image = {}
    for ann_file in (layout.train_ann, layout.val_ann):
        coco = _load(ann_file)
        per = {img["id"]: [] for img in coco["images"]}
        for a in coco["annotations"]:
            per[a["image_id"]].append(a["bbox"])
        boxes_per_image[ann_file.name] = list(per.values())
    images = [b for lst in boxes_per_image.values() for b in lst]
    share_all_small = np.mean([is_all_small(b) for b in images])
    assert 0.2 <= share_all_small <= 0.4
    areas = np.array([w * h for b in images for (_, _, w, h) in b])
    assert np.mean(areas < 32 * 32) > 0.5, "most objects should be small"
    assert (areas >= 48 * 48).sum() >= 3, "there should be large objects too"
    assert areas.max() <= (0.8 * 96) ** 2


def test_all_small_share_over_many_images():
    """Exactly the planned images are all-small: 3 in every 10."""
    flags = []
    for index in range(100):
        rendered = S.render_image(S.image_rng(5, "train", index), 96, 96, S.planned_all_small(index))
        flags.append(is_all_small([o.bbox for o in rendered.objects]))
        assert flags[-1] == S.planned_all_small(index)
    assert sum(flags) == 30


def test_is_all_small():
    assert is_all_small([[0, 0, 10, 10], [5, 5, 31, 32]])
    assert not is_all_small([[0, 0, 10, 10], [5, 5, 32, 32]])
    assert not is_all_small([])
    assert not is_all_small(np.zeros((0, 4)))
    assert is_all_small(np.array([[1.0, 2.0, 3.0, 4.0]]))
    assert is_all_small([[0, 0, 40, 40]], thresh=96 * 96)


# ---------------------------------------------------------------------------------- rerun rules
def test_second_call_renders_and_writes_nothing(dataset, monkeypatch):
    layout, _ = dataset
    before = _file_times(layout.root)

    def no_rendering(*args, **kwargs):
        raise AssertionError("a finished dataset was rendered again")

    monkeypatch.setattr(S, "render_image", no_rendering)
    again = generate_shapes(layout.root, seed=0, **SMALL)
    assert again == layout
    assert _file_times(layout.root) == before


def test_other_parameters_into_same_folder(dataset):
    layout, _ = dataset
    with pytest.raises(IkdError, match=r"other settings.*seed 0 \(asked 3\).*`--set data.shapes.seed=0`.*another --out"):
        generate_shapes(layout.root, seed=3, **SMALL)
    with pytest.raises(IkdError, match="num_val"):
        generate_shapes(layout.root, seed=0, num_train=40, num_val=11, image_size=96)


def test_folder_with_foreign_annotations(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text("{}")
    with pytest.raises(IkdError, match="did not generate"):
        generate_shapes(tmp_path, num_train=2, num_val=1, image_size=64)


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(IkdError, match="not writable"):
        generate_shapes(blocker / "shapes", num_train=2, num_val=1, image_size=64)


@pytest.mark.parametrize("kwargs", [dict(seed=-1), dict(num_train=0), dict(num_val=-2),
                                    dict(image_size=10), dict(image_size=(64,)), dict(image_size="big")])
def test_bad_parameters(tmp_path, kwargs):
    with pytest.raises(IkdError):
        generate_shapes(tmp_path, **{**dict(num_train=2, num_val=1, image_size=64), **kwargs})
    assert not (tmp_path / "shapes.json").exists()


def test_interrupted_run_resumes(tmp_path, dataset):
    layout, _ = dataset

    def stop_after_20(done, total):
        if done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_shapes(tmp_path, seed=0, progress=stop_after_20, **SMALL)
    assert not (tmp_path / "shapes.json").exists()
    assert not (tmp_path / "annotations").exists()
    assert (tmp_path / S.PARTIAL_NAME).is_file()
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "train").glob("*.png")}
    assert len(kept) == 20

    seen = []
    generate_shapes(tmp_path, seed=0, progress=lambda d, t: seen.append(d), **SMALL)
    assert seen == list(range(1, 51))
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "images of the first run were rewritten"
    assert not (tmp_path / S.PARTIAL_NAME).exists()
    for rel in ("annotations/instances_train.json", "annotations/instances_val.json", "train/000039.png"):
        assert (tmp_path / rel).read_bytes() == (layout.root / rel).read_bytes()


def test_interrupted_run_with_other_parameters_is_redone(tmp_path):
    def stop_after_5(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_shapes(tmp_path, seed=1, num_train=8, num_val=2, image_size=64, progress=stop_after_5)
    layout = generate_shapes(tmp_path, seed=2, num_train=3, num_val=2, image_size=64)
    assert sorted(p.name for p in layout.train_images.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    fresh = generate_shapes(tmp_path / "fresh", seed=2, num_train=3, num_val=2, image_size=64)
    assert (layout.train_images / "000001.png").read_bytes() == (fresh.train_images / "000001.png").read_bytes()
