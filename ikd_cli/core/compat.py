"""Compatibility mends for stock mmdet 2.28 / mmcv 1.7, applied when ikd trains or attacks.
Each one is small, keeps behaviour where the original works, and says why it exists."""

from __future__ import annotations

import functools

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    _point_valid_flags_device()
    _applied = True


def _point_valid_flags_device() -> None:
    """mmdet 2.28's RepPointsHead.get_points calls ``MlvlPointGenerator.valid_flags`` without a
    device, whose default is ``'cuda'``: RepPoints cannot compute its loss on a machine without a
    GPU (training or attacking). Default to CUDA only where there is CUDA; GPUs are unchanged."""
    import torch
    from mmdet.core.anchor.point_generator import MlvlPointGenerator

    original = MlvlPointGenerator.valid_flags

    @functools.wraps(original)
    def valid_flags(self, featmap_sizes, pad_shape, device=None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return original(self, featmap_sizes, pad_shape, device=device)

    MlvlPointGenerator.valid_flags = valid_flags
