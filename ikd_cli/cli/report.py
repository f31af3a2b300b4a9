"""``ikd report``: tables and pictures of finished runs (train, distill, a whole study)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ikd_cli.cli.app import app, handle_errors
from ikd_cli.config.layout import REPORT_JSON_FILE, REPORT_LOSSES_FILE, REPORT_MD_FILE, REPORT_VAL_AP_FILE
from ikd_cli.core.errors import IkdError


@app.command()
@handle_errors
def report(
    runs: List[Path] = typer.Argument(..., help="Run folders (work dirs of ikd train/distill) or folders "
                                                "holding them, e.g. a study."),
    out: Path = typer.Option(Path("report"), "--out", "-o",
                             help=f"Folder for {REPORT_MD_FILE}, {REPORT_JSON_FILE}, {REPORT_VAL_AP_FILE} and "
                                  f"{REPORT_LOSSES_FILE}."),
    compare: Optional[List[str]] = typer.Option(None, "--compare", metavar="A,B",
                                                help="Pair arms A and B by seed and give A - B on AP with a 95% "
                                                     "t-interval, e.g. --compare ikd,fgd; repeat for more pairs "
                                                     "(--compare ikd,fgd --compare ikd,ikd_aug)."),
    keep: Optional[Path] = typer.Option(None, "--keep", metavar="DIR",
                                        help="Also copy what the report read (settings, logs, eval and robustness "
                                             "summaries; no weights, no detections) into DIR, where `ikd report DIR` "
                                             "redraws it after the work dirs are gone."),
):
    """Tables (mean ± sd per arm) and pictures (val AP per epoch, every loss term per iteration)."""
    from ikd_cli.report.run import write_report

    write_report(runs, out, [_pair(value) for value in compare or []], keep)


def _pair(value: str) -> tuple[str, str]:
    """``A,B`` -> (A, B). Arm names may hold '-' (ikd_adv1e-4), so the separator is ',' only."""
    pair = tuple(p.strip() for p in value.split(","))
    if len(pair) != 2 or not all(pair):
        raise IkdError(f"--compare takes two arm names: A,B (e.g. ikd,fgd), got '{value}'; "
                       f"repeat --compare for more pairs")
    return pair
