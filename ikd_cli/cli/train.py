"""``ikd train``: a plain detector (the built-in data's teacher, or a student baseline)."""

from __future__ import annotations

from typing import List, Optional

import typer

from ikd_cli import api
from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import (AmpOpt, DataRootOpt, Device, DeviceOpt, GpusOpt, LauncherOpt, PresetOpt,
                                 RestartOpt, SetOpt, TrustCheckpointOpt, VerboseOpt, WorkDirOpt, cli_settings,
                                 relaunch, setting_option)
from ikd_cli.config.schema import SETTINGS, Role
from ikd_cli.core.distributed import Launcher


@app.command()
@handle_errors
def train(
    preset: str = PresetOpt,
    model: Role = typer.Option(Role.teacher, "--model", "-m", help="Which detector of the preset to train."),
    epochs: Optional[int] = setting_option("train.epochs", "--epochs",
                                                   help="Epochs (also teacher.epochs, the teacher's own schedule)"),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    work_dir: Optional[str] = WorkDirOpt,
    resume: bool = typer.Option(False, "--resume", help="Insist on continuing the run in the work dir "
                                                          "(re-running the same command continues it anyway)."),
    restart: bool = RestartOpt,
    amp: Optional[bool] = AmpOpt,
    device: Device = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: Launcher = LauncherOpt,
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
):
    """Train a plain detector (the teacher for the built-in data, or a student baseline)."""
    launcher = relaunch(gpus, launcher)
    # --epochs is the schedule of the model being trained: a role with its own (teacher.epochs in
    # the shapes preset: 36) would otherwise ignore it.
    own = {f"{model.value}.epochs": epochs} if f"{model.value}.epochs" in SETTINGS else {}
    settings = cli_settings(sets, data_root, work_dir, {"train.epochs": epochs, "train.amp": amp, **own})
    api.train(preset, model.value, settings=settings, must_resume=resume, restart=restart, device=device,
              launcher=launcher, verbose=verbose)
