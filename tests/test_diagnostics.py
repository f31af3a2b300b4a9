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


@pytest.fixture(scope="module")
def adv_set(trained_teacher, tiny_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("adv_diag")
    run_cli("attack", "--preset", "shapes", "--checkpoint", trained_teacher, "--out", out, "--device", DEVICE,
            "--workers", "0", "--steps", "1", *tiny_sets)
    return out


def _distill(work, trained_teacher, tiny_sets, adv_set, diagnostics: bool):
    run_cli("distill", "--preset", "shapes", "--work-dir", work, "--device", DEVICE, *tiny_sets,
            "--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={adv_set}",
            "--set", "attack.steps=1", "--set", f"distill.diagnostics={str(diagnostics).lower()}",
            "--epochs", "2", "--dfa-until", "1")
    (log,) = (work / "distill").glob("*.log.json")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    weights = torch.load(work / "distill" / "student_latest.pth", map_location="cpu", weights_only=False)
    return [r for r in records if r.get("mode") == "train"], weights["state_dict"]


def test_diagnostics_are_logged_in_stage_1_and_change_nothing(trained_teacher, tiny_sets, adv_set, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums in the same order, run to run
    try:
        on, weights_on = _distill(tmp_path / "on", trained_teacher, tiny_sets, adv_set, True)
        off, weights_off = _distill(tmp_path / "off", trained_teacher, tiny_sets, adv_set, False)
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
