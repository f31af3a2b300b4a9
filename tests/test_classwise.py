"""Per-class AP: `ikd evaluate --classwise` against pycocotools' own per-category evaluation of
the same detections (COCOeval restricted to one category), on a real tiny teacher."""

from __future__ import annotations

import json

import pytest

from helpers import DEVICE, run_cli


def test_classwise_ap_equals_pycocotools_per_category(trained_teacher, shapes_root):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    result = run_cli("evaluate", trained_teacher, "--device", DEVICE, "--classwise")
    assert "AP per class" in result.output
    report = json.loads(trained_teacher.with_name("latest.eval-val.json").read_text())
    per_class = report["bbox"]["classwise"]
    gt = COCO(str(shapes_root / "annotations" / "instances_val.json"))
    dt = gt.loadRes(str(trained_teacher.with_name("latest.eval-val.bbox.json")))
    cats = gt.loadCats(gt.getCatIds())
    assert list(per_class) == [c["name"] for c in cats]
    for cat in cats:
        ev = COCOeval(gt, dt, "bbox")
        ev.params.catIds = [cat["id"]]
        ev.evaluate(); ev.accumulate(); ev.summarize()
        expected = float(ev.stats[0])
        assert per_class[cat["name"]] == (None if expected < 0 else pytest.approx(expected, abs=0)), cat["name"]
    assert any(ap for ap in per_class.values())  # the teacher finds something, so the test can fail
    assert f"{100 * report['bbox']['AP']:.1f}" in result.output
