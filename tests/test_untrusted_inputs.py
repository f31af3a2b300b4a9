"""What ``ikd`` refuses from files it did not write (README, "Promises"): names in data files that
would put an output outside its folder, a second writer in one folder, and decompression / YAML
bombs. Each case is a real file and the one line it gets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import IKD_EXE, kill_after, run_cli
from ikd_cli.core.errors import IkdError


# ------------------------------------------------------------- 1: names that leave their folder
@pytest.mark.parametrize("rel", ["../val/000000.png", "/etc/x.png", "a/../../x.png", "..", "a\\..\\x.png",
                                 "x\x00.png", ""])
def test_inside_refuses_names_that_leave_the_folder(rel, tmp_path):
    from ikd_cli.core.fileio import inside, is_inside

    with pytest.raises(IkdError, match="leaves its folder"):
        inside(tmp_path, rel)
    assert not is_inside(rel)


@pytest.mark.parametrize("rel,expected", [("a.png", "a.png"), ("sub/a.png", "sub/a.png"), ("a/../b.png", "b.png"),
                                          ("./a.png", "a.png")])
def test_inside_keeps_names_inside_the_folder(rel, expected, tmp_path):
    from ikd_cli.core.fileio import inside

    assert inside(tmp_path, rel) == tmp_path / expected


def _escaping_copy(shapes_root: Path, tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A copy of the shapes data whose first training image is named ``../val/<first val image>``:
    the clean val image that a copy written under that name would overwrite, and its bytes."""
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    val_name = json.loads((root / "annotations" / "instances_val.json").read_text())["images"][0]["file_name"]
    data["images"][0]["file_name"] = f"../val/{val_name}"
    ann.write_text(json.dumps(data))
    victim = root / "val" / val_name
    return root, victim, victim.read_bytes()


def _data_sets(root: Path) -> list[str]:
    sets = [f"data.root={root}", "data.shapes=null", "data.img_scale=[96, 96]", "data.workers_per_gpu=0",
            "data.samples_per_gpu=4", "attack.batch_size=4"]
    return [arg for s in sets for arg in ("--set", s)]


def test_data_check_reports_a_file_name_that_leaves_the_image_folder(shapes_root, tmp_path):
    root, _, _ = _escaping_copy(shapes_root, tmp_path)
    result = run_cli("data", "check", *_data_sets(root), "--json", tmp_path / "check.json", expect=1)
    problems = {p["what"]: p for p in json.loads((tmp_path / "check.json").read_text())[0]["problems"]}
    bad = problems["image file names that leave the image folder"]
    assert bad["severity"] == "error" and "../val/" in bad["examples"][0]
    assert "not usable" in result.output


@pytest.mark.parametrize("fmt", ["png", "delta"])
def test_attack_refuses_a_file_name_that_leaves_the_output_folder(fmt, shapes_root, tmp_path):
    """Refused by the data check, before any teacher is read (none is needed here); the attack's
    own guard below it is the next test."""
    root, victim, before = _escaping_copy(shapes_root, tmp_path)
    out = tmp_path / "adv"
    result = run_cli("attack", "--checkpoint", tmp_path / "teacher.pth", "--out", out, "--device", "cpu", "--workers", "0",
                     "--steps", "1", "--format", fmt, *_data_sets(root), expect=1)
    assert "leave the image folder" in result.output and "../val/" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert victim.read_bytes() == before


def test_attack_save_refuses_a_name_that_leaves_the_output_folder(tmp_path):
    """The attack's own guard, below the data check: no image is written outside ``out``."""
    import numpy as np

    from ikd_cli.attack.writer import SetWriter

    class Result:
        pixels = np.zeros((4, 4, 3), np.uint8)
        loss_before = loss_after = linf = seconds = 0.0

    (tmp_path / "out").mkdir()
    item = dict(name="../clean.png", img=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(IkdError, match="'../clean.png' leaves its folder"):
        with SetWriter(tmp_path / "out", tmp_path / "out" / "records-0.jsonl", 8, "png") as writer:
            writer.save([item], [Result()])
    assert not (tmp_path / "clean.png").exists()


def test_export_refuses_a_record_that_leaves_the_export_folder(shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    val_name = json.loads((root / "annotations" / "instances_train.json").read_text())["images"][0]["file_name"]
    victim = root / "val" / val_name
    shutil.copy(root / "train" / val_name, root / "val" / val_name)
    before = victim.read_bytes()
    src = tmp_path / "set"
    src.mkdir()
    (src / "attack.json").write_text(json.dumps({"format": "png"}))
    shutil.copy(root / "train" / val_name, src / "x.png")
    name = f"../../data/val/{val_name}"
    (src / "records-0.jsonl").write_text(json.dumps({"image": name, "out": "x.png"}) + "\n")
    # dest/../../data/val/<name> is the clean val image
    dest = tmp_path / "a" / "export"
    result = run_cli("attack", "--out", src, "--export", dest, "--set", f"data.root={root}",
                     "--set", "data.shapes=null", expect=1)
    assert "leaves its folder" in result.output and val_name in result.output
    assert victim.read_bytes() == before


def test_poison_refuses_a_file_name_that_leaves_the_output_folder(shapes_root, tiny_sets, tmp_path):
    root, victim, before = _escaping_copy(shapes_root, tmp_path)
    result = run_cli("backdoor", "poison", *tiny_sets, "--set", f"data.root={root}", "--out", tmp_path / "p",
                     "--rate", "1", expect=1)
    assert "leave the image folder" in result.output and len(result.output.strip().splitlines()) == 1
    assert victim.read_bytes() == before


def test_poisoning_itself_refuses_a_file_name_that_leaves_the_folder(shapes_root, tmp_path):
    """make_poisoned_set's own guard (the command's data check comes first): nothing written."""
    from ikd_cli.backdoor.poison import make_poisoned_set
    from ikd_cli.config.presets import load

    root, victim, before = _escaping_copy(shapes_root, tmp_path)
    preset = load("shapes", {"data.root": str(root), "data.shapes": None, "backdoor.out": str(tmp_path / "p"),
                             "backdoor.rate": 1.0})
    with pytest.raises(IkdError, match="leaves its folder"):
        make_poisoned_set(preset)
    assert victim.read_bytes() == before and not (tmp_path / "p").exists()


# ------------------------------------------------------------------ 2: one writer per folder
def _foreign_lock(folder: Path, age: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".ikd.lock"
    path.write_text(json.dumps(dict(pid=1, host="node-17.cluster", started=1.7e9, command="ikd train",
                                    what="train teacher", token="f" * 16)))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_fresh_lock_of_another_host_is_refused_and_a_stale_one_taken_over(tmp_path):
    from ikd_cli.core.lock import STALE_AFTER_S, lock_folder, release_all

    _foreign_lock(tmp_path / "fresh", age=10)
    with pytest.raises(IkdError, match="in use by another ikd train teacher: pid 1 on node-17.cluster"):
        lock_folder(tmp_path / "fresh")
    path = _foreign_lock(tmp_path / "stale", age=STALE_AFTER_S + 60)
    lock = lock_folder(tmp_path / "stale", "attack")
    try:
        assert json.loads(path.read_text())["token"] == lock.token
    finally:
        release_all()
    assert not path.exists() and (tmp_path / "fresh" / ".ikd.lock").exists()
    assert sorted(p.name for p in (tmp_path / "stale").iterdir()) == []  # no temporary file left


def test_the_holder_keeps_its_lock_fresh(tmp_path, monkeypatch):
    from ikd_cli.core import lock as lk

    monkeypatch.setattr(lk, "HEARTBEAT_S", 0.05)
    lock = lk.lock_folder(tmp_path, "train")
    try:
        os.utime(lock.path, (time.time() - 3600, time.time() - 3600))
        time.sleep(0.5)
        assert time.time() - lock.path.stat().st_mtime < 60
    finally:
        lk.release_all()
    assert not lock.path.exists()


def test_a_command_refuses_a_folder_locked_on_another_host(tiny_sets, tmp_path):
    _foreign_lock(tmp_path / "w" / "teacher", age=5)
    result = run_cli("train", "--model", "teacher", "--work-dir", tmp_path / "w", "--device", "cpu", *tiny_sets,
                     expect=1)
    assert "in use by another ikd train teacher: pid 1 on node-17.cluster" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "w" / "teacher" / "latest.pth").exists()


def _train_cmd(work: Path, tiny_sets, *extra) -> list[str]:
    return [IKD_EXE, "train", "--model", "student", "--work-dir", str(work), "--device", "cpu", *tiny_sets, *extra]


def test_two_trainings_race_for_one_work_dir(tiny_sets, tmp_path):
    """Two real processes on one work dir: the second stops in one line naming the first, which
    completes."""
    work = tmp_path / "w"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(_train_cmd(work, tiny_sets, "--set", "train.epochs=3"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
    lock = work / "student" / ".ikd.lock"
    deadline = time.time() + 240
    while not lock.exists():
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline
        time.sleep(0.1)
    second = subprocess.run(_train_cmd(work, tiny_sets, "--set", "train.epochs=3"), capture_output=True, text=True,
                            env=env, timeout=240)
    still_running = first.poll() is None
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out
    assert still_running, "the first run ended before the second reached its lock: make it longer"
    assert second.returncode == 1, second.stdout + second.stderr
    text = " ".join((second.stdout + second.stderr).split())
    assert f"is in use by another ikd train student: pid {first.pid} on {socket.gethostname()}, started" in text
    assert "Traceback" not in text
    assert (work / "student" / "epoch_3.pth").exists() and not lock.exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tiny_sets, tmp_path):
    from ikd_cli.core.lock import lock_folder, release_all

    work = tmp_path / "w"
    lock = work / "student" / ".ikd.lock"
    kill_after(_train_cmd(work, tiny_sets), lock)
    assert lock.exists()  # kill -9 leaves it behind
    holder = json.loads(lock.read_text())
    try:
        taken = lock_folder(work / "student", "train")
        assert json.loads(lock.read_text())["token"] == taken.token != holder["token"]
    finally:
        release_all()


# -------------------------------------------------------------------------------------- 3: bombs
def _delta_bomb(path: Path, clean, inflated: int) -> int:
    """A delta file with a valid header for ``clean`` whose payload inflates to ``inflated``
    bytes of zeros (written in 1 MB pieces: the test itself never holds it). Returns its size."""
    import struct
    import zlib

    from ikd_cli.attack.storage import _CODEC_ZLIB_PLANAR, _HEADER, MAGIC, VERSION, pixel_digest

    comp = zlib.compressobj(9)
    block = bytes(1 << 20)
    with open(path, "wb") as fh:
        fh.write(_HEADER.pack(MAGIC, VERSION, _CODEC_ZLIB_PLANAR, clean.ndim, 0, 8.0, bytes.fromhex(pixel_digest(clean))))
        fh.write(struct.pack(f"<{clean.ndim}I", *clean.shape))
        for _ in range(inflated >> 20):
            fh.write(comp.compress(block))
        fh.write(comp.flush())
    return path.stat().st_size


def test_a_delta_bomb_is_refused_without_inflating_it(tmp_path):
    import tracemalloc

    import numpy as np

    from ikd_cli.attack.storage import read_adversarial

    clean = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    size = _delta_bomb(tmp_path / "x.png.ikdd", clean, 64 << 20)  # 64 MB from about 64 KB
    assert size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(IkdError, match="holds more than its 32 x 32 x 3 image"):
            read_adversarial(tmp_path / "x.png.ikdd", clean, fmt="delta")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MB held while refusing a bomb"


def test_a_png_that_declares_a_huge_size_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    import numpy as np

    from ikd_cli.attack.storage import read_adversarial

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # declares 40000 x 40000 RGB (4.8 GB decoded); its first rows are enough to be refused
    width = height = 40000
    idat = zlib.compress(bytes(1 + 3 * width) * 4)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    (tmp_path / "x.png").write_bytes(png)
    clean = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(IkdError, match="is 40000 x 40000 but its source is 32 x 32"):
        read_adversarial(tmp_path / "x.png", clean, fmt="png")


BILLION_LAUGHS = """\
teacher:
  lr_steps: &l9 [&l8 [&l7 [&l6 [&l5 [&l4 [&l3 [&l2 [&l1 [1,1,1,1,1,1,1,1,1],*l1,*l1,*l1,*l1,*l1,*l1,*l1,*l1],
    *l2,*l2,*l2,*l2,*l2,*l2,*l2,*l2],*l3,*l3,*l3,*l3,*l3,*l3,*l3,*l3],*l4,*l4,*l4,*l4,*l4,*l4,*l4,*l4],
    *l5,*l5,*l5,*l5,*l5,*l5,*l5,*l5],*l6,*l6,*l6,*l6,*l6,*l6,*l6,*l6],*l7,*l7,*l7,*l7,*l7,*l7,*l7,*l7],
    *l8,*l8,*l8,*l8,*l8,*l8,*l8,*l8]
"""


def test_a_yaml_alias_bomb_in_a_preset_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    result = run_cli("presets", "show", path, expect=1)
    assert "aliases expand to more than 100,000 values" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_yaml_alias_bomb_in_a_set_value_is_refused():
    from ikd_cli.config.presets import parse_set

    value = BILLION_LAUGHS.split("lr_steps: ", 1)[1]
    with pytest.raises(IkdError, match="--set teacher.lr_steps: its aliases expand"):
        parse_set([f"teacher.lr_steps={value}"])


def test_small_yaml_aliases_still_work(tmp_path):
    from ikd_cli.config.presets import load

    path = tmp_path / "p.yaml"
    path.write_text("train:\n  lr_steps: &s [8, 11]\nteacher:\n  lr_steps: *s\n")
    assert load(str(path))["teacher"]["lr_steps"] == [8, 11]


@pytest.mark.parametrize("key,value,message", [
    ("teacher.lr_steps", "{a: 1}", "teacher.lr_steps must be a list of epochs (integers) or null"),
    ("teacher.lr_steps", "[[1, 2], 3]", "teacher.lr_steps must be a list of epochs"),
    ("teacher.epochs", "many", "teacher.epochs must be an integer >= 1 or null"),
    ("teacher.epochs", "0", "teacher.epochs must be an integer >= 1"),
    ("data.img_scale", "[96]", "data.img_scale must be width and height in pixels"),
    ("data.img_scale", "big", "data.img_scale must be width and height in pixels"),
    ("backdoor.victim_lr_steps", "8", "backdoor.victim_lr_steps must be a list of epochs"),
    ("backdoor.victim_epochs", "1.5", "backdoor.victim_epochs must be an integer >= 1"),
    ("attack.decay", "fast", "attack.decay must be a number >= 0 or null"),
    ("attack.random_start", "[1]", "attack.random_start must be true/false or null"),
    ("data.classes", "{a: b}", "data.classes must be a list of names, auto or null"),
])
def test_keys_without_a_default_are_type_checked(key, value, message):
    result = run_cli("presets", "show", "shapes", "--set", f"{key}={value}", expect=1)
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_keys_without_a_default_take_their_kind():
    from ikd_cli.config.presets import load

    preset = load("shapes", {"teacher.lr_steps": [1, 2], "teacher.epochs": 3, "data.img_scale": [96, 64],
                             "attack.decay": 1, "attack.random_start": True, "backdoor.victim_lr_steps": None})
    assert preset["attack"]["decay"] == 1.0 and isinstance(preset["attack"]["decay"], float)
    assert preset["data"]["img_scale"] == [96, 64] and preset["teacher"]["epochs"] == 3


# ------------------------------------------------------ 4: an export onto the preset's data
def _fake_set(root: Path, tmp_path: Path) -> tuple[Path, str]:
    """A finished png set of one image (the first training image, unchanged)."""
    name = json.loads((root / "annotations" / "instances_train.json").read_text())["images"][0]["file_name"]
    src = tmp_path / "set"
    src.mkdir()
    (src / "attack.json").write_text(json.dumps({"format": "png"}))
    shutil.copy(root / "train" / name, src / name)
    (src / "records-0.jsonl").write_text(json.dumps({"image": name, "out": name}) + "\n")
    return src, name


@pytest.mark.parametrize("where,message", [("val", "is the preset's val images"),
                                           ("train", "is the preset's training images"),
                                           ("val/sub", "is inside the preset's val images"),
                                           ("set", "is the adversarial set being exported"),
                                           ("other", "is not empty and holds no export")])
def test_export_onto_a_source_or_foreign_folder_is_refused(where, message, shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    src, _ = _fake_set(root, tmp_path)
    dest = {"set": src, "other": tmp_path / "other"}.get(where, root / where)
    if where == "other":
        dest.mkdir()
        (dest / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    result = run_cli("attack", "--out", src, "--export", dest, "--set", f"data.root={root}",
                     "--set", "data.shapes=null", expect=1)
    assert message in " ".join(result.output.split()) and len(result.output.strip().splitlines()) == 1
    assert before == {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_replaces_an_earlier_export(shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    src, name = _fake_set(root, tmp_path)
    dest = tmp_path / "export"
    sets = ["--set", f"data.root={root}", "--set", "data.shapes=null"]
    run_cli("attack", "--out", src, "--export", dest, *sets)
    run_cli("attack", "--out", src, "--export", dest, *sets)
    assert sorted(p.name for p in dest.iterdir()) == sorted(["attack.json", name, "records-0.jsonl"])
