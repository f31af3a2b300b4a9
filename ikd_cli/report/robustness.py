"""Robustness in the report: the figures of ``ikd evaluate --robustness`` per arm (mean ± sd over
its runs) and, per ``--compare`` pair, paired by seed with 95% t-intervals, as tables and as one
picture, ``robustness.png``:

    left    each figure (AP clean, transfer, white-box, mPC): per arm the mean with the 95%
            interval of that mean, and each run as a dot
    middle  AP under each corruption (mean over its severities), per arm: which corruptions hurt
    right   per pair A − B, the paired difference of each figure with its 95% interval, in A's
            colour (one row per pair and figure: the picture grows with them)

The numbers are those of ``report.json`` (``arms``, ``runs``, ``comparisons``): the picture draws
what the tables say."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.config.layout import REPORT_ROBUSTNESS_FILE
from ikd_cli.core.stats import interval
from ikd_cli.evaluate.robustness import FIGURES, ROBUSTNESS
from ikd_cli.report import cells


def _measured_arms(summary: dict) -> list[dict]:
    return [a for a in summary["arms"] if any(a["robustness"][m]["n"] for m in ROBUSTNESS)]


def robustness_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The robustness figures per arm, and paired, where runs have them."""
    arms = _measured_arms(summary)
    if not arms:
        return []
    rows = [[a["arm"], str(max(a["robustness"][m]["n"] for m in ROBUSTNESS)),
             *(cells.mean_sd(a["robustness"][m]) for m in ROBUSTNESS), ", ".join(a["robustness"]["corruptions"])]
            for a in arms]
    out = [("Robustness: AP (%) clean, on the teacher's adversarial val set (transfer), under the preset's attack on "
            "the model itself (white-box), mean AP over corruptions (mPC) and mPC / clean AP (rPC, %); mean ± sd",
            ["arm", "n", *ROBUSTNESS, "corruptions"], rows)]
    for comp in summary.get("comparisons") or []:
        if not any(d["n"] for d in comp.get("robustness", {}).values()):
            continue
        out.append((f"{comp['a']} − {comp['b']}, robustness paired by seed (points)", cells.PAIRED_HEADER,
                    [cells.paired_row(m, d) for m, d in comp["robustness"].items() if d["n"]]))
    return out


def _run_values(summary: dict, arm: str, key) -> list[float]:
    """The arm's finished runs' value of one figure (``key`` picks it from a run's robustness)."""
    values = []
    for run in summary["runs"]:
        if run["arm"] == arm and run["final"] and run["robustness"]:
            value = key(run["robustness"])
            if value is not None:
                values.append(value)
    return values


def _errorbar(ax, at: float, values: list[float], colour: str, label: str | None, horizontal=False) -> None:
    """At position ``at``: the mean with its 95% t-interval (none for one value), the values as faint dots."""
    stats = interval(values)
    lo, hi = stats["ci"] if stats["ci"] else (stats["mean"], stats["mean"])
    err = [[stats["mean"] - lo], [hi - stats["mean"]]]
    if horizontal:
        ax.errorbar(stats["mean"], at, xerr=err, fmt="o", capsize=3, color=colour, label=label)
        ax.scatter(values, [at] * len(values), s=10, color=colour, alpha=0.35)
    else:
        ax.errorbar(at, stats["mean"], yerr=err, fmt="o", capsize=3, color=colour, label=label)
        ax.scatter([at] * len(values), values, s=10, color=colour, alpha=0.35)


def _grouped(ax, summary: dict, arms: list[str], colours: dict[str, str], keys: list, legend: bool) -> None:
    """One group of points per key (a figure, a corruption), one point per arm in each."""
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        labelled = not legend
        for j, key in enumerate(keys):
            values = _run_values(summary, arm, key)
            if values:
                _errorbar(ax, j - 0.4 + width * (i + 0.5), values, colours[arm], None if labelled else arm)
                labelled = True


def _figures_panel(ax, summary: dict, arms: list[str], colours: dict[str, str]) -> None:
    _grouped(ax, summary, arms, colours, [lambda r, f=f: r.get(f) for f in FIGURES], legend=True)
    ax.set_xticks(range(len(FIGURES)), FIGURES)
    ax.set(title="Robustness per arm (mean, 95% CI; dots: runs)", ylabel="AP (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")


def _corruptions_panel(ax, summary: dict, arms: list[str], colours: dict[str, str]) -> None:
    names = list(dict.fromkeys(n for r in summary["runs"] if r["final"] and r["robustness"]
                               for n in r["robustness"].get("per_corruption") or {}))
    if not names:  # summaries written before per-corruption means were read
        ax.set_axis_off()
        return
    _grouped(ax, summary, arms, colours, [lambda r, n=n: (r.get("per_corruption") or {}).get(n) for n in names],
             legend=False)
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize="small")
    ax.set(title="AP per corruption (mean over severities)", ylabel="AP (%)")
    ax.grid(alpha=0.3, axis="y")


def _paired_rows(comparisons: list[dict]) -> list[tuple[dict, str, dict]]:
    return [(c, m, c["robustness"][m]) for c in comparisons for m in FIGURES if c["robustness"][m]["n"]]


def _paired_panel(ax, comparisons: list[dict], colours: dict[str, str]) -> None:
    rows = _paired_rows(comparisons)
    for y, (comp, figure, d) in enumerate(rows):  # a pair A − B in A's colour, as in the other panels
        _errorbar(ax, y, d["differences"], colours.get(comp["a"], "C7"), None, horizontal=True)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{c['a']} − {c['b']}: {m} (n={d['n']})" for c, m, d in rows], fontsize="small")
    ax.invert_yaxis()
    ax.set(title="Paired by seed (mean, 95% CI; dots: seeds)", xlabel="difference (AP points)")
    ax.grid(alpha=0.3, axis="x")


def robustness_figure(summary: dict):
    """The figure of ``robustness.png`` (see the module's docstring); None without robustness summaries."""
    from ikd_cli.core.figures import new_figure

    arms = [a["arm"] for a in _measured_arms(summary)]
    if not arms:
        return None
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(arms)}
    comparisons = [c for c in summary.get("comparisons") or [] if any(c["robustness"][m]["n"] for m in FIGURES)]
    ratios = [6, 5, 6] if comparisons else [6, 5]
    fig = new_figure(sum(ratios), max(4.5, 1.2 + 0.22 * len(_paired_rows(comparisons))))  # a readable row each
    grid = fig.add_gridspec(1, len(ratios), width_ratios=ratios)
    _figures_panel(fig.add_subplot(grid[0]), summary, arms, colours)
    _corruptions_panel(fig.add_subplot(grid[1]), summary, arms, colours)
    if comparisons:
        _paired_panel(fig.add_subplot(grid[2]), comparisons, colours)
    return fig


def plot_robustness(summary: dict, out: Path) -> list[str]:
    """Writes ``robustness.png`` where runs have robustness summaries; the names written."""
    from ikd_cli.core.figures import save_png

    fig = robustness_figure(summary)
    if fig is None:
        return []
    save_png(fig, out / REPORT_ROBUSTNESS_FILE)
    return [REPORT_ROBUSTNESS_FILE]
