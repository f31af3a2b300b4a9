"""Named presets: YAML files in ``configs/`` that say which teacher, student, data and
hyperparameters an IKD run uses. This module loads them, applies command-line overrides
(``--set distill.alpha_adv=2e-5``) with near-miss suggestions for unknown keys, and finds the
MMDetection config files they name. What each key may hold is :mod:`ikd_cli.config.schema`'s. Turning a preset into an mmcv ``Config`` lives in
``ikd_cli.mmdet_config`` (it imports mmcv, which this module must not, to keep ``--help`` fast).
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from ikd_cli.config import schema
from ikd_cli.config.layout import final_checkpoint
from ikd_cli.core.errors import IkdError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path(os.environ.get("IKD_CONFIG_DIR", REPO_ROOT / "configs"))
DEFAULT_PRESET = "shapes"


# The enums live with the settings they choose between; named here too for the code that
# loads presets.
from ikd_cli.config.schema import (SETTINGS, SHAPES, AdvLoss, AttackMethod, BackdoorAttack,  # noqa: E402,F401
                                   DistillMethod, Role, Split, StorageFormat, check, shown)

# How many values a preset (or a --set value) may hold once its YAML aliases are expanded: far
# above any real preset (the largest holds about 150), far below what exhausts memory (a
# "billion laughs" file of a few hundred bytes expands to 10^9).
MAX_YAML_VALUES = 100_000
# How many bytes a preset file (or a --set value) may hold: the largest real preset is a few KB;
# a file of one 50 MB string kept the YAML parser busy for many minutes before this cap.
MAX_YAML_BYTES = 1 << 20
# How deep a preset's values may nest: a real preset nests 3 levels; the parser recurses a few
# Python frames per level, so "[[[...]]]" 300 deep ended in a RecursionError before this cap.
MAX_YAML_DEPTH = 50


class _YamlTooLarge(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts every value as it will be once aliases are expanded (an
    alias counts as the whole value it names, computed once per anchored node) and stops past
    :data:`MAX_YAML_VALUES`: an anchor bomb is refused while it is still small."""

    def __init__(self, stream):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_YAML_DEPTH:
            raise _YamlTooLarge(f"its values nest more than {MAX_YAML_DEPTH} levels deep (no preset is near that)")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
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


def _check_size(length: int) -> None:
    if length > MAX_YAML_BYTES:
        raise _YamlTooLarge(f"it holds more than {MAX_YAML_BYTES >> 20} MB of text (no preset is near that)")


def load_yaml(text: str):
    """``yaml.safe_load`` with :class:`_BoundedLoader`: the one way ikd reads YAML."""
    _check_size(len(text))
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


SHAPES_DEFAULTS: dict[str, int] = {k: v.default for k, v in SHAPES.items()}

# Every key a preset may set, with its default (from the schema). A preset YAML is merged onto
# this tree, so a preset names only what differs, and every override is checked against it.
DEFAULTS: dict[str, Any] = schema.defaults()


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
            out[key] = check(dotted, value)
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


# Keys a run's saved preset.yaml holds since they exist, with the value every run had before:
# a saved preset lacking one predates it (train.optimizer: runs before it trained with SGD).
SAVED_BEFORE = {"train": {"optimizer": "sgd"}}


def load(name_or_path: str = DEFAULT_PRESET, overrides: dict[str, Any] | None = None, *,
         received: bool = False, saved: bool = False) -> dict:
    """Load a preset and apply dotted overrides; returns the full, checked preset tree.
    ``received``: the file was made elsewhere (a run folder's preset.yaml), see :func:`resolve`;
    ``saved`` (and ``received``): a run's preset.yaml, whose missing keys predate it (:data:`SAVED_BEFORE`)."""
    path = _preset_path(name_or_path)
    try:
        with open(path, "rb") as fh:  # never more than the cap into memory
            data = fh.read(MAX_YAML_BYTES + 1)
        _check_size(len(data))
        raw = load_yaml(data.decode("utf-8")) or {}
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
    if saved or received:
        for section, keys in SAVED_BEFORE.items():
            if isinstance(raw.get(section), dict):
                raw[section] = {**keys, **raw[section]}
    return resolve(raw, overrides, default_name=path.stem, received_from=str(path) if received else "")


def resolve(tree: dict, overrides: dict[str, Any] | None = None, default_name: str = "", *,
            received_from: str = "") -> dict:
    """A preset tree (from YAML, or embedded in a checkpoint) merged onto the defaults, with
    dotted overrides applied; every key and type is checked. ``received_from`` names the file a
    preset made elsewhere came from: its model configs are checked (:func:`check_received_configs`)."""
    preset = _merge(DEFAULTS, tree)
    preset["name"] = preset["name"] or default_name
    own_work_dir = preset["work_dir"] or str(Path("work_dirs") / preset["name"])
    overrides = dict(overrides or {})
    shapes_overrides = {k.rsplit(".", 1)[1]: overrides.pop(k) for k in list(overrides)
                        if k.startswith("data.shapes.")}
    if overrides:
        flat_keys = set(flatten(DEFAULTS)) | set(_all_keys(DEFAULTS))
        for key in overrides:
            if key not in flat_keys:
                raise IkdError(f"unknown key '{key}': {nearest(key, flatten(DEFAULTS))}")
        preset = _merge(preset, schema.nest(overrides))
    if not preset["work_dir"]:
        preset["work_dir"] = str(Path("work_dirs") / preset["name"])
    overridden = set(flatten(schema.nest(overrides)))
    _follow_work_dir(preset, own_work_dir, overridden)
    if "teacher.checkpoint" not in overridden and "checkpoint" not in (tree.get("teacher") or {}):
        _default_teacher_checkpoint(preset)
    preset["data"]["shapes"] = _resolve_shapes(preset["data"]["shapes"], shapes_overrides)
    if received_from:
        check_received_configs(preset, received_from)
    return preset


def _follow_work_dir(preset: dict, own: str, overridden: set) -> None:
    """A path the preset puts in its own work dir (``own``) names what a run there writes (its
    teacher.checkpoint, work_dirs/shapes/teacher/latest.pth, is ``ikd train``'s): where the work
    dir it got holds that file, after ``ikd train --work-dir W``, it is W's. Where W holds none,
    the preset's stays (a study's runs in their own work dirs share the main teacher); so does a
    path set with the overrides."""
    new = Path(preset["work_dir"])
    if new == Path(own):
        return
    for key in schema.work_dir_paths():
        section, leaf = key.split(".")
        value = preset[section][leaf]
        if key in overridden or not value or Path(own) not in Path(value).parents:
            continue
        moved = new / Path(value).relative_to(own)
        if moved.exists():
            preset[section][leaf] = str(moved)


def _default_teacher_checkpoint(preset: dict) -> None:
    """A preset that does not name ``teacher.checkpoint`` reads the file ``ikd train --model
    teacher`` writes, ``<work_dir>/teacher/latest.pth`` of the work dir resolved (the one given,
    whatever is on disk); one that downloads its teacher keeps it empty (``ikd download`` then
    says where). Named empty (``--set teacher.checkpoint=``) it stays so: no teacher weights."""
    if not preset["teacher"]["download"]:
        preset["teacher"]["checkpoint"] = str(final_checkpoint(preset, "teacher"))


def derive(preset: dict, changes: dict) -> dict:
    """A copy of a resolved ``preset`` with dotted ``changes`` applied, resolved and checked like
    any preset (the backdoor victim's and the defences' presets are made this way)."""
    tree = copy.deepcopy(preset)
    for key, value in changes.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return resolve(tree)


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
    return {k: check(f"data.shapes.{k}", merged.get(k, s.default), s) for k, s in SHAPES.items()}


# Where configs known to be safe to load live: mmdet's own config folder and this project's.
KNOWN_CONFIG_PREFIXES = ("mmdet::", "ikd::")
MODEL_ROLES = ("teacher", "student")  # the preset sections that name a model config


def _known_config_root(ref: str) -> Path | None:
    """The folder a ``mmdet::``/``ikd::`` name is inside of (None for a plain path)."""
    if ref.startswith("mmdet::"):
        import importlib.util

        spec = importlib.util.find_spec("mmdet")
        if spec is None or not spec.origin:
            raise IkdError("mmdet is not installed; run scripts/install.sh")
        return Path(spec.origin).parent / ".mim" / "configs"
    if ref.startswith("ikd::"):
        return CONFIG_DIR
    return None


def resolve_config_path(ref: str) -> Path:
    """Find a model config: ``mmdet::retinanet/x.py`` (shipped inside mmdet), ``ikd::models/x.py``
    (in this project's configs/) or a plain path. A known name stays inside its folder: a
    ``..`` (or a link) that leads out of it is refused, so that only a plain path, which a
    received preset may not name without trust (:func:`check_received_configs`), runs a file
    from elsewhere."""
    if not ref:
        raise IkdError("the preset names no model config")
    root = _known_config_root(ref)
    path = Path(ref) if root is None else root / ref.split("::", 1)[1]
    if root is not None and root.resolve() not in path.resolve().parents:
        raise IkdError(f"model config {ref} leads out of {ref.split('::')[0]}'s config folder ({root}); "
                       "name a config inside it, or a path")
    if not path.is_file():
        raise IkdError(f"model config not found: {ref} ({path})")
    return path


def check_received_configs(preset: dict, source: str) -> None:
    """A preset read from a file that was made elsewhere (a checkpoint's embedded preset, a run
    folder's preset.yaml) is data, but the model configs it names are Python that loading runs:
    only known names (:data:`KNOWN_CONFIG_PREFIXES`, inside their folder) load without trust. A
    preset given on the command line is the user's own choice and is not checked here."""
    from ikd_cli.core.checkpoints import TRUST_HINT, checkpoints_trusted

    for role in MODEL_ROLES:
        ref = preset[role]["config"]
        if not ref:
            continue
        if ref.startswith(KNOWN_CONFIG_PREFIXES):
            resolve_config_path(ref)
        elif not checkpoints_trusted():
            raise IkdError(f"{source} names the {role} config {ref}: a Python file, which ikd does not run for a file "
                           f"made elsewhere (only mmdet:: and ikd:: configs load without trust); give the preset "
                           f"with --preset, or {TRUST_HINT}")


def data_path(preset: dict, key: str) -> Path:
    """A data path from the preset, joined to ``data.root`` when relative. An annotation file
    must be named, and an image folder may be the root itself, but not an unnamed one (the
    current folder, by accident: an empty preset)."""
    value, root = preset["data"][key], preset["data"]["root"]
    if not value and (key.endswith("_ann") or not root):
        unset = f"data.{key}" + ("" if root or key.endswith("_ann") else " nor data.root")
        raise IkdError(f"preset {preset['name']} sets no {unset}: name the data (`ikd presets keys data`), "
                       "or start from a preset that does (`ikd presets list`)")
    return Path(root) / value if value else Path(root)


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
