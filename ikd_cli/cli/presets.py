"""``ikd presets list|keys|show|levels``: what presets exist, what keys they may set, what a run of
one would use, and which feature maps its models can distil."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import DataRootOpt, SetOpt, WorkDirOpt, load_preset

presets_app = typer.Typer(help="List the named presets, show one resolved into MMDetection configs, or the feature maps "
                                "its models can distil.",
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


@presets_app.command("keys")
@handle_errors
def presets_keys(
    section: Optional[str] = typer.Argument(None, help="Only the keys of this section (attack, distill, ...)."),
):
    """Every key a preset may set: default, type, choices or bounds, and what it does (the schema)."""
    from rich.table import Table

    from ikd_cli.config.schema import SETTINGS
    from ikd_cli.core.ui import console

    rows = {k: s for k, s in SETTINGS.items() if section is None or k.split(".", 1)[0] == section}
    if not rows:
        from ikd_cli.core.errors import IkdError

        raise IkdError(f"no section '{section}': choose from {', '.join(sorted({k.split('.')[0] for k in SETTINGS}))}")
    table = Table("key", "default", "allowed", "what it does")
    for key, s in rows.items():
        allowed = ", ".join(c.value for c in s.choices) if s.choices else s.bounds_text() or (
            s.valid[0] if s.valid else getattr(s.type, "__name__", ""))
        table.add_row(key, "null" if s.default is None else str(s.default), allowed, s.help, style=None)
    console.print(table, markup=False, highlight=False)


@presets_app.command("show")
@handle_errors
def presets_show(
    name: str = typer.Argument("shapes", help="Preset name or YAML path."),
    model: Optional[Show] = typer.Option(None, "--model", "-m", show_default=False,
                                         help="The merged preset YAML (the default), or the fully resolved "
                                              "MMDetection config of the teacher, the student or the distillation "
                                              "run; not with --path."),
    path: Optional[str] = typer.Option(
        None, "--path", metavar="WHAT",
        help="Print only where something of the run lives on disk, for scripts: attack.out (the training "
             "set's adversarial folder), attack.out_val, a run's final checkpoint: teacher, student, distill, "
             "the runs' folder: work_dir, or a data path: data.train_images, data.val_images, data.train_ann, "
             "data.val_ann."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    work_dir: Optional[str] = WorkDirOpt,
):
    """Print a preset, or one of its fully resolved MMDetection configs."""
    from ikd_cli.config import presets
    from ikd_cli.core.ui import console

    if path is not None and model is not None:  # a path is the same for every --model: one would be ignored
        from ikd_cli.core.errors import IkdError

        raise IkdError(f"--path prints one path of the run, whatever --model says; leave out --model {model.value}")
    preset = load_preset(name, sets, data_root, work_dir)
    if path is not None:
        print(_path_of(preset, path))
        return
    if model in (None, Show.preset):
        console.print(presets.dump(preset), markup=False, highlight=False)
        _say_levels(preset, refuse=False)
        return
    if model is Show.distill:
        from ikd_cli.distill.config import build_distill_config

        _say_levels(preset, refuse=True)
        cfg = build_distill_config(preset)
    else:
        from ikd_cli.config.mmdet import build_config

        cfg = build_config(preset, model.value)
    console.print(cfg.pretty_text, markup=False, highlight=False)


def _say_levels(preset: dict, refuse: bool) -> None:
    """Check ``distill.levels`` on the models (one dry forward each): warnings on stderr; bad
    names refuse the distillation's config, and are a warning under the preset's YAML."""
    from rich.console import Console

    from ikd_cli.core.errors import IkdError
    from ikd_cli.distill.levels import check_preset

    try:
        lines = check_preset(preset)[1]
    except IkdError as err:
        if refuse:
            raise
        lines = [str(err)]
    for line in lines:
        Console(stderr=True, highlight=False).print(f"[yellow]warning[/]: {line}", soft_wrap=True)


@presets_app.command("levels")
@handle_errors
def presets_levels(
    name: str = typer.Argument("shapes", help="Preset name or YAML path."),
    every: bool = typer.Option(False, "--all", help="Also every other module whose output is a feature map."),
    sets: Optional[List[str]] = SetOpt,
):
    """The feature maps the teacher and the student can distil (from one dry forward of each on a
    small image): each extract_feat output (feat.i) and the modules that produce it, with channels
    and stride, and which ones the preset's distill.levels picks."""
    from rich.table import Table

    from ikd_cli.core.errors import IkdError
    from ikd_cli.core.ui import console
    from ikd_cli.distill.levels import candidates

    preset = load_preset(name, sets)
    found = candidates(preset, every)
    for role in ("teacher", "student"):
        table = Table("level", "channels", "stride", "is", "picked", title=f"{role}: {preset[role]['config']}")
        for row in found[role]:
            table.add_row(row["name"], str(row["channels"]), str(row["stride"]),
                          "" if row["output"] is None else f"extract_feat output {row['output']}",
                          "yes" if row["picked"] else "")
        console.print(table)
    for line in found["warnings"]:
        console.print(f"[yellow]warning[/]: {line}", soft_wrap=True)
    if found["error"]:
        raise IkdError(found["error"])
    console.print(f"distill.levels: {preset['distill']['levels']}", markup=False, soft_wrap=True)


_DATA_PATHS = ("data.train_images", "data.val_images", "data.train_ann", "data.val_ann")


def _path_of(preset: dict, what: str) -> str:
    from ikd_cli.config.layout import adversarial_set_dir, final_checkpoint
    from ikd_cli.config.presets import data_path
    from ikd_cli.core.errors import IkdError

    if what in ("attack.out", "attack.out_val"):
        return str(adversarial_set_dir(preset, "val" if what.endswith("_val") else "train"))
    if what in ("teacher", "student", "distill"):
        return str(final_checkpoint(preset, what))
    if what == "work_dir":
        return str(Path(preset["work_dir"]))
    if what in _DATA_PATHS:
        return str(data_path(preset, what.split(".", 1)[1]))
    raise IkdError(f"--path takes attack.out, attack.out_val, teacher, student, distill, work_dir or "
                   f"{', '.join(_DATA_PATHS)}; got '{what}'")
