"""The distillation losses, one per file, each registered into mmdet's ``LOSSES`` when imported:
``FGDLoss`` (:mod:`.fgd`, on the clean image) and ``AdvFeatureLoss`` (:mod:`.adv_feature`, IKD's
loss on the adversarial image). :mod:`.masks` builds FGD's box masks; :mod:`.common` holds the
shape checks both use. Importing this package imports torch and mmdet (never from ``ikd --help``).
"""

from .adv_feature import AdvFeatureLoss
from .fgd import FGDLoss, spatial_channel_attention
from .masks import background_mask, foreground_mask

__all__ = ["AdvFeatureLoss", "FGDLoss", "background_mask", "foreground_mask", "spatial_channel_attention"]
