"""`ikd report` on a real tiny run (trained here with the real stack) and on a study built from
copies of it: the numbers in the tables are the runs' own, the paired interval is the textbook
one, the pictures are real PNGs. Plus the attack's preview picture."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import DEVICE, run_cli
from ikd_cli.core.errors import IkdError
from ikd_cli.core.stats import interval, t_two_sided
from ikd_cli.report.run import write_report
from ikd_cli.report.runs import find_runs, read_run
from ikd_cli.report.table import render_markdown, summarize

SEEDS = (1, 2, 3)
STUDENT_AP = {1: 0.110, 2: 0.120, 3: 0.130}
FGD_GAIN = {1: 0.005, 2: 0.006, 3: 0.007}  # FGD − student: 0.5, 0.6, 0.7 points: a clear gain
IKD_GAIN = {1: 0.010, 2: 0.020, 3: 0.030}  # IKD − FGD: 1, 2, 3 points: too spread for n = 3


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    """A student trained for 2 epochs of 2 iterations on 4 tiny images: a real run folder."""
    root = tmp_path_factory.mktemp("report_run")
    run_cli("data", "shapes", "--out", root / "shapes", "--num-train", "4", "--num-val", "2", "--image-size", "64")
    sets = [f"data.root={root / 'shapes'}", "data.shapes=null", "data.img_scale=[64, 64]", "data.samples_per_gpu=2",
            "data.workers_per_gpu=0", "train.epochs=2", "train.warmup_iters=1", "train.log_interval=1",
            "train.eval_interval=1"]
    run_cli("train", "--preset", "shapes", "--model", "student", "--work-dir", root / "work", "--device", DEVICE,
            *[a for s in sets for a in ("--set", s)])
    return root / "work" / "student"


def _log_lines(folder: Path) -> list[dict]:
    (log,) = folder.glob("*.log.json")
    return [json.loads(line) for line in log.read_text().splitlines()]


def _copy_run(src: Path, dst: Path) -> Path:
    """The run's text files (no checkpoints): all a report reads."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix != ".pth":
            shutil.copy(f, dst / f.name)
    return dst


def _as_distill(folder: Path, dfa_until: int) -> None:
    """Turn a copied train run into a distill run: run.json, preset and the FGD/adversarial loss
    terms a distill log carries (per FPN level; adversarial only in stage 1)."""
    compute = json.loads((folder / "run.json").read_text())["compute"]  # the run's own, as a real one has
    (folder / "run.json").write_text(json.dumps({"command": "distill", "preset": "shapes", "compute": compute}))
    (log,) = folder.glob("*.log.json")
    lines = []
    for rec in _log_lines(folder):
        if rec.get("mode") == "train":
            for level in range(5):
                rec[f"loss_fgd_neck_fpn_convs_{level}_conv"] = rec["loss"] * 10 / (level + 1)
                if rec["epoch"] <= dfa_until:
                    rec[f"loss_adv_neck_fpn_convs_{level}_conv"] = rec["loss"] / (level + 1)
        lines.append(json.dumps(rec))
    log.write_text("\n".join(lines) + "\n")


def _set_preset(folder: Path, seed: int, dfa_until: int) -> None:
    preset = yaml.safe_load((folder / "preset.yaml").read_text())
    preset["train"]["seed"] = seed
    preset["distill"]["dfa_until"] = dfa_until
    (folder / "preset.yaml").write_text(yaml.safe_dump(preset))


def _write_eval(path: Path, ap: float) -> None:
    bbox = {"AP": ap, "AP50": ap + 0.2, "AP75": ap / 2, "AP_S": ap - 0.05, "AP_M": ap + 0.05, "AP_L": -1.0,
            "detections": 100}
    path.write_text(json.dumps({"checkpoint": str(path), "split": "val", "images": "x", "num_images": 2, "bbox": bbox}))


@pytest.fixture(scope="session")
def study(real_run, tmp_path_factory) -> Path:
    """study/<arm>/seed<k>/<run>: the student alone, FGD and IKD, three seeds each, every run
    evaluated (eval files with known APs)."""
    root = tmp_path_factory.mktemp("study")
    (root / "study.json").write_text(json.dumps({"arms": ["student", "FGD", "IKD"]}))
    for seed in SEEDS:
        fgd_ap = STUDENT_AP[seed] + FGD_GAIN[seed]
        for arm, ap, dfa_until in (("student", STUDENT_AP[seed], 0), ("FGD", fgd_ap, 0),
                                   ("IKD", fgd_ap + IKD_GAIN[seed], 1)):
            folder = _copy_run(real_run, root / arm / f"seed{seed}" / ("student" if arm == "student" else "distill"))
            _set_preset(folder, seed, dfa_until)
            if arm != "student":
                _as_distill(folder, dfa_until)
            _write_eval(folder / ("latest.eval-val.json" if arm == "student" else "student_latest.eval-val.json"), ap)
    return root


def test_a_real_run_reads_as_logged(real_run):
    lines = _log_lines(real_run)
    run = read_run(real_run)
    assert (run.kind, run.role, run.seed, run.arm) == ("train", "student", 0, "shapes student")
    val = [r for r in lines if r.get("mode") == "val"]
    assert [v["epoch"] for v in run.val] == [1, 2]
    # An epoch that detected nothing logs no metrics (this tiny student's first, usually): AP 0.
    assert [v["AP"] for v in run.val] == [r.get("bbox_mAP", 0.0) for r in val]
    assert [v["AP50"] for v in run.val] == [r.get("bbox_mAP_50", 0.0) for r in val]
    assert [v["AP_S"] for v in run.val] == [r.get("bbox_mAP_s") for r in val]
    train = [r for r in lines if r.get("mode") == "train"]
    assert [t["loss"] for t in run.train] == [r["loss"] for r in train]
    assert [t["step"] for t in run.train] == [1, 2, 3, 4]  # 2 iterations per epoch, from train.log
    assert run.final_source == "log epoch 2" and run.final["AP"] == val[-1].get("bbox_mAP", 0.0)


def test_torn_lines_and_resumed_launches(real_run, tmp_path):
    """A torn line is skipped; a second launch (resume from epoch 1) replaces what the first
    logged from epoch 2 on."""
    folder = _copy_run(real_run, tmp_path / "run")
    (log,) = folder.glob("*.log.json")
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2] + ['{"mode": "train", "ep'] + lines[2:]) + '\n{"mode": "val", "epo')
    assert read_run(folder).train == read_run(real_run).train
    later = [json.loads(line) for line in lines if '"epoch": 2' in line]
    for rec in later:
        if rec["mode"] == "train":
            rec["loss"] += 100
    (folder / "29991231_000000.log.json").write_text("".join(json.dumps(r) + "\n" for r in later))
    rows = read_run(folder).train
    assert [r["epoch"] for r in rows] == [1, 1, 2, 2] and all(r["loss"] > 100 for r in rows if r["epoch"] == 2)


def test_report_of_a_study(study, tmp_path):
    summary = write_report([study], tmp_path / "out", compare=("IKD", "FGD"))
    out = tmp_path / "out"
    for name in ("val_ap.png", "losses.png"):
        with Image.open(out / name) as img:
            img.load()
            assert img.format == "PNG" and img.width >= 600 and img.height >= 400
    saved = json.loads((out / "report.json").read_text())
    assert saved["verdict"] == summary["verdict"]

    arms = {a["arm"]: a for a in saved["arms"]}
    assert set(arms) == {"student", "FGD", "IKD"} and all(a["n"] == 3 for a in arms.values())
    ikd_ap = [100 * json.loads(p.read_text())["bbox"]["AP"] for p in sorted(study.glob("IKD/*/distill/*.eval-val.json"))]
    assert arms["IKD"]["metrics"]["AP"]["mean"] == pytest.approx(statistics.fmean(ikd_ap), abs=1e-9)
    assert arms["IKD"]["metrics"]["AP"]["sd"] == pytest.approx(statistics.stdev(ikd_ap), abs=1e-9)
    assert arms["IKD"]["metrics"]["AP_L"] == {"n": 0, "mean": None, "sd": None}  # COCOeval's -1: no large objects

    ap = saved["comparison"]["metrics"]["AP"]
    assert ap["seeds"] == list(SEEDS) and ap["differences"] == pytest.approx([1.0, 2.0, 3.0])
    assert ap["ci"] == pytest.approx([2 - 2.484, 2 + 2.484], abs=1e-3)
    assert summary["verdict"] == "IKD − FGD = +2.0 AP (95% CI -0.5 to +4.5, n = 3): not established"
    markdown = (out / "report.md").read_text()
    assert summary["verdict"] in markdown and "| IKD | 3 |" in markdown and "![losses.png](losses.png)" in markdown


def test_the_compute_of_the_runs_is_said_beside_the_figures(study, tmp_path):
    """One row per way the runs were computed (run.json's compute); a note when they differ or a
    run was continued on other compute, in report.md and on the terminal."""
    summary = write_report([study], tmp_path / "same", compare=("IKD", "FGD"))
    compute = json.loads((study / "FGD" / "seed1" / "distill" / "run.json").read_text())["compute"]
    assert summary["compute"] == [dict(threads=str(compute["threads"]), kernels=compute["kernels"], cpu=compute["cpu"],
                                       torch=compute["torch"], runs=9, arms=["FGD", "IKD", "student"])]
    assert summary["notes"] == []
    other = shutil.copytree(study, tmp_path / "study")
    run_file = other / "IKD" / "seed2" / "distill" / "run.json"
    info = json.loads(run_file.read_text())
    info["compute"]["threads"] = compute["threads"] + 1
    info["continued"] = [dict(after_epoch=1, change="kernels aten AVX2, onednn AVX2 -> aten AVX512, onednn native",
                              compute=info["compute"])]
    run_file.write_text(json.dumps(info))
    summary = write_report([other], tmp_path / "mixed", compare=("IKD", "FGD"))
    assert [(r["threads"], r["runs"], r["arms"]) for r in summary["compute"]] == \
        [(str(compute["threads"]), 8, ["FGD", "IKD", "student"]), (str(compute["threads"] + 1), 1, ["IKD"])]
    assert summary["notes"][0].startswith("these runs were computed 2 ways")
    assert summary["notes"][1].startswith("IKD seed 2 (") and "continued after epoch 1 on other compute (kernels" \
        in summary["notes"][1]
    markdown = (tmp_path / "mixed" / "report.md").read_text()
    assert "*Note: these runs were computed 2 ways" in markdown
    assert f"| {compute['threads'] + 1} | {compute['kernels']} | {compute['cpu']} | {compute['torch']} | 1 | IKD |" in markdown


def test_a_clear_gain_is_established_and_stages_are_marked(study):
    runs = find_runs([study])
    summary = summarize(runs, ("fgd", "student"))  # arm names match without case
    assert summary["verdict"] == "FGD − student = +0.6 AP (95% CI +0.4 to +0.8, n = 3): established"
    ikd = [r for r in runs if r.arm == "IKD"]
    assert all(r.dfa_until == 1 and r.stage_switch_step == 2 for r in ikd)  # after epoch 1's 2 iterations
    assert all(r.stage_switch_step is None for r in runs if r.arm == "FGD")


def test_t_interval_by_hand():
    for df, t in {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042, 1000: 1.962}.items():
        assert t_two_sided(0.95, df) == pytest.approx(t, abs=1e-3)
    ci = interval([1.0, 2.0, 3.0])
    assert (ci["mean"], ci["sd"], ci["n"]) == (2.0, 1.0, 3)
    assert ci["ci"] == pytest.approx([2 - 4.3027 / 3 ** 0.5, 2 + 4.3027 / 3 ** 0.5], abs=1e-4)
    assert not ci["established"]
    assert interval([0.5])["ci"] is None and not interval([0.5])["established"]


def test_bad_inputs_are_one_line(study, real_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IkdError, match="not an ikd run folder"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(IkdError, match="not found"):
        find_runs([tmp_path / "nowhere"])
    with pytest.raises(IkdError, match="no arm named 'KD'.*'IKD'"):
        write_report([study], tmp_path / "out", compare=("KD", "FGD"))
    assert not (tmp_path / "out").exists()  # nothing written for a bad comparison
    twice = _copy_run(real_run, tmp_path / "again" / "student")
    with pytest.raises(IkdError, match="two runs with seed 0"):
        summarize(find_runs([real_run, twice]), ("shapes student", "shapes student"))


def test_attack_preview_grows_with_rows(tmp_path):
    from ikd_cli.attack.preview import amplified_perturbation, write_preview

    photo = sorted((Path(__file__).parent / "data" / "coco" / "val2017").glob("*.jpg"))[0]  # vendored
    clean = np.asarray(Image.open(photo).convert("RGB"))[..., ::-1].copy()  # BGR, as mmcv loads
    adv = np.clip(clean.astype(int) + np.random.default_rng(1).integers(-8, 9, clean.shape), 0, 255).astype(np.uint8)
    boxes = [np.array([[5, 5, 60, 60, 0.9], [10, 10, 20, 20, 0.1]]), np.zeros((0, 5))]
    item = dict(name="img", clean=clean, adv=adv, det_clean=boxes, det_adv=[np.zeros((0, 5)), boxes[0][:1]])
    sizes = []
    for rows in (1, 3):
        write_preview(tmp_path / f"{rows}.png", [item] * rows, eps=8, class_names=["circle", "square"])
        with Image.open(tmp_path / f"{rows}.png") as img:
            sizes.append(img.size)
    assert sizes[0][0] == sizes[1][0] and sizes[1][1] > 2 * sizes[0][1]
    grey = amplified_perturbation(clean, clean, eps=8)
    assert (grey == 127).all() and amplified_perturbation(clean, adv, 8).max() > 200


def test_unfinished_run_is_shown_but_not_averaged(real_run, tmp_path):
    """A run still training (its preset asks for more epochs than its log holds) would bring an
    earlier model's numbers into the arm's mean: it is listed as unfinished and left out."""
    unfinished = _copy_run(real_run, tmp_path / "study" / "a" / "s1")
    preset = yaml.safe_load((unfinished / "preset.yaml").read_text())
    preset["train"]["epochs"] = 3  # the log holds 2
    (unfinished / "preset.yaml").write_text(yaml.safe_dump(preset))
    finished = _copy_run(real_run, tmp_path / "study" / "a" / "s0")
    (tmp_path / "study" / "study.json").write_text("{}")
    runs = find_runs([tmp_path / "study"])
    by_path = {r.path: r for r in runs}
    assert by_path[unfinished].final is None and by_path[unfinished].final_source == "unfinished (epoch 2 of 3)"
    assert by_path[finished].final is not None
    (row,) = summarize(runs)["arms"]
    assert row["n"] == 1


def test_unfinished_run_of_the_model_configs_length_is_told_by_run_json(real_run, tmp_path):
    """A run whose preset leaves train.epochs null trains for its model config's epochs: the
    length run.json records tells that it is unfinished."""
    import json

    run = _copy_run(real_run, tmp_path / "runs" / "r")
    preset = yaml.safe_load((run / "preset.yaml").read_text())
    preset["train"]["epochs"] = None
    (run / "preset.yaml").write_text(yaml.safe_dump(preset))
    info = json.loads((run / "run.json").read_text())
    assert info["epochs"] == 2  # what the run was built to train, recorded when it started
    (run / "run.json").write_text(json.dumps(dict(info, epochs=5)))  # the log holds 2
    (found,) = find_runs([run])
    assert found.final is None and found.final_source == "unfinished (epoch 2 of 5)"



@pytest.mark.parametrize("method,dfa_until,arm", [("fgd", 0, "shapes FGD"), ("fgd", 1, "shapes IKD (FGD)"),
                                                  ("mgd", 0, "shapes MGD"), ("mgd", 1, "shapes IKD (MGD)")])
def test_arm_labels_name_the_distiller_and_the_stage(real_run, tmp_path, method, dfa_until, arm):
    run = _copy_run(real_run, tmp_path / "run")
    _as_distill(run, dfa_until)
    _set_preset(run, 0, dfa_until)
    preset = yaml.safe_load((run / "preset.yaml").read_text())
    preset["distill"]["method"] = method
    (run / "preset.yaml").write_text(yaml.safe_dump(preset))
    assert read_run(run).arm == arm


def test_a_run_evaluated_on_another_checkpoint_reads_that_eval_file(real_run, tmp_path):
    """Before: only <latest>.eval-val.json counted; a run evaluated on student_best.pth silently
    fell back to the log. Now its eval file is read (the newest, if several), the runs table says
    which checkpoint, and an eval on other images (eval-val-<folder>.json) is never taken for it."""
    import os

    from ikd_cli.report.table import tables

    folder = _copy_run(real_run, tmp_path / "distill")
    _as_distill(folder, 1)
    for old in folder.glob("*.eval-*.json"):
        old.unlink()
    _write_eval(folder / "student_epoch_1.eval-val.json", 0.300)
    _write_eval(folder / "student_best.eval-val.json", 0.250)
    _write_eval(folder / "student_best.eval-val-adv.json", 0.050)  # other images: not the run's AP
    os.utime(folder / "student_epoch_1.eval-val.json", ns=(1, 1))  # the older of the two
    run = read_run(folder)
    assert run.final["AP"] == pytest.approx(0.250) and run.final_checkpoint == "student_best.pth"
    assert run.final_source.endswith("student_best.eval-val.json")
    (runs_table,) = [t for t in tables(summarize([run])) if t[0] == "Runs"]
    assert runs_table[2][0][runs_table[1].index("final from")] == "student_best.pth (not latest)"

    _write_eval(folder / "student_latest.eval-val.json", 0.200)  # the delivered weights win
    run = read_run(folder)
    assert run.final["AP"] == pytest.approx(0.200) and run.final_checkpoint == ""


def test_plots_of_a_run_with_one_logged_point(real_run, tmp_path):
    """losses.png: a run that logged one iteration draws a marker (a one-point line is invisible);
    val_ap.png: one validated epoch gives whole-number epoch ticks, not 0.96, 0.98, ..."""
    from ikd_cli.report.plots import plot_losses, plot_val_ap

    folder = _copy_run(real_run, tmp_path / "one")
    (log,) = folder.glob("*.log.json")
    lines = log.read_text().splitlines()
    train = [i for i, line in enumerate(lines) if '"mode": "train"' in line]
    vals = [i for i, line in enumerate(lines) if '"mode": "val"' in line]
    keep = [0, train[0], vals[0]]  # meta, one training line, one validated epoch
    log.write_text("\n".join(lines[i] for i in keep) + "\n")
    run = read_run(folder)
    assert len(run.train) == 1 and len(run.val) == 1

    fig = plot_losses([run], tmp_path / "losses.png")
    panels = [ax for ax in fig.axes if ax.lines]
    assert panels and all(line.get_marker() not in (None, "None", "") for ax in panels for line in ax.lines)
    fig = plot_val_ap([run], tmp_path / "val_ap.png")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    for ax in panels:  # iterations too
        lo, hi = ax.get_xlim()
        assert all(float(t).is_integer() for t in ax.get_xticks() if lo <= t <= hi)


def _write_robustness(path: Path, clean: float, transfer: float | None, whitebox: float, mpc: float,
                      per_corruption: dict | None = None) -> None:
    """A robustness summary as `ikd evaluate --robustness` writes it (fractions)."""
    def entry(ap):
        return None if ap is None else {"AP": ap, "file": "x.json", "seconds": 1.0}

    path.write_text(json.dumps({"checkpoint": "x.pth", "split": "val", "clean": entry(clean), "transfer": entry(transfer),
                                "whitebox": entry(whitebox),
                                "corruptions": {"set": "default", "results": [], "mPC": mpc, "rPC": mpc / clean,
                                                "per_corruption": per_corruption or {}}}))


def test_robustness_columns_and_their_paired_differences(study, tmp_path):
    """Per arm, mean ± sd of each robustness figure; with --compare, the paired differences and
    their t-intervals, exactly as the AP columns (runs without the file have none)."""
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    values = {}
    for seed in SEEDS:
        for arm, gain in (("FGD", 0.0), ("IKD", 0.01 * seed)):
            clean, wb, mpc = 0.2 + gain, 0.05 + 2 * gain, 0.1 + gain / 2
            values[arm, seed] = {"AP clean": clean, "AP transfer": None, "AP white-box": wb, "mPC": mpc,
                                 "rPC": mpc / clean}
            _write_robustness(copy / arm / f"seed{seed}" / "distill" / "student_latest.robustness-val.json",
                              clean, None, wb, mpc)
    summary = summarize(find_runs([copy]), ("IKD", "FGD"))
    arms = {a["arm"]: a for a in summary["arms"]}
    assert arms["student"]["robustness"]["mPC"]["n"] == 0  # not measured there: no number
    for metric in ("AP clean", "AP white-box", "mPC", "rPC"):
        ikd = [100 * values["IKD", s][metric] for s in SEEDS]
        assert arms["IKD"]["robustness"][metric]["mean"] == pytest.approx(statistics.fmean(ikd), abs=1e-9)
        assert arms["IKD"]["robustness"][metric]["sd"] == pytest.approx(statistics.stdev(ikd), abs=1e-9)
        diffs = [100 * (values["IKD", s][metric] - values["FGD", s][metric]) for s in SEEDS]
        paired = summary["comparison"]["robustness"][metric]
        assert paired["differences"] == pytest.approx(diffs, abs=1e-9)
        assert paired["ci"] == pytest.approx(interval(diffs)["ci"], abs=1e-9)
    assert summary["comparison"]["robustness"]["AP transfer"]["n"] == 0
    markdown = render_markdown(summary, [])
    assert "robustness paired by seed" in markdown and "| mPC | 3 | 1.0 |" in markdown
    wb = [100 * values["IKD", s]["AP white-box"] for s in SEEDS]
    assert f"{statistics.fmean(wb):.1f} ± {statistics.stdev(wb):.1f}" in markdown


@pytest.mark.parametrize("epoch", [300000000, 0, -3])
def test_a_log_line_with_an_odd_epoch_neither_hangs_nor_breaks_the_report(epoch, real_run, tmp_path):
    """A log line is data: a bogus epoch (an edited or foreign log) once looped to 300 million,
    and epoch 0 (mmcv counts from 1) raised KeyError: 0; epochs below 1 are not mmcv's and skipped."""
    import time

    folder = _copy_run(real_run, tmp_path / "run")
    (log,) = folder.glob("*.log.json")
    log.write_text(log.read_text() + json.dumps({"mode": "train", "epoch": epoch, "iter": 1, "lr": 0.01,
                                                 "loss": 1.0}) + "\n")
    started = time.time()
    run = read_run(folder)
    assert time.time() - started < 10
    logged = read_run(real_run).train
    assert run.train[:len(logged)] == logged and len(run.train) == len(logged) + (epoch >= 1)
    run_cli("report", folder, "--out", tmp_path / "report")


def test_a_log_whose_last_validation_is_of_an_earlier_epoch_is_not_averaged(real_run, tmp_path):
    """Before: with no eval file the report took the log's last validation as the run's final
    numbers, also when that was of an earlier epoch (a study read while its last epoch was still
    being validated counted the epoch-8 model of a 12-epoch run in the paired IKD - FGD)."""
    from ikd_cli.report.table import tables

    folder = _copy_run(real_run, tmp_path / "run")
    for old in folder.glob("*.eval-*.json"):
        old.unlink()
    assert read_run(folder).final is not None  # validated at its last epoch: the log is its number
    (log,) = folder.glob("*.log.json")
    lines = _log_lines(folder)
    assert [r["epoch"] for r in lines if r.get("mode") == "val"] == [1, 2]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines if not (r.get("mode") == "val" and r["epoch"] == 2)))
    run = read_run(folder)
    assert run.final is None and run.final_source.startswith("not evaluated at epoch 2 (log: epoch 1")
    summary = summarize([run])
    (arms,) = [t for t in tables(summary) if t[0].startswith("Arms")]
    assert [row[1] for row in arms[2]] == ["0"], arms


def test_robustness_picture_draws_the_tables_numbers(study, tmp_path):
    """robustness.png: per arm and figure the mean and 95% interval the tables give, each run a
    dot; AP per corruption; the paired differences with their intervals."""
    from ikd_cli.report.robustness import FIGURES, robustness_figure

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    for seed in SEEDS:
        for arm, gain in (("FGD", 0.0), ("IKD", 0.01 * seed)):
            _write_robustness(copy / arm / f"seed{seed}" / "distill" / "student_latest.robustness-val.json",
                              0.2 + gain, 0.03, 0.05 + 2 * gain, 0.1 + gain / 2,
                              {"gaussian_noise": 0.08 + gain, "contrast": 0.12})
    summary = write_report([copy], tmp_path / "out", ("IKD", "FGD"))
    assert "robustness.png" in summary["files"]
    with Image.open(tmp_path / "out" / "robustness.png") as img:
        assert img.format == "PNG" and img.width > 1000
    fig = robustness_figure(summary)
    figures, corruptions, paired = fig.axes
    arms = {a["arm"]: a["robustness"] for a in summary["arms"]}
    # errorbar containers, in drawing order: arm by arm (FGD, IKD), figure by figure
    drawn = [c.lines[0].get_ydata()[0] for c in figures.containers]
    expected = [arms[arm][f]["mean"] for arm in ("FGD", "IKD") for f in FIGURES]
    assert drawn == pytest.approx(expected, abs=1e-9)
    ikd_ap = [c for c in figures.containers][len(FIGURES)]  # IKD, AP clean: the 95% interval of its mean
    lo, hi = ikd_ap.lines[2][0].get_segments()[0][:, 1]
    stats = interval([100 * (0.2 + 0.01 * s) for s in SEEDS])
    assert (lo, hi) == pytest.approx(stats["ci"], abs=1e-9)
    noise = [c.lines[0].get_ydata()[0] for c in corruptions.containers][2]  # IKD, gaussian_noise
    assert noise == pytest.approx(statistics.fmean(100 * (0.08 + 0.01 * s) for s in SEEDS), abs=1e-9)
    diffs = [c.lines[0].get_xdata()[0] for c in paired.containers]
    comp = summary["comparison"]["robustness"]
    assert diffs == pytest.approx([comp[f]["mean"] for f in FIGURES], abs=1e-9)
    ikd_colour = ikd_ap.lines[0].get_color()  # IKD − FGD in IKD's colour, as IKD in the other panels
    assert {c.lines[0].get_color() for c in paired.containers} == {ikd_colour}
    assert ikd_colour != figures.containers[0].lines[0].get_color()  # FGD's


def test_kept_records_redraw_the_same_report_without_weights(study, real_run, tmp_path):
    """--keep copies what the report read and nothing heavier: the kept folder alone gives the
    same tables (robustness included), and holds no checkpoint and no detections."""
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    for seed in SEEDS:
        _write_robustness(copy / "IKD" / f"seed{seed}" / "distill" / "student_latest.robustness-val.json",
                          0.2 + 0.01 * seed, 0.03, 0.05, 0.1, {"contrast": 0.12})
    heavy = copy / "IKD" / "seed1" / "distill"
    shutil.copy(real_run / "latest.pth", heavy / "student_latest.pth")
    (heavy / "student_latest.eval-val.bbox.json").write_text("[]")
    kept = tmp_path / "records"
    stale = kept / "IKD" / "seed2" / "distill" / "20000101_000000.log.json"  # kept once, trained again since
    stale.parent.mkdir(parents=True)
    stale.write_text('{"mode": "train", "epoch": 1, "iter": 1, "loss": 9.0}\n')
    unfinished = copy / "student" / "seed3" / "student"
    preset = yaml.safe_load((unfinished / "preset.yaml").read_text())
    preset["train"]["epochs"] = 5  # two of five epochs logged: still training
    (unfinished / "preset.yaml").write_text(yaml.safe_dump(preset))
    result = run_cli("report", copy, "--out", tmp_path / "out", "--compare", "IKD,FGD", "--keep", kept)
    assert "1 unfinished or unevaluated runs not kept" in " ".join(result.output.split())  # rich wraps lines
    assert not stale.exists() and not (kept / "student" / "seed3").exists()
    again = write_report([kept], tmp_path / "again", ("IKD", "FGD"))
    first = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in ("arms", "comparison", "verdict", "classwise"):
        assert again[key] == first[key], key
    finished = [(r["arm"], r["seed"], r["final"]) for r in first["runs"] if r["final"] is not None]
    assert [(r["arm"], r["seed"], r["final"]) for r in again["runs"]] == finished and len(finished) == 8
    assert first["comparison"]["robustness"]["AP clean"]["n"] == 0  # FGD has none: nothing to pair
    assert next(a for a in again["arms"] if a["arm"] == "IKD")["robustness"]["AP clean"]["n"] == 3
    names = {p.name for p in kept.rglob("*") if p.is_file()}
    assert "study.json" in names and "student_latest.robustness-val.json" in names
    assert not [n for n in names if n.endswith((".pth", ".bbox.json"))]
    result = run_cli("report", copy, "--out", tmp_path / "o3", "--keep", copy / "records", expect=1)
    assert "lies inside the runs" in result.output and not (copy / "records").exists()
    assert not (tmp_path / "o3").exists()  # refused before anything is written


def test_comparisons_picture_draws_each_pairs_interval(study, tmp_path):
    """comparisons.png: one row per --compare pair, at the paired mean AP difference with the
    95% interval the tables give, each seed's difference a dot."""
    from ikd_cli.report.comparisons import comparisons_figure

    summary = write_report([study], tmp_path / "out", [("IKD", "FGD"), ("FGD", "student")])
    assert "comparisons.png" in summary["files"] and "comparisons.png" in (tmp_path / "out" / "report.md").read_text()
    with Image.open(tmp_path / "out" / "comparisons.png") as img:
        assert img.format == "PNG"
    (ax,) = comparisons_figure(summary["comparisons"]).axes
    for container, comp in zip(ax.containers, summary["comparisons"]):
        ap = comp["metrics"]["AP"]
        assert container.lines[0].get_xdata()[0] == pytest.approx(ap["mean"], abs=1e-9)
        lo, hi = container.lines[2][0].get_segments()[0][:, 0]
        assert (lo, hi) == pytest.approx(ap["ci"], abs=1e-9)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["IKD − FGD (n=3)", "FGD − student (n=3)"]
    assert comparisons_figure([]) is None
