"""The family matrix (tests/test_family_matrix.py): which detector families each step of ``ikd``
runs on, on tiny real mmdet 2.28 configs (tests/configs/families/), and the table of it
(docs/families.md). Each family's preset is what a user writes for their own detector (teacher
and student config, the teacher's checkpoint, the data: no ``distill.levels``); the test's own
settings only shrink the run. Every step is one cell: ``works``, ``refused: <the one line>`` (an
IkdError: ikd said why) or ``fails: <exception>`` (anything else: a bug, which fails the test).

Steps, each as cheap as the code path allows:
- attack: ``api.attack`` on the 2 training images, one step, against the family's teacher at
  its random initialisation (the attack needs a gradient, not a good teacher);
- stage 1 / stage 2 of ``fgd`` and ``mgd``: the distill config as ``ikd distill`` builds it, the
  IKDDistiller built and initialised (teacher checkpoint, init_student), the optimizer the run
  would build, and ONE training iteration (forward, backward, step) on the stage's data, as
  ``ikd distill --dry-run`` does. Stage 1 reads the family's own adversarial set (through the
  run's pre-flight check) when its attack worked, else clean copies standing in for one;
- evaluate --robustness: ``api.robustness`` on the 2 val images with one corruption (gaussian
  noise, severity 1) and the preset's white-box attack.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from helpers import DEVICE, REPO

CONFIGS = REPO / "tests" / "configs"
TABLE = REPO / "docs" / "families.md"
README = REPO / "README.md"
README_MARKS = ("<!-- family table: tests/test_family_matrix.py writes it -->", "<!-- end of family table -->")
WRITE_ENV = "IKD_WRITE_FAMILIES"  # "1": the test writes its family's rows into docs/families.md
CLASSES = ["circle", "square", "triangle", "cross"]
METHODS = ("fgd", "mgd")
STEPS = ("attack", "stage 1 fgd", "stage 2 fgd", "stage 1 mgd", "stage 2 mgd", "optimizer kept",
         "evaluate --robustness")
WORKS, REFUSED, FAILS = "works", "refused", "fails"


@dataclass(frozen=True)
class Family:
    label: str  # its name in the table
    teacher: str  # config, relative to tests/configs/
    student: str = ""  # "" : the teacher's config (a family distilled into itself)
    # the losses the attack raises where the head has no classification term (attack.loss_keys)
    loss_keys: tuple[str, ...] = ()

    def config(self, role: str) -> Path:
        return CONFIGS / (self.student if role == "student" and self.student else self.teacher)


FAMILIES = {
    "fcos": Family("FCOS", "families/fcos.py"),
    "atss": Family("ATSS", "families/atss.py"),
    "gfl": Family("GFL", "families/gfl.py"),
    "faster_rcnn": Family("Faster R-CNN", "families/faster_rcnn.py"),
    "cascade_rcnn": Family("Cascade R-CNN", "families/cascade_rcnn.py"),
    "mask_rcnn": Family("Mask R-CNN", "tiny_mask_rcnn.py"),
    "reppoints": Family("RepPoints", "tiny_reppoints.py"),
    "yolox": Family("YOLOX", "families/yolox.py"),
    "yolov3": Family("YOLOv3", "families/yolov3.py"),
    "ssd": Family("SSD", "families/ssd.py"),
    "deformable_detr": Family("Deformable DETR", "families/deformable_detr.py"),
    "detr": Family("DETR", "families/detr.py"),
    "centernet": Family("CenterNet", "families/centernet.py", loss_keys=("loss_center_heatmap",)),
    "fcos_to_retinanet": Family("FCOS -> RetinaNet", "families/fcos.py", "families/retinanet.py"),
    "wide_to_narrow": Family("RetinaNet 256 -> 128 channels", "families/retinanet_wide_teacher.py",
                             "families/retinanet_narrow_student.py"),
}

# What the test changes of each preset: sizes and counts only (a user's preset has none of these).
SETTINGS = {"data.shapes": None, "data.img_scale": [64, 64], "data.samples_per_gpu": 2, "data.workers_per_gpu": 0,
            "attack.steps": 1, "attack.batch_size": 2, "distill.dfa_until": 1, "train.epochs": 2, "train.log_interval": 1}


def preset_text(family: Family, data_root: Path, work: Path, teacher_ckpt: Path) -> str:
    """The preset a user writes for their own detector (plus where this test's files go)."""
    return (f"teacher: {{config: '{family.config('teacher')}', checkpoint: '{teacher_ckpt}'}}\n"
            f"student: {{config: '{family.config('student')}'}}\n"
            f"data: {{root: '{data_root}', train_ann: annotations/instances_train.json, train_images: train/,\n"
            "       val_ann: annotations/instances_val.json, val_images: val/,\n"
            f"       classes: [{', '.join(CLASSES)}]}}\n"
            f"work_dir: '{work}'\n"
            f"attack: {{out: '{work}/adv'{_loss_keys(family)}}}\n")


def _loss_keys(family: Family) -> str:
    return f", loss_keys: [{', '.join(family.loss_keys)}]" if family.loss_keys else ""


def random_checkpoint(config: Path, path: Path, seed: int = 0) -> Path:
    """The detector of ``config`` at its own random initialisation (4 classes), saved as a plain
    checkpoint: a stand-in for a trained teacher (the steps need weights, not good ones)."""
    import torch
    from mmcv import Config
    from mmdet.models import build_detector

    from ikd_cli.config.mmdet import _set_num_classes

    cfg = Config.fromfile(str(config))
    _set_num_classes(cfg.model, len(CLASSES))
    torch.manual_seed(seed)
    model = build_detector(cfg.model)
    model.init_weights()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


def stand_in_set(image_dir: Path, out: Path) -> Path:
    """Clean copies of the training images where the adversarial set would be (PNG, no
    attack.json): stage 1 of a family whose attack is refused still runs its pipeline and losses."""
    import shutil

    from ikd_cli.config.layout import adversarial_name

    for image in sorted(image_dir.iterdir()):
        target = out / adversarial_name(image.name, "png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if image.suffix == ".png":
            shutil.copyfile(image, target)
        else:
            import cv2

            cv2.imwrite(str(target), cv2.imread(str(image), cv2.IMREAD_COLOR))
    return out


class Cells:
    """Each step's outcome, and the traceback of every step that failed (for the test's message)."""

    def __init__(self, scrub: dict[str, str]):
        self.outcomes: dict[str, str] = {}
        self.tracebacks: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.scrub = scrub  # text -> what the table says instead (tmp paths change every run)

    def run(self, step: str, fn) -> bool:
        from ikd_cli.core.errors import IkdError

        start = time.perf_counter()
        try:
            fn()
            self.outcomes[step] = WORKS
        except IkdError as err:
            self.outcomes[step] = f"{REFUSED}: {self._line(str(err))}"
        except Exception as err:  # noqa: BLE001  (the cell records it; the test fails on it)
            self.outcomes[step] = f"{FAILS}: {type(err).__name__}: {self._line(str(err))}"
            self.tracebacks[step] = traceback.format_exc()
        self.seconds[step] = time.perf_counter() - start
        return self.outcomes[step] == WORKS

    def _line(self, text: str) -> str:
        line = text.strip().splitlines()[0] if text.strip() else ""
        for old, new in sorted(self.scrub.items(), key=lambda kv: -len(kv[0])):
            line = line.replace(old, new)
        return re.sub(r"/tmp/[^\s'\"]*", "<tmp>", line).replace("|", "/")


# --- the steps --------------------------------------------------------------------------------

def run_attack(preset: Path) -> None:
    from ikd_cli import api

    summary = api.attack(str(preset), settings=dict(SETTINGS), device=DEVICE, workers=0, teacher_check=False)
    assert summary["attacked"] == summary["images"] == 2, summary


def build_distiller(preset: Path, method: str, adv_out: Path | None):
    """(tree, cfg, model) of a distillation with ``method``, as ``ikd distill`` builds them;
    ``adv_out``: the stand-in set's folder (None: the family's own set)."""
    import mmcv
    from mmdet.apis import set_random_seed
    from mmdet.models import build_detector

    from ikd_cli import api
    from ikd_cli.core import compat
    from ikd_cli.distill.config import build_distill_config

    settings = dict(SETTINGS, **{"distill.method": method}, **({"attack.out": str(adv_out)} if adv_out else {}))
    tree = api.load_preset(str(preset), settings)
    compat.apply()
    cfg = build_distill_config(tree)
    mmcv.utils.import_modules_from_strings(**cfg.custom_imports)
    set_random_seed(cfg.seed, deterministic=False)
    model = build_detector(cfg.model)
    model.init_weights()  # the teacher's checkpoint, init_student
    return tree, cfg, model


def one_iteration(tree: dict, cfg, model, stage1: bool, own_set: bool) -> None:
    """One training iteration of the stage (forward, backward, optimizer step), built as the run
    builds its loader, wrapper and optimizer."""
    import math

    from mmcv.runner import build_optimizer

    from ikd_cli.data.loading import build_dataset_checked
    from ikd_cli.distill.run import stage1_loader
    from ikd_cli.train.engine import build_train_loader
    from ikd_cli.train.runner import wrap_model

    # the run builds the training set first, whichever stage it starts in (train/engine.py)
    dataset = build_dataset_checked(cfg.data.train, "training")
    if stage1 and own_set:
        loader = stage1_loader(cfg, tree, False)  # with the run's check of the set
    else:
        loader = build_train_loader(build_dataset_checked(cfg.data.train_dfa, "training") if stage1 else dataset,
                                    cfg, False)
    model.dfa = stage1
    wrapped = wrap_model(model, DEVICE, False, find_unused=True)
    wrapped.train()
    optimizer = build_optimizer(wrapped, cfg.optimizer)
    outputs = wrapped.train_step(next(iter(loader)), optimizer)
    optimizer.zero_grad()
    outputs["loss"].backward()
    optimizer.step()
    assert math.isfinite(float(outputs["loss"])), outputs["log_vars"]
    assert stage1 == any(k.startswith("loss_adv") for k in outputs["log_vars"]), sorted(outputs["log_vars"])


def check_optimizer(cfg, family: Family) -> None:
    """The distill run's optimizer, gradient clip and custom hooks are the student config's own
    (the family presets say nothing of them): nothing is replaced without a word."""
    from mmcv import Config

    own = Config.fromfile(str(family.config("student")))
    differ = []
    if cfg.optimizer.get("type") != own.optimizer.get("type"):
        differ.append(f"optimizer {own.optimizer.get('type')} -> {cfg.optimizer.get('type')}")
    if bool(own.optimizer.get("paramwise_cfg")) != bool(cfg.optimizer.get("paramwise_cfg")):
        differ.append(f"paramwise_cfg {own.optimizer.get('paramwise_cfg')} -> {cfg.optimizer.get('paramwise_cfg')}")
    clip = [(c.get("optimizer_config") or {}).get("grad_clip") for c in (own, cfg)]
    if clip[0] != clip[1]:
        differ.append(f"grad_clip {clip[0]} -> {clip[1]}")
    hooks = [[h.get("type") for h in c.get("custom_hooks") or []] for c in (own, cfg)]
    if hooks[0] != hooks[1]:
        differ.append(f"custom_hooks {hooks[0]} -> {hooks[1]}")
    assert not differ, f"the distill config replaced the student config's {'; '.join(differ)}"


def run_robustness(preset: Path, checkpoint: Path) -> None:
    from ikd_cli import api

    summary = api.robustness(str(checkpoint), preset=str(preset), model="student", settings=dict(SETTINGS),
                             corruptions="gaussian_noise", severities="1", device=DEVICE)
    assert summary["corruptions"]["results"], summary


# --- the table --------------------------------------------------------------------------------

HEADER = """# Detector families

Which steps of `ikd` run on which mmdet 2.28 detector families, each as a user brings their own
detector: a preset naming the teacher's and the student's mmdet config, the teacher's
checkpoint and the data, and nothing else (no `distill.levels`: the default; CenterNet's preset also sets
`attack.loss_keys: [loss_center_heatmap]`, as its head has no classification loss). Written by
`tests/test_family_matrix.py` from what it runs on tiny real configs of each family
(`tests/configs/families/`: the family's own mmdet config, shrunk to a ResNet-18 of 8 base
channels or the like, 16-channel necks and heads, 64 x 64 images, the family's own pipelines and
optimizer) on 2 images of the shapes data; the test fails when this page differs from what it
finds, and `IKD_WRITE_FAMILIES=1` rewrites it. How to bring your own detector:
[your own detector](own-detector.md).

- **attack**: `ikd attack`, one step, against the teacher;
- **stage 1 / stage 2** of `ikd distill` with FGD and with MGD: the run's config, distiller,
  optimizer and data, one training iteration each (stage 1: adversarial image, instance
  corruption, adaptive crop and the adversarial feature loss, on the family's own adversarial
  set where its attack works, else on clean copies standing in for one; stage 2: the distiller
  alone);
- **optimizer kept**: the distill run's optimizer, its `paramwise_cfg`, gradient clip and
  `custom_hooks` are the student config's own (the preset names none);
- **evaluate --robustness**: `ikd evaluate --robustness` with one corruption (clean, white-box
  attack on the model itself, gaussian noise at severity 1).

*works*: the step ran. *refused*: `ikd` stopped with one line saying why (below). *fails*: the
step died on an error `ikd` did not catch: a bug, and the test fails.
"""


def table_rows(outcomes: dict[str, dict[str, str]]) -> list[str]:
    """The family x step table (Markdown), as docs/families.md and the README show it."""
    lines = ["| family | " + " | ".join(STEPS) + " |", "|---" * (len(STEPS) + 1) + "|"]
    for key in [k for k in FAMILIES if k in outcomes]:
        cells = [outcomes[key].get(step, "not run").split(":", 1)[0] for step in STEPS]
        lines.append(f"| {FAMILIES[key].label} | " + " | ".join(f"**{c}**" if c == FAILS else c for c in cells) + " |")
    return lines


def render(outcomes: dict[str, dict[str, str]]) -> str:
    """docs/families.md for these families' outcomes (family key -> step -> outcome)."""
    keys = [k for k in FAMILIES if k in outcomes]
    lines = [HEADER, *table_rows(outcomes)]
    notes = []
    for key in keys:  # one line per reason: the steps it stops, named together
        reasons: dict[str, list[str]] = {}
        for step in STEPS:
            if outcomes[key].get(step, WORKS) != WORKS:
                reasons.setdefault(outcomes[key][step], []).append(step)
        notes += [f"- **{FAMILIES[key].label}**, {', '.join(steps)}: {_escape(why)}" for why, steps in reasons.items()]
    lines += ["", "## Why", ""] + (notes or ["Every step works on every family."])
    return "\n".join(lines) + "\n"


def _readme_with(readme: str, outcomes: dict[str, dict[str, str]]) -> str:
    """README.md with the table between its family-table markers made from ``outcomes``."""
    start, end = readme.index(README_MARKS[0]) + len(README_MARKS[0]), readme.index(README_MARKS[1])
    return readme[:start] + "\n" + "\n".join(table_rows(outcomes)) + "\n" + readme[end:]


def _escape(text: str) -> str:
    """A message as Markdown text: ``<class 'x'>`` would be read as an HTML tag."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parse(text: str) -> dict[str, dict[str, str]]:
    """The outcomes docs/families.md holds (what :func:`render` wrote)."""
    by_label = {f.label: key for key, f in FAMILIES.items()}
    outcomes: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        row = re.match(r"^\| (.+?) \| (.+) \|$", line)
        if row and row.group(1) in by_label:
            cells = [c.strip().strip("*") for c in row.group(2).split(" | ")]
            outcomes[by_label[row.group(1)]] = dict(zip(STEPS, cells))
        note = re.match(r"^- \*\*(.+?)\*\*, (.+?): ((?:refused|fails): .*)$", line)
        if note and note.group(1) in by_label:
            for step in note.group(2).split(", "):
                outcomes.setdefault(by_label[note.group(1)], {})[step] = _unescape(note.group(3))
    return outcomes


def check_table(key: str, outcomes: dict[str, str]) -> str:
    """'' when docs/families.md holds ``outcomes`` for family ``key``, else what differs; with
    IKD_WRITE_FAMILIES=1 the page is rewritten with them (the other families' rows kept)."""
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / "ikd-families-md.lock", "w") as lock:  # xdist workers may write side by side
        fcntl.flock(lock, fcntl.LOCK_EX)
        on_disk = TABLE.read_text(encoding="utf-8") if TABLE.is_file() else ""
        wanted = render({**parse(on_disk), key: outcomes})
        readme = README.read_text(encoding="utf-8")
        readme_wanted = _readme_with(readme, parse(wanted))
        if on_disk == wanted and readme == readme_wanted:
            return ""
        if os.environ.get(WRITE_ENV) == "1":
            TABLE.write_text(wanted, encoding="utf-8")
            README.write_text(readme_wanted, encoding="utf-8")
            return ""
    if on_disk == wanted:
        return f"README.md's family table differs from docs/families.md: rewrite it with {WRITE_ENV}=1"
    stored = parse(on_disk).get(key) or {}
    steps = [s for s in STEPS if stored.get(s) != outcomes.get(s)] or ["the page's text"]
    shown = "".join(f"\n  {s}: on the page {stored.get(s)!r}, found {outcomes.get(s)!r}" for s in steps if s in STEPS)
    return (f"docs/families.md differs from what the matrix finds for {FAMILIES[key].label} "
            f"({', '.join(steps)}):{shown}\nrewrite it with {WRITE_ENV}=1 pytest tests/test_family_matrix.py")
