"""The attack and `ikd evaluate --robustness` on heads unlike the reference's, with mmdet's own
configs (random weights: "it runs and the loss rises" is what is checked) on the tiny shapes data:

- CenterNet: no classification term (its loss is ``loss_center_heatmap``: ``attack.loss_keys``
  names it; the default says, in one line, which keys there are), a scale factor instead of a
  Resize scale, float pixels from its LoadImageFromFile (corruptions and adversarial sets);
- YOLOX: no Normalize step (identity normalisation), square padding with 114, batches it resizes
  itself;
- DETR: a head that changes its config while it is built (built twice from one config);
- ``--robustness`` skips, in one line kept in the summary, a setting that cannot run on the
  model, and ``--no-whitebox`` runs no white-box attack.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import DEVICE, run_cli
from ikd_cli.attack.manifest import read_records
from ikd_cli.config.layout import robustness_file
from ikd_cli.config.presets import parse_set

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = {"centernet": "mmdet::centernet/centernet_resnet18_140e_coco.py",
           "yolox": "mmdet::yolox/yolox_tiny_8x8_300e_coco.py",
           "detr": "mmdet::detr/detr_r50_8x2_150e_coco.py"}
# one FGSM step (deterministic): the loss of a random detector rises by a margin
ONE_STEP = ["--method", "fgsm", "--no-teacher-check", "--workers", "0", "--device", DEVICE]


def _preset(work: Path, family: str) -> Path:
    config = CONFIGS[family]
    path = work / f"{family}.yaml"
    path.write_text(f"teacher: {{config: '{config}', checkpoint: '{work}/teacher.pth'}}\n"
                    f"student: {{config: '{config}', pretrained: false}}\n"
                    f"work_dir: '{work}'\n"
                    "data: {train_ann: annotations/instances_train.json, train_images: train/,\n"
                    "       val_ann: annotations/instances_val.json, val_images: val/,\n"
                    "       classes: [circle, square, triangle, cross]}\n")
    return path


def _tree(preset: Path, tiny_sets: list[str], *sets: str) -> dict:
    from ikd_cli.api import load_preset

    return load_preset(str(preset), parse_set([*tiny_sets[1::2], *sets]))


def _random_teacher(tree: dict, path: Path) -> Path:
    """The preset's teacher with seeded random weights, saved as a checkpoint."""
    import copy

    import torch
    from mmdet.models import build_detector

    from ikd_cli.config.mmdet import build_config

    cfg = build_config(tree, "teacher")
    cfg.model.backbone.init_cfg = None  # no ImageNet download: random weights do here
    torch.manual_seed(0)
    model = build_detector(copy.deepcopy(cfg.model))
    model.init_weights()
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


@pytest.fixture(scope="module")
def heads(tmp_path_factory, shapes_root, tiny_sets):
    """family -> (preset, its random teacher), made on first use."""
    made = {}

    def get(family: str) -> tuple[Path, Path]:
        if family not in made:
            work = tmp_path_factory.mktemp(family)
            preset = _preset(work, family)
            made[family] = preset, _random_teacher(_tree(preset, tiny_sets), work / "teacher.pth")
        return made[family]
    return get


def _losses(folder: Path) -> tuple[float, float]:
    done, failed = read_records(folder)
    assert done and not failed
    return sum(r["loss_before"] for r in done.values()), sum(r["loss_after"] for r in done.values())


def test_centernet_attack_raises_the_heatmap_loss_named_in_loss_keys(heads, tiny_sets, tmp_path):
    preset, ckpt = heads("centernet")
    out = tmp_path / "adv"
    result = run_cli("attack", "--preset", preset, "--checkpoint", ckpt, "--out", out, "--limit", "2", *ONE_STEP,
                     "--eps", "8", *tiny_sets, "--loss-keys", "loss_center_heatmap")
    before, after = _losses(out)
    assert after > before > 0
    assert json.loads((out / "attack.json").read_text())["loss_keys"] == ["loss_center_heatmap"]
    assert "loss adv" in result.output and "cls loss" not in result.output


def test_centernet_default_loss_keys_say_which_keys_there_are(heads, tiny_sets, tmp_path):
    preset, ckpt = heads("centernet")
    out = tmp_path / "adv"
    result = run_cli("attack", "--preset", preset, "--checkpoint", ckpt, "--out", out, "--limit", "2", *ONE_STEP,
                     *tiny_sets, expect=1)
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "loss_center_heatmap, loss_wh, loss_offset" in error[0]
    assert "attack.loss_keys" in error[0] and "ikd attack" not in error[0]  # the setting, not the same command
    # stopped before the folder recorded settings: the run with the right keys starts there unhindered
    assert not (out / "attack.json").exists()


def test_centernet_test_pipeline_gives_a_scale_factor():
    from mmcv import Config

    from ikd_cli.attack.teacher_loss import Preprocess
    from ikd_cli.config.presets import resolve_config_path

    prep = Preprocess.from_config(Config.fromfile(str(resolve_config_path(CONFIGS["centernet"]))))
    assert prep.scale is None and prep.factor == 1.0 and prep.to_rgb
    assert prep.resized_size(90, 120) == (90, 120, 1.0, 1.0)  # CenterNet tests at the image's own size


def test_a_test_pipeline_without_any_size_is_refused_saying_where():
    from mmcv import Config

    from ikd_cli.attack.teacher_loss import Preprocess
    from ikd_cli.core.errors import IkdError

    pipeline = [dict(type="LoadImageFromFile"), dict(type="MultiScaleFlipAug", transforms=[dict(type="Resize")])]
    with pytest.raises(IkdError, match=r"test pipeline \(data.test.pipeline\) gives no image size: neither its "
                                       r"Resize nor its MultiScaleFlipAug step has an img_scale or a scale_factor"):
        Preprocess.from_config(Config(dict(data=dict(test=dict(pipeline=pipeline)))))


def test_a_fill_padded_before_normalize_is_normalised_like_the_image():
    from mmcv import Config

    from ikd_cli.attack.teacher_loss import Preprocess

    norm = dict(type="Normalize", mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 5.0], to_rgb=True)
    pad = dict(type="Pad", size_divisor=32, pad_val=dict(img=(50, 60, 70)))  # BGR, as padded
    for steps, fill in (([pad, norm], ((70 - 10) / 2, (60 - 20) / 4, (50 - 30) / 5)),  # Mask2Former's order
                        ([norm, pad], (50.0, 60.0, 70.0))):
        pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", img_scale=(64, 64)), *steps]
        assert Preprocess.from_config(Config(dict(data=dict(test=dict(pipeline=pipeline))))).pad_value == fill


def test_yolox_attack_with_identity_normalisation(heads, tiny_sets, tmp_path):
    preset, ckpt = heads("yolox")
    out = tmp_path / "adv"
    # YOLOX's classification targets are the IoU of its own boxes, which move with the image: its
    # loss rises along a small step, not always along one of the whole budget
    run_cli("attack", "--preset", preset, "--checkpoint", ckpt, "--out", out, "--limit", "2", *ONE_STEP, "--eps", "2",
            *tiny_sets)
    before, after = _losses(out)
    assert after > before > 0


def test_yolox_loss_is_its_own_at_its_own_input_size(heads, tiny_sets):
    """No Normalize: raw BGR pixels (mean 0, std 1, no swap); Pad's square and 114 fill; and the
    model's own random batch resize (every 10 forward_train calls) never comes."""
    import torch

    from ikd_cli.attack.run import load_teacher
    from ikd_cli.attack.teacher_loss import Preprocess, TeacherClassificationLoss
    from ikd_cli.config.mmdet import build_config

    preset, ckpt = heads("yolox")
    cfg = build_config(_tree(preset, tiny_sets), "teacher")
    prep = Preprocess.from_config(cfg)
    assert (prep.mean, prep.std, prep.to_rgb) == ((0.0,) * 3, (1.0,) * 3, False)
    assert prep.pad_value == (114.0,) * 3 and prep.pad_to_square
    model = load_teacher(cfg, ckpt, "cpu")
    loss = TeacherClassificationLoss(model, prep, [(64, 96)], [torch.tensor([[10.0, 10.0, 40.0, 30.0]])],
                                     [torch.tensor([1])])
    batch, _, _ = loss._inputs(torch.full((1, 3, 64, 96), 7.0), None)
    assert batch.shape == (1, 3, 96, 96)  # padded to a square
    assert float(batch[0, :, 63:].min()) == 7.0 and float(batch[0, :, 64:].max()) == 114.0
    with torch.no_grad():
        first = float(loss(torch.rand(1, 3, 64, 96) * 255))
        for _ in range(12):
            loss(torch.rand(1, 3, 64, 96) * 255)
    assert first > 0 and model._input_size == model._default_input_size


def test_detr_builds_twice_from_one_config(heads, tiny_sets):
    """DETRHead turns its config's class_weight into a tensor while it is built: `evaluate
    --robustness` builds the model for scoring and again for its white-box attack."""
    import torch

    from ikd_cli.attack.run import load_teacher
    from ikd_cli.config.mmdet import build_config
    from ikd_cli.core.checkpoints import build_detector_with_weights

    preset, ckpt = heads("detr")
    cfg = build_config(_tree(preset, tiny_sets), "teacher")
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    scored = build_detector_with_weights(cfg, weights, str(ckpt))
    attacked = load_teacher(cfg, ckpt, "cpu", weights)
    assert type(scored) is type(attacked) and isinstance(cfg.model.bbox_head.loss_cls.class_weight, float)


def test_robustness_skips_a_setting_that_cannot_run(heads, tiny_sets, tmp_path):
    """CenterNet with the default loss keys: the white-box attack cannot run; the command goes
    on, says so in one line, keeps why in the summary, and scores the corruption (on the float
    pixels CenterNet's pipeline reads)."""
    import shutil

    preset, ckpt = heads("centernet")
    own = shutil.copy(ckpt, tmp_path / "centernet.pth")
    result = run_cli("evaluate", own, "--preset", preset, "--model", "teacher", "--robustness", "--corruptions",
                     "gaussian_noise", "--severities", "1", "--device", DEVICE, *tiny_sets)
    said = [line for line in result.output.splitlines() if line.startswith("white-box: skipped")]
    assert len(said) == 1 and "loss_center_heatmap" in said[0]
    summary = json.loads(robustness_file(Path(own)).read_text())
    assert summary["whitebox"] is None and "loss_center_heatmap" in summary["whitebox_skipped"]
    assert summary["clean"]["AP"] is not None and [r["corruption"] for r in summary["corruptions"]["results"]] == \
        ["gaussian_noise"]


def test_no_whitebox_runs_none_and_loss_keys_make_it_run(heads, tiny_sets, tmp_path):
    import shutil

    preset, ckpt = heads("centernet")
    own = Path(shutil.copy(ckpt, tmp_path / "centernet.pth"))
    args = ["evaluate", own, "--preset", preset, "--model", "teacher", "--robustness", "--corruptions", "none",
            "--device", DEVICE, *tiny_sets, "--set", "attack.loss_keys=[loss_center_heatmap]", "--set",
            "attack.steps=1"]
    result = run_cli(*args, "--no-whitebox")
    assert "white-box: skipped (--no-whitebox)" in result.output
    assert json.loads(robustness_file(own).read_text())["whitebox_skipped"] == "--no-whitebox"
    assert not list(tmp_path.glob("*whitebox*"))  # no attack was made
    # with the heatmap named, the white-box attack runs on CenterNet (its adversarial set read
    # on the float pixels its pipeline loads) and raises that loss
    run_cli(*args)
    entry = json.loads(robustness_file(own).read_text())["whitebox"]
    assert entry["AP"] is not None and entry["loss_after_mean"] > entry["loss_before_mean"]


def test_loss_keys_pick_by_name_or_wildcard():
    import torch

    from ikd_cli.attack.teacher_loss import classification_loss
    from ikd_cli.core.errors import IkdError

    losses = {"s0.loss_cls": torch.tensor(3.0), "s1.loss_cls": torch.tensor(0.5), "loss_rpn_cls": torch.tensor(1.0),
              "loss_center_heatmap": torch.tensor(2.0), "loss_wh": torch.tensor(9.0)}
    assert float(classification_loss(losses)) == 4.5  # the default: every classification term
    assert float(classification_loss(losses, ["s*.loss_cls"])) == 3.5
    assert float(classification_loss(losses, ["loss_center_heatmap", "loss_wh"])) == 11.0
    with pytest.raises(IkdError, match=r"none of attack.loss_keys \['loss_obj'\]; its losses are s0.loss_cls, "):
        classification_loss(losses, ["loss_obj"])


def test_a_whitebox_set_made_before_loss_keys_existed_is_still_found(tmp_path):
    """Its attack.json lacks the key: null, the default, is what it was made with; a set of other
    keys is another set."""
    from ikd_cli.evaluate.whitebox import finished_summary

    old = {"method": "difgsm", "eps": 8.0, "model_sha256": "ab", "split": "val"}
    (tmp_path / "attack.json").write_text(json.dumps(old))
    (tmp_path / "summary.json").write_text(json.dumps({"images": 2, "attacked": 2, "failed": 0}))
    assert finished_summary(tmp_path, {**old, "loss_keys": None}) is not None
    assert finished_summary(tmp_path, {**old, "loss_keys": ["loss_center_heatmap"]}) is None
