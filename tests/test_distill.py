"""`ikd distill` and `ikd resume` on the tiny shapes data: both stages in one run, clean student
checkpoints, the adversarial-set pre-flight, resume after a kill in stage 1 and in stage 2,
a NaN stop, a 2-process (gloo) run, and IKD on MGD."""

import os
import subprocess

import pytest
import torch

from helpers import DEVICE, IKD_EXE, kill_after, run_cli, two_ranks_or_skip


def _distill_args(trained_teacher, tiny_sets, tiny_adv_set, work):
    return ["--preset", "shapes", "--work-dir", str(work), "--device", DEVICE, *tiny_sets,
            "--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={tiny_adv_set}",
            "--set", "attack.steps=1"]  # the set's settings (distill checks them)


def test_both_stages_in_one_run(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    result = run_cli("distill", *_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path),
                     "--epochs", "2", "--dfa-until", "1")
    assert "epoch 1: stage 1" in result.output and "epoch 2: stage 2" in result.output
    work = tmp_path / "distill"
    log = (work / "train.log").read_text()
    assert "loss_adv_neck_fpn_convs_0_conv" in log and "loss_fgd_neck_fpn_convs_0_conv" in log
    epoch2 = [line for line in log.splitlines() if "Epoch [2]" in line]
    assert epoch2 and all("loss_adv" not in line for line in epoch2)  # stage 2 has no adversarial loss

    # The full state (resume) and the student alone (evaluate, init_detector, deployment).
    full = torch.load(work / "latest.pth", map_location="cpu", weights_only=False)
    assert any(k.startswith("teacher.") for k in full["state_dict"]) and "optimizer" in full
    student = torch.load(work / "student_latest.pth", map_location="cpu", weights_only=False)
    assert not any(k.startswith(("teacher.", "student.", "distill_losses")) for k in student["state_dict"])
    # validation ran every epoch, so there is a best epoch; its student is student_best.pth
    (best,) = work.glob("best_*.pth")
    best_student = torch.load(work / "student_best.pth", map_location="cpu", weights_only=False)["state_dict"]
    best_full = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    assert best_student.keys() == {k[len("student."):] for k in best_full if k.startswith("student.")}
    assert all(torch.equal(v, best_full["student." + k]) for k, v in best_student.items())

    from mmcv import Config
    from mmdet.apis import init_detector

    cfg = Config.fromstring(student["meta"]["config"], ".py")
    model = init_detector(cfg, str(work / "student_latest.pth"), device=DEVICE)
    assert type(model).__name__ == "RetinaNet"
    ev = run_cli("evaluate", work / "student_latest.pth", "--device", DEVICE)
    assert "AP50" in ev.output


def test_same_seed_same_student(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    """Two runs with one seed train the same student: the student's random initialisation is
    seeded too, so a comparison between runs (student alone, FGD, IKD) compares methods, not luck."""
    students = []
    for name in ("a", "b"):
        run_cli("distill", *_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path / name), "--epochs", "1",
                "--set", "train.eval_interval=0")  # no validation: the test compares weights
        students.append(torch.load(tmp_path / name / "distill" / "student_latest.pth", map_location="cpu",
                                   weights_only=False)["state_dict"])
    assert students[0].keys() == students[1].keys()
    assert all(torch.equal(students[0][k], students[1][k]) for k in students[0])


def test_init_student_copies_the_teachers_neck_and_head(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    from ikd_cli.config import presets
    from mmdet.models import build_detector

    from ikd_cli.distill.config import build_distill_config

    import ikd_cli.distill.distiller  # noqa: F401

    tree = presets.load("shapes", presets.parse_set([s for s in tiny_sets if s != "--set"] +
                                                     [f"teacher.checkpoint={trained_teacher}"]))
    model = build_detector(build_distill_config(tree).model)
    model.init_weights()
    teacher = torch.load(trained_teacher, map_location="cpu", weights_only=False)["state_dict"]
    s = model.student.state_dict()
    assert torch.equal(s["bbox_head.retina_cls.weight"], teacher["bbox_head.retina_cls.weight"])
    assert torch.equal(s["neck.fpn_convs.0.conv.weight"], teacher["neck.fpn_convs.0.conv.weight"])
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_preflight_counts_missing_adversarial_images(trained_teacher, tiny_sets, tmp_path):
    empty = tmp_path / "no-adv"
    empty.mkdir()
    result = run_cli("distill", *_distill_args(trained_teacher, tiny_sets, empty, tmp_path / "w"), expect=1)
    assert "have no adversarial copy" in result.output and "ikd attack" in result.output
    assert str(empty) in result.output
    # --dfa-until 0 is plain FGD and needs no adversarial images.
    run_cli("distill", *_distill_args(trained_teacher, tiny_sets, empty, tmp_path / "w"), "--dfa-until", "0")


def test_nan_loss_stops_with_a_clear_message(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    result = run_cli("distill", *_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path),
                     "--set", "distill.fgd.alpha=1e300", "--set", "distill.fgd.beta=1e300", expect=1)
    assert "the loss became" in result.output and "Traceback" not in result.output
    assert not list((tmp_path / "distill").glob("*epoch_*.pth"))  # nothing non-finite was saved


@pytest.mark.parametrize("kill_after_epoch,stage", [(1, "stage 1"), (2, "stage 2")])
def test_resume_a_killed_run(kill_after_epoch, stage, trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    args = _distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path)
    work = tmp_path / "distill"
    kill_after([IKD_EXE, "distill", *args, "--epochs", "3", "--dfa-until", "2", "--set", "train.max_keep_ckpts=2"],
                work / f"epoch_{kill_after_epoch}.pth")
    result = run_cli("resume", work, "--device", DEVICE)
    assert f"after epoch {kill_after_epoch}" in result.output
    assert f"epoch {kill_after_epoch + 1}: {stage}" in result.output
    full = torch.load(work / "latest.pth", map_location="cpu", weights_only=False)
    # 24 training images, 4 per batch: 6 iterations an epoch, 18 after 3 epochs, however it was cut.
    assert full["meta"]["epoch"] == 3 and full["meta"]["iter"] == 18
    # two epochs' checkpoints are kept, the full ones and the student's alone (a kill between
    # epoch 2's full checkpoint and its student export leaves student epochs 1 and 3)
    assert sorted(p.name for p in work.glob("epoch_*.pth")) == ["epoch_2.pth", "epoch_3.pth"]
    students = sorted(p.name for p in work.glob("student_epoch_*.pth"))
    assert len(students) == 2 and students[-1] == "student_epoch_3.pth"


def test_resume_refuses_other_presets_and_non_runs(tmp_path, trained_teacher):
    result = run_cli("resume", tmp_path, expect=1)
    assert "not an ikd run folder" in result.output
    result = run_cli("resume", trained_teacher.parent, "--preset", "retinanet", expect=1)
    assert "is a run of preset 'shapes', not 'retinanet'" in result.output


def test_two_gloo_processes(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    two_ranks_or_skip()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([IKD_EXE, "distill", *_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path),
                           "--epochs", "1", "--gpus", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    full = torch.load(tmp_path / "distill" / "latest.pth", map_location="cpu", weights_only=False)
    assert full["meta"]["epoch"] == 1
    # 24 images, 4 per process, 2 processes: 3 iterations per epoch.
    assert full["meta"]["iter"] == 3
    assert "Epoch(val) [1]" in (tmp_path / "distill" / "train.log").read_text()  # gathered over gloo


def test_amp_distillation_trains(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    """--amp on the CPU: each step under bf16 autocast, weights and optimiser in fp32."""
    run_cli("distill", *_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path), "--epochs", "1", "--amp")
    full = torch.load(tmp_path / "distill" / "latest.pth", map_location="cpu", weights_only=False)
    assert full["meta"]["epoch"] == 1
    weights = [v for v in full["state_dict"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights)


def test_mgd_both_stages_killed_in_stage_1_then_continued(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    """IKD on MGD end to end: MGD on the clean image in both stages, the adversarial feature loss
    in stage 1 only; a kill -9 after epoch 1 (stage 1) continues in stage 1."""
    args = [*_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path), "--method", "mgd"]
    work = tmp_path / "distill"
    kill_after([IKD_EXE, "distill", *args, "--epochs", "3", "--dfa-until", "2"], work / "epoch_1.pth")
    assert not (work / "epoch_2.pth").exists()
    result = run_cli("distill", *args, "--epochs", "3", "--dfa-until", "2")
    assert "after epoch 1 of 3" in result.output and "epoch 2: stage 1: MGD + IKD augmentation" in result.output
    assert "epoch 3: stage 2: plain MGD" in result.output
    log = (work / "train.log").read_text()
    epochs = {e: [line for line in log.splitlines() if f"Epoch [{e}]" in line and "loss_mgd" in line] for e in (2, 3)}
    assert epochs[2] and all("loss_adv_neck_fpn_convs_0_conv" in line for line in epochs[2])
    assert epochs[3] and all("loss_adv" not in line for line in epochs[3])
    assert "loss_fgd" not in log
    full = torch.load(work / "latest.pth", map_location="cpu", weights_only=False)
    assert full["meta"]["epoch"] == 3 and full["meta"]["iter"] == 18
    generation = "distill_losses.loss_mgd_neck_fpn_convs_0_conv.generation.0.weight"
    assert full["state_dict"][generation].shape == (64, 64, 3, 3)
    # A finished MGD run is not continued, or silently replaced, as FGD.
    refused = run_cli("distill", *_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path), "--epochs", "3",
                      "--dfa-until", "2", expect=1)
    assert "other settings (distill.method 'mgd' -> 'fgd')" in refused.output


def test_mgd_same_seed_same_student(trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    """MGD's random masks come from the run's seeded generator: one seed, the same student."""
    students = []
    for name in ("a", "b"):  # no validation: the test compares weights
        run_cli("distill", *_distill_args(trained_teacher, tiny_sets, tiny_adv_set, tmp_path / name), "--epochs", "1",
                "--method", "mgd", "--set", "train.eval_interval=0")
        students.append(torch.load(tmp_path / name / "distill" / "student_latest.pth", map_location="cpu",
                                   weights_only=False)["state_dict"])
    assert all(torch.equal(students[0][k], students[1][k]) for k in students[0])


def test_checkpoints_from_before_the_loss_list_load(trained_teacher, tiny_sets):
    """A full checkpoint that kept FGD's modules under ``fgd_losses.*`` loads into the distiller."""
    import ikd_cli.distill.distiller  # noqa: F401
    from mmcv.runner import load_state_dict
    from mmdet.models import build_detector

    from ikd_cli.config import presets
    from ikd_cli.distill.config import build_distill_config

    tree = presets.load("shapes", presets.parse_set([s for s in tiny_sets if s != "--set"] +
                                                     [f"teacher.checkpoint={trained_teacher}"]))
    model = build_detector(build_distill_config(tree).model)
    state = {k.replace("distill_losses.loss_fgd", "fgd_losses.loss_fgd"): v + 1
             for k, v in model.state_dict().items()}
    assert any(k.startswith("fgd_losses.") for k in state)
    load_state_dict(model, state, strict=True)
    key = "distill_losses.loss_fgd_neck_fpn_convs_0_conv.context_s.conv_mask.weight"
    assert torch.equal(model.state_dict()[key], state[key.replace("distill_losses.", "fgd_losses.")])
