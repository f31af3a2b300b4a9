"""What ``ikd`` refuses from files it did not write (README, "Promises"): names in data files that
would put an output outside its folder, a second writer in one folder, and decompression / YAML
bombs. Each case is a real file and the one line it gets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import run_cli
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

    from ikd_cli.attack.run import _save

    class Result:
        pixels = np.zeros((4, 4, 3), np.uint8)
        loss_before = loss_after = linf = seconds = 0.0

    (tmp_path / "out").mkdir()
    item = dict(name="../clean.png", img=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(IkdError, match="'../clean.png' leaves its folder"):
        _save(tmp_path / "out", item, Result(), 8, "png", open(tmp_path / "records", "w"))
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

