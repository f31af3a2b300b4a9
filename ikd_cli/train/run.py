"""``ikd train``: a plain detector of the preset (the teacher of the built-in data, or a student
baseline) through MMDetection's runner."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.core.errors import IkdError
from ikd_cli.train.session import FINISHED, TrainingSession


def training_keys(preset: dict, role: str):
    """The preset keys a plain training of ``role`` depends on: data.*, train.* and <role>.*,
    less the train schedule keys that <role>'s own (teacher.epochs, teacher.lr_steps) replace."""
    own = {f"train.{key}" for key in ("epochs", "lr_steps") if preset[role].get(key) is not None}
    return lambda key: key.split(".", 1)[0] in ("data", "train", role) and key not in own


def train_detector(preset: dict, role: str, *, device: str | None, launcher: str, verbose: bool,
                   restart: bool = False, must_resume: bool = False, work_dir: Path | None = None):
    """Train (or continue training) ``role`` of ``preset``; ``must_resume`` insists on continuing;
    ``work_dir`` replaces the preset's run folder (``ikd resume DIR`` continues DIR itself)."""
    from ikd_cli.config.mmdet import build_config

    session = TrainingSession(preset, device=device, launcher=launcher)
    cfg = build_config(preset, role)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    work_dir, resume_from = session.prepare(cfg, {"command": "train", "role": role}, restart=restart,
                                            counts=training_keys(preset, role))
    if must_resume and resume_from is None:
        raise IkdError(f"nothing to resume in {work_dir} (no latest.pth)")
    if resume_from == FINISHED:
        return None
    session.say(f"training the [bold]{role}[/] of preset [bold]{preset['name']}[/] on {session.where}; "
                f"log: {work_dir / 'train.log'}")
    with session.log_to(work_dir, verbose):
        runner = session.train(cfg, resume_from=resume_from, title=f"train {role}",
                               meta=dict(ikd_preset=preset, ikd_role=role))
    session.done(f"{work_dir / 'latest.pth'}{_best_line(work_dir)}")
    return runner


def _best_line(work_dir: Path) -> str:
    best = sorted(work_dir.glob("best_bbox_mAP_epoch_*.pth"))
    return f" (best: {best[-1].name})" if best else ""
