"""Messages and the API (issue 31, part 5): each case once ended in a traceback, a wrong run or a
misleading hint; on real files and real commands, in seconds."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from pathlib import Path

import pytest

from helpers import DEVICE, run_cli
from ikd_cli import api
from ikd_cli.core.errors import IkdError


def _one_line(result) -> str:
    """The output of a refused command, checked to be one sentence: no traceback, no usage box."""
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    return text


def _data_with(shapes_root: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the tiny shapes data whose first training box has ``changes`` (None: removed)."""
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    box = data["annotations"][0]
    for key, value in changes.items():
        box.pop(key) if value is None else box.__setitem__(key, value)
    ann.write_text(json.dumps(data))
    return root


# ------------------------------------------------------------------ a box MMDetection cannot read
@pytest.mark.parametrize("changes, problem", [
    ({"bbox": "1,2,3,4"}, "boxes that are not [x, y, w, h] (four numbers)"),
    ({"bbox": [1, 2]}, "boxes that are not [x, y, w, h] (four numbers)"),
    ({"bbox": ["1", "2", "30", "40"]}, "boxes that are not [x, y, w, h] (four numbers)"),
    ({"area": None}, "boxes without a numeric 'area'"),
])
def test_data_check_calls_a_malformed_box_an_error(changes, problem, shapes_root, tmp_path):
    root = _data_with(shapes_root, tmp_path, **changes)
    result = run_cli("data", "check", "--set", f"data.root={root}", "--set", "data.shapes=null",
                     "--json", tmp_path / "check.json", expect=1)
    found = {p["what"]: p for p in json.loads((tmp_path / "check.json").read_text())[0]["problems"]}
    assert found[problem]["severity"] == "error" and found[problem]["count"] == 1
    assert "not usable" in result.output


def test_training_on_a_malformed_box_stops_in_one_line(shapes_root, tiny_sets, tmp_path):
    root = _data_with(shapes_root, tmp_path, bbox="1,2,3,4")
    result = run_cli("train", "--model", "student", "--work-dir", tmp_path / "w", "--device", DEVICE, *tiny_sets,
                     "--set", f"data.root={root}", expect=1)
    assert "data check: train: boxes that are not [x, y, w, h]" in _one_line(result)
    assert '"1,2,3,4"' in result.output


# ------------------------------------------------------------------------------------- the API
@pytest.mark.parametrize("call, message", [
    (lambda: api.train("shapes", "bogus"), "model must be one of teacher, student, got 'bogus'"),
    (lambda: api.attack("shapes", "test"), "split must be one of train, val, got 'test'"),
    (lambda: api.export_attack("shapes", "test", dest=Path("x")), "split must be one of train, val"),
    (lambda: api.train("shapes", settings=["train.epochs=1"]), "settings must be a dict of dotted keys"),
    (lambda: api.train("shapes", settings="train.epochs=1"), "settings must be a dict of dotted keys"),
    (lambda: api.train("shapes", settings={1: 2}), r"settings must be a dict .*got \{1: 2\}"),
    (lambda: api.load_preset(3), "preset must be a preset's name or a YAML path"),
    (lambda: api.train("shapes", launcher="mpi"), "launcher must be one of none, pytorch, slurm"),
    (lambda: api.distill("shapes", launcher="mpi"), "launcher must be one of none, pytorch, slurm"),
    (lambda: api.evaluate("missing.pth", model="bogus"), "model must be one of teacher, student"),
])
def test_the_api_refuses_a_bad_argument_with_the_one_line_error(call, message):
    with pytest.raises(IkdError, match=message):
        call()


@pytest.mark.parametrize("score", [api.evaluate, api.robustness])
def test_evaluate_refuses_a_split_it_has_not_got(score, tmp_path):
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"not read: the split is refused first")
    with pytest.raises(IkdError, match="split must be one of train, val, got 'test'"):
        score(checkpoint, split="test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]  # no eval-test.json


# ------------------------------------------------------------------------ --work-dir and the teacher
def test_a_teacher_trained_in_the_work_dir_given_is_the_one_read(tmp_path):
    """teacher.checkpoint inside the preset's own work dir is W's where W holds one; where W holds
    none, the preset's (a study's runs in their own work dirs share the main teacher)."""
    work, preset_own = tmp_path / "w", "work_dirs/shapes/teacher/latest.pth"
    assert api.load_preset("shapes", {"work_dir": str(work)})["teacher"]["checkpoint"] == preset_own
    (work / "teacher").mkdir(parents=True)
    (work / "teacher" / "latest.pth").write_bytes(b"")
    moved = api.load_preset("shapes", {"work_dir": str(work)})
    assert moved["teacher"]["checkpoint"] == str(work / "teacher" / "latest.pth")
    kept = api.load_preset("shapes", {"work_dir": str(work), "teacher.checkpoint": "mine.pth"})
    assert kept["teacher"]["checkpoint"] == "mine.pth"


def test_the_teacher_ikd_train_put_in_work_dir_is_the_one_used(trained_teacher, tiny_sets, tmp_path):
    """The session teacher is `ikd train --work-dir W`'s: an attack given that work dir reads it."""
    from ikd_cli.core.fileio import sha256_of

    work = trained_teacher.parent.parent
    run_cli("attack", "--set", f"work_dir={work}", "--out", tmp_path / "adv", "--limit", "1", "--steps", "1",
            "--no-teacher-check", "--workers", "0", "--device", DEVICE, *tiny_sets)
    settings = json.loads((tmp_path / "adv" / "attack.json").read_text())
    assert settings["teacher_sha256"] == sha256_of(trained_teacher)


@pytest.mark.parametrize("teacher", ["", "teachers/mine.pth"])
def test_the_hint_trains_the_teacher_where_it_is_then_looked_for(teacher, tiny_sets, tmp_path, monkeypatch):
    """No teacher anywhere: the hint's training writes into the work dir, and its --set points
    the next run at it (which finds it there anyway where the preset's path was its own work dir's)."""
    monkeypatch.chdir(tmp_path)  # no work_dirs/shapes/teacher of another run here
    work = tmp_path / "w"
    given = ["--set", f"teacher.checkpoint={teacher}"] if teacher else []
    result = run_cli("distill", "--work-dir", work, *given, "--device", DEVICE, *tiny_sets, expect=1)
    text = " ".join(result.output.split())
    assert f"teacher checkpoint not found: {teacher or 'work_dirs/shapes/teacher/latest.pth'};" in text
    train, again = shlex.split(text.split("`")[1]), shlex.split(text.split("`")[3])
    assert train[:2] == ["ikd", "train"] and f"work_dir={work}" in train and train[-2:] == ["--model", "teacher"]
    assert again == ["--set", f"teacher.checkpoint={work / 'teacher' / 'latest.pth'}"]


# --------------------------------------------------------------------- catch-alls get a sentence
def test_a_deeply_nested_preset_or_set_value_is_one_sentence(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("description: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nest more than 50 levels deep" in _one_line(run_cli("presets", "show", path, expect=1))
    result = run_cli("presets", "show", "--set", "description=" + "[" * 5000 + "]" * 5000, expect=1)
    assert "--set description: its values nest more than 50 levels deep" in _one_line(result)


def test_a_deeply_nested_annotation_file_is_one_sentence(shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    ann = root / "annotations" / "instances_train.json"
    ann.write_text('{"images": [], "annotations": [], "categories": [], "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = run_cli("data", "check", "--set", f"data.root={root}", "--set", "data.shapes=null", expect=1)
    assert f"annotation file {ann} is not valid JSON (line 1: values nested too deeply" in " ".join(
        result.output.split())


@pytest.mark.parametrize("age", [10, 2 * 3600])
def test_a_lock_that_is_a_folder_is_named_and_left_alone(age, tiny_sets, tmp_path):
    lock = tmp_path / "w" / "student" / ".ikd.lock"
    (lock / "inside").mkdir(parents=True)
    os.utime(lock, (time.time() - age, time.time() - age))  # an old one is no stale lock either
    result = run_cli("train", "--model", "student", "--work-dir", tmp_path / "w", "--device", DEVICE, *tiny_sets,
                     expect=1)
    assert f"{lock} is a folder, not a lock file ikd writes" in " ".join(_one_line(result).split())
    assert (lock / "inside").is_dir()


def test_an_empty_preset_says_it_names_no_data(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    for command in (["data", "check", "--preset", path], ["train", "--preset", path, "--device", "cpu"]):
        text = _one_line(run_cli(*command, expect=1))
        assert "preset empty sets no data.train_ann" in text and "not found: ." not in text


def test_train_threads_is_bounded_by_the_machine():
    result = run_cli("presets", "show", "--set", "train.threads=1000", expect=1)
    assert f"<= the CPU count or null, got 1000 (the CPU count here: {os.cpu_count()})" in _one_line(result)
    run_cli("presets", "show", "--set", f"train.threads={os.cpu_count()}")


def test_an_empty_corruptions_list_is_refused(tmp_path):
    checkpoint = tmp_path / "model.pth"  # never read: the corruptions are checked first
    result = run_cli("evaluate", checkpoint, "--robustness", "--corruptions", "", expect=1)
    assert "--corruptions '' names no corruption" in _one_line(result)
    result = run_cli("evaluate", checkpoint, "--corruptions", "", expect=1)
    assert "go with --robustness" in _one_line(result)


def test_presets_show_refuses_model_with_path():
    result = run_cli("presets", "show", "--path", "teacher", "--model", "student", expect=1)
    assert "leave out --model student" in _one_line(result)
    assert run_cli("presets", "show", "--path", "teacher").output.strip().endswith("teacher/latest.pth")
