"""Every setting a preset may hold, in one table: its default, type, choices, bounds and help.

The table is read by the preset loader (:mod:`ikd_cli.config.presets`: every key and value of a
YAML file or a ``--set`` is checked here, once), by the command line (``--help`` defaults, Typer
``Enum`` choices and ``min``/``max``), by the attack and loss classes (their constructor defaults
and argument checks), and by ``ikd presets keys``. A setting's default is written nowhere else.

A setting also says which outputs depend on it: ``attack_set`` names it in an adversarial set's
``attack.json`` (a set made with another value is "other settings"), so that check cannot forget
one. Pure Python: no torch, no mmcv (``ikd --help`` reads it).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional

from ikd_cli.config.distillers import DISTILLERS
from ikd_cli.core.errors import IkdError


class AttackMethod(str, Enum):
    """``attack.method``: the attacks of :mod:`ikd_cli.attack.methods` (each class names itself)."""
    difgsm = "difgsm"
    mifgsm = "mifgsm"
    tifgsm = "tifgsm"
    vmifgsm = "vmifgsm"
    m_difgsm = "m_difgsm"
    pgd = "pgd"
    fgsm = "fgsm"


# ``distill.method``: the feature distiller on the clean image, which IKD adds to; its weights are
# distill.<method>.*. The members are the keys of config/distillers.py's table, the one list.
DistillMethod = Enum("DistillMethod", [(name, name) for name in DISTILLERS], type=str, module=__name__)


class AdvLoss(str, Enum):
    """``distill.adv_loss``: how the adversarial features are compared (see AdvFeatureLoss)."""
    mse = "mse"
    l1 = "l1"
    cwd = "cwd"


class Role(str, Enum):
    """What ``ikd train`` trains."""
    teacher = "teacher"
    student = "student"


class CpuKernels(str, Enum):
    """``train.cpu_kernels``: the widest vector instructions torch's CPU kernels may use."""
    native = "native"  # the CPU's best (AVX-512 where it has it)
    avx2 = "avx2"  # at most AVX2: a CPU with AVX-512 computes as an AVX2-only one does


class TrainOptimizer(str, Enum):
    """``train.optimizer``: whose training recipe a run uses (see the row's help)."""
    config = "config"  # the model config's optimizer, clip, lr schedule, epochs and custom_hooks
    sgd = "sgd"  # the reference presets' SGD from train.*, the model config's recipe replaced


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
    delta = "delta"  # the perturbation only, rebuilt on the source (smaller than png)
    png = "png"  # whole images, for other tools


# What one checkpoint's COCO evaluation reports, in COCOeval.stats order (evaluate and report).
METRICS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")


def _int_list(value) -> bool:
    return isinstance(value, list) and len(value) <= 100 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def _names(value) -> bool:
    return isinstance(value, list) and len(value) <= 10_000 and all(isinstance(v, str) and v for v in value)


def _levels(value) -> bool:
    """``distill.levels``: auto, or a list of names and {student: name, teacher: name} pairs."""
    def level(v) -> bool:
        if isinstance(v, dict):
            return set(v) == {"student", "teacher"} and all(isinstance(n, str) and n for n in v.values())
        return isinstance(v, str) and bool(v)
    return value == "auto" or (isinstance(value, list) and 0 < len(value) <= 10_000 and all(map(level, value)))


@dataclass(frozen=True)
class MachineBound:
    """A bound that is the machine's, read when a value is checked (a preset travels between
    machines); the help and the references name it, as they cannot say its number."""
    name: str
    read: Callable[[], float]


CPU_COUNT = MachineBound("the CPU count", lambda: os.cpu_count() or 1)


def _bound(value) -> float:
    return value.read() if isinstance(value, MachineBound) else value


@dataclass(frozen=True)
class Setting:
    """One key of a preset.

    ``default`` None means "not set" (the model config's, the method's or another key's value
    applies); the type of a set value is then ``kind``, else the default's. ``valid`` is an extra
    check with its wording (``("a list of epochs", fn)``). ``attack_set`` is the setting's name in
    an adversarial set's ``attack.json`` when the set's pixels depend on it; ``pixels`` marks the
    options handed to the attack method itself; ``distill_ignores`` those a distillation does not
    hold against a set (a study shares one set between seeds and batch sizes). ``per_method``: an
    attack option's default where it depends on ``attack.method`` (method -> default; the methods
    that take the option), read by their constructors. ``follows_work_dir``: a path that, when the
    preset puts it inside its own work dir (what a run there writes), is read from the work dir
    given instead where that holds it.
    """
    default: Any
    help: str = ""
    kind: Optional[type] = None
    choices: Optional[type[Enum]] = None
    low: Optional[float] = None
    high: Optional[float | MachineBound] = None
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False
    valid: Optional[tuple[str, Callable[[Any], bool]]] = None
    attack_set: str = ""
    pixels: bool = False
    distill_ignores: bool = False
    per_method: Optional[dict[str, Any]] = None
    follows_work_dir: bool = False

    @property
    def type(self) -> Optional[type]:
        return self.kind if self.default is None else type(self.default)

    def bounds_text(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            high = self.high.name if isinstance(self.high, MachineBound) else f"{self.high:g}"
            parts.append(f"{'<' if self.high_open else '<='} {high}")
        return " and ".join(parts)


def _s(default, help="", **kw) -> Setting:
    return Setting(default, help, **kw)


def _pix(default, help, **kw) -> Setting:
    """An option of the attack method: it decides the pixels, the set records it."""
    return Setting(default, help, pixels=True, **kw)


def _pix_by_method(help: str, per_method: dict[str, Any], **kw) -> Setting:
    """An option of the attack method whose default is each method's own (null in a preset); its
    help says them, from ``per_method``."""
    methods: dict[Any, list[str]] = {}
    for method, value in per_method.items():
        methods.setdefault(value, []).append(method)
    said = "; ".join(f"{str(v).lower() if isinstance(v, bool) else v} for {', '.join(m)}" for v, m in methods.items())
    return _pix(None, f"{help} (null: the method's own: {said})", per_method=per_method, **kw)


# The reference's SGD recipe: what a null train.* recipe key is under train.optimizer: sgd (under
# config, null keeps the model config's value). Read by config/recipe.py.
SGD_RECIPE: dict[str, Any] = {"epochs": 24, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "grad_clip": 35.0,
                              "lr_steps": [16, 22], "warmup_iters": 500, "warmup_ratio": 0.001}


def _recipe(key: str, help: str, **kw) -> Setting:
    """A train.* key of the recipe: null by default (the model config's, or SGD_RECIPE's under sgd)."""
    sgd = SGD_RECIPE[key]
    return _s(None, f"{help} (null: the model config's; {sgd} under train.optimizer: sgd)", kind=type(sgd), **kw)


# The built-in shapes data's size when a preset asks for it (``data.shapes: {}``); each key can be
# set in the preset or with --set data.shapes.num_val=500.
# 500 val images: evaluation noise well under the 1 AP effects the study looks for.
SHAPES: dict[str, Setting] = {
    "num_train": _s(400, "training images", low=1),
    "num_val": _s(500, "validation images", low=1),
    "image_size": _s(160, "side of the square images, in pixels", low=1),
    "seed": _s(0, "random seed: the same seed gives the same files", low=0),
}

SETTINGS: dict[str, Setting] = {
    "name": _s("", "the preset's name (default: the YAML file's stem)"),
    "description": _s(""),
    "work_dir": _s("", "where runs write (default: work_dirs/<name>); given another (--work-dir W), a path the "
                       "preset puts in its own (teacher.checkpoint ...) is W's where W holds that file"),
    # -- the models --------------------------------------------------------------------------------
    "teacher.config": _s("", '"mmdet::family/file.py" (shipped in mmdet), "ikd::models/x.py" or a path',
                         attack_set="teacher_config"),
    "teacher.checkpoint": _s("", "where the teacher's weights are (or will be) on disk; a preset that names none "
                                 "(and no teacher.download) reads <work_dir>/teacher/latest.pth, where `ikd train "
                                 "--model teacher` writes it", follows_work_dir=True),
    "teacher.download": _s("", "registry name for `ikd download teacher`"),
    # Teachers are trained longer than their students, as in the model zoo; null = train's.
    "teacher.epochs": _s(None, "`ikd train --model teacher` epochs (null: train.epochs)", kind=int, low=1),
    "teacher.lr_steps": _s(None, "`ikd train --model teacher` lr steps (null: train.lr_steps)", kind=list,
                           valid=("a list of epochs (integers)", _int_list)),
    "student.config": _s(""),
    "student.checkpoint": _s("", "weights to start the student from (optional)", follows_work_dir=True),
    "student.download": _s(""),
    # the zoo configs' init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'), fetched
    # by `ikd download --preset`
    "student.pretrained": _s(True, "start the student's backbone from the ImageNet weights its model config "
                                   "names (false: random weights, nothing to download)"),
    # -- the data ----------------------------------------------------------------------------------
    "data.root": _s(""),
    "data.train_ann": _s(""),
    "data.train_images": _s(""),
    "data.val_ann": _s(""),
    "data.val_images": _s(""),
    "data.classes": _s(None, "class names; auto: the training file's categories in id order; null: the "
                             "model config's", kind=list,
                       valid=("a list of names, auto", lambda v: v == "auto" or _names(v))),
    "data.img_scale": _s(None, "[w, h] replacing the configs' resize scale (null keeps theirs)", kind=list,
                         valid=("width and height in pixels (a list of two integers >= 1)",
                                lambda v: isinstance(v, list) and len(v) == 2 and _int_list(v) and min(v) >= 1)),
    "data.samples_per_gpu": _s(2, "images per batch per process", low=1),
    "data.workers_per_gpu": _s(2, "data loading processes per process", low=0),
    "data.shapes": _s(None, "the built-in data: a mapping over data.shapes.* ({} = the defaults)", kind=dict),
    # -- the attack (stage 1's adversarial images) -------------------------------------------------
    "attack.method": _pix("difgsm", "attack method", choices=AttackMethod),
    "attack.eps": _pix(8.0, "L-inf budget, 0-255 pixel units", low=0.0, low_open=True, high=255.0),
    "attack.alpha": _pix(2.0, "step size, pixel units", low=0.0, low_open=True),
    "attack.steps": _pix(5, "iterations", low=1),
    # Two options whose default differs by method: null = the method's own.
    "attack.decay": _pix_by_method("momentum decay", {"difgsm": 1.0, "mifgsm": 1.0, "tifgsm": 0.0, "vmifgsm": 1.0,
                                                      "m_difgsm": 1.0}, kind=float, low=0.0),
    "attack.resize_rate": _pix(0.9, "input diversity: smallest resize factor", low=0.0, low_open=True, high=1.0),
    "attack.diversity_prob": _pix(0.5, "input diversity: probability per step", low=0.0, high=1.0),
    "attack.random_start": _pix_by_method("start from a random point in the eps-ball",
                                          {"difgsm": False, "mifgsm": False, "tifgsm": False, "vmifgsm": False,
                                           "m_difgsm": False, "pgd": True}, kind=bool),
    "attack.kernel_len": _pix(15, "TI-FGSM gaussian kernel length", low=1),
    "attack.nsig": _pix(3.0, "TI-FGSM kernel radius in sigmas", low=0.0, low_open=True),
    "attack.beta": _pix(1.5, "VMI-FGSM neighbourhood factor", low=0.0),
    "attack.n": _pix(20, "VMI-FGSM neighbours sampled", low=1),
    "attack.m": _pix(4, "M-DI-FGSM input-diversity draws averaged per step", low=1),
    # CenterNet's only classification-like term is its heatmap (loss_center_heatmap): no 'cls' in it
    "attack.loss_keys": _s(None, "the detector's loss terms the attack raises, by name or wildcard (CenterNet: "
                                 "loss_center_heatmap; s*.loss_cls); null: its classification terms, every loss "
                                 "key with 'cls' in it", kind=list,
                           valid=("a list of loss names", _names), attack_set="loss_keys"),
    "attack.batch_size": _s(1, "images attacked at once", low=1, attack_set="batch_size", distill_ignores=True),
    "attack.format": _s("delta", "how the set is stored: delta (the perturbation, rebuilt exactly on the source; smaller than png) or png", choices=StorageFormat,
                        attack_set="format", distill_ignores=True),
    "attack.amp": _s(False, "mixed precision for the teacher's passes (bf16 autocast; pixels stay fp32)",
                     attack_set="amp"),
    "attack.out": _s("", "folder of the adversarial set, mirroring the training images' paths; "
                         "{method}, {eps}, {steps} are filled in", follows_work_dir=True),
    # -- distillation ------------------------------------------------------------------------------
    "distill.dfa_until": _s(16, "last epoch of stage 1 (IKD's augmentation + adversarial features); 0 = the "
                                "distiller alone", low=0),
    "distill.init_student": _s(True, "start the student's neck and head from the teacher's"),
    "distill.levels": _s("auto", "the feature maps distilled: auto (every map the detector's extract_feat returns: "
                                 "its neck's outputs), or a list of feat.i (the i-th of them), module names and "
                                 "{student: NAME, teacher: NAME} pairs; `ikd presets levels` lists them",
                         valid=("auto or a list of feat.i, module names and {student, teacher} pairs", _levels)),
    "distill.method": _s("fgd", "the distiller IKD adds to (its weights: distill.<method>.*)",
                         choices=DistillMethod),
    **{f"distill.{name}.{key}": _s(w.default, w.help, **w.bounds)
       for name, entry in DISTILLERS.items() for key, w in entry.weights.items()},
    "distill.alpha_adv": _s(1e-5, "weight of IKD's adversarial feature loss", low=0.0),
    "distill.adv_loss": _s("mse", "how the adversarial features are compared", choices=AdvLoss),
    "distill.corruption_prob": _s(0.3, "IKD instance corruption: probability for an all-small image",
                                  low=0.0, high=1.0),
    "distill.corruption_severity": _s(1, "IKD instance corruption: severity", low=1, high=5),
    "distill.small_area": _s(1024.0, "an image whose boxes are all below this area (px^2) is all small", low=0.0),
    "distill.crop_range": _s(0.8, "IKD adaptive crop: each side cropped to [crop_range, 1] of itself",
                             low=0.0, low_open=True, high=1.0),
    "distill.diagnostics": _s(True, "stage 1 logs, every train.log_interval iterations, the teacher's feature "
                                    "distance adversarial vs clean and the adversarial term's gradient share "
                                    "(distill/diagnostics.py)"),
    # A teacher near 0 AP (a random one, or one of other data whose keys fit) is refused before
    # hours of attack or distillation; a few val images keep the check to seconds, cached per
    # checkpoint digest. Also read by `ikd attack`, which has no section of its own for it.
    "distill.teacher_check_images": _s(50, "the first N val images the teacher is scored on before `ikd attack` "
                                           "and `ikd distill` (--no-teacher-check skips it)", low=1),
    "distill.teacher_check_min_ap": _s(0.01, "bbox AP (0-1) on those images below which the teacher is refused",
                                       low=0.0, high=1.0),
    # -- training ----------------------------------------------------------------------------------
    # The model config's recipe is the user's (DETR: AdamW, backbone lr x0.1, clip 0.1); the
    # reference presets set sgd, the SGD step schedule of IKD's reference, to keep their numbers.
    "train.optimizer": _s("config", "config: the model config's optimizer (type, lr, paramwise_cfg), gradient clip, "
                                    "lr schedule, epochs and custom_hooks, each replaced only by a train.* value the "
                                    "preset sets (train.lr, train.weight_decay, train.momentum, train.grad_clip, "
                                    "train.lr_steps, train.warmup_*, train.epochs; null: the model config's); "
                                    "sgd: SGD with every train.* value (null: the reference's), a step schedule, no "
                                    "custom_hooks; a run says each replacement in one line and lists them in run.json",
                          choices=TrainOptimizer),
    "train.epochs": _recipe("epochs", "epochs", low=1),
    "train.lr": _recipe("lr", "learning rate", low=0.0),
    "train.momentum": _recipe("momentum", "SGD momentum", low=0.0),
    "train.weight_decay": _recipe("weight_decay", "weight decay", low=0.0),
    "train.grad_clip": _recipe("grad_clip", "gradient norm clip (0: none)", low=0.0),
    "train.lr_steps": _recipe("lr_steps", "epochs after which the lr drops 10x",
                              valid=("a list of epochs (integers)", _int_list)),
    "train.warmup_iters": _recipe("warmup_iters", "linear warmup iterations", low=0),
    "train.warmup_ratio": _recipe("warmup_ratio", "warmup's starting fraction of the lr", low=0.0),
    "train.checkpoint_interval": _s(1, "epochs between checkpoints", low=1),
    "train.eval_interval": _s(1, "epochs between val evaluations (0: no validation)", low=0),
    "train.max_keep_ckpts": _s(-1, "checkpoints kept (-1: all)", low=-1),
    "train.log_interval": _s(50, "iterations between log lines", low=1),
    "train.amp": _s(False, "mixed precision: fp16 + loss scaling on GPU (mmcv), bf16 autocast on CPU"),
    "train.tensorboard": _s(False, "also log to TensorBoard (<work dir>/tf_logs; needs `pip install tensorboard`)"),
    "train.wandb": _s(False, "also log to Weights & Biases (mmcv's WandbLoggerHook; needs "
                             "`IKD_WITH_WANDB=1 bash scripts/install.sh`)"),
    "train.seed": _s(0, "random seed of training and of the attack's random draws", low=0, attack_set="seed",
                     distill_ignores=True),
    "train.gpus": _s(1, low=1),
    # float sums are reordered by the thread count, so a run is repeatable to the last digit only
    # at one count; each run's run.json records the count it used
    "train.threads": _s(None, "torch's intra-op threads for train, distill and attack (null: leave it as is, "
                              "OMP_NUM_THREADS or torch's default)", kind=int, low=1, high=CPU_COUNT),
    # and by the kernels the instruction set selects (oneDNN's convolutions differ bitwise between
    # AVX-512 and AVX2); capping them at AVX2 makes x86 machines of both kinds compute alike
    "train.cpu_kernels": _s("native", "the widest instructions torch's CPU kernels use (ATen's vector code and "
                                      "oneDNN's convolutions): avx2 makes a CPU with AVX-512 compute as an AVX2-only "
                                      "one does, so a run repeats across x86 machines; native: the CPU's best",
                            choices=CpuKernels),
    # -- `ikd evaluate --robustness` ---------------------------------------------------------------
    # Batching the many val passes is its largest saving on CPU; only exact when no image of a
    # batch is padded, hence the default.
    "robustness.batch_size": _s(None, "images per inference batch of the robustness settings other than clean "
                                      "(null: data.samples_per_gpu when every image of the split has one size, "
                                      "else 1; mmdet pads a batch to its largest image)", kind=int, low=1),
    # -- `ikd backdoor` ----------------------------------------------------------------------------
    # A BadNets-style trigger poisons a share of the training set (the attacker trains the victim
    # on it); the defences get the victim and a small clean share of the data.
    "backdoor.attack": _s("misclassify", "misclassify: every object of a triggered image becomes the target class "
                                         "(BadDet's global misclassification); disappear: its annotations are removed",
                          choices=BackdoorAttack),
    "backdoor.target_class": _s("", 'a class name; "" = the training file\'s first category (by id)'),
    "backdoor.rate": _s(0.1, "share of the training images that carry the trigger", low=0.0, low_open=True, high=1.0),
    "backdoor.trigger_size": _s(0.05, "side of the checkerboard trigger, as a share of the image's shorter side",
                                low=0.0, low_open=True, high=0.5),
    "backdoor.seed": _s(0, "which images carry the trigger, where it lands, the defender's clean subset", low=0),
    # One victim, many defenders: a subset seed other than backdoor.seed puts the defences in
    # <work_dir>/backdoor/subset-<k>/ beside the one victim (scripts/backdoor_design.sh)
    "backdoor.subset_seed": _s(None, "the defender's clean subset (null: backdoor.seed)", kind=int, low=0),
    "backdoor.out": _s("", "the poisoned set (default: data/{name}_backdoor_{attack}_{rate:g}_s{seed})",
                       follows_work_dir=True),
    "backdoor.victim": _s("teacher", "which model config of the preset the attacker trains", choices=Role),
    # The attacker's schedule: "" = the model config's own init (from scratch here); a checkpoint,
    # or "teacher" for teacher.checkpoint (a clean model the attacker fine-tunes).
    "backdoor.victim_init": _s("", 'weights the victim starts from: "", a checkpoint, or teacher',
                               follows_work_dir=True),
    "backdoor.victim_epochs": _s(None, "null: what `ikd train --model <victim>` uses", kind=int, low=1),
    "backdoor.victim_lr_steps": _s(None, "null: what `ikd train --model <victim>` uses", kind=list,
                                   valid=("a list of epochs (integers)", _int_list)),
    "backdoor.victim_checkpoint": _s("", "default: the victim that `ikd backdoor train-victim` trains",
                                     follows_work_dir=True),
    "backdoor.clean_fraction": _s(0.05, "the defender's clean share of the training images", low=0.0,
                                  low_open=True, high=1.0),
    "backdoor.score_thr": _s(0.3, "ASR counts detections with at least this score", low=0.0, high=1.0),
    "backdoor.iou_thr": _s(0.5, "... and at least this IoU with a ground-truth object", low=0.0, low_open=True,
                            high=1.0),
    "backdoor.epochs": _s(24, "each defence's schedule on the clean subset", low=1),
    "backdoor.lr": _s(0.01, low=0.0),
    "backdoor.lr_steps": _s([16, 22], valid=("a list of epochs (integers)", _int_list)),
    "backdoor.warmup_iters": _s(10, low=0),
    "backdoor.dfa_until": _s(16, "the IKD defence: epochs with IKD's augmentation + adversarial features", low=0),
    # NAD's attention transfer: beta * ||a_s - a_t||_2 per level (distill/losses/attention.py)
    "backdoor.nad.p": _s(2.0, "NAD attention power", low=0.0, low_open=True),
    "backdoor.nad.levels": _s(["backbone.layer2", "backbone.layer3", "backbone.layer4"], valid=("a list of module names", _names)),
    "backdoor.nad.betas": _s([1.0, 2.0, 4.0], "NAD weight per level",
                             valid=("a list of numbers >= 0", lambda v: all(
                                 isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v))),
}


def nest(flat: dict[str, Any]) -> dict:
    """``{'a.b': 1}`` -> ``{'a': {'b': 1}}``; a key that is also another's section is an error."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise IkdError(f"conflicting overrides for '{key}'")
        node[leaf] = value
    return tree


def defaults() -> dict:
    """The tree of every default (a fresh copy): what a preset YAML is merged onto."""
    import copy

    return nest({k: copy.deepcopy(s.default) for k, s in SETTINGS.items()})


def default(key: str) -> Any:
    """One default by dotted key: ``default("attack.eps")`` -> 8.0."""
    if key.startswith("data.shapes."):
        return SHAPES[key.rsplit(".", 1)[1]].default
    return SETTINGS[key].default


def attack_set_keys() -> dict[str, str]:
    """Dotted key -> its name in ``attack.json``, for every setting an adversarial set records
    besides the attack method's own options."""
    return {k: s.attack_set for k, s in SETTINGS.items() if s.attack_set}


def distill_ignored() -> tuple[str, ...]:
    """The ``attack.json`` names a distillation does not hold against its set."""
    return tuple(s.attack_set for s in SETTINGS.values() if s.distill_ignores)


def work_dir_paths() -> tuple[str, ...]:
    """The dotted keys of paths read from the work dir given where it holds them (``follows_work_dir``)."""
    return tuple(k for k, s in SETTINGS.items() if s.follows_work_dir)


def pixel_options() -> tuple[str, ...]:
    """The option names (``eps``, ``steps``, ...) the attack methods take from ``attack.*``."""
    return tuple(k.split(".", 1)[1] for k, s in SETTINGS.items() if s.pixels and k != "attack.method")


def _type_name(kind: Optional[type]) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "text",
            list: "a list", dict: "a mapping"}.get(kind, getattr(kind, "__name__", "a value"))


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check(key: str, value: Any, setting: Optional[Setting] = None) -> Any:
    """``value`` for ``key`` checked against its setting and returned in the setting's type (an
    integer where a number is asked becomes a float; an Enum member its value). Raises
    :class:`IkdError` with one readable line otherwise. None is accepted for keys whose default
    is None."""
    s = setting or SETTINGS[key]
    if isinstance(value, Enum):
        value = value.value
    if value is None and s.default is None:
        return None
    if s.choices is not None:
        names = [c.value for c in s.choices]
        if value not in names:
            raise IkdError(f"{key} must be one of {', '.join(names)}; got {shown(value)}")
        return value
    if s.valid is not None:  # the check says the kind too ("a list of names, auto or null")
        if not s.valid[1](value):
            raise IkdError(f"{key} must be {s.valid[0]}{' or null' if s.default is None else ''}, got {shown(value)}")
    else:
        value = _typed(key, value, s)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_bounds(key, value, s)
    return value


def _typed(key: str, value: Any, s: Setting) -> Any:
    kind = s.type
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is float and is_number:
        return float(value)
    if kind is int and is_number and float(value).is_integer():
        return int(value)  # 3.0 from "3e0" is 3; 2.5 is refused below
    if kind not in (bool, int, float) and isinstance(value, kind):
        return value
    raise IkdError(f"{key} must be {_kind_text(s)}{' or null' if s.default is None else ''}, got {shown(value)}")


def _kind_text(s: Setting) -> str:
    """'an integer >= 1', 'a number > 0 and <= 255', 'true/false': what a value must be."""
    bounds = s.bounds_text()
    return f"{_type_name(s.type)} {bounds}" if bounds else _type_name(s.type)


def _check_bounds(key: str, value: float, s: Setting) -> None:
    if math.isnan(value):
        raise IkdError(f"{key} must be a number, got nan")
    low_bad = s.low is not None and (value <= s.low if s.low_open else value < s.low)
    high = _bound(s.high)
    high_bad = high is not None and (value >= high if s.high_open else value > high)
    if low_bad or high_bad:
        here = f" ({s.high.name} here: {high:g})" if high_bad and isinstance(s.high, MachineBound) else ""
        raise IkdError(f"{key} must be {_kind_text(s)}{' or null' if s.default is None else ''}, got {value:g}{here}")
