"""``ikd download``: model-zoo checkpoints, verified by their sha256 prefix, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import PresetOpt, load_preset
from ikd_cli.core.invocation import preset_args
from ikd_cli.core.errors import IkdError


@app.command()
@handle_errors
def download(
    name: Optional[str] = typer.Argument(None, help="teacher, student, a registry name or a URL."),
    dest: Path = typer.Option(Path("checkpoints"), "--dir", "-d", help="Where checkpoints go."),
    preset: str = PresetOpt,
    force: bool = typer.Option(False, help="Replace a file that exists but does not verify."),
    list_: bool = typer.Option(False, "--list", "-l", help="List the registry."),
):
    """Download a model-zoo checkpoint, verified by sha256, resumable."""
    from ikd_cli.zoo.download import CHECKPOINTS, resolve
    from ikd_cli.zoo.download import download as fetch
    from ikd_cli.core.ui import console

    if list_ or name is None:
        from rich.table import Table

        table = Table("name", "file")
        for key, ck in CHECKPOINTS.items():
            table.add_row(key, ck.filename)
        console.print(table)
        return
    if name in ("teacher", "student"):
        p = load_preset(preset, None)
        registry_name = p[name]["download"]
        if not registry_name:
            raise IkdError(f"preset '{p['name']}' has no {name} to download "
                           f"(its {name} is trained with `ikd train {preset_args(p)} --model {name}`)")
        name = registry_name
    ckpt = resolve(name)
    if not ckpt.verifiable:
        console.print(f"[yellow]note:[/] {ckpt.filename} carries no sha256 prefix in its name; it cannot be verified")
    with _DownloadProgress(ckpt.filename) as progress:
        path = fetch(ckpt, dest, progress=progress, force=force)
    console.print(f"[green]{'verified' if ckpt.verifiable else 'downloaded'}[/] {path}")


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
