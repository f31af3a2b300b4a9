"""``ikd report``: read runs, write ``report.md``, ``report.json`` and the pictures into one
folder, and print the tables."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.core.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from ikd_cli.core.ui import console
from ikd_cli.report.classwise import classwise_summary, plot_classwise
from ikd_cli.report.diagnostics import write_diagnostics_plots
from ikd_cli.report.plots import write_plots
from ikd_cli.report.runs import find_runs
from ikd_cli.report.table import print_summary, render_markdown, summarize


def write_report(paths: list[Path], out: Path, compare: tuple[str, str] | None = None) -> dict:
    """Report on the runs in ``paths`` (run folders or folders of them) into ``out``.

    With ``compare=(a, b)`` the arms a and b are paired by seed and the verdict says whether
    a − b on AP is established by a 95% interval. Returns what ``report.json`` holds.
    """
    runs = find_runs(paths)
    summary = summarize(runs, compare)  # before any write: a bad --compare leaves ``out`` untouched
    summary["classwise"] = classwise_summary(runs, summary["comparison"])
    out = ensure_writable_dir(out, "report folder")
    figures = write_plots(runs, out) + plot_classwise(summary["classwise"], out) + write_diagnostics_plots(runs, out)
    summary["files"] = {name: str(out / name) for name in ["report.md", "report.json", *figures]}
    atomic_write_text(out / "report.md", render_markdown(summary, figures))
    atomic_write_json(out / "report.json", summary)
    print_summary(summary)
    console.print(f"report: {out / 'report.md'} ({len(runs)} runs)")
    return summary
