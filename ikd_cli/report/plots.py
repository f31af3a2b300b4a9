"""The report's pictures: validation AP per epoch, and the training losses per iteration
(drawn with :mod:`ikd_cli.core.figures`, never through ``pyplot``)."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.config.distillers import DISTILLERS
from ikd_cli.config.layout import REPORT_LOSSES_FILE, REPORT_VAL_AP_FILE
from ikd_cli.core.figures import new_figure, save_png
from ikd_cli.report.runs import Run

# Loss panels besides the detector's own terms: the distiller's and the adversarial term are
# logged once per distilled level (loss_fgd_neck_fpn_convs_0_conv, ...) and summed here.
_SUMMED = (*((f"loss_{name}_", f"{entry.label} feature loss (sum over levels)") for name, entry in DISTILLERS.items()),
           ("loss_adv_", "adversarial feature loss (sum over levels, stage 1)"))


def arm_colours(runs: list[Run]) -> dict[str, str]:
    """One colour per arm, in the runs' order (the tab10 cycle)."""
    arms = list(dict.fromkeys(r.arm for r in runs))
    return {arm: f"C{i % 10}" for i, arm in enumerate(arms)}


def _legend_label(run: Run, labelled: set[str]) -> str | None:
    """Label only the first line of each arm, so the legend lists arms, not runs."""
    if run.arm in labelled:
        return None
    labelled.add(run.arm)
    return run.arm


def integer_ticks(axis) -> None:
    """Ticks on whole numbers only (epochs, iterations), one at least: MaxNLocator(integer=True)
    alone falls back to fractions when fewer than two integers are in view (a single epoch)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_val_ap(runs: list[Run], path: Path):
    """``val_ap.png``: bbox mAP of each validated epoch, one line per run, coloured by arm."""
    fig = new_figure(8, 5)
    ax = fig.add_subplot()
    colours, labelled = arm_colours(runs), set()
    for run in runs:
        points = [(v["epoch"], 100 * v["AP"]) for v in run.val if v["AP"] is not None]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, color=colours[run.arm], alpha=0.85,
                    label=_legend_label(run, labelled))
    ax.set(title="Validation bbox mAP per epoch", xlabel="epoch", ylabel="bbox mAP (%)")
    integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(title="arm", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no validation epochs logged", ha="center", va="center", transform=ax.transAxes)
    save_png(fig, path)
    return fig


def loss_terms(run: Run) -> dict[str, tuple[list[int], list[float]]]:
    """Panel title -> (global iterations, values): each detector loss as logged, the distiller's
    and the adversarial terms summed over levels, and the total."""
    series: dict[str, tuple[list[int], list[float]]] = {}

    def add(title: str, step: int, value: float) -> None:
        steps, values = series.setdefault(title, ([], []))
        steps.append(step)
        values.append(value)

    for row in run.train:
        sums: dict[str, float] = {}
        for key, value in row.items():
            if not key.startswith("loss_"):
                continue
            title = next((t for prefix, t in _SUMMED if key.startswith(prefix)), key)
            sums[title] = sums.get(title, 0.0) + value
        for title, value in sums.items():
            add(title, row["step"], value)
        if "loss" in row:
            add("total loss", row["step"], row["loss"])
    return series


def _panel_order(titles: set[str]) -> list[str]:
    """Detector terms first (alphabetical), then the distiller's, adversarial, total."""
    tail = [t for _, t in _SUMMED] + ["total loss"]
    return sorted(t for t in titles if t not in tail) + [t for t in tail if t in titles]


def plot_losses(runs: list[Run], path: Path):
    """``losses.png``: one panel per loss term, one line per run coloured by arm, log-scale y
    where the values are positive and span more than a factor of 10, and a dashed line where a
    distill run switched from stage 1 to stage 2."""
    per_run = [(run, loss_terms(run)) for run in runs]
    titles = _panel_order({t for _, series in per_run for t in series})
    cols = 2 if len(titles) > 1 else 1
    rows = max(1, -(-len(titles) // cols))
    fig = new_figure(6 * cols, 3.2 * rows)
    colours, labelled = arm_colours(runs), set()
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(1, len(titles)))]
    for ax, title in zip(axes, titles):
        values = []
        for run, series in per_run:
            if title in series:
                # a marker where there are too few points for a line to show (one logged iteration)
                few = len(series[title][0]) < 3
                ax.plot(*series[title], color=colours[run.arm], linewidth=1, alpha=0.85,
                        marker="o" if few else None, markersize=4, label=_legend_label(run, labelled))
                values += series[title][1]
            if run.stage_switch_step is not None:
                ax.axvline(run.stage_switch_step, color=colours[run.arm], linestyle="--", linewidth=1)
        if values and min(values) > 0 and max(values) > 10 * min(values):
            ax.set_yscale("log")
        ax.set(title=title, xlabel="iteration", ylabel="loss")
        integer_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
    if not titles:
        axes[0].text(0.5, 0.5, "no training iterations logged", ha="center", va="center",
                     transform=axes[0].transAxes)
    if labelled:
        handles, labels = _legend_entries(axes, any(r.stage_switch_step is not None for r in runs))
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize="small")
    fig.suptitle("Training losses per iteration")
    save_png(fig, path)
    return fig


def _legend_entries(axes, with_switch: bool):
    """One legend for the figure: each arm once, plus the dashed stage-switch line if drawn."""
    from matplotlib.lines import Line2D

    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if with_switch:
        entries["stage 1 → stage 2 (end of epoch dfa_until)"] = Line2D([], [], color="grey", linestyle="--")
    return list(entries.values()), list(entries)


def write_plots(runs: list[Run], out: Path) -> list[str]:
    """Write both pictures into ``out``; returns their file names."""
    plot_val_ap(runs, out / REPORT_VAL_AP_FILE)
    plot_losses(runs, out / REPORT_LOSSES_FILE)
    return [REPORT_VAL_AP_FILE, REPORT_LOSSES_FILE]
