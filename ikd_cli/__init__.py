"""ikd: Inconsistent Knowledge Distillation for object detection, on stock MMDetection 2.x.

Importing this package is cheap: torch, mmcv and mmdet are imported only by the commands that
need them, so ``ikd --help`` starts fast.
"""

__version__ = "0.1.0"
