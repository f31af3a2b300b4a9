"""The sweep of IKD's two knobs in a study: AP, and the robustness figures of ``ikd evaluate
--robustness`` where runs have them (mPC, white-box AP), against ``distill.alpha_adv`` and
against the stage-1 length. Each point is an arm: the mean over its seeds with the 95%
t-interval of that mean, and its differences to FGD and to augmentation-only (IKD with
``alpha_adv`` 0), paired by seed, with their 95% t-intervals (:mod:`ikd_cli.core.stats`).

Which arm is which point is read from the study's arm names (scripts/study_shapes.sh), in one
place, :func:`classify`:

=============  =====================================================================
``ikd_advX``   ``alpha_adv`` = X (stage 1 as the preset's): the alpha_adv axis at X
``ikd_dfaN``   stage 1 for N epochs (alpha_adv as the preset's): the stage-1 axis at N
``ikd``        the reference of both axes, at its runs' own alpha_adv and dfa_until
``ikd_aug``    alpha_adv 0, augmentation only: the alpha_adv axis at 0 (drawn left of the
               log axis), and a reference line on both pictures
``fgd``        stage 1 for 0 epochs: the stage-1 axis at 0, and a reference line on both
=============  =====================================================================

The names are matched without case. A run's saved setting must agree with its arm's name (a
folder ``ikd_adv1e-4`` whose preset says 1e-05 is mislabelled): such an arm is left out of the
sweep with a warning, never drawn at the wrong place. Without a swept arm (``ikd_advX``,
``ikd_dfaN``) on an axis, that axis has no table and no picture.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ikd_cli.config.layout import REPORT_SWEEP_ALPHA_FILE, REPORT_SWEEP_STAGE1_FILE
from ikd_cli.core.errors import IkdError
from ikd_cli.core.stats import interval
from ikd_cli.core.ui import console
from ikd_cli.evaluate.robustness import CORRUPTIONS, WHITEBOX
from ikd_cli.report.runs import Run

ALPHA, STAGE1 = "alpha_adv", "stage1"
AXES = {ALPHA: ("alpha_adv", REPORT_SWEEP_ALPHA_FILE), STAGE1: ("stage-1 epochs", REPORT_SWEEP_STAGE1_FILE)}
# AP: the run's final (eval file); the others: its robustness file
METRICS = ("AP", CORRUPTIONS.label, WHITEBOX.label)
FGD, AUG, IKD = "fgd", "ikd_aug", "ikd"
_SWEPT_ALPHA = re.compile(r"ikd_adv(\d[0-9.e+-]*)")
_SWEPT_STAGE1 = re.compile(r"ikd_dfa(\d+)")


def parse_arm(arm: str) -> list[tuple[str, float | None]]:
    """The (axis, value) points an arm name stands for; value None: the reference ``ikd``, whose
    values are its runs' settings. ``[]``: not part of the sweep (student, ikd_adv, mgd, ...)."""
    name = arm.lower()
    if name == IKD:
        return [(ALPHA, None), (STAGE1, None)]
    if name == AUG:
        return [(ALPHA, 0.0)]
    if name == FGD:
        return [(STAGE1, 0.0)]
    match = _SWEPT_STAGE1.fullmatch(name)
    if match:
        return [(STAGE1, float(match[1]))]
    match = _SWEPT_ALPHA.fullmatch(name)
    if match:
        try:
            return [(ALPHA, float(match[1]))]
        except ValueError:
            return []
    return []


def _setting(run: Run, axis: str) -> float | None:
    value = run.alpha_adv if axis == ALPHA else run.dfa_until
    return None if value is None else float(value)


def _agrees(arm: str, axis: str, value: float | None, members: list[Run]) -> float | None:
    """The arm's value on the axis, checked against its runs' saved settings; None (and a
    warning) where they disagree with the name or with each other."""
    saved = {_setting(r, axis) for r in members} - {None}
    if value is None:  # the reference: its runs say where it is
        if len(saved) == 1:
            return saved.pop()
        problem = "no saved setting" if not saved else f"runs with different settings {sorted(saved)}"
    elif all(math.isclose(s, value, rel_tol=1e-9, abs_tol=1e-15) for s in saved):
        return value
    else:
        problem = f"its name says {value:g}, its runs trained with {', '.join(f'{s:g}' for s in sorted(saved))}"
    console.print(f"[yellow]sweep:[/] arm '{arm}' left out of the {AXES[axis][0]} sweep: {problem}")
    return None


def classify(runs: list[Run]) -> tuple[dict[str, list[tuple[str, float]]], dict[str, str | None]]:
    """Axis -> [(arm, value)] of the arms on it, and the reference arms' names (fgd, aug)."""
    arms: dict[str, list[Run]] = {}
    for run in runs:
        arms.setdefault(run.arm, []).append(run)
    points: dict[str, list[tuple[str, float]]] = {ALPHA: [], STAGE1: []}
    for arm, members in arms.items():
        for axis, value in parse_arm(arm):
            checked = _agrees(arm, axis, value, members)
            if checked is not None:
                points[axis].append((arm, checked))
    refs = {key: next((a for a in arms if a.lower() == name), None) for key, name in (("fgd", FGD), ("aug", AUG))}
    return points, refs


def _value(run: Run, metric: str) -> float | None:
    """The run's figure in percent (None: not measured or not finished)."""
    raw = (run.final or {}).get("AP") if metric == "AP" else (run.robustness or {}).get(metric)
    return None if raw is None else 100.0 * raw


def _by_seed(arm: str, members: list[Run], metric: str) -> dict[int, float]:
    values: dict[int, float] = {}
    for run in members:
        value = _value(run, metric)
        if value is None or run.seed is None:
            continue
        if run.seed in values:
            raise IkdError(f"arm '{arm}' has two finished runs with seed {run.seed}; pairing the sweep by seed "
                           f"needs one run per seed")
        values[run.seed] = value
    return values


def _level(values: dict[int, float]) -> dict:
    """Mean, sd and the 95% t-interval of the mean over the seeds."""
    stats = interval(list(values.values()))
    return {"seeds": list(values), "values": list(values.values()), "n": stats["n"], "mean": stats["mean"],
            "sd": stats["sd"], "ci": stats["ci"]}


def _paired(a: dict[int, float], b: dict[int, float]) -> dict:
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    return {"seeds": seeds, "differences": diffs, **interval(diffs)}


def sweep_summary(runs: list[Run]) -> dict | None:
    """What report.json holds under ``sweep``; None when the runs hold no swept arm."""
    points, refs = classify(runs)
    members = {arm: [r for r in runs if r.arm == arm] for arm in dict.fromkeys(r.arm for r in runs)}
    swept = {axis: [(a, v) for a, v in pts if a.lower() not in (IKD, AUG, FGD)
                    and any(r.final for r in members[a])] for axis, pts in points.items()}
    if not any(swept.values()):
        return None
    involved = {a for pts in points.values() for a, _ in pts} | {a for a in refs.values() if a}
    metrics = [m for m in METRICS if any(_value(r, m) is not None for a in involved for r in members[a])]
    seeded = {(a, m): _by_seed(a, members[a], m) for a in involved for m in metrics}
    levels = {key: ({m: _level(seeded[arm, m]) for m in metrics} if arm else None) for key, arm in refs.items()}
    axes = {}
    for axis, pts in points.items():
        if not swept[axis]:
            continue
        records = []
        for arm, value in sorted(pts, key=lambda p: p[1]):
            vs = {key: (None if ref is None or ref == arm else {m: _paired(seeded[arm, m], seeded[ref, m])
                                                                 for m in metrics}) for key, ref in refs.items()}
            records.append({"arm": arm, "value": value, "metrics": {m: _level(seeded[arm, m]) for m in metrics},
                            "vs_fgd": vs["fgd"], "vs_aug": vs["aug"]})
        axes[axis] = {"label": AXES[axis][0], "points": records}
    return {"units": "percent (AP, mPC, white-box AP)", "metrics": metrics, "references": refs, "levels": levels,
            "axes": axes}


def value_label(axis: str, value: float) -> str:
    """``1e-04`` for a weight (not 0.0001, beside 1e-05), ``8`` for epochs."""
    if axis != ALPHA or value == 0:
        return f"{value:g}"
    short = f"{value:.0e}"
    return short if float(short) == value else f"{value:.2e}"


def _interval_cell(stats: dict | None, signed: bool) -> str:
    if not stats or stats["mean"] is None:
        return "n/a"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    cell = fmt.format(stats["mean"])
    if stats["ci"] is not None:
        cell += f" ({fmt.format(stats['ci'][0])} to {fmt.format(stats['ci'][1])})"
    if signed and stats.get("established"):
        cell += " *"
    return f"{cell}, n {stats['n']}"


def sweep_tables(sweep: dict | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per axis and figure: each arm's mean (95% CI), and its paired differences to FGD and to
    augmentation-only, as (title, header, rows) like :func:`ikd_cli.report.table.tables`."""
    if not sweep:
        return []
    refs, out = sweep["references"], []
    for axis, data in sweep["axes"].items():
        for metric in sweep["metrics"]:
            header = ["arm", data["label"], f"{metric} (95% CI)",
                      f"− {refs['fgd'] or 'fgd (none)'}", f"− {refs['aug'] or 'ikd_aug (none)'}"]
            rows = [[p["arm"], value_label(axis, p["value"]), _interval_cell(p["metrics"][metric], False),
                     "" if p["vs_fgd"] is None else _interval_cell(p["vs_fgd"][metric], True),
                     "" if p["vs_aug"] is None else _interval_cell(p["vs_aug"][metric], True)]
                    for p in data["points"]]
            out.append((f"Sweep of {data['label']}: {metric} (%), mean over seeds with its 95% t-interval, and the "
                        f"differences paired by seed (* the interval excludes 0)", header, rows))
    return out


def _positions(axis: str, values: list[float]) -> tuple[list[float], float | None]:
    """x of each value; on the log alpha_adv axis 0 sits one decade left of the smallest weight."""
    if axis != ALPHA:
        return values, None
    positive = [v for v in values if v > 0]
    zero_at = min(positive) / 10 if positive else 1.0
    return [v if v > 0 else zero_at for v in values], zero_at


def _reference_lines(ax, sweep: dict, metric: str) -> None:
    for key, style, colour in (("fgd", "--", "C7"), ("aug", ":", "C1")):
        arm, level = sweep["references"][key], (sweep["levels"][key] or {}).get(metric)
        if not arm or not level or level["mean"] is None:
            continue
        ax.axhline(level["mean"], linestyle=style, color=colour, linewidth=1.2,
                   label=f"{arm} {level['mean']:.1f}" + ("" if key == "fgd" else " (augmentation only)"))
        if level["ci"] is not None:
            ax.axhspan(*level["ci"], color=colour, alpha=0.12, linewidth=0)


def _panel(ax, sweep: dict, axis: str, metric: str) -> None:
    points = [p for p in sweep["axes"][axis]["points"] if p["metrics"][metric]["n"]]
    xs, zero_at = _positions(axis, [p["value"] for p in points])
    _reference_lines(ax, sweep, metric)
    line = [(x, p["metrics"][metric]["mean"]) for x, p in zip(xs, points) if axis != ALPHA or p["value"] > 0]
    if len(line) > 1:
        ax.plot(*zip(*line), color="C0", linewidth=1, alpha=0.7)
    for x, p in zip(xs, points):
        stats = p["metrics"][metric]
        yerr = None if stats["ci"] is None else [[stats["mean"] - stats["ci"][0]], [stats["ci"][1] - stats["mean"]]]
        bars = ax.errorbar([x], [stats["mean"]], yerr=yerr, fmt="s" if x == zero_at else "o", capsize=4, color="C0")
        bars[0].set_gid(p["arm"])  # which arm a point is (the tests read it back)
        ax.annotate(f"n={stats['n']}", (x, stats["mean"]), textcoords="offset points", xytext=(6, 4), fontsize=7)
    if axis == ALPHA:
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(xs, ["0\n(aug. only)" if x == zero_at else value_label(axis, p["value"])
                           for x, p in zip(xs, points)])
        ax.set_xlabel("distill.alpha_adv (log scale)")
    else:
        ax.set_xticks(xs, [f"{p['value']:g}" + ("\n(FGD)" if p["value"] == 0 else "") for p in points])
        ax.set_xlabel("stage-1 length (epochs)")
    ax.set(title=metric, ylabel=f"{metric} (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")


def plot_sweep(sweep: dict, axis: str, path: Path):
    """One sweep picture: a panel per figure (AP; mPC and white-box AP where measured)."""
    from ikd_cli.core.figures import new_figure, save_png

    metrics = sweep["metrics"]
    fig = new_figure(5.5 * len(metrics), 4.4)
    for i, metric in enumerate(metrics):
        _panel(fig.add_subplot(1, len(metrics), i + 1), sweep, axis, metric)
    fig.suptitle(f"IKD against {sweep['axes'][axis]['label']}: mean over seeds with its 95% t-interval")
    save_png(fig, path)
    return fig


def write_sweep_plots(sweep: dict | None, out: Path) -> list[str]:
    """``sweep_alpha_adv.png`` and ``sweep_stage1.png``, for the axes the runs sweep."""
    written = []
    for axis in (sweep or {}).get("axes", {}):
        name = AXES[axis][1]
        plot_sweep(sweep, axis, out / name)
        written.append(name)
    return written
