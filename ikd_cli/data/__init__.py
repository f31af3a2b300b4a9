"""Layer 2 — datasets. ``shapes`` makes the built-in synthetic set, ``setup`` makes a preset's
built-in data on first use, ``loading`` builds mmdet datasets with one-line errors for missing or
corrupt annotation files and images.

Imports ``core`` and ``config``. Submodules are imported where used, so this package is free.
"""
