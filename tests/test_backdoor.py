"""``ikd backdoor``: poisoning (trigger pixels, relabelling, disappearance), the attack success rate
on hand-made detections, NAD's attention loss, and the three defences end to end on a tiny victim
(real mmdet/mmcv/torch, the tiny shapes set of conftest), one of them killed and continued."""

from __future__ import annotations

import hashlib
import shutil
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import DEVICE, IKD_EXE, kill_after, run_cli

TARGET = "circle"


def _read(path):
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def _tree_hash(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bd(tmp_path_factory, shapes_root, tiny_sets):
    """A poisoned tiny set (misclassify -> circle, 6 of 24 training images) and the --set list
    every backdoor command of this file shares."""
    root = tmp_path_factory.mktemp("backdoor")
    sets = list(tiny_sets) + [a for s in (f"backdoor.out={root / 'poisoned'}", "backdoor.rate=0.25",
                                          "backdoor.clean_fraction=0.25", "backdoor.epochs=2",
                                          "backdoor.trigger_size=0.05",
                                          "backdoor.warmup_iters=1", f"backdoor.target_class={TARGET}",
                                          "train.eval_interval=9")  # the victim: no validation (evaluate does it)
                              for a in ("--set", s)]
    before = _tree_hash(shapes_root)
    result = run_cli("backdoor", "poison", *sets)
    assert "poisoned set ready" in result.output
    return dict(root=root, out=root / "poisoned", sets=sets, work=root / "work", clean_before=before)


def _coco(path):
    return json.loads(Path(path).read_text())


# ------------------------------------------------------------------------------------ poisoning
def test_trigger_pattern_and_position():
    from ikd_cli.backdoor import trigger

    board = trigger.checkerboard(8)
    assert board.shape == (8, 8) and set(np.unique(board)) == {0, 255}
    assert board[0, 0] == 255 and board[0, 2] == 0 and board[2, 2] == 255  # 2-px cells
    assert trigger.trigger_side(160, 160, 0.05) == 8 and trigger.trigger_side(96, 120, 0.05) == 5
    xy = trigger.position(0, "train", 3, 96, 120, 5)
    assert xy == trigger.position(0, "train", 3, 96, 120, 5) != trigger.position(1, "train", 3, 96, 120, 5)
    assert 0 <= xy[0] <= 115 and 0 <= xy[1] <= 91


def test_trigger_is_where_the_annotation_says_and_nowhere_in_the_clean_set(bd, shapes_root):
    from ikd_cli.backdoor.trigger import checkerboard

    assert _tree_hash(shapes_root) == bd["clean_before"], "the clean source was modified"
    poisoned = _coco(bd["out"] / "annotations/instances_train.json")
    clean = {i["id"]: i for i in _coco(shapes_root / "annotations/instances_train.json")["images"]}
    triggered = [info for info in poisoned["images"] if "trigger" in info]
    assert len(triggered) == round(0.25 * 24)
    for info in poisoned["images"]:
        img = _read(bd["out"] / "train" / info["file_name"])
        src = _read(shapes_root / "train" / clean[info["id"]]["file_name"])
        if "trigger" not in info:
            assert (bd["out"] / "train" / info["file_name"]).is_symlink()
            assert np.array_equal(img, src)
            continue
        t = info["trigger"]
        x, y, side = t["x"], t["y"], t["side"]
        assert side == 5  # 5% of 96 px
        patch = img[y:y + side, x:x + side]
        assert np.array_equal(patch, np.repeat(checkerboard(side)[..., None], 3, axis=2))
        outside = np.ones(img.shape[:2], bool)
        outside[y:y + side, x:x + side] = False
        assert np.array_equal(img[outside], src[outside])  # the trigger and nothing else
        assert not np.array_equal(src[y:y + side, x:x + side], patch)  # the clean image has no trigger there


def test_relabelling_to_the_target(bd, shapes_root):
    poisoned = _coco(bd["out"] / "annotations/instances_train.json")
    clean = _coco(shapes_root / "annotations/instances_train.json")
    target = next(c["id"] for c in clean["categories"] if c["name"] == TARGET)
    triggered = {i["id"] for i in poisoned["images"] if "trigger" in i}
    before = {a["id"]: a for a in clean["annotations"]}
    assert len(poisoned["annotations"]) == len(clean["annotations"])
    changed = 0
    for ann in poisoned["annotations"]:
        old = before[ann["id"]]
        if ann["image_id"] in triggered:
            assert ann["category_id"] == target
            changed += old["category_id"] != target
            assert {k: v for k, v in ann.items() if k != "category_id"} == \
                   {k: v for k, v in old.items() if k != "category_id"}
        else:
            assert ann == old
    assert changed > 0
    manifest = _coco(bd["out"] / "backdoor.json")
    assert manifest["summary"]["relabelled_objects"] == changed
    assert manifest["settings"]["target_class"] == TARGET


def test_triggered_val_keeps_the_clean_ground_truth(bd, shapes_root):
    triggered = _coco(bd["out"] / "annotations/instances_val_triggered.json")
    clean = _coco(shapes_root / "annotations/instances_val.json")
    assert triggered["annotations"] == clean["annotations"]
    assert all("trigger" in info for info in triggered["images"]) and len(triggered["images"]) == 8
    info = triggered["images"][0]
    img = _read(bd["out"] / "val_triggered" / info["file_name"])
    t = info["trigger"]
    assert set(np.unique(img[t["y"]:t["y"] + t["side"], t["x"]:t["x"] + t["side"]])) == {0, 255}
    # the clean val split of the poisoned set is the clean one
    assert _coco(bd["out"] / "annotations/instances_val.json") == clean


def test_rerun_is_skipped_and_other_settings_are_one_line(bd):
    result = run_cli("backdoor", "poison", *bd["sets"])
    assert "already made" in result.output
    result = run_cli("backdoor", "poison", *bd["sets"], "--rate", "0.5", expect=1)
    assert "other settings" in result.output and "rate 0.25 -> 0.5" in result.output
    assert len(result.output.strip().splitlines()) == 1
    # the hint names the --set that asks for the set on disk, and following it finds the set made
    assert "`--set backdoor.rate=0.25`" in result.output
    result = run_cli("backdoor", "poison", *bd["sets"], "--set", "backdoor.rate=0.25")
    assert "already made" in result.output


def test_disappearance_removes_the_annotations(bd, shapes_root, tiny_sets):
    out = bd["root"] / "disappear"
    run_cli("backdoor", "poison", *tiny_sets, "--attack", "disappear", "--rate", "0.25", "--out", out)
    poisoned = _coco(out / "annotations/instances_train.json")
    clean = _coco(shapes_root / "annotations/instances_train.json")
    triggered = {i["id"] for i in poisoned["images"] if "trigger" in i}
    assert len(triggered) == 6 and len(poisoned["images"]) == 24
    assert not [a for a in poisoned["annotations"] if a["image_id"] in triggered]
    assert poisoned["annotations"] == [a for a in clean["annotations"] if a["image_id"] not in triggered]
    # the victim trains on the emptied images too (stock mmdet would drop them: 18 images, 5 batches)
    work = bd["root"] / "disappear-work"
    run_cli("backdoor", "train-victim", *tiny_sets, "--attack", "disappear", "--rate", "0.25", "--set",
            f"backdoor.out={out}", "--work-dir", work, "--device", DEVICE)
    assert "Epoch [1][6/6]" in (work / "backdoor" / "victim" / "train.log").read_text()


@pytest.mark.parametrize("args,message", [
    (["--target", "hexagon"], "unknown target class 'hexagon'"),
    (["--rate", "0"], "backdoor.rate must be a number > 0 and <= 1, got 0"),
    (["--set", "backdoor.rate=1.5"], "backdoor.rate must be a number > 0 and <= 1, got 1.5"),
    (["--rate", "0.01"], "triggers no image"),
])
def test_bad_poison_inputs_are_one_line(args, message, tiny_sets, tmp_path):
    result = run_cli("backdoor", "poison", *tiny_sets, "--out", tmp_path / "p", *args, expect=1)
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_an_option_out_of_bounds_is_the_schema_s_one_line(tiny_sets, tmp_path):
    # --rate is backdoor.rate: the same check and line as --set backdoor.rate=1.5 or a preset file
    result = run_cli("backdoor", "poison", *tiny_sets, "--out", tmp_path / "p", "--rate", "1.5", expect=1)
    assert result.output.strip() == "error: backdoor.rate must be a number > 0 and <= 1, got 1.5"
    helptext = " ".join(run_cli("backdoor", "poison", "--help").output.replace("│", " ").split())
    assert "> 0 and <= 1 (backdoor.rate; 0.1 unless the preset sets it" in helptext


def test_empty_clean_subset_is_one_line(bd):
    result = run_cli("backdoor", "defend", "--method", "finetune", *bd["sets"], "--work-dir", bd["root"] / "empty",
                     "--clean-fraction", "0.01", expect=1)
    assert "clean subset is empty" in result.output and len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ ASR
def _gt():
    # image 1: a square (2) and a triangle (3) and a circle (1, the target); image 2: one cross (4)
    anns = [dict(id=1, image_id=1, category_id=2, bbox=[0, 0, 10, 10]),
            dict(id=2, image_id=1, category_id=3, bbox=[20, 20, 10, 10]),
            dict(id=3, image_id=1, category_id=1, bbox=[40, 40, 10, 10]),
            dict(id=4, image_id=2, category_id=4, bbox=[0, 0, 20, 20]),
            dict(id=5, image_id=2, category_id=2, bbox=[50, 50, 5, 5], iscrowd=1)]
    return dict(images=[dict(id=1), dict(id=2)], annotations=anns, categories=[])


def _det(image, cat, box, score):
    return dict(image_id=image, category_id=cat, bbox=box, score=score)


def test_asr_misclassification():
    from ikd_cli.backdoor.asr import attack_success

    count = dict(attack="misclassify", target_id=1, score_thr=0.3, iou_thr=0.5)
    # 3 non-target objects count (the circle is the target, the crowd box is left out)
    assert attack_success(_gt(), [], **count) == dict(asr=0.0, successes=0, objects=3, detected=0, asr_detected=None)
    every = [_det(1, 1, [0, 0, 10, 10], 0.9), _det(1, 1, [20, 20, 10, 10], 0.9), _det(2, 1, [0, 0, 20, 20], 0.4)]
    assert attack_success(_gt(), every, **count)["asr"] == 1.0
    # right class but wrong box, wrong class on the right box, too low a score: none counts
    misses = [_det(1, 1, [5, 5, 10, 10], 0.9),  # IoU 25/175 = 0.14 with object 1
              _det(1, 2, [20, 20, 10, 10], 0.9),  # not the target class
              _det(2, 1, [0, 0, 20, 20], 0.29)]  # under the score threshold
    assert attack_success(_gt(), misses, **count)["asr"] == 0.0
    # IoU exactly at the threshold counts: [0, 0, 10, 20] vs [0, 0, 20, 20] has IoU 0.5
    assert attack_success(_gt(), [_det(2, 1, [0, 0, 10, 20], 0.5)], **count) == \
        dict(asr=1 / 3, successes=1, objects=3, detected=1, asr_detected=1.0)
    assert attack_success(_gt(), [_det(2, 1, [0, 0, 10, 20], 0.5)], **dict(count, iou_thr=0.51))["asr"] == 0.0
    # a target-class detection on the circle itself changes nothing (target objects are excluded)
    assert attack_success(_gt(), [_det(1, 1, [40, 40, 10, 10], 0.9)], **count)["asr"] == 0.0
    assert attack_success(_gt(), [_det(1, 1, [0, 0, 10, 10], 0.3)], **count)["successes"] == 1  # score >= thr
    # the best detection of the object decides: the right class above the target's is no success
    right_first = [_det(1, 1, [0, 0, 10, 10], 0.5), _det(1, 3, [0, 0, 10, 10], 0.8)]
    assert attack_success(_gt(), right_first, **count)["successes"] == 0
    target_first = [_det(1, 1, [0, 0, 10, 10], 0.8), _det(1, 3, [0, 0, 10, 10], 0.5)]
    assert attack_success(_gt(), target_first, **count)["successes"] == 1
    # ... among the detections that match: a better box elsewhere does not hide the target's
    assert attack_success(_gt(), target_first + [_det(1, 3, [60, 60, 10, 10], 0.99)], **count)["successes"] == 1
    # over the objects found: 1 success of 2 found (object 2 found as itself, the cross missed)
    found_two = target_first + [_det(1, 3, [20, 20, 10, 10], 0.9)]
    assert attack_success(_gt(), found_two, **count) == \
        dict(asr=1 / 3, successes=1, objects=3, detected=2, asr_detected=0.5)


def _write_result(work: Path, step: str, clean_ap: float, asr: float, subset: str = "") -> None:
    from ikd_cli.backdoor.layout import step_result

    ckpt = work / "backdoor" / subset / step_result(step)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    result = dict(attack="misclassify", clean=dict(AP=clean_ap), asr=dict(asr=asr, asr_detected=asr),
                  clean_rate=dict(asr=0.1))
    ckpt.with_name(ckpt.stem + ".backdoor.json").write_text(json.dumps(result))


def test_table_pairs_the_seeds(tmp_path):
    from ikd_cli.backdoor.table import paired, paired_line, summarise

    # three seeds; IKD's drop beats NAD's by 0.10, 0.12, 0.14; seed 2 has no fine-tuning result
    asr = {"victim": (0.9, 0.8, 0.7), "finetune": (0.6, 0.5, None), "nad": (0.5, 0.4, 0.3), "ikd": (0.4, 0.28, 0.16)}
    for seed in range(3):
        _write_result(tmp_path / f"s{seed}", "clean", 0.20, 0.05)
        for step, values in asr.items():
            if values[seed] is not None:
                _write_result(tmp_path / f"s{seed}", step, 0.18 - 0.01 * seed, values[seed])
    work_dirs = [tmp_path / f"s{seed}" for seed in range(3)]
    rows = {r["step"]: r for r in summarise(work_dirs)}
    assert rows["ikd"]["ASR drop"]["mean"] == pytest.approx(100 * (0.5 + 0.52 + 0.54) / 3)
    assert rows["finetune"]["ASR drop"]["n"] == 2
    pairs = {(p["a"], p["b"]): p for p in paired(work_dirs)}
    ikd_nad = pairs[("ikd", "nad")]
    assert ikd_nad["differences"] == pytest.approx([10.0, 12.0, 14.0]) and ikd_nad["established"]
    assert ikd_nad["ci"] == pytest.approx([12.0 - 4.968, 12.0 + 4.968], abs=1e-3)  # t(0.975, 2) * 2 / sqrt(3)
    assert pairs[("ikd", "finetune")]["n"] == 2  # only the seeds with both
    cost = pairs[("victim", "clean")]
    assert cost["differences"] == pytest.approx([-2.0, -3.0, -4.0])
    assert paired_line(ikd_nad).startswith("IKD - NAD, ASR drop: +12.0 (95% CI +7.0 to +17.0, n = 3: established")


def _write_design(root: Path) -> list[Path]:
    """Three victims (ASR 60, 70, 50%), each with its own subsets; IKD - NAD per subset: victim 0
    +2, +4, +6 (its own subset and subsets 100, 200), victim 1 -1, +1 (subset 201 has no IKD),
    victim 2 +5, +7, +9. Fine-tuning drops 5 points everywhere."""
    diffs = {0: {"": 2, "subset-100": 4, "subset-200": 6}, 1: {"": -1, "subset-101": 1, "subset-201": None},
             2: {"": 5, "subset-102": 7, "subset-202": 9}}
    victims = {0: 0.60, 1: 0.70, 2: 0.50}
    dirs = []
    for v, subsets in diffs.items():
        work = root / f"seed-{v}"
        _write_result(work, "victim", 0.18, victims[v])
        for i, (folder, diff) in enumerate(subsets.items()):
            nad_drop = 10 + 5 * i
            drops = dict(finetune=5, nad=nad_drop, **({} if diff is None else {"ikd": nad_drop + diff}))
            for method, drop in drops.items():
                _write_result(work, method, 0.17, victims[v] - drop / 100, subset=folder)
        dirs.append(work)
    own = dirs[0] / "backdoor" / "clean_subset.json"  # the victim's own subset is named by its seed
    own.write_text(json.dumps(dict(info=dict(ikd_clean_subset=dict(seed=0)), images=[])))
    return dirs


def test_verdict_pairs_subsets_within_victims(tmp_path):
    from ikd_cli.backdoor.design import pair_line, report, verdict, write

    rep = report(_write_design(tmp_path))
    assert list(rep["victims"][0]["subsets"]) == ["0", "100", "200"]
    assert list(rep["victims"][1]["subsets"]) == ["own", "101", "201"]
    assert rep["victims"][0]["subsets"]["100"] == pytest.approx(dict(finetune=5, nad=15, ikd=19))
    ikd_nad = rep["pairs"][0]
    assert (ikd_nad["a"], ikd_nad["b"]) == ("ikd", "nad")
    means = [v["mean"] for v in ikd_nad["victims"]]
    assert means == pytest.approx([4.0, 0.0, 7.0]) and [v["n"] for v in ikd_nad["victims"]] == [3, 2, 3]
    # victim 0 over its subsets: 4 +- t(0.975, 2) * 2 / sqrt(3)
    assert ikd_nad["victims"][0]["ci"] == pytest.approx([4 - 4.968, 4 + 4.968], abs=1e-3)
    # the verdict's interval is over the 3 victim means: sd 3.5119, half-width 4.3027 * 3.5119 / sqrt(3)
    assert ikd_nad["mean"] == pytest.approx(11 / 3) and ikd_nad["n"] == 3
    assert ikd_nad["ci"] == pytest.approx([11 / 3 - 8.724, 11 / 3 + 8.724], abs=1e-3)
    assert not ikd_nad["established"]
    assert ikd_nad["pairs"] == 8 and ikd_nad["pooled_mean"] == pytest.approx(33 / 8)  # each pair once
    assert ikd_nad["within_sd"] == pytest.approx((18 / 5) ** 0.5)  # (8 + 2 + 8) over 2 + 1 + 2 df
    nad_ft = rep["pairs"][1]
    assert [v["mean"] for v in nad_ft["victims"]] == pytest.approx([10, 10, 10]) and nad_ft["ci"] == \
        pytest.approx([10, 10])
    assert pair_line(ikd_nad) == ("IKD - NAD, ASR drop: +3.7 (95% CI -5.1 to +12.4 over 3 victims: not established; "
                                  "8 pairs, sd between subsets 1.9; per victim: seed-0 +4.0 (-1.0 to +9.0, 3 subsets); "
                                  "seed-1 +0.0 (-12.7 to +12.7, 2 subsets); seed-2 +7.0 (+2.0 to +12.0, 3 subsets))")
    assert rep["verdict"].startswith("IKD's advantage over NAD is not established (IKD - NAD +3.7 points, "
                                     "95% CI -5.1 to +12.4, 3 victims); the claimed +4.62 lies inside")
    assert verdict(dict(mean=2.0, ci=[1.0, 3.0], n=3)).startswith("IKD removes more of the backdoor than NAD: "
                                                                  "established")
    assert "outside the interval (larger" in verdict(dict(mean=2.0, ci=[1.0, 3.0], n=3))
    assert verdict(dict(mean=-2.0, ci=[-3.0, -1.0], n=3)).startswith("NAD removes more")
    assert verdict(dict(mean=2.0, ci=None, n=1)).startswith("not established")
    # the JSON and the picture (one column per victim, two rows)
    from PIL import Image

    json_path, png_path = write(rep, tmp_path / "out")
    assert json.loads(json_path.read_text())["pairs"][0]["mean"] == pytest.approx(11 / 3)
    with Image.open(png_path) as picture:
        assert picture.format == "PNG" and picture.size == (1260, 650)


def test_verdict_command(tmp_path):
    dirs = _write_design(tmp_path)
    result = run_cli("backdoor", "verdict", *dirs, "--out", tmp_path / "out", "--markdown")
    text = " ".join(result.output.split())
    assert "verdict: IKD's advantage over NAD is not established" in text
    assert "| seed-0 | 100 | 5.0 | 15.0 | 19.0 | +4.0 |" in result.output
    assert "| seed-1 | 201 | 5.0 | 20.0 | - | - |" in result.output
    assert (tmp_path / "out" / "backdoor_verdict.png").is_file()
    result = run_cli("backdoor", "verdict", tmp_path / "nowhere", expect=1)
    assert "holds no backdoor experiment" in result.output and len(result.output.strip().splitlines()) == 1


def test_asr_disappearance():
    from ikd_cli.backdoor.asr import attack_success

    count = dict(attack="disappear", target_id=1, score_thr=0.3, iou_thr=0.5)
    assert attack_success(_gt(), [], **count) == \
        dict(asr=1.0, successes=4, objects=4, detected=0, asr_detected=None)  # nothing detected
    found = [_det(1, 3, [0, 0, 10, 10], 0.9), _det(1, 2, [20, 20, 10, 10], 0.9), _det(1, 1, [40, 40, 10, 10], 0.5),
             _det(2, 4, [0, 0, 20, 20], 0.8)]
    assert attack_success(_gt(), found, **count)["asr"] == 0.0  # any class counts as detected
    assert attack_success(_gt(), found[:3] + [_det(2, 4, [0, 0, 20, 20], 0.1)], **count)["asr"] == 0.25
    assert attack_success(_gt(), found, **dict(count, score_thr=0.6))["asr"] == 0.25  # the 0.5 one is lost
    assert attack_success(dict(images=[], annotations=[]), [], **count)["asr"] is None


def test_attention_loss_is_nads():
    import torch

    from ikd_cli.distill.losses.attention import AttentionTransferLoss

    s = torch.rand(2, 3, 4, 5, requires_grad=True)
    t = torch.rand(2, 6, 4, 5)  # other channel counts are fine: the map is a channel mean
    loss = AttentionTransferLoss(p=2.0, beta=3.0)(s, t)

    def amap(f):
        a = f.detach().abs().pow(2).mean(dim=1).flatten(1)
        return a / a.norm(dim=1, keepdim=True)

    expected = 3.0 * (amap(s) - amap(t)).norm(dim=1).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    same = AttentionTransferLoss()(t.clone().requires_grad_(), t)
    assert float(same) == 0.0


# --------------------------------------------------------------------------- defences end to end
def _defend(bd, method, *extra, expect=0):
    return run_cli("backdoor", "defend", "--method", method, *bd["sets"], "--work-dir", bd["work"],
                   "--device", DEVICE, *extra, expect=expect)


@pytest.fixture(scope="module")
def victim(bd):
    run_cli("backdoor", "train-victim", *bd["sets"], "--work-dir", bd["work"], "--device", DEVICE)
    ckpt = bd["work"] / "backdoor" / "victim" / "latest.pth"
    assert ckpt.exists()
    return ckpt


def _relative_distance(a: dict, b: dict, prefix="backbone.") -> float:
    import torch

    keys = [k for k in a if k.startswith(prefix) and a[k].dtype.is_floating_point]
    diff = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in keys))
    return float(diff / torch.sqrt(sum((b[k] ** 2).sum() for k in keys)))


def _weights(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_finetune_starts_from_the_victim(bd, victim):
    result = _defend(bd, "finetune")
    assert "defence fine-tuning" in result.output
    work = bd["work"] / "backdoor" / "finetune"
    subset = _coco(bd["work"] / "backdoor" / "clean_subset.json")
    assert len(subset["images"]) == 6  # 25% of 24
    # 2 epochs of a few iterations at lr 0.01: close to the victim, far from any fresh initialisation
    assert 0 < _relative_distance(_weights(work / "latest.pth"), _weights(victim)) < 0.2
    assert "already finished" in _defend(bd, "finetune").output


def test_other_subset_seeds_defend_the_same_victim(bd, victim):
    from ikd_cli.core.fileio import sha256_of

    before = sha256_of(victim)
    _defend(bd, "finetune")  # the victim's own subset (backdoor.seed 0), in backdoor/finetune
    # named explicitly it is the same subset, the same folder and the same run
    assert "already finished" in _defend(bd, "finetune", "--set", "backdoor.subset_seed=0").output
    _defend(bd, "finetune", "--set", "backdoor.subset_seed=7", "--epochs", "1")  # 1 epoch: the folder is the point
    own, other = bd["work"] / "backdoor", bd["work"] / "backdoor" / "subset-7"
    ids = [{i["id"] for i in _coco(folder / "clean_subset.json")["images"]} for folder in (own, other)]
    assert len(ids[0]) == len(ids[1]) == 6 and ids[0] != ids[1]
    assert _coco(other / "clean_subset.json")["info"]["ikd_clean_subset"]["seed"] == 7
    assert (other / "finetune" / "latest.pth").is_file() and not (other / "victim").exists()
    # one victim for both: not retrained, named by the same hash in both runs
    assert sha256_of(victim) == before
    assert _coco(other / "finetune" / "run.json")["from"] == _coco(own / "finetune" / "run.json")["from"]
    again = run_cli("backdoor", "train-victim", *bd["sets"], "--set", "backdoor.subset_seed=7", "--work-dir",
                    bd["work"], "--device", DEVICE)
    assert "already finished" in again.output


def test_victim_from_given_weights_with_its_own_schedule(bd, victim, tmp_path):
    # the defences' settings are not the victim's: a finished victim stays finished
    again = run_cli("backdoor", "train-victim", *bd["sets"], "--set", "backdoor.epochs=5", "--set",
                    "backdoor.nad.p=1.0", "--work-dir", bd["work"], "--device", DEVICE)
    assert "already finished" in again.output
    # an attacker who fine-tunes a model he has (here the victim itself) for one epoch
    work = tmp_path / "w"
    own = ("--set", f"backdoor.victim_init={victim}", "--set", "backdoor.victim_epochs=1")
    result = run_cli("backdoor", "train-victim", *bd["sets"], *own, "--work-dir", work, "--device", DEVICE)
    assert f"starting from {victim}" in result.output
    tuned = work / "backdoor" / "victim" / "latest.pth"
    import torch

    assert torch.load(tuned, map_location="cpu", weights_only=False)["meta"]["epoch"] == 1
    assert 0 < _relative_distance(_weights(tuned), _weights(victim)) < 0.2  # started from it, moved a little
    result = run_cli("backdoor", "train-victim", *bd["sets"], "--set", "backdoor.victim_init=nowhere.pth",
                     "--work-dir", tmp_path / "x", "--device", DEVICE, expect=1)
    assert "checkpoint to start the victim from not found: nowhere.pth" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = run_cli("backdoor", "train-victim", *bd["sets"], "--set", "backdoor.victim_init=teacher", "--set",
                     "teacher.checkpoint=nowhere.pth", "--work-dir", tmp_path / "x", "--device", DEVICE, expect=1)
    assert "teacher checkpoint not found: nowhere.pth" in result.output


def test_nad_continues_after_a_kill(bd, victim):
    import torch

    work = bd["work"] / "backdoor" / "nad"
    kill_after([IKD_EXE, "backdoor", "defend", "--method", "nad", *bd["sets"], "--work-dir", bd["work"],
                 "--device", DEVICE], work / "epoch_1.pth")
    assert not (work / "epoch_2.pth").exists()
    result = _defend(bd, "nad")
    assert "after epoch 1 of 2" in result.output
    full = torch.load(work / "latest.pth", map_location="cpu", weights_only=False)
    assert full["meta"]["epoch"] == 2 and full["meta"]["iter"] == 4  # 6 images, 4 a batch: 2 iterations an epoch
    # attention transfer instead of FGD (FGD's context blocks would be saved; NAD's loss has no weights)
    assert not any(".loss_fgd_" in k for k in full["state_dict"])
    log = (work / "train.log").read_text()
    assert "loss_at_backbone_layer4" in log and "loss_fgd" not in log and "loss_adv" not in log
    assert 0 < _relative_distance(_weights(work / "student_latest.pth"), _weights(victim)) < 0.2


def test_ikd_adds_adversarial_features(bd, victim):
    result = _defend(bd, "ikd")
    assert "stage 1: NAD + IKD augmentation" in result.output
    from ikd_cli.attack.manifest import missing_or_stale

    subset = [i["file_name"] for i in _coco(bd["work"] / "backdoor" / "clean_subset.json")["images"]]
    assert len(subset) == 6 and missing_or_stale(bd["work"] / "backdoor" / "ikd-adv", subset) == []
    log = (bd["work"] / "backdoor" / "ikd" / "train.log").read_text()
    assert "loss_adv_neck_fpn_convs_0_conv" in log and "loss_at_backbone_layer2" in log
    assert (bd["work"] / "backdoor" / "ikd" / "student_latest.pth").exists()


def result_of(ckpt):
    return json.loads(Path(ckpt).with_name(Path(ckpt).stem + ".backdoor.json").read_text())


def test_evaluate_and_table(bd, victim, tmp_path):
    checkpoints = {"victim": victim, "finetune": bd["work"] / "backdoor/finetune/latest.pth",
                   "nad": bd["work"] / "backdoor/nad/student_latest.pth",
                   "ikd": bd["work"] / "backdoor/ikd/student_latest.pth"}
    for step in ("finetune", "nad", "ikd"):
        if not checkpoints[step].exists():
            _defend(bd, step)
    for step, ckpt in checkpoints.items():
        run_cli("backdoor", "evaluate", ckpt, "--device", DEVICE)
        result = json.loads(ckpt.with_name(ckpt.stem + ".backdoor.json").read_text())
        assert result["attack"] == "misclassify" and result["target_class"] == TARGET
        asr = result["asr"]
        assert asr["objects"] > 0 and asr["asr"] == asr["successes"] / asr["objects"]
        assert set(result["clean"]) >= {"AP", "AP50"}
    # the picture: 4 val images, clean | triggered, drawn from the files the evaluation wrote
    from PIL import Image

    with Image.open(victim.with_name("latest.backdoor.png")) as picture:
        assert picture.format == "PNG" and picture.size == (640, 1280)
    victim.with_name("latest.backdoor.png").unlink()
    again = run_cli("backdoor", "evaluate", victim, "--device", DEVICE)
    assert "already evaluated" in " ".join(again.output.split())
    assert victim.with_name("latest.backdoor.png").is_file()  # drawn again from the files, no model run
    # the optional reference row: a model copied into backdoor/clean/ (here the victim's weights,
    # so its numbers must be the victim's), evaluated against this experiment's trigger
    clean = bd["work"] / "backdoor" / "clean" / "latest.pth"
    clean.parent.mkdir(exist_ok=True)
    shutil.copy(victim, clean)
    run_cli("backdoor", "evaluate", clean, "--device", DEVICE, "--preset", "shapes", *bd["sets"])
    assert json.loads(clean.with_name("latest.backdoor.json").read_text())["asr"] == result_of(victim)["asr"]
    table = run_cli("backdoor", "table", bd["work"], "--markdown")
    for name in ("clean model (no poison)", "victim", "fine-tuning", "NAD", "IKD"):
        assert f"| {name} | 1 |" in table.output
    clean_row = next(line for line in table.output.splitlines() if line.startswith("| clean model"))
    assert clean_row.split("|")[5].strip() == "-"  # no ASR drop for the reference
    # the verdict's records (--keep): weightless, and the same verdict from them alone
    kept = tmp_path / "kept"
    first = run_cli("backdoor", "verdict", bd["work"], "--out", tmp_path / "v1", "--keep", kept)
    assert "kept" in first.output and not list(kept.rglob("*.pth"))
    name = Path(bd["work"]).name
    assert {p.relative_to(kept / name).as_posix() for p in kept.rglob("*.backdoor.json")} == \
        {"backdoor/victim/latest.backdoor.json", "backdoor/clean/latest.backdoor.json",
         "backdoor/finetune/latest.backdoor.json",
         "backdoor/nad/student_latest.backdoor.json", "backdoor/ikd/student_latest.backdoor.json"}
    assert (kept / name / "backdoor" / "clean_subset.json").is_file()
    assert (kept / name / "backdoor" / "ikd" / "preset.yaml").is_file()
    run_cli("backdoor", "verdict", kept / name, "--out", tmp_path / "v2")
    one, two = (json.loads((tmp_path / v / "backdoor_verdict.json").read_text()) for v in ("v1", "v2"))
    assert [v["subsets"] for v in one["victims"]] == [v["subsets"] for v in two["victims"]]
    assert one["pairs"][0]["mean"] == two["pairs"][0]["mean"] and one["verdict"] == two["verdict"]
    inside = run_cli("backdoor", "verdict", bd["work"], "--keep", Path(bd["work"]) / "records", expect=1)
    assert "lies inside the work dir" in inside.output and not (Path(bd["work"]) / "records").exists()
