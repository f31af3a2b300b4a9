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
from enum import Enum
from pathlib import Path
from typing import Any, Iterable

import yaml

from ikd_cli.core.errors import IkdError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path(os.environ.get("IKD_CONFIG_DIR", REPO_ROOT / "configs"))
DEFAULT_PRESET = "shapes"


class AttackMethod(str, Enum):
    """``attack.method``: the attacks of :mod:`ikd_cli.attack.methods` (a test keeps the two equal)."""
    difgsm = "difgsm"
    mifgsm = "mifgsm"
    tifgsm = "tifgsm"
    vmifgsm = "vmifgsm"
    m_difgsm = "m_difgsm"
    pgd = "pgd"
    fgsm = "fgsm"


class DistillMethod(str, Enum):
    """``distill.method``: the feature distiller on the clean image, which IKD adds to."""
    fgd = "fgd"  # Focal and Global Distillation (CVPR 2022): distill.fgd.*
    mgd = "mgd"  # Masked Generative Distillation (ECCV 2022): distill.mgd.*


class AdvLoss(str, Enum):
    """``distill.adv_loss``: how the adversarial features are compared."""
    mse = "mse"
    l1 = "l1"
    cwd = "cwd"


class Role(str, Enum):
    """What ``ikd train`` trains."""
    teacher = "teacher"
    student = "student"


class Split(str, Enum):
    """A dataset split of the preset."""
    train = "train"
    val = "val"


class BackdoorAttack(str, Enum):
    """``backdoor.attack``: what a triggered training image teaches the victim (``ikd backdoor``).
    ``misclassify``: every object of the image relabelled to the target class (BadDet's global
    misclassification); ``disappear``: the image's annotations removed (object disappearance)."""
    misclassify = "misclassify"
    disappear = "disappear"


class StorageFormat(str, Enum):
    """``attack.format``: how an adversarial set is stored (both lossless)."""
    delta = "delta"  # the perturbation only, rebuilt on the source: ~2.5x smaller than png (README)
    png = "png"  # whole images, for other tools (about 4x the JPEG source on photographs)


# Keys whose value must be one of a fixed set (checked on load, listed by ``--help``).
CHOICES: dict[str, type[Enum]] = {"attack.method": AttackMethod, "distill.adv_loss": AdvLoss,
                                  "distill.method": DistillMethod,
                                  "attack.format": StorageFormat,
                                  "backdoor.attack": BackdoorAttack, "backdoor.victim": Role}

# Lower bounds of numeric keys: a value below is an error when the preset is loaded (a run of
# zero epochs would otherwise "succeed" without a checkpoint).
MINIMUMS: dict[str, float] = {"train.epochs": 1, "teacher.epochs": 1, "train.lr": 0.0, "distill.dfa_until": 0, "attack.batch_size": 1,
                              "data.samples_per_gpu": 1, "data.workers_per_gpu": 0, "train.checkpoint_interval": 1,
                              "backdoor.victim_epochs": 1, "distill.alpha_adv": 0.0, "distill.mgd.alpha": 0.0}

# Keys whose default is null ("not set": the model config's, the method's or train's own value)
# take only values of this kind when set; anything else (a mapping, a string, a nested list) is
# refused on load, before a run builds a config from it.
def _ints(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _int_list(value) -> bool:
    return isinstance(value, list) and len(value) <= 100 and all(_ints(v) for v in value)


NULLABLE: dict[str, tuple[str, Any]] = {
    "teacher.epochs": ("an integer >= 1", lambda v: _ints(v, 1)),
    "teacher.lr_steps": ("a list of epochs (integers)", _int_list),
    "data.classes": ("a list of names, auto or null",
                     lambda v: v == "auto" or (isinstance(v, list) and len(v) <= 10_000
                                               and all(isinstance(c, str) for c in v))),
    "data.img_scale": ("width and height in pixels (a list of two integers >= 1)",
                       lambda v: isinstance(v, list) and len(v) == 2 and all(_ints(x, 1) for x in v)),
    "data.shapes": ("a mapping or null", lambda v: isinstance(v, dict)),
    "attack.decay": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "attack.random_start": ("true/false", lambda v: isinstance(v, bool)),
    "train.threads": ("an integer >= 1", lambda v: _ints(v, 1)),
    "backdoor.victim_epochs": ("an integer >= 1", lambda v: _ints(v, 1)),
    "backdoor.victim_lr_steps": ("a list of epochs (integers)", _int_list),
}

# How many values a preset (or a --set value) may hold once its YAML aliases are expanded: far
# above any real preset (the largest holds about 150), far below what exhausts memory (a
# "billion laughs" file of a few hundred bytes expands to 10^9).
MAX_YAML_VALUES = 100_000


class _YamlTooLarge(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts every value as it will be once aliases are expanded (an
    alias counts as the whole value it names, computed once per anchored node) and stops past
    :data:`MAX_YAML_VALUES`: an anchor bomb is refused while it is still small."""

    def __init__(self, stream):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent, index):
        node = super().compose_node(parent, index)
        if id(node) not in self._sizes:
            if isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._sizes.get(id(c), 1) for c in node.value)
            elif isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
            else:
                size = 1
            if size > MAX_YAML_VALUES:
                raise _YamlTooLarge(f"its aliases expand to more than {MAX_YAML_VALUES:,} values "
                                    "(an alias bomb?); write the values out")
            self._sizes[id(node)] = size
        return node


def load_yaml(text: str):
    """``yaml.safe_load`` with :class:`_BoundedLoader`: the one way ikd reads YAML."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# The built-in shapes data's size when a preset asks for it (``data.shapes: {}``); each key can be
# set in the preset or with --set data.shapes.num_val=500.
# 500 val images: evaluation noise well under the 1 AP effects the study looks for.
SHAPES_DEFAULTS: dict[str, int] = {"num_train": 400, "num_val": 500, "image_size": 160, "seed": 0}

# Every key a preset may set, with its default. A preset YAML is merged onto this tree, so a
# preset names only what differs, and every override is checked against it.
# ``None`` means "not set"; what such a key accepts when set is in NULLABLE.
DEFAULTS: dict[str, Any] = {
    "name": "",
    "description": "",
    "work_dir": "",  # default: work_dirs/<name>
    "teacher": {
        "config": "",  # "mmdet::family/file.py" (a config shipped in mmdet) or "ikd::models/x.py" or a path
        "checkpoint": "",  # where the teacher's weights are (or will be) on disk
        "download": "",  # registry name for `ikd download teacher`
        # `ikd train --model teacher` only: a longer schedule than train.epochs/lr_steps (teachers
        # are trained longer than their students, as in the model zoo); null = train's.
        "epochs": None,
        "lr_steps": None,
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
        "classes": None,  # class names; "auto": the train file's categories in id order; None: the model config's
        "img_scale": None,  # [w, h] to replace the configs' resize scale; None keeps theirs
        "samples_per_gpu": 2,
        "workers_per_gpu": 2,
        "shapes": None,  # the built-in data: a mapping over SHAPES_DEFAULTS ({} = the defaults)
    },
    # The pixel-changing options of `ikd attack` (each method takes the ones it uses). ``None``
    # means "the method's own default", for the two options whose default differs by method:
    # decay (1.0 for the momentum methods, 0.0 for tifgsm as in torchattacks) and random_start
    # (on for pgd as in Madry et al., off for the others).
    "attack": {
        "method": "difgsm",
        "eps": 8.0,
        "alpha": 2.0,
        "steps": 5,
        "decay": None,
        "resize_rate": 0.9,
        "diversity_prob": 0.5,
        "random_start": None,
        "kernel_len": 15,
        "nsig": 3.0,
        "beta": 1.5,
        "n": 20,
        "m": 4,
        "batch_size": 1,
        "format": "delta",  # how the set is stored: delta (compact, lossless) or png
        "amp": False,  # mixed precision for the teacher's passes (bf16 autocast; pixels stay fp32)
        "out": "",  # folder of adversarial images, mirrors the training images' relative paths
    },
    "distill": {
        "dfa_until": 16,
        "init_student": True,
        "levels": ["neck.fpn_convs.0.conv", "neck.fpn_convs.1.conv", "neck.fpn_convs.2.conv",
                   "neck.fpn_convs.3.conv", "neck.fpn_convs.4.conv"],
        "method": "fgd",  # the distiller IKD adds to: fgd or mgd (its weights below)
        "fgd": {"temp": 0.5, "alpha": 1e-3, "beta": 5e-4, "gamma": 5e-4, "lambda": 5e-6},
        # MGD: alpha weighs the loss, lambda is the share of student pixels masked out
        "mgd": {"alpha": 2e-5, "lambda": 0.65},
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
        "amp": False,  # mixed precision training: fp16 + loss scaling on GPU (mmcv), bf16 autocast on CPU
        "tensorboard": False,  # also log to TensorBoard (<work dir>/tf_logs; needs `pip install tensorboard`)
        "seed": 0,
        "gpus": 1,
        # torch's intra-op thread count for train, distill and attack (float sums are reordered by
        # it, so a run is repeatable to the last digit only at one count); null: leave it as is
        # (OMP_NUM_THREADS, or torch's default). Each run's run.json records the count it used.
        "threads": None,
    },
    # `ikd backdoor`: a BadNets-style trigger poisons a share of the training set (the attacker
    # trains the victim on it); the defences get the victim and a small clean share of the data.
    "backdoor": {
        "attack": "misclassify",  # misclassify (every object -> target_class, BadDet) or disappear
        "target_class": "",  # a class name; "" = the training file's first category (by id)
        "rate": 0.1,  # share of the training images that carry the trigger, in (0, 1]
        "trigger_size": 0.05,  # side of the checkerboard trigger, as a share of the image's shorter side
        "seed": 0,  # which images carry the trigger, where it lands, the defender's clean subset
        "out": "",  # the poisoned set; default data/{name}_backdoor_{attack}_{rate:g}_s{seed}
        "victim": "teacher",  # which model config of the preset the attacker trains
        # The attacker's schedule: weights to start from ("" = the model config's own init, i.e.
        # from scratch here; a checkpoint, or "teacher" for teacher.checkpoint: a clean model the
        # attacker fine-tunes on the poisoned set) and epochs / lr steps (null = what
        # `ikd train --model <victim>` uses).
        "victim_init": "",
        "victim_epochs": None,
        "victim_lr_steps": None,
        "victim_checkpoint": "",  # default: the victim that `ikd backdoor train-victim` trains
        "clean_fraction": 0.05,  # the defender's clean share of the training images, in (0, 1]
        "score_thr": 0.3,  # ASR counts detections with at least this score ...
        "iou_thr": 0.5,  # ... and at least this IoU with a ground-truth object
        "epochs": 24,  # each defence's schedule on the clean subset (2x shape: lr steps 16, 22)
        "lr": 0.01,
        "lr_steps": [16, 22],
        "warmup_iters": 10,
        "dfa_until": 16,  # the IKD defence: epochs with IKD's augmentation + adversarial features
        # NAD's attention transfer: beta * ||a_s - a_t||_2 per level (see distill/losses/attention.py)
        "nad": {"p": 2.0, "levels": ["backbone.layer2", "backbone.layer3", "backbone.layer4"],
                "betas": [1.0, 2.0, 4.0]},
    },
}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
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
    """Check ``value`` against the type of ``default`` (ints are accepted where floats are) and,
    for a key with fixed choices, against them."""
    if key in CHOICES and value is not None:
        names = [c.value for c in CHOICES[key]]
        if isinstance(value, Enum):
            value = value.value
        if value not in names:
            raise IkdError(f"{key} must be one of {', '.join(names)}; got {value!r}")
        return value
    if value is None:
        return value
    if key in NULLABLE:  # checked by kind, whatever a preset already set it to
        kind, ok = NULLABLE[key]
        if not ok(value):
            raise IkdError(f"{key} must be {kind} or null, got {_shown(value)}")
        return float(value) if key == "attack.decay" else value
    if default is None:
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
    raise IkdError(f"{key} must be {_type_name(default)}, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    """Deep-merge ``update`` onto a copy of ``base``; unknown keys and wrong types are errors."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"  # a YAML key may be a number (``1: 2``): named, not concatenated
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
            value = load_yaml(raw) if raw.strip() else ""
        except _YamlTooLarge as err:
            raise IkdError(f"--set {key.strip()}: {err}") from None
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
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise IkdError(f"cannot read preset {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise IkdError(f"preset {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                       f"{err.start}); save it as UTF-8") from None
    except _YamlTooLarge as err:
        raise IkdError(f"preset {path}: {err}") from None
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
    overrides = dict(overrides or {})
    shapes_overrides = {k.rsplit(".", 1)[1]: overrides.pop(k) for k in list(overrides)
                        if k.startswith("data.shapes.")}
    if overrides:
        flat_keys = set(flatten(DEFAULTS)) | set(_all_keys(DEFAULTS))
        for key in overrides:
            if key not in flat_keys:
                raise IkdError(f"unknown key '{key}': {nearest(key, flatten(DEFAULTS))}")
        preset = _merge(preset, _nest(overrides))
    if not preset["work_dir"]:
        preset["work_dir"] = str(Path("work_dirs") / preset["name"])
    preset["data"]["shapes"] = _resolve_shapes(preset["data"]["shapes"], shapes_overrides)
    _check_minimums(preset)
    return preset


def _check_minimums(preset: dict) -> None:
    flat = flatten(preset)
    for key, low in MINIMUMS.items():
        if flat.get(key) is not None and flat[key] < low:
            raise IkdError(f"{key} must be at least {low:g}, got {flat[key]:g}")


def _resolve_shapes(shapes: Any, overrides: dict[str, Any]) -> dict | None:
    """``data.shapes`` filled from :data:`SHAPES_DEFAULTS`, or None when the data is not built in."""
    if shapes is None:
        if overrides:
            raise IkdError("data.shapes.* applies only to the built-in data (this preset's data.shapes is null)")
        return None
    if not isinstance(shapes, dict):
        raise IkdError(f"data.shapes must be a mapping over {', '.join(SHAPES_DEFAULTS)}, or null")
    merged = {**shapes, **overrides}
    for key in merged:
        if key not in SHAPES_DEFAULTS:
            raise IkdError(f"unknown key 'data.shapes.{key}': choose from {', '.join(SHAPES_DEFAULTS)}")
    return {k: _coerce(f"data.shapes.{k}", merged.get(k, v), v) for k, v in SHAPES_DEFAULTS.items()}


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


def preset_classes(preset: dict) -> list[str] | None:
    """The class names a run uses: ``data.classes``, or with ``auto`` the training annotation
    file's categories in id order; None keeps the model config's own (COCO's 80)."""
    classes = preset["data"]["classes"]
    if classes is None:
        return None
    if classes == "auto":
        from ikd_cli.core.fileio import read_json

        data = read_json(data_path(preset, "train_ann"), "training annotation file")
        cats = data.get("categories") if isinstance(data, dict) else None
        if not cats:
            raise IkdError(f"data.classes=auto: {data_path(preset, 'train_ann')} has no categories")
        return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise IkdError(f"data.classes must be a non-empty list of names, auto or null; got {classes!r}")
    return classes
