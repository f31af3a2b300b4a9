"""``ikd presets list|show``: what presets exist, and what a run of one would use."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import DataRootOpt, SetOpt, load_preset

presets_app = typer.Typer(help="List the named presets or show one resolved into MMDetection configs.",
                          no_args_is_help=True)
app.add_typer(presets_app, name="presets")


class Show(str, Enum):
    preset = "preset"
    teacher = "teacher"
    student = "student"
    distill = "distill"


@presets_app.command("list")
@handle_errors
def presets_list():
    """List the named presets."""
    from rich.table import Table

    from ikd_cli.config import presets
    from ikd_cli.core.ui import console

    table = Table("preset", "teacher", "student", "description")
    for name in presets.available():
        p = presets.load(name)
        table.add_row(name, Path(p["teacher"]["config"]).stem, Path(p["student"]["config"]).stem,
                      p["description"])
    console.print(table)


@presets_app.command("show")
@handle_errors
def presets_show(
    name: str = typer.Argument("shapes", help="Preset name or YAML path."),
    model: Show = typer.Option(Show.preset, "--model", "-m",
                               help="The merged preset YAML, or the fully resolved MMDetection config of "
                                    "the teacher, the student or the distillation run."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
):
    """Print a preset, or one of its fully resolved MMDetection configs."""
    from ikd_cli.config import presets
    from ikd_cli.core.ui import console

    preset = load_preset(name, sets, data_root)
    if model is Show.preset:
        console.print(presets.dump(preset), markup=False, highlight=False)
        return
    if model is Show.distill:
        from ikd_cli.distill.config import build_distill_config

        cfg = build_distill_config(preset)
    else:
        from ikd_cli.config.mmdet import build_config

        cfg = build_config(preset, model.value)
    console.print(cfg.pretty_text, markup=False, highlight=False)
