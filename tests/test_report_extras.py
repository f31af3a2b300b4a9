"""`ikd report`'s per-class AP (table, paired differences, picture) and its pictures of stage
1's diagnostics, on a study made from copies of a real tiny run (test_report.py's): the numbers
in report.json are the eval files' and the logs' own."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest
from PIL import Image

from ikd_cli.core.stats import interval
from ikd_cli.report.diagnostics import per_epoch
from ikd_cli.report.run import write_report
from ikd_cli.report.runs import find_runs
from test_report import _as_distill, _copy_run, _set_preset, _write_eval, real_run  # noqa: F401  (fixture)

SEEDS = (1, 2, 3)
# AP per class (fractions) per arm and seed; "hexagon" has no ground truth (None), "square" no FGD seed 3
CLASSWISE = {
    "FGD": {1: {"circle": 0.20, "square": 0.10, "hexagon": None}, 2: {"circle": 0.22, "square": 0.12, "hexagon": None},
            3: {"circle": 0.21, "hexagon": None}},
    "IKD": {1: {"circle": 0.25, "square": 0.10, "hexagon": None}, 2: {"circle": 0.26, "square": 0.13, "hexagon": None},
            3: {"circle": 0.27, "square": 0.11, "hexagon": None}},
}


def _add_diagnostics(folder, seed: int) -> None:
    """Stage-1 diagnostics lines as `ikd distill` logs them (epoch 1 only), known values."""
    (log,) = folder.glob("*.log.json")
    lines = []
    for rec in (json.loads(line) for line in log.read_text().splitlines()):
        if rec.get("mode") == "train" and rec["epoch"] == 1:
            for level in range(2):
                tag = f"neck_fpn_convs_{level}_conv"
                rec[f"diag_teacher_dist_{tag}"] = 0.1 * seed + 0.01 * rec["iter"]
                rec[f"diag_grad_adv_vs_distill_log10_{tag}"] = -2.0 - level
                rec[f"diag_grad_adv_vs_det_log10_{tag}"] = -1.0
        lines.append(json.dumps(rec))
    log.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def study(real_run, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("study_extras")
    (root / "study.json").write_text(json.dumps({"arms": list(CLASSWISE)}))
    for arm, by_seed in CLASSWISE.items():
        for seed in SEEDS:
            folder = _copy_run(real_run, root / arm / f"seed{seed}" / "distill")
            _set_preset(folder, seed, 1 if arm == "IKD" else 0)
            _as_distill(folder, 1 if arm == "IKD" else 0)
            if arm == "IKD":
                _add_diagnostics(folder, seed)
            path = folder / "student_latest.eval-val.json"
            _write_eval(path, 0.2)
            data = json.loads(path.read_text())
            data["bbox"]["classwise"] = by_seed[seed]
            path.write_text(json.dumps(data))
    return root


def test_per_class_table_and_picture(study, tmp_path):
    summary = write_report([study], tmp_path / "out", compare=("IKD", "FGD"))
    saved = json.loads((tmp_path / "out" / "report.json").read_text())["classwise"]
    assert saved == json.loads(json.dumps(summary["classwise"]))
    assert saved["classes"] == ["circle", "square", "hexagon"]
    circle = [100 * CLASSWISE["FGD"][s]["circle"] for s in SEEDS]
    assert saved["arms"]["FGD"]["circle"]["mean"] == pytest.approx(statistics.fmean(circle), abs=1e-9)
    assert saved["arms"]["FGD"]["circle"]["sd"] == pytest.approx(statistics.stdev(circle), abs=1e-9)
    assert saved["arms"]["FGD"]["square"]["n"] == 2 and saved["arms"]["IKD"]["hexagon"]["mean"] is None
    comp = saved["comparison"]["classes"]
    diffs = [100 * (CLASSWISE["IKD"][s]["circle"] - CLASSWISE["FGD"][s]["circle"]) for s in SEEDS]
    assert comp["circle"]["differences"] == pytest.approx(diffs)
    assert comp["circle"]["ci"] == pytest.approx(interval(diffs)["ci"]) and comp["circle"]["established"]
    assert comp["square"]["seeds"] == [1, 2] and comp["square"]["differences"] == pytest.approx([0.0, 1.0])
    assert comp["hexagon"]["n"] == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| circle |"))
    assert f"{statistics.fmean(diffs):+.1f}" in row and "| yes |" in row
    assert "![classwise.png](classwise.png)" in markdown
    with Image.open(tmp_path / "out" / "classwise.png") as img:
        img.load()
        assert img.format == "PNG" and img.width >= 500


def test_per_class_pairs_the_first_pair_with_per_class_numbers(study, tmp_path):
    """A study whose first --compare pair was evaluated without --classwise (FGD's runs copied as
    an arm "plain" without per-class AP): the per-class table and picture pair the next one."""
    root = tmp_path / "study"
    shutil.copytree(study, root)
    shutil.copytree(root / "FGD", root / "plain")
    for path in (root / "plain").glob("seed*/distill/student_latest.eval-val.json"):
        data = json.loads(path.read_text())
        del data["bbox"]["classwise"]
        path.write_text(json.dumps(data))
    (root / "study.json").write_text(json.dumps({"arms": [*CLASSWISE, "plain"]}))
    summary = write_report([root], tmp_path / "out", compare=[("IKD", "plain"), ("IKD", "FGD")])
    assert [(c["a"], c["b"]) for c in summary["comparisons"]] == [("IKD", "plain"), ("IKD", "FGD")]
    comp = summary["classwise"]["comparison"]
    assert (comp["a"], comp["b"]) == ("IKD", "FGD") and comp["classes"]["circle"]["n"] == len(SEEDS)
    assert "classwise.png" in summary["files"]


def test_diagnostics_pictures_and_their_numbers(study, tmp_path):
    runs = find_runs([study])
    ikd = [r for r in runs if r.arm == "IKD"]
    for run in ikd:
        (log,) = run.path.glob("*.log.json")
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        values = [r["diag_teacher_dist_neck_fpn_convs_0_conv"] for r in logged
                  if r.get("mode") == "train" and r["epoch"] == 1]
        assert per_epoch(run, "diag_teacher_dist_")["neck_fpn_convs_0_conv"] == ([1], [pytest.approx(statistics.fmean(values))])
    assert all(per_epoch(r, "diag_teacher_dist_") == {} for r in runs if r.arm == "FGD")
    summary = write_report([study], tmp_path / "out")
    for name in ("diag_teacher_distance.png", "diag_gradients.png"):
        assert name in summary["files"]
        with Image.open(tmp_path / "out" / name) as img:
            img.load()
            assert img.format == "PNG" and img.width >= 500
    assert summary["classwise"]["comparison"] is None and "classwise.png" not in summary["files"]


def test_no_per_class_numbers_no_section(real_run, tmp_path):  # noqa: F811
    summary = write_report([real_run], tmp_path / "out")
    assert summary["classwise"] is None
    assert not any(name.startswith(("classwise", "diag_")) for name in summary["files"])
    assert "Per-class AP" not in (tmp_path / "out" / "report.md").read_text()
