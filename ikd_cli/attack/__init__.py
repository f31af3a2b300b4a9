"""Layer 3 — stage 1 of the pipeline: adversarial images against the teacher (``ikd attack``).

``methods/`` holds the attacks (pure torch, one small class per method on one base);
``teacher_loss`` is what they maximise on a detector; ``batch`` attacks one batch (used by the
command and by ``scripts/bench_attack.py``); ``manifest`` is the output folder's bookkeeping
(settings, per-image records); ``run`` is the command's work.

Imports ``core``, ``config`` and ``data``.
"""
