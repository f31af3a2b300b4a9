"""Reading checkpoints with errors a user can act on: a missing or corrupt file, a file that
holds more than weights (refused unless trusted), or weights that do not fit the model (naming
the missing and unexpected keys)."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

from ikd_cli.core.errors import IkdError


# Checkpoints are pickles, and a pickle can run any code while it loads. ikd reads them with
# torch's restricted unpickler (tensors, OrderedDict, containers, numbers, strings: all that the
# files written by mmcv 1.7's runner, by ikd and in the model zoo's format hold, see
# tests/test_checkpoints.py) plus numpy scalars: mmcv's EvalHook stores the best score as the
# dataset's evaluate() returned it (a numpy float for some datasets) in meta.hook_msgs. Anything
# else needs the user's explicit trust.
TRUST_ENV = "IKD_TRUST_CHECKPOINT"  # "1": this process and those it starts trust every checkpoint
TRUST_HINT = "pass --trust-checkpoint (or set IKD_TRUST_CHECKPOINT=1) only if you trust where the file comes from"
# Only these spell trust: a user who writes IKD_TRUST_CHECKPOINT=false means no, and a value
# that is neither (a typo) is an error rather than a guess either way.
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def trust_checkpoints(trusted: bool = True) -> None:
    """Trust (or stop trusting) every checkpoint this process reads: full unpickling, and the
    config text a checkpoint carries may be run. An environment variable, so that torchrun's
    ranks, data-loading workers and the Python API see the same answer without a preset key."""
    if trusted:
        os.environ[TRUST_ENV] = "1"
    else:
        os.environ.pop(TRUST_ENV, None)


def checkpoints_trusted() -> bool:
    value = os.environ.get(TRUST_ENV, "")
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise IkdError(f"{TRUST_ENV}={value!r} is neither true ({', '.join(_TRUE)}) nor false "
                   f"({', '.join(_FALSE[1:])} or unset); set it to one of those")


def _numpy_scalar_types() -> list:
    """What a numpy scalar unpickles through: its constructor, np.dtype and the dtype's class."""
    import numpy as np
    from numpy.core.multiarray import scalar

    return [scalar, np.dtype, *{type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"}]


def _load(path: Path, trusted: bool):
    import torch

    if trusted:
        return torch.load(path, map_location="cpu", weights_only=False)
    with torch.serialization.safe_globals(_numpy_scalar_types()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _untrusted_types(path: Path, err: Exception) -> str:
    """The type(s) a refused file needs, as torch names them ('posix.system')."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a legacy (non-zip) file cannot be listed: take the name from the message
        names = []
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in _numpy_scalar_types()} | {"numpy.core.multiarray.scalar"}
    names = [n for n in names if n not in allowed] or re.findall(r"GLOBAL (\S+)", str(err))[:1]
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more if names else "a type torch does not load by default"


def read_checkpoint(path: str | Path, *, trust: bool | None = None) -> dict:
    """Load a checkpoint onto the CPU; returns a dict with at least ``state_dict``. Only the
    types checkpoints hold are unpickled unless ``trust`` (default: :func:`checkpoints_trusted`)."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise IkdError(f"checkpoint not found: {path}")
    trusted = checkpoints_trusted() if trust is None else trust
    try:
        ckpt = _load(path, trusted)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        # torch's restricted unpickler names "GLOBAL module.type" for a type it will not build;
        # its other complaints ("Unsupported operand ...") mean bytes that are no pickle at all.
        if not trusted and "Weights only load failed" in str(err) and re.search(r"GLOBAL \S", str(err)):
            raise IkdError(f"{path} holds {_untrusted_types(path, err)}, which a checkpoint does not need and "
                           f"which could run code when loaded; refused: {TRUST_HINT}") from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        first = reason.group(1).strip() if reason else (str(err).splitlines()[0] if str(err) else err.__class__.__name__)
        raise IkdError(f"{path} is not a readable checkpoint ({first})") from None
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        return ckpt
    if isinstance(ckpt, dict) and ckpt and all(hasattr(v, "shape") for v in ckpt.values()):
        return {"state_dict": ckpt, "meta": {}}
    raise IkdError(f"{path} is not a model checkpoint (no state_dict inside)")


def config_from_checkpoint(ckpt: dict, source: str, *, trust: bool | None = None):
    """The mmcv Config in a checkpoint's ``meta.config`` text. That text is Python and mmcv
    runs it to build the Config, so it is read only from a trusted checkpoint."""
    if not (checkpoints_trusted() if trust is None else trust):
        raise IkdError(f"{source} carries its config as Python text, which ikd does not run from an untrusted file; "
                       f"say which config with --preset NAME --model teacher|student, or {TRUST_HINT}")
    from mmcv import Config

    return Config.fromstring(ckpt["meta"]["config"], ".py")


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
    unfit = _not_finite_floats(given, wanted)
    if unfit:
        raise IkdError(f"checkpoint {source} {unfit}: its weights are not finite floats; refused")
    model.load_state_dict({k: v for k, v in given.items() if k in wanted}, strict=False)


def _not_finite_floats(given: dict, wanted: dict) -> str:
    """'' when every weight the model holds as a float is a finite float in the checkpoint, else
    what the first other one is: an integer tensor would be cast silently, and one NaN makes
    every output NaN (a teacher so broken attacks nothing and teaches nothing)."""
    import torch

    for key, target in wanted.items():
        value = given.get(key)
        if not isinstance(value, torch.Tensor) or not target.is_floating_point():
            continue
        if not value.is_floating_point():
            return f"holds {key} as {str(value.dtype).removeprefix('torch.')}, where the model has a float tensor"
        if not bool(torch.isfinite(value).all()):
            return f"holds non-finite values (nan or inf) in {key}"
    return ""


def build_detector_with_weights(cfg, state_dict: dict, source: str):
    """Build ``cfg.model`` and load ``state_dict`` into it (checked). ImageNet init of the
    backbone is switched off: the weights come from the checkpoint, and there is no internet."""
    from mmdet.models import build_detector

    cfg.model.pretrained = None
    if cfg.model.get("backbone", {}).get("init_cfg"):
        cfg.model.backbone.init_cfg = None
    # a copy: some heads change their config while built (DETRHead turns class_weight into a
    # tensor), and the next build from ``cfg`` (evaluate --robustness builds twice) must see it as written
    model = build_detector(copy.deepcopy(cfg.model))
    load_weights(model, state_dict, source)
    return model
