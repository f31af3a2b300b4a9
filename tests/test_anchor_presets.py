"""The anchors' pairs as presets: FGD's Faster R-CNN, FCOS and GFL pairs and mmrazor's FCOS ->
RetinaNet across heads. Each resolves, names real mmdet configs, downloads what mmdet's own
metafiles list, and builds its distiller (random weights, no download) with the levels, channels
and weights its source published. The expected values are written out here from those sources
(the YAML comments say which file), so a preset that drifts from them fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from helpers import run_cli
from ikd_cli.config import presets
from ikd_cli.config.mmdet import build_config
from ikd_cli.distill.config import build_distill_config
from ikd_cli.zoo import registry

FPN = [f"neck.fpn_convs.{i}.conv" for i in range(5)]

# name -> what the preset must give: models, schedule, levels, the clean loss and its arguments
# (FGD's / mmrazor's configs), IKD's weight, whether the student inherits the teacher's neck/head.
EXPECTED = {
    "faster-rcnn": dict(teacher="CascadeRCNN", student="FasterRCNN", epochs=24, steps=[16, 22], lr=0.02, dfa=16,
                        levels=FPN[:4], outputs=5, loss="FGDLoss", init_student=False, alpha_adv=2.5e-7,
                        weights=dict(temp=0.5, alpha_fgd=5e-5, beta_fgd=2.5e-5, gamma_fgd=5e-5, lambda_fgd=5e-7),
                        mgd=dict(alpha_mgd=5e-7, lambda_mgd=0.45)),
    "fcos": dict(teacher="FCOS", student="FCOS", epochs=24, steps=[16, 22], lr=0.01, dfa=16,
                 levels=FPN, outputs=5, loss="FGDLoss", init_student=True, alpha_adv=1e-5,
                 weights=dict(temp=0.8, alpha_fgd=1.6e-3, beta_fgd=8e-4, gamma_fgd=8e-4, lambda_fgd=8e-6),
                 mgd=dict(alpha_mgd=2e-5, lambda_mgd=0.65)),
    "gfl": dict(teacher="GFL", student="GFL", epochs=12, steps=[8, 11], lr=0.01, dfa=8,
                levels=FPN, outputs=5, loss="FGDLoss", init_student=True, alpha_adv=1e-5,
                weights=dict(temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6),
                mgd=dict(alpha_mgd=2e-5, lambda_mgd=0.65)),
    "fcos-retinanet": dict(teacher="FCOS", student="RetinaNet", epochs=12, steps=[8, 11], lr=0.01, dfa=8,
                           levels=FPN[:4], outputs=5, loss="PKDLoss", init_student=False, alpha_adv=1e-5,
                           weights=dict(alpha_pkd=10.0), mgd=dict(alpha_mgd=2e-5, lambda_mgd=0.65)),
}
NAMES = list(EXPECTED)


def _mmdet_configs() -> Path:
    spec = importlib.util.find_spec("mmdet")
    return Path(list(spec.submodule_search_locations)[0]) / ".mim" / "configs"


def _metafile_entry(config: str) -> dict:
    """The entry of mmdet's own metafile whose Config is ``config`` (``mmdet::family/file.py``)."""
    family, file = config.removeprefix("mmdet::").split("/")
    models = yaml.safe_load((_mmdet_configs() / family / "metafile.yml").read_text())["Models"]
    [entry] = [m for m in models if m["Config"] == f"configs/{family}/{file}"]
    return entry


@pytest.mark.parametrize("name", NAMES)
def test_anchor_preset_resolves_to_mmdet_configs(name):
    """`ikd presets show` resolves it; both model configs are mmdet's, with the preset's schedule;
    teacher and student normalise the image alike (the distiller feeds both one tensor)."""
    want = EXPECTED[name]
    shown = run_cli("presets", "show", name).output
    assert f"name: {name}" in shown and "instances_train2017.json" in shown
    preset = presets.load(name)
    assert preset["distill"]["levels"] == want["levels"] and preset["distill"]["dfa_until"] == want["dfa"]
    norms = []
    for role in ("teacher", "student"):
        cfg = build_config(preset, role)
        assert cfg.model.type == want[role]
        assert preset[role]["config"].startswith("mmdet::")
        assert cfg.runner.max_epochs == want["epochs"] and cfg.lr_config.step == want["steps"]
        assert cfg.optimizer.lr == want["lr"]
        norms.append([step for step in cfg.data.train.pipeline if step["type"] == "Normalize"])
    assert norms[0] == norms[1] and len(norms[0]) == 1


@pytest.mark.parametrize("name", NAMES)
def test_anchor_preset_downloads_match_mmdet_metafiles(name):
    """The teacher and the student baseline are the zoo files mmdet's metafile lists for the very
    configs the preset names: name, URL, and the sha256 prefix the file name carries."""
    preset = presets.load(name)
    for role in ("teacher", "student"):
        entry = _metafile_entry(preset[role]["config"])
        ckpt = registry.resolve(preset[role]["download"])
        assert ckpt.name == entry["Name"] and ckpt.url == entry["Weights"]
        assert ckpt.url.rsplit("-", 1)[1] == f"{ckpt.sha256_prefix}.pth"
        assert ckpt.filename == entry["Weights"].rsplit("/", 1)[1]
    assert Path(preset["teacher"]["checkpoint"]).name == registry.resolve(preset["teacher"]["download"]).filename


@pytest.mark.parametrize("name", NAMES)
def test_anchor_preset_names_its_files_for_ikd_download(name):
    """`ikd download --preset` knows both files: the zoo teacher and the student's ImageNet init
    (FCOS's caffe ResNet-50 comes from open-mmlab://, the others from torchvision://)."""
    from ikd_cli.train.downloads import preset_files

    teacher, init = preset_files(presets.load(name))
    assert teacher.what == "teacher checkpoint" and teacher.ckpt.sha256_prefix
    caffe = name == "fcos"
    assert init.what == f"student backbone init {'open-mmlab://detectron/resnet50_caffe' if caffe else 'torchvision://resnet50'}"
    assert init.ckpt.sha256_prefix == ("788b5fa3" if caffe else "0676ba61")


@pytest.fixture(scope="module")
def distillers():
    """The four distillers, built from mmdet's configs with random weights (~5 s on one core)."""
    import ikd_cli.distill.distiller  # noqa: F401
    from mmdet.models import build_detector

    built = {}
    for name in NAMES:
        cfg = build_distill_config(presets.load(name))
        cfg.model.teacher_checkpoint = None
        for role in ("teacher", "student"):
            cfg.model[role].backbone.init_cfg = None
        built[name] = (cfg, build_detector(cfg.model).eval())
    return built


@pytest.mark.parametrize("name", NAMES)
def test_anchor_distiller_levels_channels_and_weights(name, distillers):
    want = EXPECTED[name]
    cfg, model = distillers[name]
    assert (type(model.teacher).__name__, type(model.student).__name__) == (want["teacher"], want["student"])
    assert cfg.dfa_until == want["dfa"] and cfg.model.init_student is want["init_student"]
    n = len(want["levels"])
    assert [type(loss).__name__ for loss in model.distill_losses.values()] == [want["loss"]] * n + ["AdvFeatureLoss"] * n
    assert [(img, s, t) for img, s, t in model.entries.values()] == \
        [("clean", lvl, lvl) for lvl in want["levels"]] + [("adv", lvl, lvl) for lvl in want["levels"]]
    for loss in model.distill_losses.values():
        assert (loss.student_channels, loss.teacher_channels) == (256, 256) and loss.align is None
        args = want["weights"] if type(loss).__name__ == want["loss"] else dict(alpha_adv=want["alpha_adv"])
        assert {key: getattr(loss, key) for key in args} == pytest.approx(args, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_anchor_levels_are_the_necks_outputs(name, distillers):
    """Each named level is one of the feature maps extract_feat returns (the i-th, in order), in
    teacher and student; Faster R-CNN's fifth output, a max-pool, comes from no module."""
    want = EXPECTED[name]
    _, model = distillers[name]
    image = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    for net in (model.teacher, model.student):
        seen = {}
        hooks = [net.get_submodule(lvl).register_forward_hook(lambda m, i, o, lvl=lvl: seen.__setitem__(lvl, o))
                 for lvl in want["levels"]]
        with torch.no_grad():
            feats = net.extract_feat(image)
        for hook in hooks:
            hook.remove()
        assert len(feats) == want["outputs"] and len(net.neck.fpn_convs) == (4 if name == "faster-rcnn" else 5)
        assert all(torch.equal(seen[lvl], feats[i]) for i, lvl in enumerate(want["levels"]))


@pytest.mark.parametrize("name", NAMES)
def test_anchor_mgd_weights(name):
    """--method mgd: MGD's own Faster R-CNN weights; the others have none published (defaults)."""
    cfg = build_distill_config(presets.load(name, {"distill.method": "mgd"}))
    clean, adv = cfg.model.losses
    assert clean == dict(type="MGDLoss", **EXPECTED[name]["mgd"], image="clean", levels=EXPECTED[name]["levels"])
    assert adv["alpha_adv"] == EXPECTED[name]["alpha_adv"]


def test_faster_rcnn_shares_the_mask_rcnn_adversarial_set():
    """Same teacher, same data: `ikd attack` for one preset makes the set the other reads."""
    from ikd_cli.config.layout import adversarial_set_dir

    faster, mask = presets.load("faster-rcnn"), presets.load("mask-rcnn")
    assert faster["teacher"] == mask["teacher"] and faster["data"] == mask["data"]
    assert adversarial_set_dir(faster, "train") == adversarial_set_dir(mask, "train")


def test_presets_show_prints_the_cross_head_distiller():
    out = run_cli("presets", "show", "fcos-retinanet", "--model", "distill").output
    assert "PKDLoss" in out and "alpha_pkd=10.0" in out and "FGDLoss" not in out
    assert "fcos_x101_64x4d" in out and "ResNeXt" in out  # the teacher named by the preset


@pytest.mark.parametrize("name", NAMES)
def test_anchor_distiller_trains_one_step(name, distillers):
    """One training forward on a small image with an adversarial copy: the student's own losses,
    the distiller's on every level of the clean image and IKD's on the adversarial one, all finite,
    and a gradient reaches the student's backbone (the teacher's stays frozen)."""
    _, model = distillers[name]
    gen = torch.Generator().manual_seed(1)
    img, adv = torch.rand(1, 3, 128, 160, generator=gen), torch.rand(1, 3, 128, 160, generator=gen)
    meta = dict(img_shape=(128, 160, 3), pad_shape=(128, 160, 3), ori_shape=(128, 160, 3), scale_factor=1.0,
                flip=False, batch_input_shape=(128, 160), ori_filename="a.jpg")
    model.train()
    try:
        losses = model.forward_train(img, [meta], [torch.tensor([[16.0, 20.0, 90.0, 110.0]])],
                                     [torch.tensor([3])], adv_img=adv)
    finally:
        model.eval()
    keys = [k for k in losses if k.startswith(("loss_fgd", "loss_pkd", "loss_adv"))]
    assert keys == list(model.distill_losses)
    assert all(torch.isfinite(losses[k]) and losses[k] > 0 for k in keys)
    total = sum(v.sum() if torch.is_tensor(v) else sum(x.sum() for x in v) for k, v in losses.items() if "loss" in k)
    total.backward()
    assert model.student.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
