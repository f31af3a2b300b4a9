"""The training recipe of a run: what a preset keeps of the model config's and what it replaces.

``train.optimizer: config`` keeps the model config's optimizer (type, lr, ``paramwise_cfg``),
gradient clip, lr schedule, epochs and ``custom_hooks``; a ``train.*`` value the preset sets
replaces its part only. ``sgd`` is the reference presets' recipe: SGD with every ``train.*``
value, a step schedule and no custom hooks. Either way each replacement is one line
(:func:`apply_recipe` returns them), which the training commands say and keep in run.json.

A recipe key is set where it is not null (its schema default): null keeps the model config's
value, or under ``sgd`` takes the reference's (``schema.SGD_RECIPE``).
"""

from __future__ import annotations

import copy
import numbers

from ikd_cli.config.schema import SGD_RECIPE
from ikd_cli.core.errors import IkdError

# The train.* keys that replace a part of the model config's recipe, by part.
OPTIMIZER_KEYS = ("lr", "weight_decay", "momentum")
SCHEDULE_KEYS = ("lr_steps", "warmup_iters", "warmup_ratio")
RECIPE_KEYS = (*OPTIMIZER_KEYS, "grad_clip", *SCHEDULE_KEYS, "epochs")
SGD_WHY = "train.optimizer: sgd"
PARTS = ("optimizer", "grad clip", "lr_config", "epochs")


def recipe_values(preset: dict, role: str) -> tuple[dict, dict]:
    """(train.* for ``role``, with the teacher's own epochs and lr_steps in their place; the keys
    of those the preset sets -> their dotted name, for the lines)."""
    t = dict(preset["train"])
    given = {k: f"train.{k}" for k in RECIPE_KEYS if t[k] is not None}
    if role == "teacher":
        for key in ("epochs", "lr_steps"):
            if preset["teacher"].get(key) is not None:
                t[key], given[key] = preset["teacher"][key], f"teacher.{key}"
    for key in RECIPE_KEYS:  # what a null key is where the model config has no value for it
        if t[key] is None:
            t[key] = SGD_RECIPE[key]
    return t, given


def apply_recipe(cfg, preset: dict, role: str) -> list[str]:
    """Write the run's recipe into ``cfg`` (the model config); returns one line per part it replaced."""
    t, given = recipe_values(preset, role)
    before = _parts(cfg)
    hooks = [h.get("type", "?") for h in cfg.get("custom_hooks") or []]
    if t["optimizer"] == "sgd":
        _sgd(cfg, t)
        why = dict.fromkeys(PARTS, SGD_WHY)
    else:
        why = _keep(cfg, t, given)
    after = _parts(cfg)
    lines = [f"{part}: {_text(part, before[part])} (model config) -> {_text(part, after[part])} ({why[part]})"
             for part in PARTS if before[part] != after[part]]
    if hooks and not cfg.get("custom_hooks"):
        lines.append(f"custom_hooks dropped: {', '.join(hooks)} ({SGD_WHY})")
    if cfg.get("fp16"):  # mmdet's train_detector would make it an Fp16OptimizerHook; ikd's runs use train.amp
        lines.append(f"fp16: {_plain(cfg.fp16)} (model config) -> not used (train.amp: {str(t['amp']).lower()})")
    return lines


def _sgd(cfg, t: dict) -> None:
    """The reference presets' recipe, exactly as every ikd run had it before ``train.optimizer``."""
    cfg.optimizer = dict(type="SGD", lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    cfg.optimizer_config = dict(grad_clip=_clip(t["grad_clip"]))
    cfg.lr_config = dict(policy="step", warmup="linear" if t["warmup_iters"] else None,
                         warmup_iters=t["warmup_iters"], warmup_ratio=t["warmup_ratio"], step=list(t["lr_steps"]))
    cfg.runner = dict(type="EpochBasedRunner", max_epochs=t["epochs"])
    cfg.custom_hooks = []


def _clip(max_norm: float):
    return dict(max_norm=max_norm, norm_type=2) if max_norm else None


def _keep(cfg, t: dict, given: dict) -> dict[str, str]:
    """The model config's recipe with the parts the preset sets replaced; returns why each part changed."""
    why = {}
    if not cfg.get("optimizer"):
        cfg.optimizer = dict(type="SGD", lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
        why["optimizer"] = "the model config has none: train.lr, train.momentum, train.weight_decay"
    else:
        keys = [k for k in OPTIMIZER_KEYS if k in given]
        if "momentum" in keys and not _takes_momentum(cfg.optimizer):
            raise IkdError(f"train.momentum={t['momentum']:g}: the model config's optimizer {cfg.optimizer['type']} "
                           "takes no momentum; leave train.momentum null, or set train.optimizer: sgd")
        why["optimizer"] = ", ".join(given[k] for k in keys if cfg.optimizer.get(k) != t[k])
        cfg.optimizer.update({k: t[k] for k in keys})
    if "grad_clip" in given:
        cfg.optimizer_config = dict(cfg.get("optimizer_config") or {}, grad_clip=_clip(t["grad_clip"]))
        why["grad clip"] = given["grad_clip"]
    elif cfg.get("optimizer_config") is None:
        cfg.optimizer_config = dict(grad_clip=None)  # mmcv's OptimizerHook needs one; no clip is the config's
    why["lr_config"] = _schedule(cfg, t, given)
    why["epochs"] = _epochs(cfg, t, given)
    return why


def _takes_momentum(optimizer) -> bool:
    import inspect

    from mmcv.runner.optimizer import OPTIMIZERS

    cls = OPTIMIZERS.get(optimizer["type"])
    return "momentum" in optimizer or (cls is not None and "momentum" in inspect.signature(cls).parameters)


def _schedule(cfg, t: dict, given: dict) -> str:
    """The model config's lr_config with the preset's lr_steps and warmup; a policy other than
    step becomes step (with the config's warmup) where the preset sets lr_steps."""
    keys = [k for k in SCHEDULE_KEYS if k in given]
    lr = _plain(cfg.get("lr_config")) or {}
    fields = {"lr_steps": "step", "warmup_iters": "warmup_iters", "warmup_ratio": "warmup_ratio"}
    changed = [given[k] for k in keys if lr.get(fields[k]) != t[k]]  # the keys that change it, for the line
    if "lr_steps" in given:
        if lr.get("policy") != "step":
            lr = dict(policy="step", **{k: v for k, v in lr.items() if k.startswith("warmup")})
        lr["step"] = list(t["lr_steps"])
    if "warmup_iters" in given:
        lr.update(warmup=(lr.get("warmup") or "linear") if t["warmup_iters"] else None, warmup_iters=t["warmup_iters"])
        lr.setdefault("warmup_ratio", t["warmup_ratio"])
    if "warmup_ratio" in given:
        lr["warmup_ratio"] = t["warmup_ratio"]
    if keys:
        cfg.lr_config = lr
    return ", ".join(changed)


def _epochs(cfg, t: dict, given: dict) -> str:
    runner = cfg.get("runner") or {}
    epoch_based = runner.get("max_epochs") is not None
    epochs = t["epochs"] if "epochs" in given or not epoch_based else runner["max_epochs"]
    cfg.runner = dict(type="EpochBasedRunner", max_epochs=epochs)
    if "epochs" in given:
        return given["epochs"]
    return "" if epoch_based else "the model config's runner is not epoch-based: train.epochs"


def _parts(cfg) -> dict:
    """The parts of ``cfg``'s recipe a preset may replace, as plain values to compare and show."""
    return {"optimizer": _plain(cfg.get("optimizer")),
            "grad clip": _plain((cfg.get("optimizer_config") or {}).get("grad_clip")),
            "lr_config": _plain(cfg.get("lr_config")),
            "epochs": (cfg.get("runner") or {}).get("max_epochs")}


def _plain(value):
    """mmcv's ConfigDicts (and lists of them) as plain dicts and lists, copied."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.copy(value)


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, numbers.Real) and not isinstance(value, bool) else str(value)


def _text(part: str, value) -> str:
    """'AdamW lr 0.0001, weight_decay 0.0001, paramwise_cfg', 'max_norm 35', 'step [16, 22], linear
    warmup 500 iters, ratio 0.001', '24': a part of a recipe in a few words."""
    if value is None or value == {}:
        return "none"
    if part == "optimizer":
        rest = [k if isinstance(v, dict) else f"{k} {_number(v)}" for k, v in value.items() if k not in ("type", "lr")]
        return ", ".join([f"{value.get('type')} lr {_number(value.get('lr'))}", *rest])
    if part == "grad clip":
        return f"max_norm {_number(value.get('max_norm'))}"
    if part == "lr_config":
        text = f"{value.get('policy')}" + (f" {value['step']}" if "step" in value else "")
        if value.get("warmup"):
            text += (f", {value['warmup']} warmup {value.get('warmup_iters')} iters, ratio "
                     f"{_number(value.get('warmup_ratio'))}")
        rest = [f"{k} {_number(v)}" for k, v in value.items() if k not in ("policy", "step") and not k.startswith("warmup")]
        return ", ".join([text, *rest])
    return _number(value)
