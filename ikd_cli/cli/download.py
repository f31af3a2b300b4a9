"""``ikd download``: model-zoo checkpoints, verified by their sha256 prefix, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import SetOpt, load_preset
from ikd_cli.config.presets import DEFAULT_PRESET
from ikd_cli.core.invocation import preset_args
from ikd_cli.core.errors import IkdError


@app.command()
@handle_errors
def download(
    name: Optional[str] = typer.Argument(None, help="teacher, student, a registry name or a URL; none with "
                                                    "--preset: every file the preset needs."),
    dest: Optional[Path] = typer.Option(None, "--dir", "-d", show_default=False,
                                        help="Where checkpoints go (default: checkpoints; with --preset alone, "
                                             "the teacher where teacher.checkpoint says)."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", show_default=False,
                                         help="Preset name or YAML path (default for teacher/student: "
                                              f"{DEFAULT_PRESET})."),
    sets: Optional[List[str]] = SetOpt,
    force: bool = typer.Option(False, help="Replace a file that exists but does not verify."),
    list_: bool = typer.Option(False, "--list", "-l", help="List the registry."),
):
    """Download model-zoo checkpoints (a preset's teacher and its student's ImageNet backbone init),
    verified by sha256, resumable."""
    from ikd_cli.zoo.registry import CHECKPOINTS, resolve
    from ikd_cli.zoo.transfer import download as fetch
    from ikd_cli.core.ui import console

    if list_ or (name is None and preset is None):
        from rich.table import Table

        table = Table("name", "file")
        for key, ck in CHECKPOINTS.items():
            table.add_row(key, ck.filename)
        console.print(table)
        return
    if name is None:
        _download_preset(load_preset(preset, sets), dest, force)
        return
    if name in ("teacher", "student"):
        p = load_preset(preset or DEFAULT_PRESET, sets)
        registry_name = p[name]["download"]
        if not registry_name:
            raise IkdError(f"preset '{p['name']}' has no {name} to download "
                           f"(its {name} is trained with `ikd train {preset_args(p)} --model {name}`)")
        name = registry_name
    ckpt = resolve(name)
    if not ckpt.verifiable:
        console.print(f"[yellow]note:[/] {ckpt.filename} carries no sha256 prefix in its name; it cannot be verified")
    with _DownloadProgress(ckpt.filename) as progress:
        path = fetch(ckpt, dest or Path("checkpoints"), progress=progress, force=force)
    console.print(f"[green]{'verified' if ckpt.verifiable else 'downloaded'}[/] {path}")


def _download_preset(p: dict, dest: Optional[Path], force: bool) -> None:
    """Every file the preset needs from the internet, each verified where mmcv and ikd read it."""
    from rich.markup import escape

    from ikd_cli.core.ui import console
    from ikd_cli.train.downloads import fetch, preset_files

    needed = preset_files(p, dest)
    if not needed:
        console.print(f"preset '{escape(p['name'])}' needs nothing from the internet")
        return
    failed = 0
    for item in needed:  # each file on its own: one that cannot be fetched does not stop the others
        try:
            with _DownloadProgress(item.ckpt.filename) as progress:
                path = fetch(item, force=force, progress=progress)
        except IkdError as err:
            failed += 1
            console.print(f"[red]not fetched[/]: the {escape(item.what)}: {escape(str(err))}", soft_wrap=True)
            continue
        state = "verified" if item.ckpt.verifiable else "downloaded (no hash to verify)"
        console.print(f"[green]{state}[/] {escape(str(path))} ({escape(item.what)})", soft_wrap=True)
    if failed:
        raise IkdError(f"{failed} of {len(needed)} files of preset '{p['name']}' were not fetched (see above)")


class _DownloadProgress:
    """A rich bar with size and speed for a download; a callable for download()."""

    def __init__(self, label: str):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        from ikd_cli.core.ui import console

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self.task = self.progress.add_task(label, total=None)

    def __enter__(self):
        self.progress.start()
        return self

    def __call__(self, done: int, total: Optional[int]):
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        self.progress.stop()
        return False
