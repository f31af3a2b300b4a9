"""``ikd distill``: the teacher into the student, a feature distiller + IKD's augmentation, both stages in one run."""

from __future__ import annotations

from typing import List, Optional

import typer

from ikd_cli import api
from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import (AmpOpt, DataRootOpt, Device, DeviceOpt, GpusOpt, LauncherOpt, PresetOpt,
                                 RestartOpt, SetOpt, TeacherCheckOpt, TrustCheckpointOpt, VerboseOpt, WorkDirOpt,
                                 cli_settings, relaunch, setting_option)
from ikd_cli.config.schema import DistillMethod
from ikd_cli.core.distributed import Launcher


@app.command()
@handle_errors
def distill(
    preset: str = PresetOpt,
    dfa_until: Optional[int] = setting_option("distill.dfa_until", "--dfa-until"),
    method: Optional[DistillMethod] = setting_option("distill.method", "--method"),
    epochs: Optional[int] = setting_option("train.epochs", "--epochs"),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    work_dir: Optional[str] = WorkDirOpt,
    restart: bool = RestartOpt,
    amp: Optional[bool] = AmpOpt,
    device: Device = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: Launcher = LauncherOpt,
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
    teacher_check: bool = TeacherCheckOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only the checks (teacher, weights, data) and one iteration "
                                 "of each stage: one table, in the work dir as dry-run.txt; exit 1 if a check fails."),
):
    """Distil the teacher into the student: a feature distiller (--method) + IKD's augmentation, both stages in one run."""
    launcher = relaunch(gpus, launcher)
    settings = cli_settings(sets, data_root, work_dir, {"train.epochs": epochs, "train.amp": amp})
    api.distill(preset, settings=settings, dfa_until=dfa_until, method=method, restart=restart, device=device,
                launcher=launcher, verbose=verbose, teacher_check=teacher_check, dry_run=dry_run)
