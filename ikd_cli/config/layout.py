"""Where things live on disk, and what their files are called: one home for the naming rules
that several stages share (the attack writes an adversarial set, distillation reads it; every
training command writes a run folder, ``ikd resume`` reads it). Pure paths: no torch, no mmcv.
"""

from __future__ import annotations

from pathlib import Path

from ikd_cli.core.errors import IkdError

RUN_FILE = "run.json"  # what kind of run a work dir holds: {"command", "role", "preset"}
PRESET_FILE = "preset.yaml"  # the resolved preset of a run
CONFIG_FILE = "config.py"  # the resolved mmdet config of a run
LOG_FILE = "train.log"
LATEST = "latest.pth"  # the newest checkpoint of a run (a symlink mmcv's runner keeps)
STUDENT_LATEST = "student_latest.pth"  # a distill run's student alone, loadable as a plain detector
STUDENT_BEST = "student_best.pth"
# The checkpoint each training command's run folder delivers (what ``ikd evaluate`` and the report read).
DELIVERED = {"train": LATEST, "distill": STUDENT_LATEST}
CHECKPOINT_SUFFIX = ".pth"
EPOCH_CHECKPOINT = "epoch_{}.pth"  # mmcv's runner's filename_tmpl: one checkpoint per epoch
EPOCH_CHECKPOINTS_GLOB = EPOCH_CHECKPOINT.format("*")
# A distill run's student alone, beside each full checkpoint (distill/hooks.py): per epoch, and
# with the latest and best ones, every student file a run writes.
STUDENT_EPOCH_CHECKPOINT = "student_" + EPOCH_CHECKPOINT
STUDENT_EPOCH_CHECKPOINTS_GLOB = STUDENT_EPOCH_CHECKPOINT.format("*")
STUDENT_CHECKPOINTS_GLOB = "student_*.pth"
BEST_CHECKPOINTS_GLOB = "best_*_epoch_*.pth"  # mmcv's EvalHook(save_best): best_<metric>_epoch_<N>.pth
LOG_JSON_GLOB = "*.log.json"  # mmcv's JSON log, one per launch: <timestamp>.log.json
ATTACK_SETTINGS_FILE = "attack.json"  # an adversarial set's settings, written once it can start
ATTACK_PREVIEW_FILE = "preview.png"  # what the attack did to a few images, to look at
ATTACK_SUMMARY_FILE = "summary.json"  # an adversarial set's totals, written when a run finishes
RECORDS_GLOB = "records-*.jsonl"  # every rank's per-image records of an adversarial set
STUDY_FILE = "study.json"  # marks the top of a study for `ikd report`: study/<arm>/.../<run folder>
TEACHER_CHECK_FILE = "teacher-check.json"  # beside a teacher checkpoint: its score on a few val images, per sha256
DRY_RUN_FILE = "dry-run.txt"  # the table `ikd distill --dry-run` leaves in the work dir (and nothing else)


def records_file(rank: int) -> str:
    """One rank's per-image records of an adversarial set: ``records-<rank>.jsonl``."""
    return f"records-{rank}.jsonl"


def attack_log_file(rank: int) -> str:
    """One rank's log of an attack (MMDetection's output, kept off the terminal): ``attack-<rank>.log``."""
    return f"attack-{rank}.log"


def epoch_in_name(path: str | Path) -> int:
    """The epoch in a checkpoint's name (``epoch_12.pth``, ``best_bbox_mAP_epoch_12.pth``); -1 if none."""
    try:
        return int(Path(path).stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def best_checkpoints(work_dir: Path) -> list[Path]:
    """The best checkpoints mmcv's EvalHook left in ``work_dir``, oldest epoch first."""
    return sorted(Path(work_dir).glob(BEST_CHECKPOINTS_GLOB), key=epoch_in_name)


def eval_file_name(checkpoint_stem: str, tag: str = "val", suffix: str = ".json") -> str:
    """What ``ikd evaluate`` writes beside a checkpoint for one setting: ``<stem>.eval-<tag>.json``
    (``tag``: the split, ``val-<images folder>``, ``val-corruption-<name>-<severity>`` ...), and
    with ``suffix`` its detections (:func:`detections_suffix`) and log (``.log``)."""
    return f"{checkpoint_stem}.eval-{tag}{suffix}"


EVAL_LOG_SUFFIX = ".log"  # an evaluation's MMDetection log, beside its eval file


def images_tag(split: str, images: str | Path) -> str:
    """The eval tag of a split scored on another copy of its images: ``<split>-<images folder>``."""
    return f"{split}-{Path(images).name}"


def whitebox_tag(split: str, whitebox_set: Path) -> str:
    """The eval tag of a white-box set (:func:`whitebox_set_dir`): ``<split>-whitebox-<key>``."""
    return f"{split}-whitebox-{Path(whitebox_set).name.rsplit('-', 1)[-1]}"


def corruption_tag(split: str, corruption: str, severity: int) -> str:
    """The eval tag of a split under one corruption: ``<split>-corruption-<name>-<severity>``."""
    return f"{split}-corruption-{corruption}-{severity}"


def detections_suffix(iou_type: str) -> str:
    """The suffix of an evaluation's detections file (``.bbox.json``, ``.segm.json``), in place of ``.json``."""
    return f".{iou_type}.json"


def checkpoint_of_eval(name: str, tag: str = "val") -> str:
    """The checkpoint file name whose eval file is ``name`` (the inverse of :func:`eval_file_name`)."""
    return name[: -len(eval_file_name("", tag))] + CHECKPOINT_SUFFIX


def run_dir(preset: dict, role: str) -> Path:
    """A run's folder: ``<work_dir>/<role>`` (role: teacher, student or distill)."""
    return Path(preset["work_dir"]) / role


def final_checkpoint(preset: dict, role: str) -> Path:
    """What a run of ``role`` leaves for evaluation: the detector's latest checkpoint, and for a
    distill run the student's."""
    return run_dir(preset, role) / DELIVERED["distill" if role == "distill" else "train"]


def teacher_checkpoint(preset: dict, given: str | Path | None = None) -> Path:
    """The teacher's checkpoint file (``given`` or the preset's), or an error that says how to
    get it: a download, or a training whose checkpoint (:func:`final_checkpoint`) is named with
    --set teacher.checkpoint where it is not where the preset looks."""
    path = Path(given or preset["teacher"]["checkpoint"])
    if path.is_file():
        return path
    import shlex

    from ikd_cli.core.invocation import preset_args

    if preset["teacher"]["download"]:
        how = f"`ikd download teacher {preset_args(preset)}`"
    else:
        trained = final_checkpoint(preset, "teacher")
        how = f"`ikd train {preset_args(preset)} --model teacher`"
        if trained != path:  # as it was given: --checkpoint FILE (ikd attack) or the preset's key
            again = f"--checkpoint {shlex.quote(str(trained))}" if given else \
                f"--set {shlex.quote(f'teacher.checkpoint={trained}')}"
            how += f", then run again with `{again}`"
    raise IkdError(f"teacher checkpoint not found: {path}; get it with {how}")


def adversarial_set_dir(preset: dict, split: str) -> Path:
    """``attack.out`` with its ``{method}``/``{eps}``/``{steps}`` fields filled; val gets ``_val``."""
    a = preset["attack"]
    try:
        out = a["out"].format(**a) if a["out"] else f"data/{preset['name']}_adv_{a['method']}_{a['eps']:g}_{a['steps']}"
    except (KeyError, ValueError) as err:
        raise IkdError(f"attack.out '{a['out']}' has an unknown field: {err}") from None
    return Path(out + ("_val" if split == "val" else ""))


# A delta file's name is its source's with this appended (``a/b.jpg`` -> ``a/b.jpg.ikdd``): the
# source of a delta, which it is useless without, is its name minus the suffix, and ``x.jpg`` and
# ``x.png`` sources in one folder do not collide.
DELTA_SUFFIX = ".ikdd"


def adversarial_name(relative: str | Path, fmt: str = "delta") -> Path:
    """Where the adversarial copy of an image lies, relative to the adversarial set's folder:
    ``delta`` (see :mod:`ikd_cli.attack.storage`) appends ``.ikdd``; ``png`` replaces the suffix."""
    relative = Path(relative)
    if fmt == "png":
        return relative.with_suffix(".png")
    if fmt != "delta":
        raise IkdError(f"unknown adversarial image format '{fmt}'; choose delta or png")
    return relative.with_name(relative.name + DELTA_SUFFIX)

# `ikd report`'s pictures beyond val_ap.png and losses.png: the paired per-class AP difference,
# and stage 1's diagnostics of the adversarial term per level (teacher distance, gradient ratios).
REPORT_CLASSWISE_FILE = "classwise.png"
REPORT_DIAG_DISTANCE_FILE = "diag_teacher_distance.png"
REPORT_DIAG_GRADIENT_FILE = "diag_gradients.png"
# `ikd report`'s own files: the tables, their numbers, and the curves (report/plots.py).
REPORT_MD_FILE = "report.md"
REPORT_JSON_FILE = "report.json"
REPORT_VAL_AP_FILE = "val_ap.png"
REPORT_LOSSES_FILE = "losses.png"
# The robustness figures per arm, per corruption and paired (report/robustness.py).
REPORT_ROBUSTNESS_FILE = "robustness.png"
# Each --compare pair's paired AP difference with its interval (report/comparisons.py).
REPORT_COMPARISONS_FILE = "comparisons.png"
# The sweep of IKD's knobs in a study (report/sweep.py): AP (and robustness) against alpha_adv
# and against the stage-1 length.
REPORT_SWEEP_ALPHA_FILE = "sweep_alpha_adv.png"
REPORT_SWEEP_STAGE1_FILE = "sweep_stage1.png"
# The log columns of stage 1's diagnostics (distill/diagnostics.py writes them, report reads
# them); none holds "loss", so mmdet logs them without adding them to the total loss.
DIAG_PREFIX = "diag_"
DIAG_TEACHER_DIST = "diag_teacher_dist_"
DIAG_GRAD_VS_DISTILL = "diag_grad_adv_vs_distill_log10_"
DIAG_GRAD_VS_DET = "diag_grad_adv_vs_det_log10_"

def eval_file(checkpoint: str | Path, tag: str, suffix: str = ".json") -> Path:
    """:func:`eval_file_name` beside ``checkpoint``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(eval_file_name(checkpoint.stem, tag, suffix))


def robustness_file_name(checkpoint_stem: str, split: str = "val") -> str:
    """The summary of ``ikd evaluate --robustness``: ``<stem>.robustness-<split>.json``."""
    return f"{checkpoint_stem}.robustness-{split}.json"


def robustness_file(checkpoint: str | Path, split: str = "val") -> Path:
    """:func:`robustness_file_name` beside ``checkpoint``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(robustness_file_name(checkpoint.stem, split))


def whitebox_set_dir(checkpoint: str | Path, split: str, key: str) -> Path:
    """The adversarial copy of a split made against the checkpoint itself, beside it, keyed by
    the checkpoint's digest and the attack's settings (``key``): ``<stem>.whitebox-<split>-<key>``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.whitebox-{split}-{key}")
