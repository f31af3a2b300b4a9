"""`ikd evaluate --robustness` on the real stack with the tiny shapes data: the white-box attack
raises the evaluated model's own loss inside the budget, corruptions change AP and are the same
on a re-run, mPC/rPC are the stored per-setting results' means, and `ikd report`'s robustness
columns are the eval files' numbers."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest

from helpers import DEVICE, IKD_EXE, run_cli, verify_adversarial_set
from ikd_cli.config.layout import eval_file, robustness_file
from ikd_cli.config.presets import parse_set

# One attack step, a small budget: the tests check behaviour, not strength.
ATTACK = ["--set", "attack.steps=2", "--set", "attack.eps=4", "--set", "attack.alpha=2"]


@pytest.fixture(scope="module")
def tiny_student(trained_teacher, tmp_path_factory) -> Path:
    """A student checkpoint with its own (freshly initialised, seeded) weights, not the teacher's,
    carrying the teacher run's preset as `ikd train` would: any detector, in seconds."""
    import torch
    from mmdet.models import build_detector

    from ikd_cli.config.mmdet import build_config

    ckpt = torch.load(trained_teacher, map_location="cpu", weights_only=False)
    torch.manual_seed(0)
    model = build_detector(build_config(ckpt["meta"]["ikd_preset"], "student").model)
    model.init_weights()
    folder = tmp_path_factory.mktemp("robust-student")
    for f in trained_teacher.parent.iterdir():  # the run's text files, as a student run has them
        if f.is_file() and f.suffix != ".pth" and ".eval-" not in f.name:
            shutil.copy(f, folder / f.name)
    path = folder / "latest.pth"
    torch.save({"meta": {**ckpt["meta"], "ikd_role": "student"}, "state_dict": model.state_dict()}, path)
    return path


def _copy_run(ckpt: Path, dest: Path) -> Path:
    """The run folder's text files and its checkpoint as ``latest.pth``: evaluating writes there."""
    dest.mkdir(parents=True)
    for f in ckpt.parent.iterdir():
        if f.is_file() and f.suffix != ".pth" and ".eval-" not in f.name:
            shutil.copy(f, dest / f.name)
    shutil.copy(ckpt, dest / "latest.pth")
    return dest / "latest.pth"


def _val_names(shapes_root: Path) -> list[str]:
    return [im["file_name"] for im in json.loads((shapes_root / "annotations" / "instances_val.json").read_text())["images"]]


def test_whitebox_attack_raises_the_models_own_loss_within_eps(tiny_student, trained_teacher, shapes_root, tmp_path):
    import torch

    from ikd_cli.attack.manifest import read_records
    from ikd_cli.attack.teacher_loss import Preprocess, TeacherClassificationLoss
    from ikd_cli.core.fileio import sha256_of
    from ikd_cli.evaluate.run import load_evaluation
    from ikd_cli.evaluate.whitebox import whitebox_plan
    from helpers import read_adversarial_image

    ckpt = _copy_run(tiny_student, tmp_path / "run")
    run_cli("evaluate", ckpt, "--robustness", "--corruptions", "none", "--device", DEVICE, *ATTACK)
    summary = json.loads(robustness_file(ckpt).read_text())
    folder = Path(summary["whitebox"]["images"])
    assert folder.parent == ckpt.parent and folder.name.startswith("latest.whitebox-val-")
    settings = json.loads((folder / "attack.json").read_text())
    assert settings["model_sha256"] == sha256_of(ckpt) != sha256_of(trained_teacher) and "teacher_sha256" not in settings
    assert settings["model_config"] == "RetinaNet ResNet18"  # the student's own model, attacked
    assert (settings["method"], settings["eps"], settings["steps"]) == ("difgsm", 4.0, 2)
    names = _val_names(shapes_root)
    assert verify_adversarial_set(folder, shapes_root / "val", names, eps=4) == []  # L-inf <= eps, from the files
    done, failed = read_records(folder)
    assert set(done) == set(names) and not failed
    before = [done[n]["loss_before"] for n in names]
    after = [done[n]["loss_after"] for n in names]
    assert statistics.fmean(after) > statistics.fmean(before) and sum(a > b for a, b in zip(after, before)) >= 7

    # The loss the records hold is the student's own: recomputed here from the stored pixels.
    ev = load_evaluation(ckpt, preset=None, model="student", overrides=parse_set(ATTACK[1::2]), device="cpu",
                         verbose=False)
    assert whitebox_plan(ev, "val")[0] == folder  # the folder is keyed by these weights and settings
    from ikd_cli.attack.run import load_teacher

    model = load_teacher(ev.cfg, ckpt, "cpu", ev.weights)
    prep = Preprocess.from_config(ev.cfg)
    gt = json.loads((shapes_root / "annotations" / "instances_val.json").read_text())
    name = next(im for im in gt["images"] if any(a["image_id"] == im["id"] for a in gt["annotations"]))
    anns = [a for a in gt["annotations"] if a["image_id"] == name["id"]]
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=torch.float32)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    labels = torch.tensor([cat_ids.index(a["category_id"]) for a in anns])
    adv = read_adversarial_image(folder, shapes_root / "val", name["file_name"])
    x = torch.from_numpy(adv).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        loss = float(TeacherClassificationLoss(model, prep, [adv.shape[:2]], [boxes], [labels])(x))
    assert loss == pytest.approx(done[name["file_name"]]["loss_after"], rel=1e-4)

    mtime = eval_file(ckpt, summary["whitebox"]["file"].split(".eval-")[1][:-5]).stat().st_mtime_ns
    again = run_cli("evaluate", ckpt, "--robustness", "--corruptions", "none", "--device", DEVICE, *ATTACK)
    assert "finished; reused" in again.output and "stored in" in again.output
    assert eval_file(ckpt, summary["whitebox"]["file"].split(".eval-")[1][:-5]).stat().st_mtime_ns == mtime
    # Another budget, or other weights, is another set (and another eval file), never the cached one.
    other = load_evaluation(ckpt, preset=None, model="student", overrides=parse_set([*ATTACK[1::2], "attack.eps=2"]),
                            device="cpu", verbose=False)
    assert whitebox_plan(other, "val")[0] != folder
    retrained = ckpt.with_name("retrained.pth")
    torch.save(dict(torch.load(ckpt, weights_only=False), meta={**torch.load(ckpt, weights_only=False)["meta"],
                                                                "epoch": 99}), retrained)
    ev_retrained = load_evaluation(retrained, preset=None, model="student", overrides=parse_set(ATTACK[1::2]),
                                   device="cpu", verbose=False)
    assert whitebox_plan(ev_retrained, "val")[0].name.split("-")[-1] != folder.name.split("-")[-1]


def test_corruptions_change_ap_and_mpc_is_the_mean_of_the_stored_results(trained_teacher, tmp_path):
    ckpt = _copy_run(trained_teacher, tmp_path / "run")
    args = ["evaluate", ckpt, "--robustness", "--corruptions", "gaussian_noise,contrast", "--severities", "1,5",
            "--device", DEVICE, *ATTACK]
    run_cli(*args)
    summary = json.loads(robustness_file(ckpt).read_text())
    clean = json.loads(eval_file(ckpt, "val").read_text())["bbox"]["AP"]
    assert clean > 0 and summary["clean"]["AP"] == clean
    stored = {}
    for name in ("gaussian_noise", "contrast"):
        for severity in (1, 5):
            report = json.loads(eval_file(ckpt, f"val-corruption-{name}-{severity}").read_text())
            assert report["setting"]["corruption"] == name and report["setting"]["severity"] == severity
            assert report["setting"]["batch_size"] == 4 and report["cpu_seconds"] > 0  # batched; its CPU cost
            stored[name, severity] = report["bbox"]["AP"]
    # The corruptions reach the model: each changes the detections and the AP. (Not "lowers": the
    # session's teacher is at a few AP after 8 tiny epochs, where noise can nudge AP either way.)
    clean_dets = eval_file(ckpt, "val", ".bbox.json").read_text()
    for name in ("gaussian_noise", "contrast"):
        assert eval_file(ckpt, f"val-corruption-{name}-5", ".bbox.json").read_text() != clean_dets
        assert stored[name, 5] != clean
    mpc = statistics.fmean([statistics.fmean([stored[n, 1], stored[n, 5]]) for n in ("gaussian_noise", "contrast")])
    assert summary["corruptions"]["mPC"] == pytest.approx(mpc, abs=1e-12)
    assert summary["corruptions"]["rPC"] == pytest.approx(mpc / clean, abs=1e-12)
    assert [(r["corruption"], r["severity"], r["AP"]) for r in summary["corruptions"]["results"]] == \
        [(n, s, stored[n, s]) for n in ("gaussian_noise", "contrast") for s in (1, 5)]
    assert summary["transfer"] is None and "ikd attack --split val" in summary["transfer_skipped"]
    entries = [summary["clean"], summary["whitebox"], *summary["corruptions"]["results"]]
    assert summary["cost"]["cpu_seconds"] == pytest.approx(
        sum(e["cpu_seconds"] for e in entries) + summary["whitebox"]["attack_cpu_seconds"], abs=0.05)

    # Seeded per image: scored again from scratch, the same detections and the same AP.
    noisy = eval_file(ckpt, "val-corruption-gaussian_noise-5", ".bbox.json").read_text()
    eval_file(ckpt, "val-corruption-gaussian_noise-5").unlink()
    again = run_cli(*args)
    assert again.output.count("stored in") == 5  # clean, white-box and three corruptions skipped
    assert eval_file(ckpt, "val-corruption-gaussian_noise-5", ".bbox.json").read_text() == noisy
    assert json.loads(robustness_file(ckpt).read_text())["corruptions"]["mPC"] == summary["corruptions"]["mPC"]

    # `ikd report` on this run folder: its robustness columns are the eval files' numbers.
    from ikd_cli.report.run import write_report

    report = write_report([ckpt.parent], tmp_path / "report")
    (row,) = report["arms"]
    whitebox = json.loads(eval_file(ckpt, summary["whitebox"]["file"].split(".eval-")[1][:-5]).read_text())
    expected = {"AP clean": clean, "AP white-box": whitebox["bbox"]["AP"], "mPC": mpc, "rPC": mpc / clean}
    for metric, value in expected.items():
        assert row["robustness"][metric]["mean"] == pytest.approx(100 * value, abs=1e-9), metric
    assert row["robustness"]["AP transfer"]["n"] == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"| {100 * whitebox['bbox']['AP']:.1f} |" in markdown and "gaussian_noise,contrast @1,5" in markdown


def test_batched_settings_detect_as_batch_one_and_batch_only_one_size(trained_teacher, tmp_path):
    """The robustness settings run on batches (data.samples_per_gpu when the split's images have
    one size): the same detections as batch 1 up to float rounding, and the same AP."""
    from ikd_cli.evaluate.robustness import batch_size
    from ikd_cli.evaluate.run import load_evaluation, score

    ckpt = _copy_run(trained_teacher, tmp_path / "run")
    ev = load_evaluation(ckpt, preset=None, model="teacher", overrides={}, device=DEVICE, verbose=False)
    assert batch_size(ev, "val") == 4  # the tiny preset's data.samples_per_gpu: every val image is 96 x 96
    one, four = (score(ev, "val", tag=f"val-b{n}", samples_per_gpu=n) for n in (1, 4))

    def detections(tag):
        dets = json.loads(eval_file(ckpt, tag, ".bbox.json").read_text())
        return sorted(dets, key=lambda d: (d["image_id"], d["category_id"], -d["score"]))

    d1, d4 = detections("val-b1"), detections("val-b4")
    assert len(d1) == len(d4) > 0
    assert [(a["image_id"], a["category_id"]) for a in d1] == [(b["image_id"], b["category_id"]) for b in d4]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(d1, d4)) < 1e-4
    assert max(abs(x - y) for a, b in zip(d1, d4) for x, y in zip(a["bbox"], b["bbox"])) < 1e-2
    assert four["bbox"]["AP"] == pytest.approx(one["bbox"]["AP"], abs=1e-4)

    # One image of another size would be padded in a batch: batch 1 then, unless the preset says.
    ann = json.loads(Path(ev.cfg.data.test.ann_file).read_text())
    ann["images"][0]["width"] += 1
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    ev.cfg.data.test.ann_file = str(tmp_path / "ann.json")
    assert batch_size(ev, "val") == 1
    ev.preset["robustness"]["batch_size"] = 2
    assert batch_size(ev, "val") == 2


def test_corruptions_are_seeded_per_image_and_named_sets():
    from ikd_cli.core.errors import IkdError
    from ikd_cli.evaluate.corruptions import COMMON, corrupt_image, corruption_plan

    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    state = np.random.get_state()
    a = corrupt_image(img, "shot_noise", 3, seed=0, filename="a.png")
    assert np.array_equal(a, corrupt_image(img, "shot_noise", 3, seed=0, filename="a.png"))
    assert not np.array_equal(a, corrupt_image(img, "shot_noise", 3, seed=0, filename="b.png"))
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator left as it was
    for name in COMMON:  # all 15 run on this scikit-image (glass blur's argument included)
        out = corrupt_image(img, name, 5, seed=1, filename="a.png")
        assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img), name
    label, plan = corruption_plan("default")
    assert label == "default" and len(plan) == 15 and {s for _, s in plan} == {1, 3, 5}
    assert len(corruption_plan("all")[1]) == 75 and corruption_plan("none")[1] == []
    with pytest.raises(IkdError, match="unknown corruption 'fogg'"):
        corruption_plan("fog,fogg")
    with pytest.raises(IkdError, match="--severities takes numbers 1-5"):
        corruption_plan("fog", "0,6")
    with pytest.raises(IkdError, match="at least 32 x 32"):
        corrupt_image(img[:20], "fog", 1, seed=0, filename="small.png")


def test_bad_robustness_options_are_one_line(trained_teacher):
    result = run_cli("evaluate", trained_teacher, "--robustness", "--corruptions", "fogg", expect=1)
    assert "unknown corruption 'fogg'" in result.output and "Traceback" not in result.output
    result = run_cli("evaluate", trained_teacher, "--robustness", "--images", trained_teacher.parent, expect=1)
    assert "leave out --images" in result.output
    result = run_cli("evaluate", trained_teacher, "--corruptions", "fog", expect=1)
    assert "go with --robustness" in result.output


def test_robustness_study_script_on_a_tiny_study(trained_teacher, tiny_sets, tmp_path):
    """scripts/robustness_study.sh on a tiny study (two arms x two seeds of the session teacher's
    weights, and one run stopped at epoch 3): the teacher's val set made once, every finished
    checkpoint scored with transfer, the unfinished one skipped, the report's robustness tables."""
    import subprocess

    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text('{"study": "tiny"}')

    def run(arm: str, seed: int, epoch: int) -> Path:
        student = arm == "student"
        folder = study / arm / f"seed{seed}" / ("student" if student else "distill")
        _copy_run(trained_teacher, folder)  # the run's files, and the weights as latest.pth
        name = f"{'' if student else 'student_'}epoch_{epoch}.pth"
        (folder / "latest.pth").rename(folder / name)
        (folder / ("latest.pth" if student else "student_latest.pth")).symlink_to(name)
        info = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**info, "command": "train" if student else "distill",
                                                     "seed": seed}))
        return folder / ("latest.pth" if student else "student_latest.pth")

    finished = [run(arm, seed, 8) for arm in ("student", "fgd") for seed in (0, 1)]
    stopped = run("ikd", 0, 3)
    adv = tmp_path / "adv"  # the teacher's val set goes to adv_val, never into the repo's data/
    script = Path(__file__).resolve().parent.parent / "scripts" / "robustness_study.sh"
    proc = subprocess.run(["bash", str(script), "--out", str(study), "--arms", "student,fgd,ikd", "--jobs", "2",
                           "--corruptions", "gaussian_noise", "--severities", "1", "--compare", "fgd,student",
                           "--keep", str(tmp_path / "records"), *tiny_sets, "--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={adv}",
                           *ATTACK, "--device", DEVICE], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"skipped {stopped}: epoch 3 of 8" in proc.stderr and "robustness of 4 checkpoints" in proc.stdout
    assert (Path(f"{adv}_val") / "summary.json").is_file()
    for ckpt in finished:
        summary = json.loads(robustness_file(ckpt).read_text())
        assert summary["transfer"]["images"] == f"{adv}_val" and summary["whitebox"]["AP"] >= 0
        assert [r["corruption"] for r in summary["corruptions"]["results"]] == ["gaussian_noise"]
    assert not robustness_file(stopped).exists()
    report = json.loads((study / "report" / "report.json").read_text())
    fgd = next(a for a in report["arms"] if a["arm"] == "fgd")
    assert fgd["robustness"]["AP transfer"]["n"] == 2 and fgd["robustness"]["mPC"]["sd"] is not None
    assert report["comparison"]["robustness"]["AP white-box"]["n"] == 2  # paired by seed, with its interval
    markdown = (study / "report" / "report.md").read_text()
    assert "fgd − student, robustness paired by seed" in markdown
    # --keep: the records alone (no weights) report the same robustness tables
    from ikd_cli.report.run import write_report

    kept = tmp_path / "records"
    assert not list(kept.rglob("*.pth")) and len(list(kept.rglob("*.robustness-val.json"))) == 4
    again = json.loads(json.dumps(write_report([kept], tmp_path / "again", ("fgd", "student"))))
    assert again["arms"] == report["arms"] and again["comparison"] == report["comparison"]


def test_a_shared_step_waits_for_the_process_holding_its_folder(trained_teacher, tiny_sets, tmp_path):
    """scripts/shared_step.sh: two study scripts side by side both ensure the teacher exists; the
    one that finds its folder held waits for the holder to end instead of failing, then finds
    the run done (a failure of another kind is passed on at once)."""
    import subprocess
    import sys
    import time

    work = tmp_path / "work"
    shutil.copytree(trained_teacher.parent, work / "teacher", symlinks=True)
    release = tmp_path / "release"  # the holder lets go once the step has said it waits (no race on timing)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import pathlib, time\nfrom ikd_cli.core.lock import lock_folder\n"
                               f"lock_folder({str(work / 'teacher')!r}, 'train')\nprint('held', flush=True)\n"
                               f"t = time.time()\nwhile not pathlib.Path({str(release)!r}).exists() and "
                               "time.time() - t < 240: time.sleep(0.2)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    repo = Path(__file__).resolve().parent.parent
    train = [IKD_EXE, "train", "--preset", "shapes", "--model", "teacher", "--work-dir", str(work), "--device", DEVICE,
             *tiny_sets, "--set", "train.epochs=8", "--set", "train.lr=0.02"]
    # under the study scripts' own shell options: a failing step must not end the script early
    script = (f"set -euo pipefail; . {repo / 'scripts' / 'shared_step.sh'}; sleep() {{ command sleep 1; }}; "
              "shared_step \"$@\"")
    out, err = tmp_path / "step.out", tmp_path / "step.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        step = subprocess.Popen(["bash", "-c", script, "shared_step", *map(str, train)], stdout=stdout, stderr=stderr)
        deadline = time.time() + 240
        while "waiting for the other process" not in err.read_text() and step.poll() is None:
            assert time.time() < deadline, out.read_text() + err.read_text()
            time.sleep(0.2)
        release.touch()
        step.wait(timeout=300)
    holder.wait(timeout=60)
    proc = subprocess.CompletedProcess(step.args, step.returncode, out.read_text(), err.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is in use by another" in proc.stdout and "waiting for the other process to finish" in proc.stderr
    assert "already finished" in proc.stdout and "nothing to do" in proc.stdout
    bad = subprocess.run(["bash", "-c", script, "shared_step", str(IKD_EXE), "train", "--preset", "no-such-preset"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "waiting" not in bad.stderr
