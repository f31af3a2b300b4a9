"""`ikd report` on a sweep study (the study script's ikd_advX and ikd_dfaN arms beside fgd, ikd_aug
and ikd), built from copies of a real tiny run (test_report.py's) with known APs and robustness
figures: the sweep's points and paired differences equal a hand computation, the pictures hold
the right arms at the right places, and several --compare pairs go into one report."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml
from PIL import Image

from helpers import run_cli
from ikd_cli.core.stats import interval
from ikd_cli.report.runs import find_runs
from ikd_cli.report.sweep import ALPHA, STAGE1, classify, parse_arm, plot_sweep, sweep_summary
from test_report import _as_distill, _copy_run, _write_eval, _write_robustness, real_run  # noqa: F401  (fixture)

SEEDS = (1, 2, 3)
# arm -> (alpha_adv, dfa_until, AP of seed 1 in percent); seed s adds s * step(arm) points
ARMS = {"fgd": (1e-5, 0, 21.0), "ikd_aug": (0.0, 8, 23.0), "ikd": (1e-5, 8, 23.5), "ikd_adv1e-4": (1e-4, 8, 23.8),
        "ikd_adv1e-3": (1e-3, 8, 22.0), "ikd_dfa4": (1e-5, 4, 22.5),
        "ikd_adv": (1e-5, 8, 21.2)}  # ikd_adv: the ablation (no augmentation), not a sweep point


def _ap(arm: str, seed: int) -> float:
    return ARMS[arm][2] + seed * (0.1 + 0.05 * sorted(ARMS).index(arm))


def _mpc(arm: str, seed: int) -> float:
    return _ap(arm, seed) / 2 + (0.3 if arm.startswith("ikd_adv1") else 0.0) * seed


def _settings(folder, seed: int, alpha_adv: float, dfa_until: int) -> None:
    preset = yaml.safe_load((folder / "preset.yaml").read_text())
    preset["train"]["seed"] = seed
    preset["distill"].update(dfa_until=dfa_until, alpha_adv=alpha_adv)
    (folder / "preset.yaml").write_text(yaml.safe_dump(preset))


@pytest.fixture(scope="module")
def sweep_study(real_run, tmp_path_factory):  # noqa: F811
    """Every arm 3 seeds (ikd_adv 1), each with an eval file; robustness files on every run
    but fgd's seed 3 (its pairs have 2 seeds there)."""
    root = tmp_path_factory.mktemp("sweep_study")
    (root / "study.json").write_text(json.dumps({"study": "shapes"}))
    for arm, (alpha_adv, dfa_until, _) in ARMS.items():
        for seed in SEEDS[:1] if arm == "ikd_adv" else SEEDS:
            folder = _copy_run(real_run, root / arm / f"seed{seed}")
            _settings(folder, seed, alpha_adv, dfa_until)
            _as_distill(folder, min(dfa_until, 1))
            _write_eval(folder / "student_latest.eval-val.json", _ap(arm, seed) / 100)
            if not (arm == "fgd" and seed == 3):
                clean = _ap(arm, seed) / 100
                _write_robustness(folder / "student_latest.robustness-val.json", clean, None, clean / 3,
                                  _mpc(arm, seed) / 100)
    return root


@pytest.fixture(scope="module")
def report(sweep_study, tmp_path_factory):
    """One report of the whole study, as the CLI writes it, with two --compare pairs (one given
    twice: it counts once). Pictures are slow to draw on 2 shared cores: the tests share it."""
    out = tmp_path_factory.mktemp("sweep_report") / "out"
    run_cli("report", sweep_study, "--out", out, "--compare", "ikd,fgd", "--compare", "ikd_adv1e-4,ikd_aug",
            "--compare", "ikd,fgd")
    return out


def test_arm_names_are_parsed_in_one_place():
    assert parse_arm("ikd_adv1e-4") == [(ALPHA, 1e-4)] and parse_arm("IKD_DFA12") == [(STAGE1, 12.0)]
    assert parse_arm("ikd") == [(ALPHA, None), (STAGE1, None)]
    assert parse_arm("ikd_aug") == [(ALPHA, 0.0)] and parse_arm("FGD") == [(STAGE1, 0.0)]
    assert parse_arm("ikd_adv") == [] and parse_arm("student") == [] and parse_arm("ikd_mgd") == []


def test_sweep_points_and_paired_differences_by_hand(report):
    saved = json.loads((report / "report.json").read_text())["sweep"]
    assert saved["metrics"] == ["AP", "mPC", "AP white-box"] and saved["references"] == {"fgd": "fgd", "aug": "ikd_aug"}
    alpha, stage = saved["axes"][ALPHA]["points"], saved["axes"][STAGE1]["points"]
    assert [(p["arm"], p["value"]) for p in alpha] == [("ikd_aug", 0.0), ("ikd", 1e-5), ("ikd_adv1e-4", 1e-4),
                                                      ("ikd_adv1e-3", 1e-3)]
    assert [(p["arm"], p["value"]) for p in stage] == [("fgd", 0), ("ikd_dfa4", 4), ("ikd", 8)]

    point = alpha[2]
    values = [_ap("ikd_adv1e-4", s) for s in SEEDS]
    assert point["metrics"]["AP"]["mean"] == pytest.approx(statistics.fmean(values))
    assert point["metrics"]["AP"]["ci"] == pytest.approx(interval(values)["ci"])
    to_fgd = [_ap("ikd_adv1e-4", s) - _ap("fgd", s) for s in SEEDS]
    to_aug = [_ap("ikd_adv1e-4", s) - _ap("ikd_aug", s) for s in SEEDS]
    assert point["vs_fgd"]["AP"]["differences"] == pytest.approx(to_fgd)
    assert point["vs_fgd"]["AP"]["ci"] == pytest.approx(interval(to_fgd)["ci"])
    assert point["vs_aug"]["AP"]["differences"] == pytest.approx(to_aug)
    assert point["vs_aug"]["AP"]["ci"] == pytest.approx(interval(to_aug)["ci"])
    mpc = [_mpc("ikd_adv1e-4", s) - _mpc("fgd", s) for s in SEEDS[:2]]  # fgd seed 3 has no robustness file
    assert point["vs_fgd"]["mPC"]["seeds"] == [1, 2] and point["vs_fgd"]["mPC"]["differences"] == pytest.approx(mpc)
    assert alpha[0]["vs_aug"] is None and stage[0]["vs_fgd"] is None  # a reference is not paired with itself
    assert saved["levels"]["fgd"]["AP"]["mean"] == pytest.approx(statistics.fmean(_ap("fgd", s) for s in SEEDS))

    markdown = (report / "report.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| ikd_adv1e-4 | 1e-04 |"))
    diff = interval(to_fgd)
    assert f"{diff['mean']:+.1f} ({diff['ci'][0]:+.1f} to {diff['ci'][1]:+.1f})" in row
    assert "## Sweep of alpha_adv: mPC (%)" in markdown and "## Sweep of stage-1 epochs: AP (%)" in markdown


def test_sweep_pictures_hold_the_arms_at_their_values(report, tmp_path):
    saved = json.loads((report / "report.json").read_text())
    for name in ("sweep_alpha_adv.png", "sweep_stage1.png"):
        assert name in saved["files"] and f"![{name}]({name})" in (report / "report.md").read_text()
        with Image.open(report / name) as img:
            img.load()
            assert img.format == "PNG" and img.width >= 1000
    sweep = saved["sweep"]
    fig = plot_sweep(sweep, ALPHA, tmp_path / "alpha.png")
    assert [ax.get_title() for ax in fig.axes] == ["AP", "mPC", "AP white-box"]
    ap = {line.get_gid(): (line.get_xdata()[0], line.get_ydata()[0]) for line in fig.axes[0].lines if line.get_gid()}
    assert set(ap) == {"ikd_aug", "ikd", "ikd_adv1e-4", "ikd_adv1e-3"}
    assert ap["ikd_adv1e-3"] == pytest.approx((1e-3, statistics.fmean(_ap("ikd_adv1e-3", s) for s in SEEDS)))
    assert ap["ikd_aug"][0] == pytest.approx(1e-6)  # 0 drawn one decade left of the smallest weight
    assert fig.axes[0].get_xscale() == "log"
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["0\n(aug. only)", "1e-05", "1e-04", "1e-03"]
    levels = [line.get_ydata()[0] for line in fig.axes[0].lines if not line.get_gid() and len(set(line.get_ydata())) == 1]
    assert pytest.approx(sweep["levels"]["fgd"]["AP"]["mean"]) in levels  # the FGD line
    assert pytest.approx(sweep["levels"]["aug"]["AP"]["mean"]) in levels  # the augmentation-only line
    fig = plot_sweep({**sweep, "metrics": ["AP"]}, STAGE1, tmp_path / "stage.png")  # one panel: quicker
    xs = {line.get_gid(): line.get_xdata()[0] for line in fig.axes[0].lines if line.get_gid()}
    assert xs == {"fgd": 0, "ikd_dfa4": 4, "ikd": 8}


def test_several_compare_pairs_in_one_report(report, sweep_study, tmp_path):
    saved = json.loads((report / "report.json").read_text())
    assert [(c["a"], c["b"]) for c in saved["comparisons"]] == [("ikd", "fgd"), ("ikd_adv1e-4", "ikd_aug")]
    assert saved["comparison"] == saved["comparisons"][0] and saved["verdict"] == saved["verdicts"][0]
    diffs = [_ap("ikd_adv1e-4", s) - _ap("ikd_aug", s) for s in SEEDS]
    assert saved["comparisons"][1]["metrics"]["AP"]["differences"] == pytest.approx(diffs)
    markdown = (report / "report.md").read_text()
    assert all(f"**{v}**" in markdown for v in saved["verdicts"])
    assert "## ikd − fgd, paired by seed" in markdown and "## ikd_adv1e-4 − ikd_aug, paired by seed" in markdown
    assert "## ikd_adv1e-4 − ikd_aug, robustness paired by seed" in markdown
    one = [sweep_study / "ikd" / "seed1", sweep_study / "fgd" / "seed1"]
    run_cli("report", *one, "--out", tmp_path / "one", "--compare", "ikd,fgd")  # the old form
    saved = json.loads((tmp_path / "one" / "report.json").read_text())
    assert len(saved["comparisons"]) == 1 and saved["sweep"] is None  # no swept arm: no sweep
    assert not any(name.startswith("sweep_") for name in saved["files"])
    bad = run_cli("report", *one, "--out", tmp_path / "bad", "--compare", "ikd,fgd,ikd_aug", expect=1)
    assert "--compare takes two arm names" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad").exists()


def test_a_mislabelled_arm_is_left_out(sweep_study):
    runs = find_runs([sweep_study / "ikd_adv1e-3" / "seed1", sweep_study / "ikd_aug" / "seed1"])
    next(r for r in runs if r.arm == "ikd_adv1e-3").alpha_adv = 1e-5  # its folder says 1e-3, it trained with 1e-5
    assert classify(runs) == ({ALPHA: [("ikd_aug", 0.0)], STAGE1: []}, {"fgd": None, "aug": "ikd_aug"})
    assert sweep_summary(runs) is None
