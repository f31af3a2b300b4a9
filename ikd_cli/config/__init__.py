"""Layer 1 — settings. ``presets`` (YAML presets merged on one typed default tree: the single
home of every setting and its default), ``mmdet`` (a preset -> a teacher's or student's mmdet
Config) and ``layout`` (where runs and adversarial sets live on disk, and what their files are
called).

Imports only ``core``. ``presets`` and ``layout`` import no torch and no mmcv.
"""
