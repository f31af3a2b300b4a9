"""Find ikd run folders and read what they recorded, without torch or mmcv.

A run folder is one holding ``run.json`` (written by ``ikd train`` and ``ikd distill``). Its
numbers come from two places:

* mmcv's JSON log, ``<timestamp>.log.json``: one object per line, a meta line first, then
  ``"mode": "train"`` lines (losses every ``log_interval`` iterations) and ``"mode": "val"``
  lines (COCO metrics after each validated epoch, rounded to 3 decimals). A resumed run has one
  file per launch; a crash can leave a torn last line, which is skipped.
* the eval file ``ikd evaluate`` writes beside the final checkpoint: preferred for the final
  numbers, because it is COCOeval at full precision on exactly the weights the run delivers.
  A run evaluated only on another of its checkpoints (``student_best.pth``, an epoch) is read
  from that eval file (the newest, if several), and the runs table says which checkpoint.

COCOeval reports -1 for a size bucket with no ground truth (no large objects in 96-px shapes);
those become ``None`` here, never a number. An epoch with no detections at all logs a val line
without metrics; it reads as AP 0 (see ``_val_epochs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from ikd_cli.config.distillers import label
from ikd_cli.config.layout import (DELIVERED, LOG_FILE, LOG_JSON_GLOB, PRESET_FILE, RUN_FILE, STUDY_FILE,
                                   checkpoint_of_eval, eval_file, eval_file_name, robustness_file)
from ikd_cli.config.presets import load_yaml
from ikd_cli.config.schema import METRICS, default
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import parse_json, read_json
from ikd_cli.core.ui import console
from ikd_cli.evaluate.robustness import CORRUPTIONS, SETTINGS as ROBUSTNESS_SETTINGS

_LOG_METRICS = {"bbox_mAP": "AP", "bbox_mAP_50": "AP50", "bbox_mAP_75": "AP75",
                "bbox_mAP_s": "AP_S", "bbox_mAP_m": "AP_M", "bbox_mAP_l": "AP_L"}
# mmcv's text log says "Epoch [3][40/117]": 117 is the epoch's true length, which the JSON log
# does not record (it logs every log_interval iterations and skips the tail of an epoch).
_EPOCH_LENGTH = re.compile(r"Epoch \[(\d+)\]\[\d+/(\d+)\]")


@dataclass
class Run:
    """One run folder, read. Metrics are COCO fractions in [0, 1], ``None`` where undefined."""

    path: Path
    kind: str  # "train" or "distill"
    preset: str
    role: str  # "teacher" or "student" (a distill run trains the student)
    arm: str  # the group it is compared in: the study's name for it, else a label from its settings
    seed: int | None
    dfa_until: int | None  # distill runs: the last epoch of stage 1 (0: plain FGD)
    alpha_adv: float | None = None  # distill runs: the adversarial term's weight (saved preset)
    val: list[dict] = field(default_factory=list)  # per validated epoch: {"epoch": e, "AP": ..., ...}
    train: list[dict] = field(default_factory=list)  # per logged iteration: epoch, iter, step, loss*
    final: dict | None = None  # {"AP": ..., ...} of the delivered weights
    final_source: str = ""  # the eval file, or "log epoch N"
    final_checkpoint: str = ""  # the checkpoint evaluated, where it is not the run's latest
    stage_switch_step: int | None = None  # global iteration where stage 2 starts, if it did
    robustness: dict | None = None  # robustness figure -> fraction (None: not measured), + "corruptions" set,
    #                                 "per_corruption": name -> mean AP over its severities
    compute: dict | None = None  # run.json's: threads, CPU, ISA flags, kernels, torch (None: not recorded)
    continued: list[dict] = field(default_factory=list)  # continuations on other compute: after_epoch, change


def find_runs(paths: Iterable[Path]) -> list[Run]:
    """Every run in ``paths`` (run folders, or folders holding them at any depth), read and
    sorted by arm and seed. Runs that have logged nothing yet are skipped with a warning."""
    folders: list[Path] = []
    for path in paths:
        folders += [f for f in _run_folders(Path(path)) if f not in folders]
    runs = []
    for folder in folders:
        run = read_run(folder)
        if run.val or run.train or run.final:
            runs.append(run)
        else:
            console.print(f"[yellow]skipped[/] {folder}: it has logged nothing yet")
    if not runs:
        raise IkdError(f"none of the {len(folders)} run folder(s) has logged anything yet")
    return sorted(runs, key=lambda r: (r.arm, -1 if r.seed is None else r.seed, str(r.path)))


def _run_folders(path: Path) -> list[Path]:
    if not path.exists():
        raise IkdError(f"run folder not found: {path}")
    if (path / RUN_FILE).is_file():
        return [path.resolve()]
    # The steps of `ikd backdoor` are runs too, reported by `ikd backdoor table`: not here.
    found = sorted(p.parent.resolve() for p in path.rglob(RUN_FILE)
                   if (read_json(p, "run file") or {}).get("command") != "backdoor") if path.is_dir() else []
    if not found:
        raise IkdError(f"{path} is not an ikd run folder (no {RUN_FILE}) and holds none; give the work dir of "
                       f"`ikd train` / `ikd distill` (e.g. work_dirs/shapes/distill) or a folder of them")
    return found


def read_run(folder: Path) -> Run:
    """Read one run folder (it must hold ``run.json``).

    Its arm is ``run.json``'s ``arm``, else the study folder it sits in, else a label from its
    settings ("shapes student", "shapes IKD"); its seed is ``run.json``'s,
    else the saved preset's ``train.seed``, else the one mmcv logged.
    """
    folder = Path(folder)
    info = read_json(folder / RUN_FILE, "run file")
    kind = info.get("command") if isinstance(info, dict) else None
    if kind not in DELIVERED:
        raise IkdError(f"{folder / RUN_FILE} does not say whether it is a train or distill run")
    preset = _read_preset(folder)
    role = info.get("role", "student") if kind == "train" else "student"
    name = info.get("preset") or preset.get("name") or folder.name
    dfa_until = (preset.get("distill") or {}).get("dfa_until") if kind == "distill" else None
    method = str((preset.get("distill") or {}).get("method") or default("distill.method"))
    alpha_adv = (preset.get("distill") or {}).get("alpha_adv") if kind == "distill" else None
    meta, records = read_log(folder)
    train = [r for r in records if r["mode"] == "train"]
    offsets = _epoch_offsets(folder, train)
    run = Run(path=folder, kind=kind, preset=name, role=role,
              arm=info.get("arm") or _study_arm(folder) or _default_arm(name, kind, role, dfa_until, method),
              seed=_first_int(info.get("seed"), (preset.get("train") or {}).get("seed"), meta.get("seed")),
              dfa_until=dfa_until, val=_val_epochs(records), train=_loss_rows(train, offsets),
              alpha_adv=float(alpha_adv) if isinstance(alpha_adv, (int, float)) and not isinstance(alpha_adv, bool)
              else None, compute=info.get("compute"), continued=list(info.get("continued") or []))
    last_epoch = max((r["epoch"] for r in train), default=0)
    planned = _first_int(_planned_epochs(preset, kind, role), info.get("epochs"))  # null in the preset: the config's
    if planned and last_epoch < planned:
        # still training (or stopped): its numbers would be an earlier model's, so it is shown
        # but left out of the arm statistics
        run.final, run.final_source = None, f"unfinished (epoch {last_epoch} of {planned})"
    else:
        run.final, run.final_source, run.final_checkpoint = _final_metrics(folder, kind, run.val, last_epoch)
        run.robustness = read_robustness(folder, kind)
    if dfa_until and dfa_until < last_epoch:
        run.stage_switch_step = offsets[min(e for e in offsets if e > dfa_until)]
    return run


def _planned_epochs(preset: dict, kind: str, role: str) -> int | None:
    """The epochs the run was set to train: its model's own schedule (a teacher's
    ``teacher.epochs``) for a plain training, else ``train.epochs``; None when the preset is not
    saved."""
    own = (preset.get(role) or {}).get("epochs") if kind == "train" else None
    epochs = own or (preset.get("train") or {}).get("epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def _read_preset(folder: Path) -> dict:
    """The resolved preset the run saved; ``{}`` if it has none (the run file names the preset)."""
    path = folder / PRESET_FILE
    if not path.is_file():
        return {}
    try:
        tree = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise IkdError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    return tree if isinstance(tree, dict) else {}


def _study_arm(folder: Path) -> str | None:
    """In a study (a folder with ``study.json`` at its top), the arm is the first folder below it."""
    for parent in folder.parents:
        if (parent / STUDY_FILE).is_file():
            return folder.relative_to(parent).parts[0]
    return None


def _default_arm(preset: str, kind: str, role: str, dfa_until: int | None, method: str) -> str:
    """"shapes student", or for a distillation the distiller's label and whether stage 1 ran:
    "shapes FGD", "shapes IKD (FGD)", "shapes CWD", ... (the runs table shows dfa_until)."""
    if kind == "distill":
        return f"{preset} {label(method)}" if dfa_until == 0 else f"{preset} IKD ({label(method)})"
    return f"{preset} {role}"


def _first_int(*candidates) -> int | None:
    return next((c for c in candidates if isinstance(c, int) and not isinstance(c, bool)), None)


def read_log(folder: Path) -> tuple[dict, list[dict]]:
    """The meta line of the first launch and the train/val lines of all launches, in order.

    A resumed launch restarts at some epoch E; what the earlier launch logged from epoch E on
    was thrown away with its unsaved weights, so it is dropped here too.
    """
    meta: dict = {}
    records: list[dict] = []
    for path in sorted(folder.glob(LOG_JSON_GLOB)):  # names are launch timestamps
        file_meta, file_records = _read_log_file(path)
        meta = meta or file_meta
        if file_records:
            records = [r for r in records if r["epoch"] < file_records[0]["epoch"]]
        records += file_records
    return meta, records


def _read_log_file(path: Path) -> tuple[dict, list[dict]]:
    meta: dict = {}
    records = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise IkdError(f"cannot read {path}: {err.strerror or err}") from None
    for line in lines:
        try:
            obj = parse_json(line)
        except ValueError:
            continue  # a torn line from a crash, or a half-written last line of a running job
        if not isinstance(obj, dict):
            continue
        epoch = obj.get("epoch")
        if obj.get("mode") in ("train", "val") and isinstance(epoch, int) and not isinstance(epoch, bool):
            if epoch >= 1 and isinstance(obj.get("iter", 0), int):  # mmcv counts epochs from 1
                records.append(obj)
        elif "mode" not in obj and not meta and not records:
            meta = obj
    return meta, records


def _epoch_offsets(folder: Path, train: list[dict]) -> dict[int, int]:
    """Global iterations completed before each epoch (1-based keys, one past the last epoch too).

    Epoch lengths come from the text log (``train.log``); where it says nothing, the last logged iteration of
    the epoch stands in (short by less than one log interval).
    """
    lengths: dict[int, int] = {}
    for r in train:
        lengths[r["epoch"]] = max(lengths.get(r["epoch"], 0), int(r.get("iter", 0)))
    text_log = folder / LOG_FILE
    if text_log.is_file():
        with open(text_log, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                match = _EPOCH_LENGTH.search(line)
                if match:
                    lengths[int(match[1])] = int(match[2])
    # over the epochs present only: a log line's epoch is data (a bogus 300000000 must not
    # become a loop of that length); an epoch missing in between counts no iterations
    offsets, total = {}, 0
    epochs = sorted(e for e in lengths if e >= 1)
    for epoch in epochs:
        offsets[epoch] = total
        total += lengths[epoch]
    offsets[(epochs[-1] if epochs else 0) + 1] = total
    return offsets


def _loss_rows(train: list[dict], offsets: dict[int, int]) -> list[dict]:
    rows = []
    for r in train:
        losses = {k: float(v) for k, v in r.items() if k.startswith("loss") and isinstance(v, (int, float))}
        rows.append({"epoch": r["epoch"], "iter": r.get("iter", 0),
                     "step": offsets[r["epoch"]] + int(r.get("iter", 0)), **losses})
    return rows


def _metric(value) -> float | None:
    """A COCO number, or ``None`` for COCOeval's -1 ("no ground truth in this bucket")."""
    return float(value) if isinstance(value, (int, float)) and value >= 0 else None


def _val_epochs(records: list[dict]) -> list[dict]:
    """Per validated epoch, its metrics. An epoch whose model detected nothing at all logs a val
    line without metrics (mmdet: "the testing results of the whole dataset is empty"): its AP,
    AP50 and AP75 are 0, and the size buckets unknown (COCOeval would say -1 where one is empty)."""
    by_epoch = {}
    for r in records:
        if r["mode"] != "val":
            continue
        if "bbox_mAP" in r:
            metrics = {m: _metric(r.get(k)) for k, m in _LOG_METRICS.items()}
        else:
            metrics = {m: 0.0 if m in ("AP", "AP50", "AP75") else None for m in METRICS}
        by_epoch[r["epoch"]] = {"epoch": r["epoch"], **metrics}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _eval_file(folder: Path, kind: str) -> tuple[Path | None, str]:
    """(eval file, checkpoint name if not the latest): the latest checkpoint's eval file, else
    the newest eval file of another of the run's checkpoints, else (None, "")."""
    latest = eval_file(folder / DELIVERED[kind], "val")
    if latest.is_file():
        return latest, ""
    others = [p for p in folder.glob(eval_file_name("*")) if p.is_file()]
    if not others:
        return None, ""
    newest = max(others, key=lambda p: (p.stat().st_mtime_ns, p.name))
    return newest, checkpoint_of_eval(newest.name)


def _final_metrics(folder: Path, kind: str, val: list[dict], last_epoch: int) -> tuple[dict | None, str, str]:
    """(metrics, where from, checkpoint if not the latest): the eval file ``ikd evaluate`` made
    (see :func:`_eval_file`), else the log's validation of the last trained epoch. A log whose
    last validation is of an earlier epoch (an eval interval that does not divide the schedule,
    or a report read while the last epoch is still being validated) scores an earlier model:
    the run is then shown but not averaged, as an unfinished one."""
    path, checkpoint = _eval_file(folder, kind)
    if path is not None:
        data = read_json(path, "eval file")
        bbox = data.get("bbox") if isinstance(data, dict) else None
        if not isinstance(bbox, dict):
            raise IkdError(f"{path} has no bbox metrics; run `ikd evaluate` on the checkpoint again")
        return {m: _metric(bbox.get(m)) for m in METRICS}, str(path), checkpoint
    if val and val[-1]["epoch"] >= last_epoch:
        return {m: val[-1][m] for m in METRICS}, f"log epoch {val[-1]['epoch']}", ""
    if val:
        return None, f"not evaluated at epoch {last_epoch} (log: epoch {val[-1]['epoch']}; run ikd evaluate)", ""
    return None, "", ""


def read_robustness(folder: Path, kind: str) -> dict | None:
    """The robustness figures of the run's delivered weights (``ikd evaluate --robustness``'s
    summary of the same checkpoint as the eval file), as fractions like METRICS, or None when not
    measured."""
    path = robustness_file(folder / DELIVERED[kind])
    if not path.is_file():
        return None
    data = read_json(path, "robustness file")
    if not isinstance(data, dict) or not isinstance(data.get(CORRUPTIONS.key), dict):
        raise IkdError(f"{path} is not a robustness summary; run `ikd evaluate --robustness` on the checkpoint again")
    c = data[CORRUPTIONS.key]
    return {**{s.label: _metric(s.value(data)) for s in ROBUSTNESS_SETTINGS}, "corruptions": c.get("set"),
            "per_corruption": {str(k): _metric(v) for k, v in (c.get("per_corruption") or {}).items()}}
