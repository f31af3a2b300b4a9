"""Files made elsewhere never run code, nothing outside a run is overwritten or deleted, and
bombs and hangs stop in one line (issue 31, docs/promises.md). Real files, real payloads, real
symlinks and real processes; each case failed before its fix."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from helpers import DEVICE, IKD_EXE, run_cli
from ikd_cli.core.errors import IkdError

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_line(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) == 1 or text.count("error:") == 1, result.output
    for needle in needles:
        assert needle in text, text
    return text


def _payload_config(tmp_path: Path, marker: Path) -> Path:
    """A model config that would create ``marker`` when loaded, and is otherwise the shapes
    teacher's (so that, trusted, it goes on to work)."""
    from ikd_cli.config.presets import load, resolve_config_path

    base = resolve_config_path(load("shapes")["teacher"]["config"]).resolve()
    path = tmp_path / "evil.py"
    path.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n_base_ = [{str(base)!r}]\n")
    return path


def _mmdet_escape(target: Path) -> str:
    """``mmdet::../../..`` spelling of ``target``, relative to mmdet's own config folder."""
    from ikd_cli.config.presets import _known_config_root

    return "mmdet::" + os.path.relpath(target, _known_config_root("mmdet::x"))


# ------------------------------------------------------------------ 1: code from data files
@pytest.fixture
def untrusted(monkeypatch):
    """No trust in this test, and whatever --trust-checkpoint sets is undone after it."""
    from ikd_cli.core.checkpoints import TRUST_ENV

    monkeypatch.setenv(TRUST_ENV, "0")
    return TRUST_ENV


@pytest.mark.parametrize("value", ["false", "no", "off", "0", "FALSE", " Off "])
def test_a_false_trust_value_does_not_trust(value, tmp_path, monkeypatch, untrusted):
    from test_checkpoints import _payload_checkpoint

    marker = tmp_path / "pwned"
    evil = _payload_checkpoint(tmp_path / "evil.pth", marker)
    monkeypatch.setenv(untrusted, value)
    _one_line(run_cli("evaluate", evil, expect=None), "posix.system", "--trust-checkpoint")
    assert not marker.exists()


def test_an_unknown_trust_value_is_an_error(tmp_path, monkeypatch, untrusted):
    from test_checkpoints import _payload_checkpoint

    marker = tmp_path / "pwned"
    evil = _payload_checkpoint(tmp_path / "evil.pth", marker)
    monkeypatch.setenv(untrusted, "maybe")
    _one_line(run_cli("evaluate", evil, expect=None), "IKD_TRUST_CHECKPOINT='maybe' is neither true")
    assert not marker.exists()


def _checkpoint_naming(own_teacher: Path, ref: str, tmp_path: Path) -> Path:
    """The session teacher with its embedded preset's teacher config changed to ``ref``."""
    ckpt = torch.load(own_teacher, map_location="cpu", weights_only=False)  # our own file
    ckpt["meta"]["ikd_preset"]["teacher"]["config"] = ref
    path = tmp_path / "sent" / "latest.pth"
    path.parent.mkdir()
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("spelling", ["path", "mmdet::.."])
def test_a_checkpoint_preset_naming_a_python_config_is_refused(spelling, own_teacher, tmp_path, untrusted):
    marker = tmp_path / "pwned"
    evil = _payload_config(tmp_path, marker)
    ref = str(evil) if spelling == "path" else _mmdet_escape(evil)
    sent = _checkpoint_naming(own_teacher, ref, tmp_path)
    needle = "--trust-checkpoint" if spelling == "path" else "leads out of mmdet's config folder"
    _one_line(run_cli("evaluate", sent, "--device", DEVICE, expect=None), needle)
    assert not marker.exists()
    if spelling == "mmdet::..":  # trust or not, '..' never resolves out
        _one_line(run_cli("evaluate", sent, "--device", DEVICE, "--trust-checkpoint", expect=None), needle)
        assert not marker.exists()


def test_a_checkpoint_preset_naming_a_python_config_loads_when_trusted(own_teacher, tmp_path, untrusted):
    marker = tmp_path / "pwned"
    sent = _checkpoint_naming(own_teacher, str(_payload_config(tmp_path, marker)), tmp_path)
    run_cli("evaluate", sent, "--device", DEVICE, "--trust-checkpoint")
    assert marker.exists()


def test_a_received_run_folder_naming_a_python_config_is_refused_on_resume(trained_teacher, tmp_path, untrusted):
    marker = tmp_path / "pwned"
    run = tmp_path / "received" / "teacher"
    shutil.copytree(trained_teacher.parent, run, symlinks=True)
    saved = yaml.safe_load((run / "preset.yaml").read_text())
    saved["teacher"]["config"] = str(_payload_config(tmp_path, marker))
    (run / "preset.yaml").write_text(yaml.safe_dump(saved))
    _one_line(run_cli("resume", run, "--device", DEVICE, expect=None), "preset.yaml names the teacher config",
              "--trust-checkpoint")
    assert not marker.exists()


def test_a_preset_given_on_the_command_line_may_name_a_python_config(shapes_root, tmp_path, untrusted):
    """The user's own choice (docs/promises.md): it loads, as any config of theirs would."""
    from helpers import REPO

    marker = tmp_path / "ran"
    preset = tmp_path / "mine.yaml"
    tree = yaml.safe_load((REPO / "configs" / "shapes.yaml").read_text())
    tree["teacher"]["config"] = str(_payload_config(tmp_path, marker))
    tree["data"].update(root=str(shapes_root), shapes=None)
    preset.write_text(yaml.safe_dump(tree))
    run_cli("presets", "show", preset, "--model", "teacher")
    assert marker.exists()


# ------------------------------------------------- 2: nothing outside a run is overwritten or deleted
def _data_copy(shapes_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    return root


def _sets(root: Path, *more: str) -> list[str]:
    values = [f"data.root={root}", "data.shapes=null", "data.img_scale=[96, 96]", "data.workers_per_gpu=0",
              "data.samples_per_gpu=4", "attack.batch_size=4", *more]
    return [arg for s in values for arg in ("--set", s)]


def _tree(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("split,where,message", [("train", "train", "is the preset's training images"),
                                                 ("val", "val", "is the preset's val images"),
                                                 ("train", "val/sub", "is inside the preset's val images")])
def test_attack_out_onto_the_preset_images_is_refused(split, where, message, shapes_root, tmp_path):
    root = _data_copy(shapes_root, tmp_path)
    before = _tree(root)
    result = run_cli("attack", "--checkpoint", tmp_path / "teacher.pth", "--split", split, "--format", "png",
                     "--out", root / where, "--device", DEVICE, "--workers", "0", "--steps", "1", *_sets(root),
                     expect=None)
    _one_line(result, f"--out {root / where} {message}")
    assert _tree(root) == before


def test_restart_in_a_folder_no_ikd_run_wrote_removes_nothing(tiny_sets, tmp_path):
    run = tmp_path / "w" / "teacher"
    run.mkdir(parents=True)
    for name in ("latest.pth", "20250101_000000.log.json", "model.pth"):
        (run / name).write_text("mine")
    result = run_cli("train", "--model", "teacher", "--work-dir", tmp_path / "w", "--restart", "--device", DEVICE,
                     *tiny_sets, expect=None)
    _one_line(result, "but no run.json", "--restart removes only what one did")
    assert sorted(p.name for p in run.iterdir()) == ["20250101_000000.log.json", "latest.pth", "model.pth"]


def test_restart_removes_only_what_the_run_wrote(trained_teacher, tmp_path):
    from ikd_cli.train.session import clear_run

    run = tmp_path / "teacher"
    shutil.copytree(trained_teacher.parent, run, symlinks=True)
    outside = tmp_path / "important.pth"
    outside.write_text("keep me")
    (run / "mine.pth").write_text("mine")
    (run / "notes.txt").write_text("mine")
    (run / "epoch_99.pth").symlink_to(outside)
    (run / "epoch_98.pth").mkdir()  # a folder of such a name is not a file the run wrote
    clear_run(run)
    left = sorted(p.name for p in run.iterdir())
    assert "mine.pth" in left and "notes.txt" in left and "epoch_98.pth" in left
    assert not any(n.startswith(("epoch_", "latest")) and n != "epoch_98.pth" for n in left), left
    assert outside.read_text() == "keep me"


def _linked_set(tmp_path: Path, *, export: bool) -> tuple[Path, Path]:
    """A received set (or earlier export) with a folder link ``link -> outside/`` and a record
    naming ``link/important.txt``; returns (the folder, the file behind the link)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "important.txt"
    victim.write_text("keep me")
    folder = tmp_path / ("export" if export else "set")
    folder.mkdir()
    (folder / "link").symlink_to(outside, target_is_directory=True)
    settings = {"format": "png", "eps": 8, **({"exported_from": "elsewhere"} if export else {})}
    (folder / "attack.json").write_text(json.dumps(settings))
    (folder / "records-0.jsonl").write_text(json.dumps({"image": "link/important.txt", "out": "link/important.txt"})
                                            + "\n")
    return folder, victim


def test_overwrite_never_deletes_through_a_link(trained_teacher, tiny_sets, tmp_path):
    folder, victim = _linked_set(tmp_path, export=False)
    run_cli("attack", "--checkpoint", trained_teacher, "--out", folder, "--overwrite", "--device", DEVICE,
            "--workers", "0", "--steps", "1", "--limit", "1", *tiny_sets)
    assert victim.read_text() == "keep me"


def test_export_onto_a_planted_export_never_deletes_through_a_link(shapes_root, tmp_path):
    from test_untrusted_inputs import _fake_set

    root = _data_copy(shapes_root, tmp_path)
    src, _ = _fake_set(root, tmp_path)
    dest, victim = _linked_set(tmp_path, export=True)
    run_cli("attack", "--out", src, "--export", dest, "--set", f"data.root={root}", "--set", "data.shapes=null")
    assert victim.read_text() == "keep me"


def test_no_write_or_delete_goes_through_a_linked_folder(tmp_path):
    from ikd_cli.attack.manifest import clear_set
    from ikd_cli.attack.writer import SetWriter

    folder, victim = _linked_set(tmp_path, export=False)
    # a record that is an adversarial image's own name, behind the link: refused, not deleted
    (folder / "records-0.jsonl").write_text(json.dumps({"image": "link/important.txt",
                                                        "out": "link/important.txt.ikdd"}) + "\n")
    (tmp_path / "outside" / "important.txt.ikdd").write_text("keep me too")
    with pytest.raises(IkdError, match="lies behind the symbolic link"):
        clear_set(folder)
    assert (tmp_path / "outside" / "important.txt.ikdd").read_text() == "keep me too"

    class Result:
        pixels = np.zeros((4, 4, 3), np.uint8)
        loss_before = loss_after = linf = seconds = 0.0

    item = dict(name="link/important.png", img=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(IkdError, match="lies behind the symbolic link"):
        with SetWriter(folder, folder / "records-1.jsonl", 8, "png") as writer:
            writer.save([item], [Result()])
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["important.txt", "important.txt.ikdd"]
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("planted", ["records-0.jsonl", "attack-0.log"])
def test_an_attack_never_appends_through_a_planted_link(planted, trained_teacher, tiny_sets, tmp_path):
    outside = tmp_path / "bashrc"
    outside.write_text("keep me")
    out = tmp_path / "adv"
    out.mkdir()
    (out / planted).symlink_to(outside)
    result = run_cli("attack", "--checkpoint", trained_teacher, "--out", out, "--device", DEVICE, "--workers", "0",
                     "--steps", "1", "--limit", "1", *tiny_sets, expect=None)
    _one_line(result, f"{out / planted} is a symbolic link")
    assert outside.read_text() == "keep me"


def test_a_training_never_appends_its_log_through_a_planted_link(tiny_sets, tmp_path):
    outside = tmp_path / "bashrc"
    outside.write_text("keep me")
    run = tmp_path / "w" / "student"
    run.mkdir(parents=True)
    (run / "train.log").symlink_to(outside)
    result = run_cli("train", "--model", "student", "--work-dir", tmp_path / "w", "--device", DEVICE, *tiny_sets,
                     expect=None)
    _one_line(result, f"{run / 'train.log'} is a symbolic link")
    assert outside.read_text() == "keep me"


def _with_extra_train_image(root: Path, name: str) -> None:
    """A copy of the first training image under ``name``, with its own entry and box."""
    ann_file = root / "annotations" / "instances_train.json"
    ann = json.loads(ann_file.read_text())
    first = ann["images"][0]
    shutil.copy(root / "train" / first["file_name"], root / "train" / name)
    new_id = max(i["id"] for i in ann["images"]) + 1
    ann["images"].append(dict(first, id=new_id, file_name=name))
    box = next(a for a in ann["annotations"] if a["image_id"] == first["id"])
    ann["annotations"].append(dict(box, id=max(a["id"] for a in ann["annotations"]) + 1, image_id=new_id))
    ann_file.write_text(json.dumps(ann))


@pytest.mark.parametrize("extra,message", [("twin", "would both be written as"),
                                           ("preview.png", "a name the folder keeps for its own file")])
def test_attack_refuses_output_names_that_collide(extra, message, trained_teacher, shapes_root, tmp_path):
    root = _data_copy(shapes_root, tmp_path)
    first = json.loads((root / "annotations" / "instances_train.json").read_text())["images"][0]["file_name"]
    name = str(Path(first).with_suffix(".jpg")) if extra == "twin" else extra
    _with_extra_train_image(root, name)
    out = tmp_path / "adv"
    result = run_cli("attack", "--checkpoint", trained_teacher, "--format", "png", "--out", out, "--device", DEVICE,
                     "--workers", "0", "--steps", "1", *_sets(root), expect=None)
    _one_line(result, message, "--format delta")
    assert not list(out.rglob("*.png"))


def test_export_refuses_two_images_that_would_share_a_png_name(shapes_root, tmp_path):
    """A delta set keeps a.jpg and a.png apart (a.jpg.ikdd, a.png.ikdd); as PNGs both are a.png."""
    from ikd_cli.attack.storage import encode_delta

    root = _data_copy(shapes_root, tmp_path)
    first = json.loads((root / "annotations" / "instances_train.json").read_text())["images"][0]["file_name"]
    twin = str(Path(first).with_suffix(".jpg"))
    _with_extra_train_image(root, twin)
    src = tmp_path / "set"
    src.mkdir()
    (src / "attack.json").write_text(json.dumps({"format": "delta", "eps": 8}))
    records = []
    for name in (first, twin):
        clean = cv2.imread(str(root / "train" / name), cv2.IMREAD_COLOR)
        (src / f"{name}.ikdd").write_bytes(encode_delta(clean, clean, 8))
        records.append(json.dumps({"image": name, "out": f"{name}.ikdd"}) + "\n")
    (src / "records-0.jsonl").write_text("".join(records))
    result = run_cli("attack", "--out", src, "--export", tmp_path / "export", "--set", f"data.root={root}",
                     "--set", "data.shapes=null", expect=None)
    _one_line(result, "would both be written as")
    assert not list((tmp_path / "export").glob("*.png"))


def test_poison_refuses_two_images_that_would_share_a_name(shapes_root, tiny_sets, tmp_path):
    root = _data_copy(shapes_root, tmp_path)
    first = json.loads((root / "annotations" / "instances_train.json").read_text())["images"][0]["file_name"]
    _with_extra_train_image(root, str(Path(first).with_suffix(".jpg")))
    result = run_cli("backdoor", "poison", *tiny_sets, "--set", f"data.root={root}", "--out", tmp_path / "p",
                     "--rate", "1", expect=None)
    _one_line(result, "would both be written as")
    assert not (tmp_path / "p").exists()


def test_two_shapes_commands_on_one_folder_do_not_interleave(tmp_path):
    out = tmp_path / "shapes"

    def shapes(seed: int):
        return [IKD_EXE, "data", "shapes", "--out", str(out), "--seed", str(seed), "--num-train", "400",
                "--num-val", "4", "--image-size", "64"]

    first = subprocess.Popen(shapes(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / ".ikd.lock").exists() and not list(out.glob("train/*")):
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    second = subprocess.run(shapes(2), capture_output=True, text=True, timeout=300)
    still_running = first.poll() is None
    first_out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, first_out
    assert still_running, "the first command ended before the second started: give it more images"
    assert second.returncode == 1 and "in use by another ikd shapes data" in " ".join(second.stdout.split())
    assert json.loads((out / "shapes.json").read_text())["seed"] == 1
    assert not (out / ".ikd.lock").exists()


# ---------------------------------------------------------------------------- 3: bombs and hangs
def _png_declaring(height: int, width: int) -> bytes:
    """A small PNG whose header declares ``height`` x ``width`` RGB (its first rows only)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat = zlib.compress(bytes(1 + 3 * width) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _png_set(root: Path, tmp_path: Path, eps: float = 8) -> tuple[Path, list[str]]:
    """The val split as an unperturbed png adversarial set (what `ikd attack --format png` writes)."""
    names = [i["file_name"] for i in json.loads((root / "annotations" / "instances_val.json").read_text())["images"]]
    folder = tmp_path / "pngset"
    folder.mkdir()
    (folder / "attack.json").write_text(json.dumps({"format": "png", "eps": eps}))
    for name in names:
        img = cv2.imread(str(root / "val" / name), cv2.IMREAD_COLOR)
        cv2.imwrite(str(folder / Path(name).with_suffix(".png")), img)
    return folder, names


@pytest.mark.parametrize("bad,message", [("bomb", "is 4000 x 4000 but its source is 96 x 96"),
                                         ("small", "is 48 x 48 but its source is 96 x 96"),
                                         ("webp", "not a PNG file"),
                                         ("budget", "differs from its source by 128 > eps 8")])
def test_evaluate_images_checks_each_file_against_its_source(bad, message, own_teacher, shapes_root, tmp_path):
    root = _data_copy(shapes_root, tmp_path)
    folder, names = _png_set(root, tmp_path)
    target = folder / Path(names[0]).with_suffix(".png")
    clean = cv2.imread(str(root / "val" / names[0]), cv2.IMREAD_COLOR)
    if bad == "bomb":
        target.write_bytes(_png_declaring(4000, 4000))
    elif bad == "small":
        cv2.imwrite(str(target), clean[:48, :48])
    elif bad == "webp":
        target.write_bytes(cv2.imencode(".webp", clean)[1].tobytes())
    else:
        cv2.imwrite(str(target), clean ^ np.uint8(128))
    result = run_cli("evaluate", own_teacher, "--images", folder, "--device", DEVICE, *_sets(root), expect=None)
    _one_line(result, str(target), message)


@pytest.mark.parametrize("bad,message", [("bomb", "is 4000 x 4000 but its source"),
                                         ("huge", "(20000x20000 px, over the"),
                                         ("small", "is 48 x 48 but its source")])
def test_evaluate_images_of_a_plain_folder_have_their_source_size(bad, message, own_teacher, shapes_root, tmp_path):
    """A folder of plain images (no attack.json): no budget to hold them to, but each must be an
    image of its source's size, from the headers, before any is decoded."""
    root = _data_copy(shapes_root, tmp_path)
    folder, names = _png_set(root, tmp_path)
    (folder / "attack.json").unlink()
    target = folder / Path(names[0]).with_suffix(".png")
    if bad == "small":
        cv2.imwrite(str(target), cv2.imread(str(root / "val" / names[0]), cv2.IMREAD_COLOR)[:48, :48])
    else:
        side = 4000 if bad == "bomb" else 20000
        target.write_bytes(_png_declaring(side, side))
    result = run_cli("evaluate", own_teacher, "--images", folder, "--device", DEVICE, *_sets(root), expect=None)
    _one_line(result, str(target), message)


def test_distill_pipeline_holds_a_delta_to_the_set_budget(shapes_root, tmp_path):
    """A delta of +128 (16x eps 8) is rebuilt exactly, and refused: the set's budget is 8."""
    from ikd_cli.attack.storage import encode_delta
    from ikd_cli.distill.pipelines import LoadAdversarialImage

    name = sorted(p.name for p in (shapes_root / "train").iterdir())[0]
    clean = cv2.imread(str(shapes_root / "train" / name), cv2.IMREAD_COLOR)
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "attack.json").write_text(json.dumps({"format": "delta", "eps": 8}))
    (folder / f"{name}.ikdd").write_bytes(encode_delta(clean, clean ^ np.uint8(128), 128))
    step = LoadAdversarialImage(str(folder))
    with pytest.raises(IkdError, match="differs from its source by 128 > eps 8"):
        step({"img": clean, "img_info": {"filename": name}})


def test_a_huge_preset_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: " + "x" * (2 << 20) + "\n")
    started = time.time()
    _one_line(run_cli("presets", "show", path, expect=None), "more than 1 MB of text")
    assert time.time() - started < 10


def _unreadable_train(shapes_root: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    root = _data_copy(shapes_root, tmp_path)
    names = [i["file_name"] for i in json.loads((root / "annotations" / "instances_train.json").read_text())["images"]]
    for name in names:
        (root / "train" / name).write_bytes(b"not an image")
    return root, names


def test_attack_skip_bad_with_nothing_readable_is_an_error(trained_teacher, shapes_root, tmp_path):
    root, _ = _unreadable_train(shapes_root, tmp_path)
    result = run_cli("attack", "--checkpoint", trained_teacher, "--out", tmp_path / "adv", "--skip-bad",
                     "--device", DEVICE, "--workers", "0", "--steps", "1", *_sets(root), expect=None)
    _one_line(result, "none of its 24 images can be read", "nothing is left")


def test_distill_over_a_set_that_skipped_every_image_stops_instead_of_hanging(trained_teacher, shapes_root,
                                                                              tmp_path):
    root, names = _unreadable_train(shapes_root, tmp_path)
    adv = tmp_path / "adv"
    adv.mkdir()
    (adv / "records-0.jsonl").write_text("".join(json.dumps({"image": n, "skipped": "unreadable"}) + "\n"
                                                 for n in names))
    cmd = [IKD_EXE, "distill", "--work-dir", str(tmp_path / "w"), "--device", DEVICE, "--dfa-until", "1",
           *_sets(root, f"attack.out={adv}", f"teacher.checkpoint={trained_teacher}", "train.epochs=1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=dict(os.environ, OMP_NUM_THREADS="1"))
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 1 and "none of its 24 images can be read" in text, proc.stdout + proc.stderr


@pytest.mark.parametrize("age,taken", [(10, False), (2 * 3600, True)])
def test_a_lock_file_that_is_not_text_is_named_and_judged_by_its_age(age, taken, tmp_path):
    from ikd_cli.core.lock import lock_folder, release_all

    path = tmp_path / ".ikd.lock"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    os.utime(path, (time.time() - age, time.time() - age))
    if not taken:
        with pytest.raises(IkdError, match=f"a lock file that cannot be read \\({path}\\)"):
            lock_folder(tmp_path, "train")
        return
    lock = lock_folder(tmp_path, "train")
    try:
        assert json.loads(path.read_text())["token"] == lock.token
    finally:
        release_all()
