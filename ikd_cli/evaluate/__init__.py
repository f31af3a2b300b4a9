"""Layer 6 — COCO evaluation of any checkpoint (``ikd evaluate``).

Imports the layers below it (a checkpoint may come from any stage).
"""
