"""``ikd resume WORK_DIR``: continue an interrupted train or distill run from its latest full
checkpoint, with the preset it was started with. Above both stages, so it lives with the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import Device, DeviceOpt, GpusOpt, LauncherOpt, TrustCheckpointOpt, VerboseOpt, relaunch
from ikd_cli.core.distributed import Launcher


@app.command()
@handle_errors
def resume(
    work_dir: Path = typer.Argument(..., help="The run's folder, e.g. work_dirs/shapes/distill."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Check that the run is of this preset."),
    device: Device = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: Launcher = LauncherOpt,
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
):
    """Continue an interrupted distill or train run where it stopped (same stage, epoch, optimiser)."""
    launcher = relaunch(gpus, launcher)
    resume_run(work_dir, preset_name=preset, device=device, launcher=launcher, verbose=verbose)


def resume_run(work_dir: Path, *, preset_name: str | None, device, launcher: str, verbose: bool):
    from ikd_cli.config import presets
    from ikd_cli.config.layout import PRESET_FILE, RUN_FILE
    from ikd_cli.core.errors import IkdError
    from ikd_cli.core.fileio import read_json

    work_dir = Path(work_dir)
    if not (work_dir / RUN_FILE).is_file() or not (work_dir / PRESET_FILE).is_file():
        raise IkdError(f"{work_dir} is not an ikd run folder (no {RUN_FILE} / {PRESET_FILE})")
    run = read_json(work_dir / RUN_FILE, "run file")
    if run.get("command") not in ("train", "distill"):
        raise IkdError(f"{work_dir} is the '{run.get('step', run.get('command'))}' step of `ikd {run.get('command')}`; "
                       f"run that same command again to continue it")
    saved = presets.load(str(work_dir / PRESET_FILE), received=True)  # a run folder may come from anyone
    from ikd_cli.core.invocation import remember

    remember(saved, str(work_dir / PRESET_FILE), {})  # hints name the preset this run was saved with
    if preset_name and preset_name != saved["name"]:
        raise IkdError(f"{work_dir} is a run of preset '{saved['name']}', not '{preset_name}'")
    from ikd_cli.train.session import resume_point

    if resume_point(work_dir)[0] is None:
        raise IkdError(f"nothing to resume in {work_dir}: no checkpoint was saved yet (start the run again)")
    # DIR itself is continued, not the folder its saved preset names (a copied run folder
    # continues the copy; the original is left alone)
    if run["command"] == "distill":
        from ikd_cli.distill.run import run_distill

        run_distill(saved, device=device, launcher=launcher, verbose=verbose, must_resume=True, work_dir=work_dir)
    else:
        from ikd_cli.train.run import train_detector

        train_detector(saved, run["role"], device=device, launcher=launcher, verbose=verbose, must_resume=True,
                       work_dir=work_dir)
