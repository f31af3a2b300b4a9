"""The distillation losses, one per file, each registered into mmdet's ``LOSSES`` when imported:
the distillers on the clean image (config/distillers.py lists them), ``FGDLoss`` (:mod:`.fgd`),
``MGDLoss`` (:mod:`.mgd`), ``CWDLoss`` (:mod:`.cwd`) and ``PKDLoss`` (:mod:`.pkd`);
``AdvFeatureLoss`` (:mod:`.adv_feature`, IKD's loss on the adversarial image); NAD's
``AttentionTransferLoss`` (:mod:`.attention`, the backdoor defence). :mod:`.masks` builds FGD's
box masks; :mod:`.common` holds the shape checks they share. Importing this package imports
torch and mmdet (never from ``ikd --help``).
"""

from .adv_feature import AdvFeatureLoss
from .attention import AttentionTransferLoss
from .cwd import CWDLoss, channel_wise_divergence
from .fgd import FGDLoss, spatial_channel_attention
from .masks import background_mask, foreground_mask
from .mgd import MGDLoss, random_pixel_mask
from .pkd import PKDLoss, channel_standardised

__all__ = ["AdvFeatureLoss", "AttentionTransferLoss", "CWDLoss", "FGDLoss", "MGDLoss", "PKDLoss", "background_mask",
           "channel_standardised", "channel_wise_divergence", "foreground_mask", "random_pixel_mask",
           "spatial_channel_attention"]
