"""``ikd report``: read runs, write ``report.md``, ``report.json`` and the pictures into one
folder, and print the tables."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.config.layout import REPORT_JSON_FILE, REPORT_MD_FILE
from ikd_cli.core.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from ikd_cli.core.ui import console
from ikd_cli.report.classwise import classwise_summary, plot_classwise
from ikd_cli.report.comparisons import plot_comparisons
from ikd_cli.report.diagnostics import write_diagnostics_plots
from ikd_cli.report.plots import write_plots
from ikd_cli.report.records import check_keep, keep_records
from ikd_cli.report.robustness import plot_robustness
from ikd_cli.report.runs import find_runs
from ikd_cli.report.sweep import sweep_summary, write_sweep_plots
from ikd_cli.report.table import print_summary, render_markdown, summarize


def write_report(paths: list[Path], out: Path, compare=None, keep: Path | None = None) -> dict:
    """Report on the runs in ``paths`` (run folders or folders of them) into ``out``.

    With ``compare=(a, b)``, or a list of such pairs, the arms of each pair are paired by seed
    and its verdict says whether a − b on AP is established by a 95% interval (the per-class
    table pairs the first with per-class AP on both sides). A study with sweep arms
    (``ikd_advX``, ``ikd_dfaN``) also gets the sweep's tables and pictures
    (:mod:`ikd_cli.report.sweep`). With ``keep``, the files the report
    read are copied there too (:mod:`ikd_cli.report.records`). Returns what ``report.json`` holds.
    """
    if keep is not None:
        check_keep(paths, keep)
    runs = find_runs(paths)
    summary = summarize(runs, compare)  # before any write: a bad --compare leaves ``out`` untouched
    summary["classwise"] = classwise_summary(runs, summary["comparisons"] or [])
    summary["sweep"] = sweep_summary(runs)
    out = ensure_writable_dir(out, "report folder")
    figures = (write_plots(runs, out) + plot_classwise(summary["classwise"], out) + plot_comparisons(summary, out)
               + plot_robustness(summary, out)
               + write_diagnostics_plots(runs, out) + write_sweep_plots(summary["sweep"], out))
    summary["files"] = {name: str(out / name) for name in [REPORT_MD_FILE, REPORT_JSON_FILE, *figures]}
    atomic_write_text(out / REPORT_MD_FILE, render_markdown(summary, figures))
    atomic_write_json(out / REPORT_JSON_FILE, summary)
    print_summary(summary)
    if keep is not None:
        finished = [run.path for run in runs if run.final is not None]
        kept = keep_records(paths, finished, keep)
        left = f"; {len(runs) - len(finished)} unfinished or unevaluated runs not kept" if len(finished) < len(runs) else ""
        console.print(f"records: {kept} files of {len(finished)} runs in {keep}{left} "
                      f"(`ikd report {keep}` redraws this report)")
    console.print(f"report: {out / REPORT_MD_FILE} ({len(runs)} runs)")
    return summary
