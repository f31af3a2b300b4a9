"""Layer 7 — report: reads finished (or running) runs and writes tables and pictures
(``ikd report``). ``runs`` finds run folders and reads their logs and eval files, ``table``
groups them by arm and does the statistics, ``plots`` draws the curves, ``run`` ties them
together.

Imports ``core``, ``config`` and the list of robustness settings (``evaluate.robustness``,
whose figures it reads); imports no torch and no mmcv (matplotlib only when drawing).
"""
