"""Layer 0 — what every stage needs and nothing ikd-specific: the one error type, atomic file
writes, the terminal (console, progress bar, log redirection), small-sample statistics,
processes and devices (torchrun/slurm), reading checkpoints, and small mends to stock
mmdet/mmcv.

Imports nothing from the rest of ``ikd_cli``. Importing this package imports no torch.
"""
