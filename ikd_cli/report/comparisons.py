"""``comparisons.png``: each ``--compare`` pair A − B on AP, paired by seed, as one row: the mean
difference with its 95% t-interval and each seed's difference as a dot, beside a line at 0. With
one pair per distiller (``ikd_fgd,fgd``, ``ikd_cwd,cwd``, ...) it is IKD's gain per distiller at a
glance. The numbers are ``report.json``'s ``comparisons``: the picture draws what the tables say."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.config.layout import REPORT_COMPARISONS_FILE


def comparisons_figure(comparisons: list[dict], metric: str = "AP"):
    """The figure, or None without a comparison that has a paired seed."""
    from ikd_cli.core.figures import new_figure

    rows = [c for c in comparisons if c["metrics"][metric]["n"]]
    if not rows:
        return None
    fig = new_figure(7, 1.2 + 0.55 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    for y, comp in enumerate(rows):
        d = comp["metrics"][metric]
        lo, hi = d["ci"] if d["ci"] else (d["mean"], d["mean"])
        colour = "C2" if d["established"] and d["mean"] > 0 else "C3" if d["established"] else "C7"
        ax.errorbar(d["mean"], y, xerr=[[d["mean"] - lo], [hi - d["mean"]]], fmt="o", capsize=4, color=colour)
        ax.scatter(d["differences"], [y] * len(d["differences"]), s=12, color=colour, alpha=0.35)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{c['a']} − {c['b']} (n={c['metrics'][metric]['n']})" for c in rows])
    ax.invert_yaxis()
    # over the figure, not the axes: long pair names push the axes right and an axes title past the edge
    fig.suptitle(f"Paired by seed: mean difference in {metric} with its 95% interval (dots: seeds)")
    ax.set(xlabel=f"{metric} difference (points)")
    ax.grid(alpha=0.3, axis="x")
    return fig


def plot_comparisons(summary: dict, out: Path) -> list[str]:
    """Writes ``comparisons.png`` where the report has paired comparisons; the names written."""
    from ikd_cli.core.figures import save_png

    fig = comparisons_figure(summary.get("comparisons") or [])
    if fig is None:
        return []
    save_png(fig, out / REPORT_COMPARISONS_FILE)
    return [REPORT_COMPARISONS_FILE]
