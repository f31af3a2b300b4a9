"""The distillation losses, one per file, each registered into mmdet's ``LOSSES`` when imported:
the distillers on the clean image, ``FGDLoss`` (:mod:`.fgd`) and ``MGDLoss`` (:mod:`.mgd`);
``AdvFeatureLoss`` (:mod:`.adv_feature`, IKD's loss on the adversarial image); NAD's
``AttentionTransferLoss`` (:mod:`.attention`, the backdoor defence). :mod:`.masks` builds FGD's
box masks; :mod:`.common` holds the shape checks they share. Importing this package imports
torch and mmdet (never from ``ikd --help``).
"""

from .adv_feature import AdvFeatureLoss
from .attention import AttentionTransferLoss
from .fgd import FGDLoss, spatial_channel_attention
from .masks import background_mask, foreground_mask
from .mgd import MGDLoss, random_pixel_mask

__all__ = ["AdvFeatureLoss", "AttentionTransferLoss", "FGDLoss", "MGDLoss", "background_mask", "foreground_mask",
           "random_pixel_mask", "spatial_channel_attention"]
