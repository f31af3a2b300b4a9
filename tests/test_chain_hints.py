"""Hints between the steps of the chain that work when followed: a settings mismatch names the
``--set`` that matches what is on disk (and the re-make with the preset's own settings), a set
made with ``--limit`` is said to be partial, and ``teacher.checkpoint`` defaults to where
``ikd train --model teacher`` writes the teacher."""

import re
import shlex
import shutil
from pathlib import Path

import pytest

from helpers import DEVICE, REPO, run_cli
from ikd_cli.config import presets
from ikd_cli.config.presets import dump, parse_set

pytestmark = pytest.mark.usefixtures("one_thread")


def _sets_in(text: str) -> list[str]:
    """The first `--set key=value ...` a message names (in backquotes), as a command line takes it."""
    spans = [span for span in " ".join(text.split()).split("`")[1::2] if span.startswith("--set ")]
    return shlex.split(spans[0]) if spans else []


def _passes_the_set_check(tiny_sets, extra):
    """distill's pre-flight on the set (the same function ``ikd distill`` calls), in process."""
    from ikd_cli.attack.run import attack_dataset
    from ikd_cli.config.layout import adversarial_set_dir
    from ikd_cli.config.mmdet import build_config
    from ikd_cli.distill.run import check_adversarial_set

    args = [a for a in (*tiny_sets, *extra) if a != "--set"]
    preset = presets.load("shapes", parse_set(args))
    dataset = attack_dataset(build_config(preset, "teacher"), "train")
    check_adversarial_set(dataset, adversarial_set_dir(preset, "train"), preset)


def _distill(trained_teacher, tiny_sets, out, work, *extra, expect=1):
    return run_cli("distill", "--preset", "shapes", "--work-dir", work, "--device", DEVICE, *tiny_sets,
                   "--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={out}", *extra,
                   expect=expect)


def test_distill_after_a_1_step_attack_names_the_set_that_matches(trained_teacher, tiny_sets, tiny_adv_set,
                                                                    tmp_path):
    result = _distill(trained_teacher, tiny_sets, tiny_adv_set, tmp_path)
    text = " ".join(result.output.split())
    assert "other settings than this preset's (steps 1 -> 5)" in text
    hinted = _sets_in(text)
    assert hinted == ["--set", "attack.steps=1"], text
    # the re-make is the preset's own (5-step) attack, said so
    assert "--overwrite" in text and "steps 5" in text
    common = ("--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={tiny_adv_set}")
    _passes_the_set_check(tiny_sets, (*common, *hinted))  # followed, the hint gets past the check


def test_attack_onto_a_set_of_other_settings_names_the_set_that_matches(trained_teacher, tiny_sets, tmp_path):
    out = tmp_path / "adv"
    attack = ("attack", "--preset", "shapes", "--checkpoint", trained_teacher, "--out", out, "--device", DEVICE,
              "--workers", "0", "--no-teacher-check", "--limit", "2", *tiny_sets)
    run_cli(*attack, "--steps", "1", "--eps", "4")
    result = run_cli(*attack, "--steps", "2", expect=1)
    text = " ".join(result.output.split())
    assert "other settings (eps 4.0 -> 8.0, steps 1 -> 2)" in text
    hinted = _sets_in(text)
    assert hinted == ["--set", "attack.eps=4.0", "--set", "attack.steps=1"], text
    assert "--overwrite" in text
    again = run_cli(*attack, *hinted)  # followed: the set is continued, nothing is redone
    assert "all 2 images already attacked" in again.output


def test_a_set_made_with_limit_is_said_to_be_partial(trained_teacher, tiny_sets, tmp_path):
    assert "distill" in " ".join(run_cli("attack", "--help").output.split()).split("--limit", 1)[1][:300]
    out = tmp_path / "adv"
    attack = ("attack", "--preset", "shapes", "--checkpoint", trained_teacher, "--out", out, "--device", DEVICE,
              "--workers", "0", "--no-teacher-check", "--steps", "1", *tiny_sets)
    run_cli(*attack, "--limit", "2")
    result = _distill(trained_teacher, tiny_sets, out, tmp_path, "--set", "attack.steps=1")
    text = " ".join(result.output.split())
    assert "22 of 24 training images have no adversarial copy" in text
    assert "made with --limit (2 of 24 images)" in text and "without --limit" in text
    run_cli(*attack)  # followed: the attack continues the set over the whole split
    common = ("--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={out}")
    _passes_the_set_check(tiny_sets, (*common, "--set", "attack.steps=1"))


def test_a_run_of_other_settings_names_the_set_that_continues_it(trained_teacher, tiny_sets, tmp_path):
    """A teacher run in a work dir, trained with train.lr 0.01; asked for 0.02, the refusal
    names --set train.lr=0.01, which continues it (here: finds it finished)."""
    work = tmp_path / "w"
    (work / "teacher").mkdir(parents=True)
    shutil.copyfile(trained_teacher, work / "teacher" / "latest.pth")
    args = [a for a in tiny_sets if a != "--set"]
    saved = presets.load("shapes", parse_set([*args, f"work_dir={work}", "train.epochs=8", "train.lr=0.02"]))
    (work / "teacher" / "preset.yaml").write_text(dump(saved))
    (work / "teacher" / "run.json").write_text('{"command": "train", "role": "teacher"}')
    train = ("train", "--preset", "shapes", "--model", "teacher", "--work-dir", work, "--device", DEVICE, *tiny_sets,
             "--set", "train.epochs=8")
    result = run_cli(*train, expect=1)
    text = " ".join(result.output.split())
    assert "holds a run with other settings (train.lr 0.02 -> 0.01)" in text
    hinted = _sets_in(text)
    assert hinted == ["--set", "train.lr=0.02"], text
    assert "already finished" in run_cli(*train, *hinted).output


def test_teacher_checkpoint_defaults_to_where_ikd_train_writes_it(trained_teacher, tiny_sets, tmp_path):
    work = tmp_path / "w"
    tree = dict(teacher=dict(config="ikd::models/shapes_retinanet_r34.py"), work_dir=str(work))
    assert presets.resolve(tree)["teacher"]["checkpoint"] == str(work / "teacher" / "latest.pth")
    other = presets.resolve(tree, {"work_dir": str(tmp_path / "x")})
    assert other["teacher"]["checkpoint"] == str(tmp_path / "x" / "teacher" / "latest.pth")
    assert presets.resolve(dict(tree, name="n", work_dir=""))["teacher"]["checkpoint"] == \
        str(Path("work_dirs") / "n" / "teacher" / "latest.pth")
    # a zoo teacher is fetched where teacher.checkpoint says (or checkpoints/): no default
    assert presets.resolve(dict(tree, teacher=dict(tree["teacher"], download="x")))["teacher"]["checkpoint"] == ""
    # named empty, it names no file (a distiller's teacher then keeps its own initialisation)
    assert presets.resolve(tree, {"teacher.checkpoint": ""})["teacher"]["checkpoint"] == ""
    # in use: a preset naming no teacher file reads the one `ikd train --work-dir W --model teacher` left
    mine = tmp_path / "mine.yaml"
    mine.write_text("\n".join(line for line in (REPO / "configs" / "shapes.yaml").read_text().splitlines()
                              if not line.strip().startswith("checkpoint:")))
    assert presets.load(str(mine))["teacher"]["checkpoint"] == str(Path("work_dirs/shapes/teacher/latest.pth"))
    (work / "teacher").mkdir(parents=True)
    shutil.copyfile(trained_teacher, work / "teacher" / "latest.pth")
    result = run_cli("attack", "--preset", mine, "--set", f"work_dir={work}", "--out", tmp_path / "adv",
                     "--device", DEVICE, "--workers", "0", "--no-teacher-check", "--limit", "1", "--steps", "1",
                     *tiny_sets)
    assert "max L-inf" in result.output
