"""The report's pictures of stage 1's diagnostics of the adversarial term (logged by
``ikd distill``, see :mod:`ikd_cli.distill.diagnostics`): one panel per distilled level, the
per-epoch mean of the logged measurements of each run, coloured by arm.

* ``diag_teacher_distance.png``: ||T(adv) − T(clean)|| / ||T(clean)|| of the teacher's features.
* ``diag_gradients.png``: log10 of the gradient-norm ratio between the adversarial term and the
  clean distillation term (solid), and the detection loss (dashed). 0: as strong; -2: 100x weaker.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ikd_cli.config.layout import DIAG_GRAD_VS_DET as GRAD_VS_DET
from ikd_cli.config.layout import DIAG_GRAD_VS_DISTILL as GRAD_VS_DISTILL
from ikd_cli.config.layout import DIAG_TEACHER_DIST as TEACHER_DIST
from ikd_cli.config.layout import REPORT_DIAG_DISTANCE_FILE, REPORT_DIAG_GRADIENT_FILE
from ikd_cli.report.runs import Run, read_log


def per_epoch(run: Run, prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    """Level -> (epochs, mean of that epoch's logged values) for one key prefix."""
    values: dict[str, dict[int, list[float]]] = {}
    for record in read_log(run.path)[1]:
        if record.get("mode") != "train":
            continue
        for key, value in record.items():
            if key.startswith(prefix) and isinstance(value, (int, float)):
                values.setdefault(key[len(prefix):], {}).setdefault(record["epoch"], []).append(float(value))
    return {level: (sorted(by), [statistics.fmean(by[e]) for e in sorted(by)]) for level, by in values.items()}


def _panels(runs: list[Run], series: list[tuple[str, str, str]], path: Path, title: str, ylabel: str) -> bool:
    """One panel per level; ``series``: (key prefix, line style and marker, legend suffix). False:
    nothing logged."""
    from matplotlib.ticker import MaxNLocator

    from ikd_cli.core.figures import new_figure, save_png
    from ikd_cli.report.plots import arm_colours

    data = [(run, style, suffix, per_epoch(run, prefix)) for run in runs for prefix, style, suffix in series]
    levels = sorted({lvl for *_, by_level in data for lvl in by_level})
    if not levels:
        return False
    cols = min(3, len(levels))
    rows = -(-len(levels) // cols)
    fig = new_figure(5 * cols, 3.4 * rows)
    colours, labelled = arm_colours(runs), set()
    for i, level in enumerate(levels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for run, style, suffix, by_level in data:
            if level in by_level:
                label = f"{run.arm}{suffix}"
                ax.plot(*by_level[level], marker=style[1], markersize=4, linestyle=style[0], color=colours[run.arm],
                        alpha=0.85, label=None if label in labelled else label)
                labelled.add(label)
        ax.set(title=level, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    for ax in fig.axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize="small")
    fig.suptitle(title)
    save_png(fig, path)
    return True


def write_diagnostics_plots(runs: list[Run], out: Path) -> list[str]:
    """Both pictures, for the runs that logged diagnostics; returns the file names written."""
    written = []
    if _panels(runs, [(TEACHER_DIST, ("-", "o"), "")], out / REPORT_DIAG_DISTANCE_FILE,
               "Teacher features: adversarial vs clean image (relative L2 distance, per-epoch mean)",
               "||T(adv) − T(clean)|| / ||T(clean)||"):
        written.append(REPORT_DIAG_DISTANCE_FILE)
    if _panels(runs, [(GRAD_VS_DISTILL, ("-", "o"), " vs distill"), (GRAD_VS_DET, ("--", "s"), " vs detection")],
               out / REPORT_DIAG_GRADIENT_FILE,
               "Gradient the adversarial term sends into the student's features, relative (per-epoch mean)",
               "log10 gradient-norm ratio"):
        written.append(REPORT_DIAG_GRADIENT_FILE)
    return written
