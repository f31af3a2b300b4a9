"""``ikd attack``: adversarial copies of a split's images against the teacher (stage 1 input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from ikd_cli import api
from ikd_cli.attack.run import RECORD_LOSS, WORKERS
from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import (DataRootOpt, Device, DeviceOpt, GpusOpt, LauncherOpt, PresetOpt, SetOpt,
                                 TeacherCheckOpt, TrustCheckpointOpt, VerboseOpt, cli_settings, relaunch,
                                 section_options)
from ikd_cli.config.schema import Split
from ikd_cli.core.distributed import Launcher
from ikd_cli.core.errors import IkdError


@app.command()
@handle_errors
@section_options("attack", but=("attack.out",))  # --out is the folder itself, not attack.out's template
def attack(
    preset: str = PresetOpt,
    limit: Optional[int] = typer.Option(None, help="Attack only the first K images of the split: a trial, which "
                                        "distill cannot use (it needs every training image); the same command "
                                        "without --limit continues the set."),
    split: Split = typer.Option(Split.train, help="The split whose images are attacked."),
    checkpoint: Optional[Path] = typer.Option(None, help="Teacher checkpoint (default: the preset's)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the preset's attack.out)."),
    overwrite: bool = typer.Option(False, help="Replace an attack with other settings in the same folder."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Go on without the images `ikd data check` finds "
                                  "missing or unreadable: recorded as skipped; distill trains them without an "
                                  "adversarial copy."),
    export: Optional[Path] = typer.Option(None, "--export", metavar="DIR",
                                          help="Instead of attacking: write the finished set (at --out or the "
                                               "preset's) as plain PNG images into DIR, for other tools."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    device: Device = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: Launcher = LauncherOpt,
    workers: int = typer.Option(WORKERS, help="Image-loading worker processes."),
    record_loss: bool = typer.Option(RECORD_LOSS, "--record-loss/--no-record-loss",
                                     help="Measure the teacher's loss before and after (2 extra forward passes)."),
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
    teacher_check: bool = TeacherCheckOpt,
    **options: Any,
):
    """Make adversarial examples against the teacher (DI-FGSM family), lossless and resumable."""
    if limit is not None and limit < 1:
        raise IkdError("--limit must be at least 1")
    settings = cli_settings(sets, data_root)
    if export is not None:
        api.export_attack(preset, split.value, settings=settings, out=out, dest=export)
        return
    api.attack(preset, split.value, settings=settings, limit=limit, checkpoint=checkpoint, out=out,
               overwrite=overwrite, device=device, workers=workers, record_loss=record_loss, verbose=verbose,
               launcher=relaunch(gpus, launcher), skip_bad=skip_bad, teacher_check=teacher_check, **options)
