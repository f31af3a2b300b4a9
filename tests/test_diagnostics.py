"""Stage 1's diagnostics of the adversarial term (distill/diagnostics.py) on a real tiny
distillation: logged into mmcv's JSON log on stage-1 iterations only, one value per level and
measure, and without any effect on training (bit-identical weights with them on or off)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import DEVICE, run_cli
from ikd_cli.distill.diagnostics import GRAD_VS_DET, GRAD_VS_DISTILL, TEACHER_DIST

LEVELS = [f"neck_fpn_convs_{i}_conv" for i in range(5)]


def _distill(work, trained_teacher, tiny_sets, tiny_adv_set, diagnostics: bool):
    run_cli("distill", "--preset", "shapes", "--work-dir", work, "--device", DEVICE, *tiny_sets,
            "--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={tiny_adv_set}",
            "--set", "attack.steps=1", "--set", f"distill.diagnostics={str(diagnostics).lower()}",
            "--epochs", "2", "--dfa-until", "1")
    (log,) = (work / "distill").glob("*.log.json")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    weights = torch.load(work / "distill" / "student_latest.pth", map_location="cpu", weights_only=False)
    return [r for r in records if r.get("mode") == "train"], weights["state_dict"]


def test_diagnostics_are_logged_in_stage_1_and_change_nothing(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums in the same order, run to run
    try:
        on, weights_on = _distill(tmp_path / "on", trained_teacher, tiny_sets, tiny_adv_set, True)
        off, weights_off = _distill(tmp_path / "off", trained_teacher, tiny_sets, tiny_adv_set, False)
    finally:
        torch.set_num_threads(threads)
    assert weights_on.keys() == weights_off.keys()
    assert all(torch.equal(weights_on[k], weights_off[k]) for k in weights_on)
    assert [r["loss"] for r in on] == [r["loss"] for r in off]  # the total holds no diagnostic

    keys = {prefix + level for prefix in (TEACHER_DIST, GRAD_VS_DISTILL, GRAD_VS_DET) for level in LEVELS}
    stage1, stage2 = [r for r in on if r["epoch"] == 1], [r for r in on if r["epoch"] == 2]
    assert stage1 and stage2
    assert all(keys <= set(r) for r in stage1)  # log_interval 1: every stage-1 line is measured
    assert not any(k.startswith("diag_") for r in stage2 + off for k in r)
    for r in stage1:
        # the one-step attack moves the teacher's features, but by far less than their own size
        assert all(0 < r[TEACHER_DIST + lvl] < 1 for lvl in LEVELS)
        assert all(math.isfinite(r[p + lvl]) for p in (GRAD_VS_DISTILL, GRAD_VS_DET) for lvl in LEVELS)


def test_diagnostics_equal_a_separate_backward(tiny_sets):
    """The logged numbers against the same quantities found another way: the gradient norms by
    a plain ``backward`` of each term with ``retain_grad`` on the student's level outputs, the
    teacher distance from the teacher run by hand (a random teacher: any weights will do)."""
    from mmdet.models import build_detector

    import ikd_cli.distill.distiller  # noqa: F401  (registers IKDDistiller)
    from ikd_cli.config import presets
    from ikd_cli.distill.config import build_distill_config

    torch.manual_seed(0)
    tree = presets.load("shapes", presets.parse_set([s for s in tiny_sets if s != "--set"] + ["teacher.checkpoint="]))
    model = build_detector(build_distill_config(tree).model)
    model.init_weights()
    model.train()
    levels = [s for image, s, _ in model.entries.values() if image == "adv"]
    seen = {s: [] for s in levels}  # each level's outputs: the clean image's, then the adversarial one's
    for s in levels:
        model.student.get_submodule(s).register_forward_hook(lambda m, i, out, s=s: seen[s].append(out))
    img = torch.rand(2, 3, 96, 96)
    adv_img = (img + 0.05 * torch.randn_like(img)).clamp(0, 1)
    metas = [dict(img_shape=(96, 96, 3), pad_shape=(96, 96, 3), ori_shape=(96, 96, 3), batch_input_shape=(96, 96),
                  scale_factor=[1.0] * 4, flip=False)] * 2
    boxes = [torch.tensor([[10.0, 10.0, 40.0, 50.0]]), torch.tensor([[20.0, 30.0, 80.0, 70.0], [5.0, 5.0, 20.0, 20.0]])]
    labels = [torch.tensor([0]), torch.tensor([1, 2])]
    model.diagnose = True
    losses = model.forward_train(img, metas, boxes, labels, adv_img=adv_img)
    for outs in seen.values():
        for out in outs:
            out.retain_grad()
    terms = {"adv": sum(losses[k] for k, e in model.entries.items() if e[0] == "adv"),
             "distill": sum(losses[k] for k, e in model.entries.items() if e[0] == "clean"),
             "det": sum(v for k, vs in losses.items() if k.startswith("loss_") and k not in model.entries
                        for v in (vs if isinstance(vs, list) else [vs]))}
    norms = {}
    for name, term in terms.items():
        for outs in seen.values():
            for out in outs:
                out.grad = None
        term.backward(retain_graph=True)
        image = 1 if name == "adv" else 0
        norms[name] = {s: float(seen[s][image].grad.norm()) for s in levels}
    with torch.no_grad():
        t_clean = [f.flatten(1) for f in model.teacher.extract_feat(img)]
        t_adv = [f.flatten(1) for f in model.teacher.extract_feat(adv_img)]
    for i, s in enumerate(levels):
        tag = s.replace(".", "_")
        assert float(losses[GRAD_VS_DISTILL + tag]) == pytest.approx(
            math.log10(norms["adv"][s] / norms["distill"][s]), abs=1e-5)
        assert float(losses[GRAD_VS_DET + tag]) == pytest.approx(math.log10(norms["adv"][s] / norms["det"][s]), abs=1e-5)
        distance = ((t_adv[i] - t_clean[i]).norm(dim=1) / t_clean[i].norm(dim=1)).mean()
        assert float(losses[TEACHER_DIST + tag]) == pytest.approx(float(distance), rel=1e-6)
        assert float(losses[TEACHER_DIST + tag]) > 0
