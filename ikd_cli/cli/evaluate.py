"""``ikd evaluate``: COCO mAP of any checkpoint, on the val or train split or another copy of its images."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ikd_cli import api
from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import DataRootOpt, Device, DeviceOpt, SetOpt, TrustCheckpointOpt, VerboseOpt, cli_settings
from ikd_cli.config.presets import Role, Split
from ikd_cli.core.errors import IkdError
from ikd_cli.evaluate.corruptions import DEFAULT_SET, NO_CORRUPTIONS, describe_sets


@app.command()
@handle_errors
def evaluate(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pth) to evaluate."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p",
                                         help="Preset to take the model config from when the checkpoint "
                                              "has none embedded (model-zoo files)."),
    model: Role = typer.Option(Role.student, "--model", "-m", help="With --preset: which of its detectors."),
    images: Optional[Path] = typer.Option(None, "--images",
                                          help="Evaluate on another copy of the images (e.g. an adversarial set)."),
    split: Split = typer.Option(Split.val, help="The split's annotations to score against."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Where the metrics JSON goes: a .json file, or a folder (default: "
                                            "beside the checkpoint; for a read-only checkpoint folder)."),
    device: Device = DeviceOpt,
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
    classwise: bool = typer.Option(False, "--classwise",
                                   help="Also AP per class (COCOeval's precision, as mmdet's classwise=True)."),
    robustness: bool = typer.Option(False, "--robustness",
                                    help="Also score the teacher's adversarial val set (transfer), the preset's attack "
                                         "against this checkpoint itself (white-box, cached beside it) and common "
                                         "corruptions (mPC, rPC); each setting is kept and skipped on re-run."),
    corruptions: Optional[str] = typer.Option(None, "--corruptions", metavar="SET|NAMES",
                                    help=f"With --robustness: {describe_sets()}, '{NO_CORRUPTIONS}', or corruption "
                                         f"names separated by commas ('' is an error; '{NO_CORRUPTIONS}' runs no "
                                         f"corruption). [default: {DEFAULT_SET}]"),
    severities: Optional[str] = typer.Option(None, "--severities", metavar="1,3,5",
                                             help="With --robustness: the severities (1-5) instead of the set's."),
    no_whitebox: bool = typer.Option(False, "--no-whitebox",
                                     help="With --robustness: no white-box attack on the checkpoint (the slowest "
                                          "setting; a model whose loss it cannot raise is skipped anyway)."),
):
    """COCO mAP of a checkpoint (pycocotools' COCOeval), as a table and a JSON file beside it."""
    # Without --preset, --set/--data-root apply to the preset embedded in the checkpoint.
    settings = cli_settings(sets, data_root)
    if not robustness and (corruptions is not None or severities is not None or no_whitebox):
        raise IkdError("--corruptions, --severities and --no-whitebox go with --robustness")
    if robustness:
        if images is not None or classwise:
            raise IkdError("--robustness scores its own copies of the images; leave out --images and --classwise "
                           "(run --classwise on its own)")
        api.robustness(checkpoint, preset=preset, model=model.value, split=split.value, settings=settings,
                       corruptions=corruptions, severities=severities, device=device, verbose=verbose,
                       whitebox=not no_whitebox)
        return
    api.evaluate(checkpoint, preset=preset, model=model.value, images=images, split=split.value, settings=settings,
                 device=device, verbose=verbose, classwise=classwise, out=out)
