"""The top layer — the ``ikd`` command line (Typer). :mod:`.app` holds the application and the
error handler, :mod:`.options` the shared options; each command is one small function in its own
module that checks its options and calls the stage that does the work, and registers itself on
``app`` when imported here. Nothing below imports this package.

Heavy imports (torch, mmcv, mmdet) happen inside the commands, so ``ikd --help`` stays fast.
"""

from ikd_cli.cli.app import app, main
from ikd_cli.cli import train, evaluate, attack, distill, resume, report, download, presets, data, backdoor  # noqa: F401,E402

__all__ = ["app", "main"]
