"""The Python API: the functions the ``ikd`` commands call, for notebooks and scripts.

    from ikd_cli import api

    api.train(preset="shapes", model="teacher")             # -> path of the final checkpoint
    api.attack(preset="shapes", eps=8)                       # -> the set's summary (dict)
    api.distill(preset="shapes", dfa_until=8)                # -> path of the student's checkpoint
    metrics = api.evaluate("work_dirs/shapes/distill/student_latest.pth")   # -> {"AP": 0.236, ...}

Every function takes a preset (a name or a YAML path) and its settings: keyword arguments are keys
of the function's own section (``eps`` is ``attack.eps`` for :func:`attack`, ``dfa_until`` is
``distill.dfa_until`` for :func:`distill`), ``settings`` takes any dotted key
(``{"train.seed": 1}``), checked by the same schema as ``--set``. Runs are resumable as on the
command line: calling a finished run again does nothing and returns its result (``launcher`` is
how the commands run under torchrun or srun: "none" in a notebook). Errors raise
:class:`ikd_cli.core.errors.IkdError` with the one-line message the command would print.
Importing this module imports no torch.
"""

from __future__ import annotations

from enum import Enum
from os import PathLike
from pathlib import Path
from typing import Any, Optional

from ikd_cli.attack.run import RECORD_LOSS, WORKERS
from ikd_cli.config import presets
from ikd_cli.config.schema import SETTINGS, Role, Split, shown
from ikd_cli.core.distributed import check_launcher
from ikd_cli.core.errors import IkdError

__all__ = ["load_preset", "levels", "train", "attack", "export_attack", "distill", "evaluate", "robustness"]


def load_preset(preset: str = presets.DEFAULT_PRESET, settings: Optional[dict] = None, section: str = "",
                **keys: Any) -> dict:
    """The resolved preset tree with ``settings`` (dotted keys) and ``keys`` (keys of ``section``,
    or dotted keys when no section is given) applied. A None in ``settings`` sets the key to null;
    a keyword set to None is "not given" (the preset's value applies), as an option left out."""
    if not isinstance(preset, (str, PathLike)):
        raise IkdError(f"preset must be a preset's name or a YAML path, got {shown(preset)}")
    overrides = _settings(settings)
    for key, value in keys.items():
        dotted = f"{section}.{key}" if section and f"{section}.{key}" in SETTINGS else key
        if dotted not in SETTINGS and not dotted.startswith("data.shapes."):
            where = f" of {section}.*" if section else ""
            raise IkdError(f"unknown setting '{key}'{where}: {presets.nearest(dotted, SETTINGS)}")
        if value is not None:
            overrides[dotted] = value.value if isinstance(value, Enum) else value
    from ikd_cli.core.invocation import remember

    tree = presets.load(preset, overrides)
    remember(tree, preset, overrides)  # hints repeat the preset as given, with these values
    return tree


def _settings(settings: Any) -> dict:
    """A copy of ``settings`` (dotted key -> value), or one line saying what it must be."""
    if settings is None:
        return {}
    if not isinstance(settings, dict) or not all(isinstance(key, str) for key in settings):
        raise IkdError(f"settings must be a dict of dotted keys (text) to values, such as {{'train.seed': 1}}; "
                       f"got {shown(settings)}")
    return dict(settings)


def levels(preset: str = presets.DEFAULT_PRESET, *, settings: Optional[dict] = None, every: bool = False) -> dict:
    """``ikd presets levels``: per model (``teacher``, ``student``) the feature maps it can distil
    (``{name, channels, stride, output, picked}``, from one dry forward), the (student, teacher)
    ``pairs`` that ``distill.levels`` picks, ``warnings``, and ``error`` (its line, '' if none)."""
    from ikd_cli.distill.levels import candidates

    return candidates(load_preset(preset, settings), every)


def _choice(what: str, value: Any, choices: type[Enum]) -> str:
    """``value`` (a member of ``choices`` or its name) as a name, or one line naming the valid ones."""
    value = value.value if isinstance(value, Enum) else value
    names = [c.value for c in choices]
    if value not in names:
        raise IkdError(f"{what} must be one of {', '.join(names)}, got {shown(value)}")
    return value


def train(preset: str = presets.DEFAULT_PRESET, model: str = "teacher", *, settings: Optional[dict] = None,
          device: Optional[str] = None, restart: bool = False, must_resume: bool = False, verbose: bool = False,
          launcher: str = "none", **keys: Any) -> Path:
    """``ikd train``: train the preset's teacher or student (``keys`` are ``train.*``); returns the
    run's final checkpoint."""
    from ikd_cli.train.run import train_detector

    model, launcher = _choice("model", model, Role), check_launcher(launcher)
    tree = load_preset(preset, settings, "train", **keys)
    _check_levels(tree, "train")
    return train_detector(tree, model, must_resume=must_resume, restart=restart, device=device, launcher=launcher,
                          verbose=verbose)


def attack(preset: str = presets.DEFAULT_PRESET, split: str = "train", *, settings: Optional[dict] = None,
           limit: Optional[int] = None, checkpoint: Optional[Path] = None, out: Optional[Path] = None,
           overwrite: bool = False, device: Optional[str] = None, workers: int = WORKERS,
           record_loss: bool = RECORD_LOSS, verbose: bool = False, launcher: str = "none", skip_bad: bool = False,
           teacher_check: bool = True, **options: Any) -> dict:
    """``ikd attack``: adversarial copies of a split's images against the teacher (``options`` are
    ``attack.*``: ``method``, ``eps``, ``steps``, ...); returns the set's summary (images,
    attacked, failed, linf_max, losses before and after). ``teacher_check``: first score the
    teacher on a few val images and refuse one near 0 AP."""
    from ikd_cli.attack.run import run_attack

    split, launcher = _choice("split", split, Split), check_launcher(launcher)
    tree = load_preset(preset, settings, "attack", **options)
    _check_levels(tree, "attack")
    return run_attack(tree, split=split, limit=limit, device=device, launcher=launcher, overwrite=overwrite,
                      checkpoint=checkpoint, out=out, workers=workers, record_loss=record_loss, verbose=verbose,
                      skip_bad=skip_bad, teacher_check=_teacher_check(tree, device, teacher_check))


def export_attack(preset: str = presets.DEFAULT_PRESET, split: str = "train", *, dest: Path,
                  settings: Optional[dict] = None, out: Optional[Path] = None) -> int:
    """``ikd attack --export DIR``: the finished set of ``split`` (at ``out``, or the preset's) as
    plain PNG images in ``dest``; returns the images written."""
    from ikd_cli.attack.export import export_set

    split = _choice("split", split, Split)
    return export_set(load_preset(preset, settings), split=split, out=out, dest=Path(dest))


def distill(preset: str = presets.DEFAULT_PRESET, *, settings: Optional[dict] = None, device: Optional[str] = None,
            restart: bool = False, verbose: bool = False, launcher: str = "none", teacher_check: bool = True,
            dry_run: bool = False, **keys: Any) -> Path:
    """``ikd distill``: both stages in one run (``keys`` are ``distill.*``: ``method``,
    ``dfa_until``, ``alpha_adv``, ...); returns the student's final checkpoint. ``teacher_check``:
    first score the teacher on a few val images and refuse one near 0 AP; ``dry_run``: only the
    checks and one iteration of each stage, their table in the work dir (returned)."""
    from ikd_cli.distill.run import run_distill

    launcher = check_launcher(launcher)
    tree = load_preset(preset, settings, "distill", **keys)
    _check_levels(tree, "distill")  # the warnings too (a level before its ConvModule's norm)
    if dry_run:  # a teacher near 0 AP is a failed row of the table, not the end
        from ikd_cli.distill.dry_run import dry_run_distill

        return dry_run_distill(tree, device=device, teacher_check=_teacher_check(tree, device, teacher_check, False))
    return run_distill(tree, restart=restart, device=device, launcher=launcher, verbose=verbose,
                       teacher_check=_teacher_check(tree, device, teacher_check))


def _check_levels(tree: dict, command: str) -> None:
    """``distill.levels`` checked on the models before hours of training or attacking (bad names:
    one IkdError naming them all)."""
    from ikd_cli.distill.levels import check_before_run

    check_before_run(tree, command)


def _teacher_check(tree: dict, device: Optional[str], enabled: bool, refuse: bool = True):
    """The teacher check as the run calls it, with the teacher's checkpoint, once its cheaper
    checks have passed (it lives in evaluate/, which attack and distill do not import)."""
    from ikd_cli.evaluate.teacher_check import check_teacher

    return lambda checkpoint: check_teacher(tree, checkpoint=checkpoint, device=device, enabled=enabled, refuse=refuse)


def evaluate(checkpoint: str | Path, *, preset: Optional[str] = None, model: str = "student",
             images: Optional[Path] = None, split: str = "val", settings: Optional[dict] = None,
             device: Optional[str] = None, verbose: bool = False, classwise: bool = False,
             out: Optional[Path] = None) -> dict:
    """``ikd evaluate``: COCO bbox metrics of a checkpoint on the preset's split (or on ``images``,
    another copy of them); returns ``{"AP": ..., "AP50": ..., ...}`` (fractions, as COCOeval)
    and writes the same JSON file beside the checkpoint as the command (or at ``out``). Without
    a preset, ``settings`` apply to the preset the checkpoint carries."""
    from ikd_cli.evaluate.run import evaluate_checkpoint

    split, model, settings = _choice("split", split, Split), _choice("model", model, Role), _settings(settings)
    tree = load_preset(preset, settings) if preset else None
    results = evaluate_checkpoint(Path(checkpoint), preset=tree, model=model, images=images, split=split,
                                  overrides=settings, device=device, verbose=verbose, classwise=classwise, out=out)
    return results["bbox"] if "bbox" in results else results


def robustness(checkpoint: str | Path, *, preset: Optional[str] = None, model: str = "student", split: str = "val",
               settings: Optional[dict] = None, corruptions: Optional[str] = None, severities: Optional[str] = None,
               device: Optional[str] = None, verbose: bool = False, whitebox: bool = True) -> dict:
    """``ikd evaluate --robustness``: the checkpoint scored clean, on the teacher's adversarial
    set, under the preset's attack on itself (unless ``whitebox`` is False) and under corruptions
    (``corruptions``: a set name or names, None: the default set); returns the summary it writes
    beside the checkpoint."""
    from ikd_cli.evaluate.robustness import evaluate_robustness

    split, model, settings = _choice("split", split, Split), _choice("model", model, Role), _settings(settings)
    tree = load_preset(preset, settings) if preset else None
    return evaluate_robustness(Path(checkpoint), preset=tree, model=model, overrides=settings, device=device,
                               verbose=verbose, corruptions=corruptions, severities=severities, split=split,
                               whitebox=whitebox)
