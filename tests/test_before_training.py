"""Issue 31, part 4: what a run says before it spends hours. init_student's inheritance, the
student's starting weights, a teacher of non-finite or integer weights, an attack that
perturbs nothing or has non-finite losses, the teacher check (score on a few val images,
cached per digest, recorded), the loss balance at the first iteration and the likely cause of
a NaN, and ``ikd distill --dry-run``. Real checkpoints, real runs of the tiny shapes models."""

import json

import pytest
import torch

from helpers import DEVICE, REPO, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _distill_args(teacher, tiny_sets, adv_set, work):
    return ["--preset", "shapes", "--work-dir", str(work), "--device", DEVICE, *tiny_sets,
            "--set", f"teacher.checkpoint={teacher}", "--set", f"attack.out={adv_set}", "--set", "attack.steps=1"]


def _tree(tiny_sets, *sets):
    from ikd_cli.config import presets

    return presets.load("shapes", presets.parse_set([s for s in tiny_sets if s != "--set"] + list(sets)))


def _teacher_with(trained_teacher, path, change):
    """The session teacher saved at ``path`` with ``change(state_dict)`` applied."""
    ckpt = torch.load(trained_teacher, map_location="cpu", weights_only=False)
    change(ckpt["state_dict"])
    torch.save({"state_dict": ckpt["state_dict"], "meta": {}}, path)
    return path


def _one_error(result, *words):
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), result.output
    return errors[0]


# ------------------------------------------------------------------------------ init_student
def test_a_half_inherited_student_is_said_and_recorded(trained_teacher, tiny_sets, tmp_path):
    """A student whose head is narrower than the teacher's inherits the neck and two biases: the
    run says how many of its neck/head tensors it inherited, warns, and records it."""
    narrow = tmp_path / "narrow_head.py"
    narrow.write_text(f"_base_ = '{REPO / 'configs/models/shapes_retinanet_r18.py'}'\n"
                      "model = dict(bbox_head=dict(feat_channels=32))\n")
    work = tmp_path / "w"
    result = run_cli("distill", *_distill_args(trained_teacher, tiny_sets, tmp_path / "none", work), "--dfa-until", "0",
                     "--set", f"student.config={narrow}", "--set", "train.eval_interval=0")
    line = next(x for x in result.output.splitlines() if "neck/head tensors from the teacher" in x)
    assert line.startswith("warning: inherited ") and "skipped:" in line and " shape / 0 missing" in line
    recorded = json.loads((work / "distill" / "run.json").read_text())
    inherited = recorded["init_student"]
    assert 0 < inherited["inherited"] < inherited["of"]
    assert inherited["shape"] == inherited["of"] - inherited["inherited"]
    assert recorded["teacher_check"]["sha256"] and "AP" in recorded["teacher_check"]
    log = (work / "distill" / "train.log").read_text()
    assert "loss balance at the first iteration" in log and "loss_fgd_neck_fpn_convs_0_conv" in log


def test_init_student_false_inherits_nothing(trained_teacher, tiny_sets):
    from mmdet.models import build_detector

    import ikd_cli.distill.distiller  # noqa: F401
    from ikd_cli.distill.config import build_distill_config

    tree = _tree(tiny_sets, f"teacher.checkpoint={trained_teacher}", "distill.init_student=false")
    model = build_detector(build_distill_config(tree).model)
    model.init_weights()
    teacher = torch.load(trained_teacher, map_location="cpu", weights_only=False)["state_dict"]
    assert model.inherited is None
    key = "bbox_head.retina_cls.weight"
    assert not torch.equal(model.student.state_dict()[key], teacher[key])


# ------------------------------------------------------------------------- student.checkpoint
def test_a_missing_student_checkpoint_is_refused(trained_teacher, tiny_sets, tmp_path):
    missing = tmp_path / "nowhere.pth"
    for command in (["train", "--model", "student"], ["distill", "--dfa-until", "0", "--no-teacher-check"]):
        result = run_cli(*command, "--preset", "shapes", "--work-dir", tmp_path / "w", "--device", DEVICE, *tiny_sets,
                         "--set", f"teacher.checkpoint={trained_teacher}", "--set", f"student.checkpoint={missing}",
                         expect=1)
        _one_error(result, "student.checkpoint not found", str(missing))
    assert not (tmp_path / "w" / "student").exists() or not list((tmp_path / "w" / "student").glob("*.pth"))


def test_the_student_starts_from_its_checkpoint(trained_teacher, tiny_sets, tmp_path):
    """train (mmdet's load_from, checked to fit) and distill (the whole student, over
    init_student) both start from student.checkpoint."""
    from mmdet.models import build_detector

    import ikd_cli.distill.distiller  # noqa: F401
    from ikd_cli.config.mmdet import build_config
    from ikd_cli.distill.config import build_distill_config

    tree = _tree(tiny_sets, f"teacher.checkpoint={trained_teacher}")
    torch.manual_seed(7)
    start = build_detector(build_config(tree, "student").model)
    start.init_weights()
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in start.state_dict().items()}
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "start.pth")

    model = build_detector(build_distill_config(_tree(tiny_sets, f"teacher.checkpoint={trained_teacher}",
                                                      f"student.checkpoint={tmp_path / 'start.pth'}")).model)
    model.init_weights()
    assert model.inherited is None  # the checkpoint holds the whole student
    assert all(torch.equal(v, state[k]) for k, v in model.student.state_dict().items())

    # lr 0: training changes no weight of the head (no batch norm there), so the run's weights are the start's
    run_cli("train", "--model", "student", "--preset", "shapes", "--work-dir", tmp_path / "w", "--device", DEVICE,
            *tiny_sets, "--set", f"student.checkpoint={tmp_path / 'start.pth'}", "--set", "train.lr=0",
            "--set", "train.eval_interval=0", "--set", "train.weight_decay=0")
    trained = torch.load(tmp_path / "w" / "student" / "latest.pth", map_location="cpu",
                         weights_only=False)["state_dict"]
    assert torch.equal(trained["bbox_head.retina_cls.weight"], state["bbox_head.retina_cls.weight"])
    # a checkpoint of another model does not fit, said in one line
    result = run_cli("train", "--model", "student", "--preset", "shapes", "--work-dir", tmp_path / "w2", "--device",
                     DEVICE, *tiny_sets, "--set", f"student.checkpoint={trained_teacher}", expect=1)
    _one_error(result, "does not fit the model config")


# ---------------------------------------------------------- teachers that are not finite floats
@pytest.mark.parametrize("change,words", [
    (lambda s: s["bbox_head.retina_cls.weight"].view(-1)[0].fill_(float("nan")),
     ("non-finite values", "bbox_head.retina_cls.weight")),
    (lambda s: s.update({"neck.fpn_convs.0.conv.weight": s["neck.fpn_convs.0.conv.weight"].round().long()}),
     ("neck.fpn_convs.0.conv.weight as int64",))])
def test_a_teacher_not_of_finite_floats_is_refused(change, words, trained_teacher, tiny_sets, tmp_path):
    bad = _teacher_with(trained_teacher, tmp_path / "bad.pth", change)
    result = run_cli("attack", "--preset", "shapes", "--checkpoint", bad, "--out", tmp_path / "adv", "--device", DEVICE,
                     "--workers", "0", "--limit", "4", *tiny_sets, expect=1)
    _one_error(result, "not finite floats", *words)
    assert not (tmp_path / "adv").exists()  # refused before the output folder was made


def test_an_attack_with_non_finite_losses_stops(trained_teacher, tiny_sets, tmp_path):
    """Finite weights whose outputs overflow: the first batch's loss is not finite; nothing is recorded."""
    huge = _teacher_with(trained_teacher, tmp_path / "huge.pth",
                         lambda s: s["bbox_head.retina_cls.weight"].mul_(1e38))
    out = tmp_path / "adv"
    result = run_cli("attack", "--preset", "shapes", "--checkpoint", huge, "--out", out, "--device", DEVICE,
                     "--workers", "0", "--limit", "4", "--steps", "1", "--no-teacher-check", *tiny_sets, expect=1)
    _one_error(result, "the teacher's loss is", "not finite")
    assert not any(f.read_text().strip() for f in out.glob("records-*.jsonl"))


def test_an_attack_that_perturbs_nothing_stops(trained_teacher, tiny_sets, tmp_path):
    """A classifier of zeros gives the attack no gradient: every image would be its source."""
    def zero(s):
        s["bbox_head.retina_cls.weight"].zero_()

    flat = _teacher_with(trained_teacher, tmp_path / "flat.pth", zero)
    result = run_cli("attack", "--preset", "shapes", "--checkpoint", flat, "--out", tmp_path / "adv", "--device",
                     DEVICE, "--workers", "0", "--limit", "4", "--steps", "1", "--no-teacher-check", *tiny_sets,
                     expect=1)
    _one_error(result, "unperturbed", "max L-inf 0")


# ----------------------------------------------------------------------------- teacher check
def test_a_random_teacher_is_refused_before_the_attack(tiny_sets, tmp_path):
    from mmdet.models import build_detector

    from ikd_cli.config.mmdet import build_config, drop_pretrained

    cfg = build_config(_tree(tiny_sets), "teacher")
    drop_pretrained(cfg.model)
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    model.init_weights()
    torch.save({"state_dict": model.state_dict(), "meta": {}}, tmp_path / "random.pth")
    args = ["attack", "--preset", "shapes", "--checkpoint", tmp_path / "random.pth", "--out", tmp_path / "adv",
            "--device", DEVICE, "--workers", "0", "--limit", "4", "--steps", "1", *tiny_sets,
            "--set", "distill.teacher_check_min_ap=0.01"]
    error = _one_error(run_cli(*args, expect=1), "scores 0.0 AP on the first 8 val images", "--no-teacher-check")
    assert "teacher_check_min_ap" in error and not (tmp_path / "adv" / "attack.json").exists()
    assert json.loads((tmp_path / "teacher-check.json").read_text())  # cached beside the checkpoint
    # --no-teacher-check goes on (and finds a teacher of no gradient: nothing perturbed)
    assert "teacher check: skipped" in run_cli(*args, "--no-teacher-check", expect=None).output


def test_the_teacher_check_is_cached_and_keeps_the_random_state(own_teacher, tiny_sets):
    import numpy as np

    from ikd_cli.evaluate.teacher_check import check_teacher

    tree = _tree(tiny_sets)
    torch.manual_seed(3)
    np.random.seed(3)
    first = check_teacher(tree, checkpoint=own_teacher, device=DEVICE)
    drawn = float(torch.rand(1)), float(np.random.rand())
    torch.manual_seed(3)
    np.random.seed(3)
    assert drawn == (float(torch.rand(1)), float(np.random.rand()))  # the check drew nothing from either
    again = check_teacher(tree, checkpoint=own_teacher, device=DEVICE)
    assert not first["cached"] and again["cached"] and again["AP"] == first["AP"] and first["images"] == 8
    cache = json.loads((own_teacher.parent / "teacher-check.json").read_text())
    assert list(cache) == [first["sha256"]]


# ------------------------------------------------------------- loss balance and the NaN cause
def test_a_huge_distillation_weight_is_named(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    """MGD at 1e30: the first iteration's balance names distill.mgd.alpha, and stage 1's
    diagnostics take the overflowing gradients (no math domain error). At 1e300 the term is
    infinite at once: the stop names the weight, not the learning rate."""
    args = [*_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path), "--method", "mgd", "--dfa-until", "1",
            "--set", "train.eval_interval=0"]
    result = run_cli("distill", *args, "--set", "distill.mgd.alpha=1e30")
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: loss_mgd_")]
    assert len(warnings) == 5 and all("x the detection loss" in w and "lower distill.mgd.alpha" in w for w in warnings)
    assert "math domain error" not in result.output
    result = run_cli("distill", *args, "--set", "distill.mgd.alpha=1e300", "--restart", expect=1)
    error = _one_error(result, "the loss became inf", "likely cause", "loss_mgd_", "lower distill.mgd.alpha")
    assert "learning rate" not in error


def test_diagnostics_survive_overflowing_gradients():
    import math

    from ikd_cli.distill.diagnostics import _log10_ratio

    assert _log10_ratio(0.0, math.inf) == -math.inf and _log10_ratio(math.inf, 1.0) == math.inf
    assert math.isnan(_log10_ratio(math.nan, 1.0)) and _log10_ratio(10.0, 1.0) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------- --dry-run
def test_dry_run_checks_everything_and_writes_only_its_table(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    args = [*_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path), "--dry-run", "--dfa-until", "1",
            "--epochs", "2"]
    result = run_cli("distill", *args)
    for row in ("data", "config and files", "teacher check", "model and weights", "init_student",
                "stage 1 iteration", "stage 2 iteration"):
        assert row in result.output
    assert "FAILED" not in result.output and "inherited" in result.output
    assert sorted(p.name for p in (tmp_path / "distill").iterdir()) == ["dry-run.txt"]
    assert "stage 2 iteration" in (tmp_path / "distill" / "dry-run.txt").read_text()

    # a set without the images and a weight that overflows: exit 1 after the whole table
    failed = run_cli("distill", *_distill_args(trained_teacher, tiny_sets, tmp_path / "none", tmp_path / "f"),
                     "--dry-run", "--dfa-until", "1", "--epochs", "2", "--method", "mgd",
                     "--set", "distill.mgd.alpha=1e30", "--set", "distill.teacher_check_min_ap=1", expect=1)
    error = _one_error(failed, "dry run: 3 check(s) failed", "teacher check", "stage 1 iteration", "stage 2 iteration")
    assert sorted(p.name for p in (tmp_path / "f" / "distill").iterdir()) == ["dry-run.txt"], error
    table = (tmp_path / "f" / "distill" / "dry-run.txt").read_text()
    assert "have no adversarial copy" in table and "lower distill.mgd.alpha" in table
