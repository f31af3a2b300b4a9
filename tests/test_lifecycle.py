"""Every command idempotent and honest: re-running continues, a command that did nothing says so,
the data is checked before the compute, and errors are one line whatever the launcher.
Each test here is a case that once misbehaved (numbered as in the issue that found them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import DEVICE, IKD_EXE, adversarial_files, kill_after, run_cli, two_ranks_or_skip

torch = pytest.importorskip("torch")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ------------------------------------------------------------------- 1: errors under --gpus N
def test_errors_under_torchrun_are_one_line(trained_teacher, tiny_sets, tmp_path):
    two_ranks_or_skip()
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([IKD_EXE, "attack", "--gpus", "2", "--checkpoint", str(empty), "--out", str(tmp_path / "a"),
                           "--device", DEVICE, "--workers", "0", *tiny_sets],
                          capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert out.count("error:") == 1 and "Traceback" not in out and "ChildFailedError" not in out
    assert "not a readable checkpoint" in out


def test_ctrl_c_under_torchrun_says_interrupted_once(trained_teacher, tiny_sets, tmp_path):
    two_ranks_or_skip()
    out_dir = tmp_path / "adv"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([IKD_EXE, "attack", "--gpus", "2", "--checkpoint", str(trained_teacher), "--out",
                             str(out_dir), "--device", DEVICE, "--workers", "0", "--steps", "20", "--batch-size", "1",
                             *tiny_sets, "--set", "attack.batch_size=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 240
    while not adversarial_files(out_dir):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert output.count("interrupted") == 1 and "Traceback" not in output, output


# ----------------------------------------------------------------- 2: zero or negative epochs
@pytest.mark.parametrize("args", [("--set", "train.epochs=0"), ("--epochs", "-1")])
def test_zero_epochs_is_an_error(args, tiny_sets, tmp_path):
    result = run_cli("train", "--work-dir", tmp_path, "--device", DEVICE, *tiny_sets, *args, expect=1)
    assert "train.epochs must be an integer >= 1" in result.output
    assert not list(tmp_path.rglob("*.pth"))


# ------------------------------------------------------------ 3: re-running continues the run
def test_rerunning_train_continues_and_says_so(tiny_sets, tmp_path):
    args = ("train", "--work-dir", tmp_path, "--device", DEVICE, *tiny_sets, "--set", "train.epochs=2")
    work = tmp_path / "teacher"
    kill_after([IKD_EXE, *args], work / "epoch_1.pth")
    first = (work / "epoch_1.pth").stat().st_mtime_ns

    run_file = json.loads((work / "run.json").read_text())
    assert run_file["compute"]["threads"] == 1 and run_file["compute"]["torch"] == torch.__version__
    # the killed run had one thread (the shapes preset's train.threads); a continuation with two
    # is not a settings change, but the run says it is not the same compute
    before = torch.get_num_threads()
    try:
        result = run_cli(*args, "--set", "train.threads=2")
    finally:
        torch.set_num_threads(before)  # run_cli runs in this process: the next tests keep their count
    assert "continuing the train teacher run" in result.output and "after epoch 1 of 2" in result.output
    assert "started on other compute (threads 1 -> 2)" in result.output
    saved = json.loads((work / "run.json").read_text())
    assert saved["compute"]["threads"] == 1  # as it started, and the continuation on the record
    assert [(c["after_epoch"], c["change"], c["compute"]["threads"]) for c in saved["continued"]] == \
        [(1, "threads 1 -> 2", 2)]
    assert (work / "epoch_1.pth").stat().st_mtime_ns == first  # epoch 1 was not trained again
    assert torch.load(work / "latest.pth", map_location="cpu", weights_only=False)["meta"]["epoch"] == 2

    result = run_cli(*args)
    assert "already finished (2 of 2 epochs): nothing to do" in result.output
    # settings a plain training does not read (the distillation's, the attack's), and how a run
    # is kept and logged, change nothing
    result = run_cli(*args, "--set", "distill.alpha_adv=0.5", "--set", "attack.eps=4",
                     "--set", "train.max_keep_ckpts=1", "--set", "train.log_interval=3")
    assert "already finished (2 of 2 epochs): nothing to do" in result.output

    result = run_cli(*args[:-1], "train.epochs=3", "--set", "train.lr=0.02", expect=1)
    assert "holds a run with other settings" in result.output and "train.lr" in result.output

    result = run_cli(*args, "--restart")
    assert "continuing" not in result.output
    assert (work / "epoch_1.pth").stat().st_mtime_ns != first


# ------------------------------------------------------- 4: a failed attack blocks nothing
def test_failed_attack_writes_nothing(trained_teacher, tiny_sets, tmp_path):
    out = tmp_path / "adv"
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    run_cli("attack", "--checkpoint", corrupt, "--out", out, "--device", DEVICE, "--workers", "0", *tiny_sets, expect=1)
    run_cli("attack", "--checkpoint", trained_teacher, "--out", out, "--method", "nosuch", *tiny_sets, expect=2)
    assert not (out / "attack.json").exists()
    run_cli("attack", "--checkpoint", trained_teacher, "--out", out, "--device", DEVICE, "--workers", "0",
            "--limit", "2", "--steps", "1", *tiny_sets)


# ---------------------------------- 5: --overwrite leaves only the new images; pre-flight checks records
def test_overwrite_leaves_only_the_new_set(trained_teacher, tiny_sets, tmp_path):
    out = tmp_path / "adv"
    common = ("attack", "--checkpoint", trained_teacher, "--out", out, "--device", DEVICE, "--workers", "0",
              "--steps", "1", *tiny_sets)
    run_cli(*common, "--limit", "6")
    assert len(adversarial_files(out)) == 6
    run_cli(*common, "--limit", "2", "--eps", "4", "--overwrite")
    assert len(adversarial_files(out)) == 2
    assert json.loads((out / "attack.json").read_text())["eps"] == 4.0
    # distill's pre-flight counts the images the set's records do not hold, whatever lies around
    stray = adversarial_files(out)[0]
    shutil.copy(stray, out / ("999999.png" + stray.suffix))
    distill = ("distill", "--work-dir", tmp_path / "w", "--device", DEVICE, *tiny_sets,
               "--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={out}")
    # a set made with eps 4 is not trained on under a preset that says eps 8 (nor 5 steps for 1)
    result = run_cli(*distill, expect=1)
    assert "was made with other settings than this preset's (eps 4.0 -> 8.0, steps 1 -> 5)" in result.output
    result = run_cli(*distill, "--set", "attack.eps=4", "--set", "attack.steps=1", expect=1)
    assert "22 of 24 training images have no adversarial copy" in result.output


# ---------------------------------------------- 6: kill -9 takes the DataLoader workers with it
def test_kill_9_leaves_no_workers(trained_teacher, tiny_sets, tmp_path):
    out = tmp_path / "adv"
    sets = [s.replace("data.workers_per_gpu=0", "data.workers_per_gpu=2") for s in tiny_sets]
    proc = subprocess.Popen([IKD_EXE, "attack", "--checkpoint", str(trained_teacher), "--out", str(out), "--device",
                             DEVICE, "--workers", "2", "--steps", "20", "--set", "attack.batch_size=1", *sets],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 240
    while not adversarial_files(out):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)


# ------------------------------------------------------------------ 7: one line, and a clear one
def test_classes_matching_nothing_say_so(tiny_sets, tmp_path):
    result = run_cli("train", "--work-dir", tmp_path, "--device", DEVICE, *tiny_sets,
                     "--set", "data.classes=[person, car]", expect=1)
    assert "none of the preset's classes (person, car) is a category" in result.output
    assert "circle" in result.output


def test_empty_class_list_is_an_error(tiny_sets, tmp_path):
    result = run_cli("train", "--work-dir", tmp_path, "--device", DEVICE, *tiny_sets, "--set", "data.classes=[]",
                     expect=1)
    assert "data.classes must be a non-empty list" in result.output


def test_evaluate_a_full_distill_checkpoint(trained_teacher, tiny_sets, tmp_path):
    work = tmp_path / "fgd"
    run_cli("distill", "--work-dir", work, "--device", DEVICE, "--dfa-until", "0", *tiny_sets,
            "--set", f"teacher.checkpoint={trained_teacher}")
    full = run_cli("evaluate", work / "distill" / "epoch_1.pth", "--device", DEVICE)
    student = run_cli("evaluate", work / "distill" / "student_epoch_1.pth", "--device", DEVICE)
    a = json.loads((work / "distill" / "epoch_1.eval-val.json").read_text())["bbox"]
    b = json.loads((work / "distill" / "student_epoch_1.eval-val.json").read_text())["bbox"]
    assert a == b and "error" not in full.output + student.output


def test_interrupt_wrapped_by_a_library_is_still_an_interrupt():
    """torch.save turns Ctrl-C during a checkpoint write into a RuntimeError; it is still an
    interrupt: exit 130 and the interrupted line, not 'RuntimeError: unexpected pos'."""
    import typer
    from typer.testing import CliRunner

    from ikd_cli.cli.app import handle_errors

    app = typer.Typer()

    @app.command()
    @handle_errors
    def save():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise RuntimeError("unexpected pos 123") from err

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 130 and "interrupted" in result.output and "RuntimeError" not in result.output


# ------------------------------------------------------------ 8: bad annotations are reported
def _write_bad_annotations(root: Path) -> None:
    ann_file = root / "annotations" / "instances_train.json"
    data = json.loads(ann_file.read_text())
    anns = data["annotations"]
    anns[0]["bbox"] = [10, 10, -5, 8]  # negative width
    anns[1]["bbox"] = [500, 500, 10, 10]  # wholly outside a 96 px image
    anns[2]["category_id"] = 77  # unknown category
    data["images"][3]["width"] = 123  # differs from the file
    ann_file.write_text(json.dumps(data))


def test_data_check_reports_bad_annotations(shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    _write_bad_annotations(root)
    result = run_cli("data", "check", "--set", f"data.root={root}", "--set", "data.shapes=null",
                     "--json", tmp_path / "check.json")
    assert "verdict: usable, with 4 kind(s) of warning" in " ".join(result.output.split())
    train = json.loads((tmp_path / "check.json").read_text())[0]
    problems = {p["what"]: p for p in train["problems"]}
    assert problems["boxes with no area (width or height < 1 px, dropped)"]["count"] == 1
    assert problems["boxes wholly outside their image (dropped)"]["count"] == 1
    assert "category 77" in problems["boxes of unknown category ids (dropped)"]["examples"][0]
    assert "JSON 123x96, file 96x96" in problems["image sizes in the JSON that differ from the file"]["examples"][0]
    assert all(p["severity"] == "warning" for p in train["problems"])
    # and the training command says it in one line before it starts
    result = run_cli("train", "--work-dir", tmp_path / "w", "--device", DEVICE, "--epochs", "1",
                     "--set", f"data.root={root}", "--set", "data.shapes=null", "--set", "data.img_scale=[96, 96]",
                     "--set", "data.workers_per_gpu=0", "--set", "data.samples_per_gpu=4")
    assert "data check (train)" in result.output and "boxes wholly outside their image (dropped): 1" in result.output
    # --epochs is the teacher's schedule too (the preset's teacher.epochs: 36 would replace it)
    assert sorted(p.name for p in (tmp_path / "w" / "teacher").glob("epoch_*.pth")) == ["epoch_1.pth"]


def test_evaluating_a_split_without_boxes_is_an_error(trained_teacher, shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    val = root / "annotations" / "instances_val.json"
    data = json.loads(val.read_text())
    data["annotations"] = []
    val.write_text(json.dumps(data))
    result = run_cli("evaluate", trained_teacher, "--device", DEVICE, "--data-root", root, expect=1)
    assert "no usable box in the split" in result.output and "-100" not in result.output


# ------------------------------------------------------- 9: records carry each image's own loss
def test_records_carry_each_images_loss(trained_teacher, tiny_sets, tmp_path):
    losses = {}
    for batch in (1, 4):
        out = tmp_path / f"b{batch}"
        run_cli("attack", "--checkpoint", trained_teacher, "--out", out, "--device", DEVICE, "--workers", "0",
                "--limit", "4", "--steps", "1", *tiny_sets, "--set", f"attack.batch_size={batch}")
        records = [json.loads(line) for line in (out / "records-0.jsonl").read_text().splitlines()]
        losses[batch] = {r["image"]: r["loss_before"] for r in records}
    assert losses[1].keys() == losses[4].keys()
    for name, value in losses[1].items():
        assert losses[4][name] == pytest.approx(value, rel=1e-4)
    assert len(set(round(v, 6) for v in losses[4].values())) > 1  # not one batch value repeated


# ------------------------------------------------ 7 (cont.): C libraries' warnings, a full disk
def test_libjpeg_warnings_go_to_the_log_not_the_terminal(trained_teacher, tiny_sets, shapes_root, tmp_path):
    """A JPEG with damaged data between sound ends passes the data check; libjpeg warns about it
    on file descriptor 2 while decoding. That line belongs in the log, never glued to ours."""
    import cv2

    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    ann_file = root / "annotations" / "instances_train.json"
    data = json.loads(ann_file.read_text())
    for info in data["images"][:2]:
        png = root / "train" / info["file_name"]
        jpg = png.with_suffix(".jpg")
        cv2.imwrite(str(jpg), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 90])
        info["file_name"] = jpg.name
    ann_file.write_text(json.dumps(data))
    victim = root / "train" / data["images"][0]["file_name"]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 32] = b"\xff\xd4" * 16  # stray markers in the entropy-coded data
    victim.write_bytes(bytes(raw))
    out = tmp_path / "adv"
    proc = subprocess.run([IKD_EXE, "attack", "--checkpoint", str(trained_teacher), "--out", str(out), "--device",
                           DEVICE, "--workers", "0", "--limit", "2", "--steps", "1", *tiny_sets,
                           "--set", f"data.root={root}"], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    terminal = proc.stdout + proc.stderr
    log = (out / "attack-0.log").read_text()
    assert "Corrupt JPEG" not in terminal and "Corrupt JPEG" in log, terminal
    assert all(line.startswith("error:") for line in terminal.splitlines() if "error:" in line)


def test_full_disk_names_the_checkpoint_and_keeps_nothing_half_written(tiny_sets, tmp_path):
    """A disk that fills while a checkpoint is written (a file-size limit stands in for it): one
    line naming the checkpoint, no partial file under its name, no temporary left behind."""
    import resource

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))

    work = tmp_path / "w"
    proc = subprocess.run([IKD_EXE, "train", "--work-dir", str(work), "--device", DEVICE, *tiny_sets],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          preexec_fn=small_files, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert "cannot write checkpoint" in out and "epoch_1.pth" in out, out
    assert not (work / "teacher" / "epoch_1.pth").exists() and not list((work / "teacher").glob(".*.tmp"))
