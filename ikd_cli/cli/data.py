"""``ikd data shapes``: make the built-in synthetic dataset."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import DataRootOpt, PresetOpt, SetOpt, load_preset
from ikd_cli.config.schema import SHAPES

data_app = typer.Typer(help="Make the built-in datasets; check a preset's data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("shapes")
@handle_errors
def data_shapes(
    out: Path = typer.Option(Path("data/shapes"), "--out", "-o", help="Output folder."),
    seed: int = typer.Option(SHAPES["seed"].default, help=SHAPES["seed"].help.capitalize() + "."),
    num_train: int = typer.Option(SHAPES["num_train"].default, help=SHAPES["num_train"].help.capitalize() + "."),
    num_val: int = typer.Option(SHAPES["num_val"].default, help=SHAPES["num_val"].help.capitalize() + "."),
    image_size: int = typer.Option(SHAPES["image_size"].default, help=SHAPES["image_size"].help.capitalize() + "."),
):
    """Generate the built-in synthetic "shapes" detection dataset (COCO format)."""
    from ikd_cli.core.ui import console
    from ikd_cli.data.setup import make_shapes

    layout = make_shapes(out, seed=seed, num_train=num_train, num_val=num_val, image_size=image_size)
    console.print(f"shapes dataset ready in [bold]{layout.root}[/] ({num_train} train, {num_val} val)")


@data_app.command("check")
@handle_errors
def data_check(
    preset: str = PresetOpt,
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    no_images: bool = typer.Option(False, "--no-images", help="Check the annotation files only."),
    json_out: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help="Also write the report as JSON."),
):
    """Check a preset's annotations and images (headers only: fast on COCO) and say what is wrong."""
    from ikd_cli.data.check import check_split, print_reports
    from ikd_cli.config.presets import data_path, preset_classes
    from ikd_cli.data.setup import ensure_dataset

    tree = load_preset(preset, sets, data_root)
    ensure_dataset(tree)
    classes = preset_classes(tree)
    reports = [check_split(split, data_path(tree, f"{split}_ann"),
                           None if no_images else data_path(tree, f"{split}_images"), classes)
               for split in ("train", "val")]
    print_reports(reports)
    if json_out is not None:
        from dataclasses import asdict

        from ikd_cli.core.fileio import atomic_write_json

        atomic_write_json(json_out, [asdict(r) for r in reports])
    if any(r.errors for r in reports):
        raise typer.Exit(1)
