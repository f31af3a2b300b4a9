"""Reading checkpoints with errors a user can act on: a missing or corrupt file, or weights
that do not fit the model (naming the missing and unexpected keys)."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.core.errors import IkdError


def read_checkpoint(path: str | Path) -> dict:
    """torch.load a checkpoint onto the CPU; returns a dict with at least ``state_dict``."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise IkdError(f"checkpoint not found: {path}")
    try:
        # mmcv checkpoints carry meta (config text, class names); they are the user's own files
        # or sha256-verified model-zoo files, so the full unpickler is acceptable here.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise IkdError(f"{path} is not a readable checkpoint ({first})") from None
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        return ckpt
    if isinstance(ckpt, dict) and ckpt and all(hasattr(v, "shape") for v in ckpt.values()):
        return {"state_dict": ckpt, "meta": {}}
    raise IkdError(f"{path} is not a model checkpoint (no state_dict inside)")


def _describe(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_weights(model, state_dict: dict, source: str, *, prefix: str = "", allow_missing=()) -> None:
    """Load ``state_dict`` into ``model`` or raise one line naming what does not fit.

    ``prefix`` selects a sub-tree (``"student."``); keys starting with an ``allow_missing``
    entry may be absent (e.g. a backbone that is trained from scratch)."""
    wanted = model.state_dict()
    given = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if prefix:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix):]
        given[key] = value
    missing = [k for k in wanted if k not in given and not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in given if k not in wanted]
    shape = [k for k in given if k in wanted and tuple(given[k].shape) != tuple(wanted[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if shape:
        k = shape[0]
        problems.append(f"shape mismatch: {k} is {tuple(given[k].shape)} in the checkpoint, "
                        f"{tuple(wanted[k].shape)} in the model" + (f" (+{len(shape) - 1} more)" if len(shape) > 1 else ""))
    if problems:
        raise IkdError(f"checkpoint {source} does not fit the model config: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in given.items() if k in wanted}, strict=False)


def build_detector_with_weights(cfg, state_dict: dict, source: str):
    """Build ``cfg.model`` and load ``state_dict`` into it (checked). ImageNet init of the
    backbone is switched off: the weights come from the checkpoint, and there is no internet."""
    from mmdet.models import build_detector

    cfg.model.pretrained = None
    if cfg.model.get("backbone", {}).get("init_cfg"):
        cfg.model.backbone.init_cfg = None
    model = build_detector(cfg.model)
    load_weights(model, state_dict, source)
    return model


def teacher_checkpoint(preset: dict, given: str | Path | None = None) -> Path:
    """The teacher's checkpoint file (``given`` or the preset's), or an error that says how to get it."""
    path = Path(given or preset["teacher"]["checkpoint"])
    if not path.is_file():
        how = (f"`ikd download teacher --preset {preset['name']}`" if preset["teacher"]["download"]
               else f"`ikd train --preset {preset['name']} --model teacher`")
        raise IkdError(f"teacher checkpoint not found: {path}; get it with {how} or pass --checkpoint")
    return path
