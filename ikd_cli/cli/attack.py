"""``ikd attack``: adversarial copies of a split's images against the teacher (stage 1 input)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import (DataRootOpt, Device, DeviceOpt, GpusOpt, LauncherOpt, PresetOpt, SetOpt,
                                 TrustCheckpointOpt, VerboseOpt, load_preset, relaunch, setting_option)
from ikd_cli.config.schema import AttackMethod, Split, StorageFormat
from ikd_cli.core.distributed import Launcher
from ikd_cli.core.errors import IkdError


def _opt(key: str, *names: str, help: str = ""):
    return setting_option(f"attack.{key}", *names, help=help)


@app.command()
@handle_errors
def attack(
    preset: str = PresetOpt,
    method: Optional[AttackMethod] = _opt("method"),
    eps: Optional[float] = _opt("eps"),
    alpha: Optional[float] = _opt("alpha"),
    steps: Optional[int] = _opt("steps"),
    decay: Optional[float] = _opt("decay"),
    resize_rate: Optional[float] = _opt("resize_rate"),
    diversity_prob: Optional[float] = _opt("diversity_prob"),
    random_start: Optional[bool] = _opt("random_start", "--random-start/--no-random-start"),
    kernel_len: Optional[int] = _opt("kernel_len"),
    nsig: Optional[float] = _opt("nsig"),
    beta: Optional[float] = _opt("beta"),
    n: Optional[int] = _opt("n", "--n"),
    m: Optional[int] = _opt("m", "--m"),
    batch_size: Optional[int] = _opt("batch_size"),
    limit: Optional[int] = typer.Option(None, help="Attack only the first K images of the split."),
    split: Split = typer.Option(Split.train, help="The split whose images are attacked."),
    checkpoint: Optional[Path] = typer.Option(None, help="Teacher checkpoint (default: the preset's)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the preset's attack.out)."),
    overwrite: bool = typer.Option(False, help="Replace an attack with other settings in the same folder."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Go on without the images `ikd data check` finds "
                                  "missing or unreadable: recorded as skipped; distill trains them without an "
                                  "adversarial copy."),
    format: Optional[StorageFormat] = _opt("format"),
    export: Optional[Path] = typer.Option(None, "--export", metavar="DIR",
                                          help="Instead of attacking: write the finished set (at --out or the "
                                               "preset's) as plain PNG images into DIR, for other tools."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    device: Device = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: Launcher = LauncherOpt,
    workers: int = typer.Option(2, help="Image-loading worker processes."),
    amp: Optional[bool] = _opt("amp", "--amp/--no-amp"),
    record_loss: bool = typer.Option(True, "--record-loss/--no-record-loss",
                                     help="Measure the teacher's loss before and after (2 extra forward passes)."),
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
):
    """Make adversarial examples against the teacher (DI-FGSM family), lossless and resumable."""
    if limit is not None and limit < 1:
        raise IkdError("--limit must be at least 1")
    if export is not None:
        from ikd_cli.attack.export import export_set

        export_set(load_preset(preset, sets, data_root), split=split.value, out=out, dest=export)
        return
    launcher = relaunch(gpus, launcher)
    given = dict(method=method, format=format, eps=eps, alpha=alpha, steps=steps, decay=decay, resize_rate=resize_rate,
                 diversity_prob=diversity_prob, random_start=random_start, kernel_len=kernel_len, nsig=nsig,
                 beta=beta, n=n, m=m, batch_size=batch_size, amp=amp)
    tree = load_preset(preset, sets, data_root, None, {f"attack.{k}": v for k, v in given.items()})
    from ikd_cli.attack.run import run_attack

    run_attack(tree, split=split.value, limit=limit, device=device, launcher=launcher, overwrite=overwrite,
               checkpoint=checkpoint, out=out, workers=workers, record_loss=record_loss, verbose=verbose,
               skip_bad=skip_bad)
