"""The family matrix: on a tiny real config of each detector family (tests/configs/families/),
with a preset that names no distill.levels, every step of ikd either works or is refused in one
line: attack (one step), stage 1 and stage 2 of distill with FGD and with MGD (one iteration
each), evaluate --robustness (one corruption). A traceback fails the test; docs/families.md is
the table of what it finds (IKD_WRITE_FAMILIES=1 rewrites it). Run it alone with
``pytest tests/test_family_matrix.py`` or ``-m family_matrix``; see tests/family_matrix.py."""

from __future__ import annotations

import shutil
import time

import pytest

import family_matrix as fm

pytestmark = [pytest.mark.family_matrix, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="session")
def matrix_data(tmp_path_factory):
    """2 training and 2 val images of the shapes data, 64 x 64."""
    from ikd_cli.data.shapes import generate_shapes

    root = tmp_path_factory.mktemp("matrix-shapes")
    generate_shapes(root, seed=0, num_train=2, num_val=2, image_size=64)
    return root


def run_family(key: str, data_root, work) -> fm.Cells:
    family = fm.FAMILIES[key]
    teacher = fm.random_checkpoint(family.config("teacher"), work / "teacher" / "teacher.pth")
    student = fm.random_checkpoint(family.config("student"), work / "student" / "student.pth", seed=1)
    preset = work / f"{key}.yaml"
    preset.write_text(fm.preset_text(family, data_root, work, teacher))
    cells = fm.Cells({str(work): "<work>", str(data_root): "<data>", str(fm.REPO) + "/": ""})
    own_set = cells.run("attack", lambda: fm.run_attack(preset))
    stand_in = None if own_set else fm.stand_in_set(data_root / "train", work / "stand-in")
    for method in fm.METHODS:
        built = {}

        def stage(stage1: bool, method=method, built=built):
            if "distiller" not in built:  # built once for both stages; a refusal refuses both
                try:
                    built["distiller"] = fm.build_distiller(preset, method, stand_in)
                except Exception as err:
                    built["error"] = err
                    raise
            fm.one_iteration(*built["distiller"], stage1, own_set)

        cells.run(f"stage 1 {method}", lambda: stage(True))
        cells.run(f"stage 2 {method}", lambda: stage(False))
        if method == "fgd":  # the config of a distillation, whichever the method
            cells.run("optimizer kept", lambda: fm.check_optimizer(stage_config(built), family))
    cells.run("evaluate --robustness", lambda: fm.run_robustness(preset, student))
    return cells


def stage_config(built: dict):
    """The distill config the stages were built from, or what stopped it being built."""
    if "distiller" not in built:
        raise built["error"]
    return built["distiller"][1]


@pytest.mark.parametrize("key", list(fm.FAMILIES))
def test_family_steps_work_or_are_refused_in_one_line(key, matrix_data, tmp_path):
    start = time.perf_counter()
    cells = run_family(key, matrix_data, tmp_path)
    took = ", ".join(f"{step} {s:.1f}" for step, s in cells.seconds.items())
    print(f"{key}: {time.perf_counter() - start:.1f} s ({took})")
    for step in fm.STEPS:
        print(f"  {step}: {cells.outcomes[step]}")
    difference = fm.check_table(key, cells.outcomes)  # (rewritten first when asked: failures are rows too)
    failed = "\n".join(f"--- {step}:\n{tb}" for step, tb in cells.tracebacks.items())
    assert not cells.tracebacks, f"{fm.FAMILIES[key].label}: steps died with a traceback:\n{failed}"
    assert not difference, difference


def test_table_lists_exactly_the_families():
    """docs/families.md has a row for every family of the matrix (and for no other), in order,
    and its nav entry."""
    on_disk = fm.TABLE.read_text(encoding="utf-8")
    assert list(fm.parse(on_disk)) == list(fm.FAMILIES)
    assert on_disk == fm.render(fm.parse(on_disk))
    assert "families.md" in (fm.REPO / "mkdocs.yml").read_text(encoding="utf-8")
