"""``python -m ikd_cli.cli``: how torchrun starts each process of ``--gpus N``."""

from .app import main

main()
