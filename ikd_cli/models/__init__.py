"""Modules that ``ikd`` registers into a stock MMDetection 2.x.

Importing this package registers the distillation losses (``FGDLoss``, ``AdvFeatureLoss``) into
``mmdet.models.builder.LOSSES``. It imports torch, mmcv and mmdet, so only training code imports it
(never ``ikd --help``).
"""

from . import losses  # noqa: F401  (registers the losses)
