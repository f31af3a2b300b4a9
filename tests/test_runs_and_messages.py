"""Runs that continue where they should, and settings and messages in one clear line (issue 18,
sections 2 and 3): each test is a case that once misbehaved, on real files and processes."""

from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from helpers import DEVICE, IKD_EXE, kill_after, run_cli


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds a few rows (a bomb's shape)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * width) * 2)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------ data check
def test_data_check_names_each_bad_entry_for_what_it_is(shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    images, boxes = data["images"], data["annotations"]
    boxes[0]["bbox"] = [float("nan"), 1.0, 10.0, 10.0]
    boxes[1]["bbox"] = "wide"
    images.append(dict(images[1], file_name="copy-of-" + images[1]["file_name"]))  # the id of another image
    images.append(7)  # no object
    (root / "train" / images[2]["file_name"]).write_bytes(_png_header(30000, 30000))
    ann.write_text(json.dumps(data))  # json writes NaN as NaN, as Python's COCO tools do
    result = run_cli("data", "check", "--set", f"data.root={root}", "--set", "data.shapes=null",
                     "--json", tmp_path / "check.json", expect=1)
    problems = {p["what"]: p for p in json.loads((tmp_path / "check.json").read_text())[0]["problems"]}
    assert problems["boxes with a NaN or infinite number (dropped)"]["count"] == 1
    assert f"image {images[1]['id']}:" in problems["image ids used by more than one image"]["examples"][0]
    assert "boxes of images not in the file (dropped)" not in problems
    assert problems["entries of 'images' that are not objects"]["examples"] == [f"images[{len(images) - 1}]: 7"]
    assert "30000x30000 px" in problems["images too large to decode"]["examples"][0]
    assert "unreadable or truncated images" not in problems
    assert "boxes that are not [x," in result.output  # not swallowed as rich markup
    usable = json.loads((tmp_path / "check.json").read_text())[0]["boxes"]
    assert usable == len(boxes) - 2


# ----------------------------------------------------------------------- presets and --set
@pytest.mark.parametrize("text, message", [
    ("name: x\n1: 2\n", "unknown key '1'"),
    ("name: x\ntrain:\n  3: x\n", "unknown key 'train.3'"),
    (b"name: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 9)"),
])
def test_a_bad_preset_file_is_one_sentence(text, message, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run_cli("presets", "show", path, expect=1)
    assert message in result.output and "Error" not in result.output and "debug" not in result.output


@pytest.mark.parametrize("value", ["teacher.epochs=2.5", "train.epochs=2.5", "attack.steps=1.5"])
def test_integer_keys_take_integers(value):
    result = run_cli("presets", "show", "shapes", "--set", value, expect=1)
    assert "must be an integer" in result.output and len(result.output.strip().splitlines()) == 1


def test_classes_auto_is_accepted_as_documented():
    result = run_cli("presets", "show", "shapes", "--set", "data.classes=auto")
    assert "classes: auto" in result.output


def test_version():
    import subprocess

    from ikd_cli import __version__

    proc = subprocess.run([IKD_EXE, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"ikd {__version__}", proc.stdout + proc.stderr


# ------------------------------------------------------------------------- ikd resume DIR
def test_resume_continues_the_copy_from_its_newest_complete_checkpoint(tiny_sets, tmp_path):
    """A copied run folder continues in the copy (the original, whose path its files hold, is
    left alone); its latest.pth dangles (epoch_2.pth gone), so it continues after epoch 1 and
    says so; the best of the epoch 2 no longer on disk does not survive beside the new one."""
    import os
    import time

    original = tmp_path / "w" / "teacher"
    run_cli("train", "--work-dir", tmp_path / "w", "--device", DEVICE, *tiny_sets, "--set", "train.epochs=2")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)
    for best in copy.glob("best_*.pth"):
        best.unlink()
    os.replace(copy / "epoch_2.pth", copy / "best_bbox_mAP_epoch_2.pth")  # a best of weights now gone
    stale = (copy / "best_bbox_mAP_epoch_2.pth").stat().st_ino
    before = {p.name: p.stat().st_mtime_ns for p in original.iterdir()}
    time.sleep(0.01)

    result = run_cli("resume", copy, "--device", DEVICE)
    out = " ".join(result.output.split())
    assert "latest.pth points to epoch_2.pth, which is gone: continuing from epoch_1.pth" in out, out
    assert f"continuing the train teacher run in {copy} after epoch 1 of 2" in out
    assert {p.name: p.stat().st_mtime_ns for p in original.iterdir()} == before  # the original untouched
    import torch

    assert torch.load(copy / "latest.pth", map_location="cpu", weights_only=False)["meta"]["epoch"] == 2
    bests = list(copy.glob("best_*.pth"))
    assert all(p.stat().st_ino != stale for p in bests) and len(bests) <= 1, bests
    assert "after epoch 1 of 2" not in run_cli("resume", copy, "--device", DEVICE).output  # now finished


# ----------------------------------------------------------- --gpus 2: the launcher killed
def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (children of children included)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killing_the_launcher_of_two_ranks_stops_them_all(tiny_sets, tmp_path):
    """kill -9 of the `ikd` that started torchrun (SIGTERM takes the same path: Python's default
    handler ends the launcher, and torchrun hears of it from the kernel)."""
    import os
    import signal
    import subprocess
    import time

    from helpers import two_ranks_or_skip

    two_ranks_or_skip()
    work = tmp_path / "teacher"
    cmd = [IKD_EXE, "train", "--gpus", "2", "--work-dir", tmp_path, "--device", DEVICE, *tiny_sets,
           "--set", "train.epochs=3"]
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 300
    while not (work / "epoch_1.pth").exists():
        assert proc.poll() is None and time.time() < deadline, "the run stopped or took too long"
        time.sleep(0.1)
    below = _descendants(proc.pid)
    assert len(below) >= 3, below  # torchrun and its two ranks
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while any(_alive(p) for p in below) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in below if _alive(p)], "processes outlived their launcher"
    assert not (work / "epoch_3.pth").exists()
    result = run_cli("resume", work, "--device", DEVICE)  # and the folder continues where it stopped
    assert "continuing the train teacher run" in result.output
    assert (work / "epoch_3.pth").exists()


# ------------------------------------------------------- train.threads, train.cpu_kernels
def test_train_threads_and_kernels_are_pinned_and_recorded(tiny_sets, tmp_path):
    """A fresh process pins both before any kernel runs, records them, and evaluation of the
    run's weights pins them again; in a process whose kernels are chosen, the cap is refused."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    work = tmp_path / "teacher"
    proc = subprocess.run([IKD_EXE, "train", "--work-dir", tmp_path, "--device", DEVICE, *tiny_sets,
                           "--set", "train.threads=2", "--set", "train.cpu_kernels=avx2", "--set", "train.eval_interval=0"],
                          capture_output=True, text=True, timeout=600, env=dict(env, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    compute = json.loads((work / "run.json").read_text())["compute"]
    assert compute["threads"] == 2
    assert compute["kernels"] in ("aten AVX2, onednn AVX2", "aten DEFAULT, onednn AVX2")  # DEFAULT: no AVX2
    proc = subprocess.run([IKD_EXE, "evaluate", work / "latest.pth", "--device", DEVICE], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    evaluated = json.loads((work / "latest.eval-val.json").read_text())["compute"]  # said in the eval file too
    assert {k: evaluated[k] for k in compute} == compute and evaluated["device"] == DEVICE
    result = run_cli("presets", "show", "shapes", "--set", "train.threads=0", expect=1)
    assert "train.threads must be an integer >= 1 and <= the CPU count or null, got 0" in result.output
    result = run_cli("presets", "show", "shapes", "--set", "train.cpu_kernels=sse", expect=1)
    assert "train.cpu_kernels" in result.output and "avx2" in result.output
    # a process (a notebook, say) whose kernels torch chose already cannot cap them: said, not ignored
    late = ("import torch; torch.ones(64).sum(); from ikd_cli.core.errors import IkdError\n"
            "from ikd_cli.core.machine import pin_compute\n"
            "try:\n    pin_compute({'train': {'cpu_kernels': 'avx2'}})\nexcept IkdError as err:\n    print(err)\n"
            "print(torch.backends.cpu.get_cpu_capability())")
    proc = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    refused = "came after torch had chosen its kernels" in proc.stdout
    native_here = proc.stdout.split()[-1]
    assert refused == native_here.startswith("AVX512"), proc.stdout  # an AVX2 CPU is capped already


# ------------------------------------------------------------------ backdoor poison
def test_a_failed_poisoning_start_does_not_block_the_corrected_command(tiny_sets, tmp_path):
    out = tmp_path / "poisoned"
    result = run_cli("backdoor", "poison", *tiny_sets, "--out", out, "--rate", "0.01", expect=1)
    assert "triggers no image" in result.output
    result = run_cli("backdoor", "poison", *tiny_sets, "--out", out, "--rate", "0.25")
    assert "poisoned set ready" in result.output and not (out / ".backdoor-partial.json").exists()


# ------------------------------------------------------- a file name that is not UTF-8
def test_an_image_name_that_is_not_utf8_is_attacked_and_shown(trained_teacher, tmp_path):
    import os

    from ikd_cli.data.shapes import generate_shapes

    root = tmp_path / "shapes"
    generate_shapes(root, seed=0, num_train=4, num_val=2, image_size=64)
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    first = data["images"][0]["file_name"]
    os.rename(root / "train" / first, os.fsencode(root / "train") + b"/caf\xe9.png")  # Latin-1 on disk
    data["images"][0]["file_name"] = os.fsdecode(b"caf\xe9.png")  # as Python reads such a name
    ann.write_text(json.dumps(data))
    args = ["attack", "--checkpoint", trained_teacher, "--out", tmp_path / "adv", "--device", DEVICE,
            "--workers", "0", "--steps", "1", "--set", f"data.root={root}", "--set", "data.shapes=null",
            "--set", "data.img_scale=[64, 64]", "--set", "data.workers_per_gpu=0"]
    result = run_cli(*args)
    assert "preview:" in result.output and (tmp_path / "adv" / "preview.png").is_file()
    assert os.path.exists(os.fsencode(tmp_path / "adv") + b"/caf\xe9.png.ikdd")
    assert "nothing to do" in run_cli(*args).output


# ------------------------------------------------------------------ hints that work
def test_a_hint_repeats_the_preset_path_and_the_set_values(shapes_root, tmp_path):
    import shlex

    from ikd_cli.config.presets import CONFIG_DIR

    preset = tmp_path / "my presets" / "tiny.yaml"  # a path, with a space: quoted in the hint
    preset.parent.mkdir()
    preset.write_text((CONFIG_DIR / "shapes.yaml").read_text().replace("description:", "name: tiny\ndescription:"))
    sets = ["--set", f"data.root={shapes_root}", "--set", "data.shapes=null", "--set", "data.img_scale=[96, 96]",
            "--set", f"teacher.checkpoint={tmp_path / 'none.pth'}"]
    result = run_cli("attack", "--preset", preset, *sets, "--out", tmp_path / "adv", "--device", DEVICE, expect=1)
    hint = " ".join(result.output.split()).split("`")[1]
    assert hint.startswith("ikd train --preset "), hint
    args = shlex.split(hint)
    assert args[args.index("--preset") + 1] == str(preset)
    given = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert given == [s for s in sets if s != "--set"], given
    assert "--model teacher" in hint


# ------------------------------------------------------- evaluate from a read-only folder
def test_evaluate_writes_its_metrics_where_out_says(trained_teacher, tiny_sets, tmp_path):
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    ckpt = folder / "teacher.pth"
    shutil.copy(trained_teacher, ckpt)
    # read-only even for root (the suite may run as root, which chmod does not stop)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here: no folder is read-only for this user")
    try:
        result = run_cli("evaluate", ckpt, "--device", DEVICE, *tiny_sets, expect=1)
        assert "is not writable" in result.output and "--out" in result.output
        result = run_cli("evaluate", ckpt, "--device", DEVICE, *tiny_sets, "--out", tmp_path / "m" / "teacher.json")
        report = json.loads((tmp_path / "m" / "teacher.json").read_text())
        assert report["checkpoint"] == str(ckpt) and 0 <= report["bbox"]["AP"] <= 1
        run_cli("evaluate", ckpt, "--device", DEVICE, *tiny_sets, "--out", tmp_path / "dir")
        assert (tmp_path / "dir" / "teacher.eval-val.json").is_file()
        assert sorted(p.name for p in folder.iterdir()) == ["teacher.pth"]
    finally:
        subprocess.run(["chattr", "-i", str(folder)])
