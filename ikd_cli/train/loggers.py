"""The optional logger hooks of a run (``train.tensorboard``, ``train.wandb``): their packages
are installed only when asked, so a run that wants one and lacks it stops before training, in
one line that says how to install it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ikd_cli.core.errors import IkdError

# hook type -> (setting, package to import, how to install it)
OPTIONAL = {
    "TensorboardLoggerHook": ("train.tensorboard", "tensorboard", ".venv/bin/pip install tensorboard"),
    "WandbLoggerHook": ("train.wandb", "wandb",
                        "IKD_WITH_WANDB=1 bash scripts/install.sh (or .venv/bin/pip install wandb)"),
}


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def prepare_logger_hooks(cfg) -> None:
    """Refuse a run whose optional logger is not installed; name the W&B run after its work dir
    and keep its files in the work dir (``<work dir>/wandb``) unless WANDB_DIR says where."""
    for hook in cfg.log_config.hooks:
        if hook["type"] not in OPTIONAL:
            continue
        setting, package, how = OPTIONAL[hook["type"]]
        if not _importable(package):
            raise IkdError(f"{setting} needs the {package} package: {how}")
        if hook["type"] == "WandbLoggerHook":
            kwargs = hook.setdefault("init_kwargs", {})
            kwargs.setdefault("name", "/".join(Path(cfg.work_dir).resolve().parts[-2:]))  # e.g. shapes/distill
            if not os.environ.get("WANDB_DIR"):
                kwargs.setdefault("dir", str(cfg.work_dir))
