"""Layer 4 — training through mmcv's runner (``ikd train``, and the loop under ``ikd distill``).

``runner`` (the runner with atomic checkpoints, the DDP wrapper), ``hooks`` (progress, finite
loss), ``engine`` (one training run), ``session`` (the set-up every training command shares:
device, processes, data, work dir, run files, log), ``run`` (``ikd train``).

Imports ``core``, ``config`` and ``data``.
"""
