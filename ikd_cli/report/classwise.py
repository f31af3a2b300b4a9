"""Per-class AP in the report: per arm, mean ± sd over its runs of the AP per class that
``ikd evaluate --classwise`` stored in each run's eval file; with ``--compare A,B``, per class
the differences A − B paired by seed, with their 95% t-interval (:mod:`ikd_cli.core.stats`),
as a table and as a picture (which classes gain). Runs whose eval file has no per-class AP
(evaluated without ``--classwise``, or not evaluated) are left out of these numbers."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.config.layout import REPORT_CLASSWISE_FILE
from ikd_cli.core.fileio import read_json
from ikd_cli.core.stats import interval, mean_sd
from ikd_cli.report import cells
from ikd_cli.report.runs import Run


def run_classwise(run: Run) -> dict[str, float | None] | None:
    """The run's AP per class (fractions; None: no ground truth), from its eval file, if stored."""
    path = Path(run.final_source) if run.final else None
    if path is None or path.suffix != ".json" or not path.is_file():
        return None
    data = read_json(path, "eval file")
    per_class = ((data or {}).get("bbox") or {}).get("classwise") if isinstance(data, dict) else None
    return per_class if isinstance(per_class, dict) else None


def _pct(values) -> list[float]:
    return [100.0 * v for v in values if isinstance(v, (int, float))]


def classwise_summary(runs: list[Run], comparisons: list[dict]) -> dict | None:
    """What report.json holds under ``classwise`` (None when no run has per-class AP); its
    ``comparison`` pairs the first of ``comparisons`` with per-class AP on both sides of a seed
    (a study's first pair may have been evaluated without ``--classwise``, a later one with it)."""
    per_run = [(run, run_classwise(run)) for run in runs]
    per_run = [(run, pc) for run, pc in per_run if pc is not None]
    if not per_run:
        return None
    classes = list(dict.fromkeys(name for _, pc in per_run for name in pc))
    arms: dict[str, dict] = {}
    for arm in dict.fromkeys(run.arm for run, _ in per_run):
        members = [pc for run, pc in per_run if run.arm == arm]
        arms[arm] = {c: mean_sd(_pct(pc.get(c) for pc in members)) for c in classes}
    out = {"units": "COCO bbox AP in percent", "classes": classes, "arms": arms, "comparison": None}
    paired = (_paired(per_run, classes, comparison) for comparison in comparisons)
    out["comparison"] = next((p for p in paired if any(d["n"] for d in p["classes"].values())), None)
    return out


def _paired(per_run, classes: list[str], comparison: dict) -> dict:
    """A − B per class over the seeds the AP comparison paired (those with per-class AP on both sides)."""
    a, b = comparison["a"], comparison["b"]
    by = {(run.arm, run.seed): pc for run, pc in per_run}
    seeds = [s for s in comparison["metrics"]["AP"]["seeds"] if (a, s) in by and (b, s) in by]
    result = {"a": a, "b": b, "classes": {}}
    for c in classes:
        paired = [s for s in seeds if isinstance(by[(a, s)].get(c), (int, float))
                  and isinstance(by[(b, s)].get(c), (int, float))]
        diffs = [100.0 * (by[(a, s)][c] - by[(b, s)][c]) for s in paired]
        result["classes"][c] = {"seeds": paired, "differences": diffs, **interval(diffs)}
    return result


def classwise_tables(classwise: dict | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """The per-class table as (title, header, rows), like :func:`ikd_cli.report.table.tables`."""
    if not classwise:
        return []
    arms, comp = classwise["arms"], classwise["comparison"]
    header = ["class", *arms]
    if comp:
        header += [f"{comp['a']} − {comp['b']}", "n", "95% CI", "excludes 0"]
    rows = []
    for c in classwise["classes"]:
        row = [c, *(cells.mean_sd(arms[arm][c]) for arm in arms)]
        if comp:
            d = comp["classes"][c]
            row += ["n/a" if d["mean"] is None else f"{d['mean']:+.1f}", str(d["n"]),
                    cells.ci(d),
                    "yes" if d["established"] else "no"]
        rows.append(row)
    return [("Per-class AP (%), mean ± sd over runs" + (", and the paired difference by seed" if comp else ""),
             header, rows)]


def plot_classwise(classwise: dict | None, out: Path) -> list[str]:
    """``classwise.png``: per class, the mean paired difference A − B with its 95% interval
    (classes sorted by it; the ones whose interval excludes 0 drawn solid). Needs ``--compare``."""
    from ikd_cli.core.figures import new_figure, save_png

    comp = (classwise or {}).get("comparison")
    if not comp:
        return []
    items = sorted(((c, d) for c, d in comp["classes"].items() if d["mean"] is not None), key=lambda cd: cd[1]["mean"])
    fig = new_figure(7, 1.2 + 0.35 * max(1, len(items)))
    ax = fig.add_subplot()
    for y, (c, d) in enumerate(items):
        lo, hi = d["ci"] if d["ci"] else (d["mean"], d["mean"])
        colour = "C2" if d["mean"] > 0 else "C3"
        ax.errorbar(d["mean"], y, xerr=[[d["mean"] - lo], [hi - d["mean"]]], fmt="o", capsize=3, color=colour,
                    alpha=1.0 if d["established"] else 0.45)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(items)), [f"{c} (n={d['n']})" for c, d in items])
    ax.set(title=f"Per-class AP: {comp['a']} − {comp['b']}, paired by seed (mean, 95% CI)",
           xlabel="AP difference (points)")
    ax.grid(alpha=0.3, axis="x")
    save_png(fig, out / REPORT_CLASSWISE_FILE)
    return [REPORT_CLASSWISE_FILE]
