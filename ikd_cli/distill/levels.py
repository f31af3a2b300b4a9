"""Distill levels, found rather than guessed: which feature maps of a detector can be distilled,
read off one dry forward of its ``extract_feat`` on a small blank image.

A level is ``feat.i`` (the i-th map ``extract_feat`` returns: the neck's outputs, or the
backbone's where there is no neck) or the name of a module that runs once in ``extract_feat`` and
returns a 4-D tensor; ``distill.levels: auto`` is every ``feat.i``. Channels and strides come from
the shapes of that forward, not from module attributes (an ``L2Norm``, a ``ResLayer`` or an
``nn.Sequential`` states no channels). A module whose output is the very tensor of ``feat.i`` is
listed beside it. A child of an mmcv ``ConvModule`` (``X.conv``) whose output is not the
ConvModule's (a norm or an activation follows it) is a warning: it distils pre-activation features.

:func:`probe` is the dry forward; :func:`resolve` turns ``distill.levels`` into (student, teacher)
pairs or one line naming every bad name with the closest valid ones; :func:`check_preset` does
both for a preset (``ikd presets show``, before ``ikd train`` and ``ikd attack``);
:func:`candidates` is ``ikd presets levels``. The distiller records what ``extract_feat``
received and returned with :class:`Recorder`.
"""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ikd_cli.core.errors import IkdError

AUTO = "auto"
FEAT = "feat."
# The dry forward's image sides, tried in order: 128 costs little and gives every power-of-two
# stride up to 128 exactly (a stride is the side over the map's height); a model of fixed input
# size (SSD300's last layers need 3x3 maps) runs at 320, its strides then rounded (300 -> 320).
SIDES = (128, 320)
ROLES = ("student", "teacher")


def feat_name(index: int) -> str:
    return f"{FEAT}{index}"


class DryForwardError(IkdError):
    """A model's extract_feat did not run on the dry forward's image (not a bad level name)."""


class Recorder:
    """Wraps one detector instance's ``extract_feat``: keeps what its last call received
    (``input``) and returned (``outputs``, a list of tensors), so that the distiller takes
    ``feat.i`` without a module and runs the teacher on exactly the tensor the student saw
    (YOLOX resizes its batch inside ``forward_train``). A bound method, not a closure: a deep
    copy of the detector gets a recorder of its own copy."""

    def __init__(self, net):
        self.inner = net.extract_feat
        self.input = None
        self.outputs: Optional[list] = None
        net.extract_feat = self  # the instance's attribute hides the class's method

    def __call__(self, img, *args, **kwargs):
        out = self.inner(img, *args, **kwargs)
        self.input = img
        self.outputs = list(out) if isinstance(out, (list, tuple)) else [out]
        return out

    def clear(self) -> None:
        self.input = self.outputs = None


@dataclass(frozen=True)
class FeatureMap:
    name: str
    channels: int
    stride: int
    output: Optional[int] = None  # the index of the extract_feat output this tensor is (None: none)


@dataclass
class Probe:
    """What one dry forward of a detector's extract_feat showed."""
    model: str  # the detector's class, for messages
    side: int
    maps: dict[str, FeatureMap]  # every valid level: feat.i first, then modules in the order they ran
    refused: dict[str, str] = field(default_factory=dict)  # module name -> why it is no level
    inner: dict[str, str] = field(default_factory=dict)  # ConvModule child -> its ConvModule (outputs differ)

    @property
    def outputs(self) -> list[FeatureMap]:
        return [m for name, m in self.maps.items() if name.startswith(FEAT)]

    def producers(self, index: int) -> list[str]:
        """The modules whose output is the tensor of ``feat.<index>``."""
        return [n for n, m in self.maps.items() if m.output == index and not n.startswith(FEAT)]


def _is_map(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and value.dim() == 4


def _what(value) -> str:
    if isinstance(value, (list, tuple)):
        return f"its output is a {type(value).__name__} of {len(value)} values, not one feature map"
    shape = getattr(value, "shape", None)
    return f"its output is a {len(shape)}-D tensor, not a feature map" if shape is not None else \
        f"its output is a {type(value).__name__}, not a feature map"


def probe(net) -> Probe:
    """One dry forward of ``net.extract_feat`` on a blank image (eval mode, no gradients; the
    model's modes are restored): every feature map it can give, with channels and stride."""
    error = None
    for side in SIDES:
        try:
            return _probe_at(net, side)
        except Exception as err:  # noqa: BLE001  (too small an image for this model: the next side)
            error = err
    found = _probe_on_gpu(net)  # a model with a GPU-only op (CARAFE) is built on the CPU all the same
    if found is not None:
        return found
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise DryForwardError(f"a dry forward of {type(net).__name__}'s extract_feat on a {SIDES[-1]}x{SIDES[-1]} "
                          f"image failed, so its distill levels cannot be listed: {first}")


def _probe_on_gpu(net) -> Optional[Probe]:
    """The dry forward on the GPU, where there is one and the model is on the CPU (moved back after)."""
    import torch

    param = next(net.parameters(), None)
    if not torch.cuda.is_available() or param is None or param.device.type != "cpu":
        return None
    try:
        net.cuda()
        return _probe_at(net, SIDES[-1])
    except Exception:  # noqa: BLE001  (the CPU's error is the one said)
        return None
    finally:
        net.cpu()


def _probe_at(net, side: int) -> Probe:
    import torch

    outputs: dict[str, Any] = {}
    calls: dict[str, int] = {}

    def keeper(name):
        def hook(module, inputs, output):
            outputs[name] = output
            calls[name] = calls.get(name, 0) + 1
        return hook

    handles = [m.register_forward_hook(keeper(n)) for n, m in net.named_modules() if n]
    was_training = net.training
    try:
        net.eval()
        param = next(net.parameters(), None)
        img = torch.zeros(1, 3, side, side, device=param.device if param is not None else "cpu")
        with torch.no_grad():
            feats = net.extract_feat(img)
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    feats = list(feats) if isinstance(feats, (list, tuple)) else [feats]
    return _read(net, side, feats, outputs, calls)


def _read(net, side: int, feats: list, outputs: dict, calls: dict) -> Probe:
    """The probe's table from one forward's outputs (kept alive, so identity is the same tensor)."""
    index = {id(f): i for i, f in enumerate(feats)}
    found = Probe(type(net).__name__, side, {})

    def fmap(name, out, i):
        return FeatureMap(name, int(out.shape[1]), max(1, round(side / out.shape[-2])), i)

    for i, f in enumerate(feats):
        if _is_map(f):
            found.maps[feat_name(i)] = fmap(feat_name(i), f, i)
    for name, out in outputs.items():
        if calls[name] > 1:
            found.refused[name] = f"it runs {calls[name]} times in extract_feat (its last output would be taken)"
        elif _is_map(out):
            found.maps[name] = fmap(name, out, index.get(id(out)))
        else:
            found.refused[name] = _what(out)
    for name, module in net.named_modules():
        if name and name not in outputs:
            found.refused[name] = "it does not run in extract_feat"
    found.inner = _convmodule_children(net, outputs)
    return found


def _convmodule_children(net, outputs: dict) -> dict[str, str]:
    """``X.conv`` (or ``X.bn``) -> ``X`` where X is a ConvModule whose output is another tensor."""
    from mmcv.cnn import ConvModule

    inner = {}
    for name, module in net.named_modules():
        if not name or not isinstance(module, ConvModule) or name not in outputs:
            continue
        for child, _ in module.named_children():
            full = f"{name}.{child}"
            if full in outputs and outputs[full] is not outputs[name] and _is_map(outputs[full]):
                inner[full] = name
    return inner


# ---------------------------------------------------------------------------------- resolving
def _pair(level) -> tuple[str, str]:
    if isinstance(level, dict):
        return str(level["student"]), str(level["teacher"])
    return str(level), str(level)


def resolve(levels, student: Probe, teacher: Probe, where: str = "distill.levels") -> list[tuple[str, str]]:
    """``levels`` (``auto``, or names / ``{student:, teacher:}`` pairs) -> (student, teacher)
    pairs; every bad name at once, each with the closest valid names, in one IkdError."""
    if levels == AUTO:
        n_s, n_t = len(student.outputs), len(teacher.outputs)
        if n_s != n_t or not n_s:
            raise IkdError(f"{where}: auto pairs the maps extract_feat returns, but the student's gives {n_s} and "
                           f"the teacher's {n_t}; name the levels as {{student: ..., teacher: ...}} pairs "
                           "(`ikd presets levels PRESET` lists them)")
        return [(feat_name(i), feat_name(i)) for i in range(n_s)]
    pairs = [_pair(level) for level in levels]
    problems = _bad_names(pairs, student, teacher)
    if not problems and student.side == teacher.side:  # strides read off images of one size compare
        problems = [f"level {s}: the student's map has stride {student.maps[s].stride}, the teacher's "
                    f"({t}) {teacher.maps[t].stride}" for s, t in pairs if student.maps[s].stride != teacher.maps[t].stride]
    if problems:
        raise IkdError(f"{where}: {'; '.join(problems)} (`ikd presets levels PRESET` lists every feature map; "
                       f"{AUTO} takes the maps extract_feat returns)")
    return pairs


def _bad_names(pairs: list[tuple[str, str]], student: Probe, teacher: Probe) -> list[str]:
    """One text per bad name, in order; a name bad in both models alike is said once."""
    said = {}  # (name, why) -> the roles
    for role, found, names in (("student", student, [s for s, _ in pairs]), ("teacher", teacher, [t for _, t in pairs])):
        for name in dict.fromkeys(names):
            if name not in found.maps:
                why = found.refused.get(name) or f"no such module in {found.model}"
                close = difflib.get_close_matches(name, list(found.maps), n=3, cutoff=0.6)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                said.setdefault((name, why + hint), []).append(role)
    return [f"'{name}' is no feature map of the {' and the '.join(roles)}: {why}" for (name, why), roles in said.items()]


def warnings(pairs: list[tuple[str, str]], student: Probe, teacher: Probe) -> list[str]:
    """One line naming the levels inside a ConvModule that a norm or activation follows (none: [])."""
    said = {}  # (name, its ConvModule) -> the roles
    for role, found, names in (("student", student, [s for s, _ in pairs]), ("teacher", teacher, [t for _, t in pairs])):
        for name in dict.fromkeys(names):
            if name in found.inner:
                said.setdefault((name, found.inner[name]), []).append(role)
    if not said:
        return []
    return ["distill levels inside an mmcv ConvModule, before its norm or activation, distil pre-activation "
            "features: " + "; ".join(f"'{name}' of the {' and the '.join(roles)} (name '{outer}' for the module's "
                                     f"output)" for (name, outer), roles in said.items())]


# ------------------------------------------------------------------------------------ presets
def build_model(preset: dict, role: str):
    """The ``role``'s detector as its model config builds it (no weights loaded, nothing downloaded)."""
    from mmdet.models import build_detector

    from ikd_cli.config.mmdet import load_mmdet_config
    from ikd_cli.config.presets import resolve_config_path

    cfg = load_mmdet_config(resolve_config_path(preset[role]["config"]))
    model = copy.deepcopy(cfg.model)  # mmdet's DETRHead changes the config it is built from
    model.pop("pretrained", None)
    try:
        return build_detector(model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    except Exception as err:  # noqa: BLE001  (mmdet raises many types for a config it cannot build)
        raise DryForwardError(f"cannot build the {role}'s model from {preset[role]['config']}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None


def probe_preset(preset: dict) -> dict[str, Probe]:
    """The dry forward of the preset's student and teacher (one, where both name the same config)."""
    probes = {"student": probe(build_model(preset, "student"))}
    same = preset["teacher"]["config"] == preset["student"]["config"]
    probes["teacher"] = probes["student"] if same else probe(build_model(preset, "teacher"))
    return probes


def check_preset(preset: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """The preset's ``distill.levels`` as (student, teacher) pairs and the warnings about them;
    an IkdError naming every bad name at once."""
    probes = probe_preset(preset)
    pairs = resolve(preset["distill"]["levels"], probes["student"], probes["teacher"])
    return pairs, warnings(pairs, probes["student"], probes["teacher"])


def check_before_run(preset: dict, command: str) -> None:
    """``ikd train`` and ``ikd attack`` check the levels the distillation will use before their
    hours of work; a model the dry forward cannot run (a GPU-only op) is a warning, not a stop."""
    from ikd_cli.core.machine import pin_compute
    from ikd_cli.core.ui import console

    if not (preset["teacher"]["config"] and preset["student"]["config"]):
        return  # nothing to check yet; the command says what the preset lacks
    pin_compute(preset)  # the run's threads and kernels (train.cpu_kernels) before the first kernel runs
    try:
        lines = check_preset(preset)[1]
    except DryForwardError as err:
        lines = [f"{err} (not checked before `ikd {command}`)"]
    for line in lines if os.environ.get("RANK", "0") == "0" else ():  # said once under torchrun
        console.print(f"[yellow]warning[/]: {line}", soft_wrap=True, markup=True)


def candidates(preset: dict, every: bool = False) -> dict:
    """``ikd presets levels``: per role, each candidate level (``feat.i``, the modules that
    produce it, the levels the preset picks, and with ``every`` every other 4-D map) as rows
    ``{name, channels, stride, output, picked}``; ``pairs`` and ``warnings`` as the check
    gives them, or ``error``: its line."""
    probes = probe_preset(preset)
    result: dict[str, Any] = {"pairs": [], "warnings": [], "error": ""}
    try:
        result["pairs"] = resolve(preset["distill"]["levels"], probes["student"], probes["teacher"])
        result["warnings"] = warnings(result["pairs"], probes["student"], probes["teacher"])
    except IkdError as err:
        result["error"] = str(err)
    for i, role in enumerate(ROLES):
        picked = {pair[i] for pair in result["pairs"]}
        if result["error"] and preset["distill"]["levels"] != AUTO:
            picked = {_pair(level)[i] for level in preset["distill"]["levels"]}
        result[role] = _rows(probes[role], picked, every)
    return result


def _rows(found: Probe, picked: set, every: bool) -> list[dict]:
    names = []
    for out in found.outputs:
        names += [out.name, *found.producers(out.output)]
    names += [n for n in found.maps if n not in names and (every or n in picked)]
    return [dict(name=n, channels=found.maps[n].channels, stride=found.maps[n].stride, output=found.maps[n].output,
                 picked=n in picked) for n in names]
