"""`ikd attack` end to end on the tiny shapes teacher: budget on disk, lossless files, resume,
settings guard, unreadable images, and the 2-process (gloo) run."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import (DEVICE, IKD_EXE, adversarial_files, read_adversarial_image, run_cli, two_ranks_or_skip,
                     verify_adversarial_set)
from ikd_cli.attack.manifest import read_records
from ikd_cli.config.layout import adversarial_name


def _attack(teacher, tiny_sets, out, *extra, expect=0):
    return run_cli("attack", "--preset", "shapes", "--checkpoint", teacher, "--out", out, "--device", DEVICE,
                   "--workers", "0", *tiny_sets, *extra, expect=expect)


def _train_names(shapes_root, limit=None):
    data = json.loads((shapes_root / "annotations" / "instances_train.json").read_text())
    with_boxes = {a["image_id"] for a in data["annotations"]}
    names = [im["file_name"] for im in data["images"] if im["id"] in with_boxes]
    return names[:limit] if limit else names


@pytest.mark.parametrize("method", ["difgsm", "mifgsm", "tifgsm", "vmifgsm", "m_difgsm", "pgd", "fgsm"])
def test_every_method_keeps_the_budget_on_disk(method, trained_teacher, tiny_sets, shapes_root, tmp_path):
    out = tmp_path / method
    _attack(trained_teacher, tiny_sets, out, "--method", method, "--limit", "2", "--steps", "2", "--n", "2",
            "--eps", "4", "--alpha", "1")
    names = _train_names(shapes_root, 2)
    assert verify_adversarial_set(out, shapes_root / "train", names, eps=4) == []
    done, failed = read_records(out)
    assert set(done) == set(names) and not failed
    assert all(rec["linf"] <= 4 for rec in done.values())
    assert any(rec["linf"] > 0 for rec in done.values())  # the images did change


def test_default_attack_raises_the_teacher_loss_and_is_lossless(trained_teacher, tiny_sets, shapes_root, tmp_path):
    out = tmp_path / "adv"
    result = _attack(trained_teacher, tiny_sets, out, "--limit", "8")
    assert "cls loss adv" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attacked"] == 8 and summary["linf_max"] <= 8
    assert summary["loss_after_mean"] > summary["loss_before_mean"]
    settings = json.loads((out / "attack.json").read_text())
    assert (settings["method"], settings["eps"], settings["steps"], settings["format"]) == ("difgsm", 8.0, 5, "delta")
    from PIL import Image

    with Image.open(out / "preview.png") as preview:  # 4 rows of clean | adversarial | perturbation
        assert preview.size == (960, 4 * 320)
    # Lossless: what the record measured is what is on disk.
    name = _train_names(shapes_root, 1)[0]
    adv = read_adversarial_image(out, shapes_root / "train", name)
    src = cv2.imread(str(shapes_root / "train" / name))
    assert int(np.abs(adv.astype(int) - src.astype(int)).max()) == read_records(out)[0][name]["linf"]


def test_resume_skips_finished_images(trained_teacher, tiny_sets, shapes_root, tmp_path):
    out = tmp_path / "adv"
    _attack(trained_teacher, tiny_sets, out, "--limit", "4", "--method", "mifgsm", "--steps", "2",
            "--no-record-loss")
    assert read_records(out)[0] and all(r["loss_before"] is None for r in read_records(out)[0].values())
    first = {p.name: p.stat().st_mtime_ns for p in adversarial_files(out)}
    assert len(first) == 4
    # An interrupted run: one file lost, and a torn last line in the records.
    victim = adversarial_files(out)[0]
    victim.unlink()
    with open(out / "records-0.jsonl", "a") as fh:
        fh.write('{"image": "torn')
    result = _attack(trained_teacher, tiny_sets, out, "--limit", "8", "--method", "mifgsm", "--steps", "2")
    assert "resuming: 3 of 8 images already done" in result.output
    after = {p.name: p.stat().st_mtime_ns for p in adversarial_files(out)}
    assert len(after) == 8
    for name, mtime in first.items():
        if name != victim.name:
            assert after[name] == mtime  # finished images were not redone
    assert json.loads((out / "summary.json").read_text())["attacked"] == 8
    again = _attack(trained_teacher, tiny_sets, out, "--limit", "8", "--method", "mifgsm", "--steps", "2")
    assert "all 8 images already attacked" in again.output and "nothing to do" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in adversarial_files(out)} == after


def test_other_settings_into_the_same_folder(trained_teacher, tiny_sets, tmp_path):
    out = tmp_path / "adv"
    _attack(trained_teacher, tiny_sets, out, "--limit", "2", "--steps", "1")
    result = _attack(trained_teacher, tiny_sets, out, "--limit", "2", "--steps", "2", expect=1)
    assert "other settings" in result.output and "--overwrite" in result.output
    _attack(trained_teacher, tiny_sets, out, "--limit", "2", "--steps", "2", "--overwrite")
    assert json.loads((out / "attack.json").read_text())["steps"] == 2
    # The random draws follow train.seed and the batches: another seed or batch size is another attack.
    result = _attack(trained_teacher, tiny_sets, out, "--limit", "2", "--steps", "2", "--set", "train.seed=3", expect=1)
    assert "other settings (seed 0 -> 3)" in result.output
    result = _attack(trained_teacher, tiny_sets, out, "--limit", "2", "--steps", "2", "--set", "attack.batch_size=2",
                     expect=1)
    assert "other settings (batch_size 4 -> 2)" in result.output


def test_unreadable_images_are_skipped_and_listed(trained_teacher, tiny_sets, shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    names = _train_names(shapes_root, 3)
    victim = root / "train" / names[1]
    whole = victim.read_bytes()
    victim.write_bytes(b"garbage")
    out = tmp_path / "adv"
    args = ("--limit", "3", "--steps", "1", "--set", f"data.root={root}")
    # Not an image at all: the data check (headers only) stops the attack before it starts.
    result = _attack(trained_teacher, tiny_sets, out, *args, expect=1)
    assert "(unreadable or truncated images: 1)" in result.output and names[1] in result.output
    assert not (out / "attack.json").exists()
    # Sound header and end, garbage in between: the check (headers and ends only) passes it;
    # decoding fails: skipped and listed.
    victim.write_bytes(whole[:100] + bytes(len(whole) - 120) + whole[-20:])
    result = _attack(trained_teacher, tiny_sets, out, *args, expect=1)
    assert "could not be read" in result.output and names[1] in result.output
    assert not verify_adversarial_set(out, root / "train", [names[0], names[2]], eps=8)


def test_a_failed_write_stops_the_run_in_one_line(trained_teacher, tiny_sets, shapes_root, tmp_path):
    """The files are written by a background thread: its first error (here a folder standing where
    the second image's file goes) ends the run in one line, and the records list only the files
    really written, so the same command continues once the cause is gone."""
    names = _train_names(shapes_root, 8)
    out = tmp_path / "adv"
    blocker = out / adversarial_name(names[1])
    blocker.mkdir(parents=True)
    args = ("--limit", "8", "--steps", "1")
    result = _attack(trained_teacher, tiny_sets, out, *args, expect=1)
    assert result.output.count("error:") == 1 and "Traceback" not in result.output, result.output
    assert f"cannot write {blocker}" in result.output and "directory" in result.output.lower()
    lines = (out / "records-0.jsonl").read_text().splitlines()
    assert [json.loads(line)["image"] for line in lines] == [names[0]]  # the image before it, and no other
    assert [p.name for p in adversarial_files(out) if p.is_file()] == [adversarial_name(names[0]).name]
    assert not (out / "summary.json").exists() and not list(out.glob(".*.tmp"))
    blocker.rmdir()
    result = _attack(trained_teacher, tiny_sets, out, *args)
    assert "resuming: 1 of 8 images already done" in result.output
    assert not verify_adversarial_set(out, shapes_root / "train", names, eps=8)


def test_bad_input(trained_teacher, tiny_sets, tmp_path):
    result = _attack(tmp_path / "none.pth", tiny_sets, tmp_path / "a", expect=1)
    assert "teacher checkpoint not found" in result.output
    result = _attack(trained_teacher, tiny_sets, tmp_path / "b", "--eps", "300", expect=1)
    assert "attack.eps must be a number > 0 and <= 255, got 300" in result.output
    result = _attack(trained_teacher, tiny_sets, tmp_path / "c", "--steps", "0", expect=1)
    assert "attack.steps must be an integer >= 1, got 0" in result.output
    result = _attack(trained_teacher, tiny_sets, tmp_path / "c", "--batch-size", "0", expect=1)
    assert "attack.batch_size must be an integer >= 1, got 0" in result.output
    # --method is a choice: the usage error lists the methods (click's exit status 2).
    result = _attack(trained_teacher, tiny_sets, tmp_path / "d", "--method", "cw", expect=2)
    assert "'cw' is not one of" in result.output and "difgsm" in result.output
    # Nothing was written for any of these: the corrected command starts clean.
    assert not any((tmp_path / name / "attack.json").exists() for name in "abcd")


def _sharded_attack_args(trained_teacher, tiny_sets) -> list[str]:
    return ["attack", "--preset", "shapes", "--checkpoint", str(trained_teacher), "--device", DEVICE,
            "--workers", "0", "--limit", "6", "--method", "mifgsm", "--steps", "2", *tiny_sets,
            "--set", "attack.batch_size=1"]


def test_two_gloo_processes_match_one(trained_teacher, tiny_sets, shapes_root, tmp_path):
    """Shards over 2 torch.distributed ranks (torchrun, gloo on CPU); same files as one process."""
    two_ranks_or_skip()
    common = _sharded_attack_args(trained_teacher, tiny_sets)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.run([IKD_EXE, *common, "--out", str(tmp_path / "two"), "--gpus", "2"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    run_cli(*common, "--out", tmp_path / "one")
    assert sorted((tmp_path / "two").glob("records-*.jsonl")) == [tmp_path / "two" / "records-0.jsonl",
                                                                  tmp_path / "two" / "records-1.jsonl"]
    one = [p.name for p in adversarial_files(tmp_path / "one")]
    assert one == [p.name for p in adversarial_files(tmp_path / "two")] and len(one) == 6
    for name in read_records(tmp_path / "one")[0]:
        a = read_adversarial_image(tmp_path / "one", shapes_root / "train", name)
        b = read_adversarial_image(tmp_path / "two", shapes_root / "train", name)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # same attack; float reduction order aside


def test_slurm_launcher_shards_like_srun(trained_teacher, tiny_sets, tmp_path):
    """Two processes started the way srun starts them (SLURM_PROCID / SLURM_NTASKS, no torchrun)
    form one gloo group and split the images between them."""
    from ikd_cli.core.distributed import free_port

    out = tmp_path / "slurm"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "MASTER_"))}
    port = str(free_port())
    procs = [subprocess.Popen([IKD_EXE, *_sharded_attack_args(trained_teacher, tiny_sets), "--out", str(out),
                               "--launcher", "slurm"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(base, OMP_NUM_THREADS="1", SLURM_PROCID=str(rank), SLURM_NTASKS="2",
                                       SLURM_LOCALID=str(rank), MASTER_PORT=port))
             for rank in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    done = [json.loads(line)["image"] for r in (0, 1)
            for line in (out / f"records-{r}.jsonl").read_text().splitlines()]
    assert len(done) == len(set(done)) == 6 and len(adversarial_files(out)) == 6


def test_slurm_without_srun_variables_is_one_line_error(trained_teacher, tiny_sets, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    result = run_cli(*_sharded_attack_args(trained_teacher, tiny_sets), "--out", tmp_path / "x",
                     "--launcher", "slurm", expect=1)
    assert "SLURM_PROCID" in result.output and "srun" in result.output


def test_first_slurm_host():
    from ikd_cli.core.distributed import first_slurm_host

    assert first_slurm_host("gpu[07-09,12],cpu1") == "gpu07"
    assert first_slurm_host("node3,node4") == "node3"
    assert first_slurm_host("a[5]") == "a5"


def test_ctrl_c_leaves_only_complete_files(trained_teacher, tiny_sets, shapes_root, tmp_path):
    import signal
    import time

    out = tmp_path / "adv"
    cmd = [IKD_EXE, "attack", "--preset", "shapes", "--checkpoint", str(trained_teacher), "--out", str(out),
           "--device", DEVICE, "--workers", "0", *tiny_sets, "--set", "attack.batch_size=1"]
    # A shell's background job starts with SIGINT ignored, and Python keeps an inherited "ignore":
    # give the child the default disposition, as a terminal's Ctrl-C finds it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    records = out / "records-0.jsonl"
    deadline = time.time() + 120
    while not (records.exists() and records.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "interrupted" in output
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))
    pngs = adversarial_files(out)
    assert pngs and not verify_adversarial_set(out, shapes_root / "train", sorted(read_records(out)[0]), eps=8)
    done, _ = read_records(out)
    assert len(done) <= len(pngs) <= len(done) + 1  # at most one finished file whose record was not yet written
    result = run_cli(*cmd[1:], expect=0)
    assert f"resuming: {len(done)} of" in result.output


def test_delta_format_rebuilds_the_png_route_bit_for_bit(trained_teacher, tiny_sets, shapes_root, tmp_path):
    """The compact set (default) and a PNG set of the same attack hold the same pixels; the
    export gives plain PNGs of them; evaluate reads both and scores them the same."""
    names = _train_names(shapes_root, 4)
    _attack(trained_teacher, tiny_sets, tmp_path / "delta", "--limit", "4", "--steps", "2")
    _attack(trained_teacher, tiny_sets, tmp_path / "png", "--limit", "4", "--steps", "2", "--format", "png")
    assert all(p.suffix == ".ikdd" for p in adversarial_files(tmp_path / "delta"))
    for name in names:
        delta = read_adversarial_image(tmp_path / "delta", shapes_root / "train", name)
        png = cv2.imread(str(tmp_path / "png" / Path(name).with_suffix(".png")))
        assert np.array_equal(delta, png)
    run_cli("attack", "--preset", "shapes", "--out", tmp_path / "delta", "--export", tmp_path / "exported", *tiny_sets)
    for name in names:
        exported = cv2.imread(str(tmp_path / "exported" / Path(name).with_suffix(".png")))
        assert np.array_equal(exported, cv2.imread(str(tmp_path / "png" / Path(name).with_suffix(".png"))))
    assert json.loads((tmp_path / "exported" / "attack.json").read_text())["format"] == "png"
    # a source decoded to other pixels is refused in one line, naming the image
    victim = tmp_path / "changed"
    shutil.copytree(shapes_root / "train", victim)
    img = cv2.imread(str(victim / names[0]))
    img[0, 0, 0] ^= 1
    cv2.imwrite(str(victim / names[0]), img)
    from ikd_cli.core.errors import IkdError

    with pytest.raises(IkdError, match="source pixels differ from those attacked"):
        read_adversarial_image(tmp_path / "delta", victim, names[0])


def test_evaluate_reads_a_delta_set_like_its_png_export(trained_teacher, own_teacher, tiny_sets, tmp_path):
    out = tmp_path / "adv_val"
    _attack(trained_teacher, tiny_sets, out, "--split", "val", "--steps", "2")
    run_cli("attack", "--preset", "shapes", "--out", out, "--split", "val", "--export", tmp_path / "val_png", *tiny_sets)
    run_cli("evaluate", own_teacher, "--images", out, "--device", DEVICE)
    run_cli("evaluate", own_teacher, "--images", tmp_path / "val_png", "--device", DEVICE)
    a = json.loads(own_teacher.with_name("latest.eval-val-adv_val.json").read_text())["bbox"]
    b = json.loads(own_teacher.with_name("latest.eval-val-val_png.json").read_text())["bbox"]
    assert a == b and a["detections"] > 0


def test_amp_attack_keeps_the_budget_exactly(trained_teacher, tiny_sets, shapes_root, tmp_path):
    """--amp runs the teacher's passes under bf16 autocast on the CPU; the pixels, the steps and the
    8-bit rounding stay fp32, so the budget holds exactly and the attack still raises the loss."""
    out = tmp_path / "adv"
    _attack(trained_teacher, tiny_sets, out, "--limit", "4", "--steps", "3", "--amp")
    assert json.loads((out / "attack.json").read_text())["amp"] is True
    done, _ = read_records(out)
    assert len(done) == 4 and not verify_adversarial_set(out, shapes_root / "train", sorted(done), eps=8)
    assert sum(r["loss_after"] for r in done.values()) > sum(r["loss_before"] for r in done.values())
