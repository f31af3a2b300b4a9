"""Named presets: YAML files in ``configs/`` that say which teacher, student, data and
hyperparameters an IKD run uses. This module loads them, applies command-line overrides
(``--set distill.alpha_adv=2e-5``) with type checks and near-miss suggestions, and finds the
MMDetection config files they name. Turning a preset into an mmcv ``Config`` lives in
``ikd_cli.mmdet_config`` (it imports mmcv, which this module must not, to keep ``--help`` fast).
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import IkdError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("IKD_CONFIG_DIR", REPO_ROOT / "configs"))
DEFAULT_PRESET = "shapes"

# Every key a preset may set, with its default. A preset YAML is merged onto this tree, so a
# preset names only what differs, and every override is checked against it.
# ``None`` means "no default": any type is accepted.
DEFAULTS: dict[str, Any] = {
    "name": "",
    "description": "",
    "work_dir": "",  # default: work_dirs/<name>
    "teacher": {
        "config": "",  # "mmdet::family/file.py" (a config shipped in mmdet) or "ikd::models/x.py" or a path
        "checkpoint": "",  # where the teacher's weights are (or will be) on disk
        "download": "",  # registry name for `ikd download teacher`
    },
    "student": {
        "config": "",
        "checkpoint": "",  # weights to start the student from (optional)
        "download": "",
    },
    "data": {
        "root": "",
        "train_ann": "",
        "train_images": "",
        "val_ann": "",
        "val_images": "",
        "classes": None,  # list of class names; None keeps the model config's (COCO's 80)
        "img_scale": None,  # [w, h] to replace the configs' resize scale; None keeps theirs
        "samples_per_gpu": 2,
        "workers_per_gpu": 2,
        "shapes": None,  # for the built-in data: {num_train, num_val, image_size, seed}
    },
    "attack": {
        "method": "difgsm",
        "eps": 8.0,
        "alpha": 2.0,
        "steps": 5,
        "decay": 1.0,
        "resize_rate": 0.9,
        "diversity_prob": 0.5,
        "random_start": False,
        "kernel_len": 15,
        "nsig": 3.0,
        "beta": 1.5,
        "n": 20,
        "batch_size": 1,
        "out": "",  # folder of adversarial images, mirrors the training images' relative paths
    },
    "distill": {
        "dfa_until": 16,
        "init_student": True,
        "levels": ["neck.fpn_convs.0.conv", "neck.fpn_convs.1.conv", "neck.fpn_convs.2.conv",
                   "neck.fpn_convs.3.conv", "neck.fpn_convs.4.conv"],
        "fgd": {"temp": 0.5, "alpha": 1e-3, "beta": 5e-4, "gamma": 5e-4, "lambda": 5e-6},
        "alpha_adv": 1e-5,
        "adv_loss": "mse",
        "corruption_prob": 0.3,
        "corruption_severity": 1,
        "small_area": 1024.0,  # 32 x 32 px: an image whose boxes are all below this is "all small"
        "crop_range": 0.8,
    },
    "train": {
        "epochs": 24,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "grad_clip": 35.0,
        "lr_steps": [16, 22],
        "warmup_iters": 500,
        "warmup_ratio": 0.001,
        "checkpoint_interval": 1,
        "eval_interval": 1,
        "max_keep_ckpts": -1,
        "log_interval": 50,
        "seed": 0,
        "gpus": 1,
    },
}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _all_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys.extend(_all_keys(value, prefix + key + "."))
    return keys


def nearest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """'did you mean a, b?' text for an error message, or a short list when nothing is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if not close:
        # Match on the last dotted part too: `--set eps=4` should point at attack.eps.
        tail = word.rsplit(".", 1)[-1]
        close = [c for c in choices if c.rsplit(".", 1)[-1] == tail][:n]
    if close:
        return "did you mean " + ", ".join(close) + "?"
    return "valid keys include " + ", ".join(choices[:8]) + ", ..."


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "text",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default``; ints are accepted where floats are."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, type(default)):
        return value
    raise IkdError(f"{key} must be {_type_name(default)}, got {value!r}")


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    """Deep-merge ``update`` onto a copy of ``base``; unknown keys and wrong types are errors."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = prefix + key
        if key not in out:
            raise IkdError(f"unknown key '{dotted}': {nearest(dotted, _all_keys(DEFAULTS))}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value, dotted + ".")
        elif isinstance(out[key], dict) and value is not None:
            raise IkdError(f"{dotted} is a section ({', '.join(out[key])}); set one of its keys")
        else:
            out[key] = _coerce(dotted, value, out[key])
    return out


def available() -> dict[str, Path]:
    """Preset name -> YAML path, for every ``configs/*.yaml``."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def _preset_path(name_or_path: str) -> Path:
    presets = available()
    if name_or_path in presets:
        return presets[name_or_path]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return path
        raise IkdError(f"preset file not found: {path}")
    raise IkdError(f"unknown preset '{name_or_path}': {nearest(name_or_path, presets)} "
                   "(see `ikd presets list`)")


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``; values are parsed as YAML."""
    parsed = {}
    for item in items:
        if "=" not in item:
            raise IkdError(f"--set takes KEY=VALUE, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed[key.strip()] = _number_or_text(value)
    return parsed


def _number_or_text(value: Any) -> Any:
    # YAML 1.1 reads "2e-5" (no dot) as text; a researcher means a number.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _nest(dotted: dict[str, Any]) -> dict:
    tree: dict = {}
    for key, value in dotted.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise IkdError(f"conflicting overrides for '{key}'")
        node[parts[-1]] = value
    return tree


def load(name_or_path: str = DEFAULT_PRESET, overrides: dict[str, Any] | None = None) -> dict:
    """Load a preset and apply dotted overrides; returns the full, checked preset tree."""
    path = _preset_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise IkdError(f"cannot read preset {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise IkdError(f"preset {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise IkdError(f"preset {path} must be a mapping of keys to values")
    return resolve(raw, overrides, default_name=path.stem)


def resolve(tree: dict, overrides: dict[str, Any] | None = None, default_name: str = "") -> dict:
    """A preset tree (from YAML, or embedded in a checkpoint) merged onto the defaults, with
    dotted overrides applied; every key and type is checked."""
    preset = _merge(DEFAULTS, tree)
    preset["name"] = preset["name"] or default_name
    if overrides:
        flat_keys = set(_flatten(DEFAULTS)) | set(_all_keys(DEFAULTS))
        for key in overrides:
            if key not in flat_keys:
                raise IkdError(f"unknown key '{key}': {nearest(key, _flatten(DEFAULTS))}")
        preset = _merge(preset, _nest(overrides))
    if not preset["work_dir"]:
        preset["work_dir"] = str(Path("work_dirs") / preset["name"])
    return preset


def resolve_config_path(ref: str) -> Path:
    """Find a model config: ``mmdet::retinanet/x.py`` (shipped inside mmdet), ``ikd::models/x.py``
    (in this project's configs/) or a plain path."""
    if not ref:
        raise IkdError("the preset names no model config")
    if ref.startswith("mmdet::"):
        import importlib.util

        spec = importlib.util.find_spec("mmdet")
        if spec is None or not spec.origin:
            raise IkdError("mmdet is not installed; run scripts/install.sh")
        path = Path(spec.origin).parent / ".mim" / "configs" / ref[len("mmdet::"):]
    elif ref.startswith("ikd::"):
        path = CONFIG_DIR / ref[len("ikd::"):]
    else:
        path = Path(ref)
    if not path.is_file():
        raise IkdError(f"model config not found: {ref} ({path})")
    return path


def data_path(preset: dict, key: str) -> Path:
    """A data path from the preset, joined to ``data.root`` when relative."""
    value = preset["data"][key]
    return Path(preset["data"]["root"]) / value if value else Path(preset["data"]["root"])


def dump(preset: dict) -> str:
    return yaml.safe_dump(preset, sort_keys=False, default_flow_style=None)
