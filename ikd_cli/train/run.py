"""``ikd train``: a plain detector of the preset (the teacher of the built-in data, or a student
baseline) through MMDetection's runner."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.config.layout import LATEST, best_checkpoints
from ikd_cli.train import template


def training_keys(preset: dict, role: str):
    """The preset keys a plain training of ``role`` depends on: data.*, train.* and <role>.*,
    less the train schedule keys that <role>'s own (teacher.epochs, teacher.lr_steps) replace,
    and less teacher.checkpoint for the teacher: where its weights are to be read, not an input
    of training it (after a first launch in --work-dir W it resolves to W's file: the same run)."""
    own = {f"train.{key}" for key in ("epochs", "lr_steps") if preset[role].get(key) is not None}
    if role == "teacher":
        own.add("teacher.checkpoint")
    return lambda key: key.split(".", 1)[0] in ("data", "train", role) and key not in own


def train_detector(preset: dict, role: str, *, device: str | None, launcher: str, verbose: bool,
                   restart: bool = False, must_resume: bool = False, work_dir: Path | None = None) -> Path:
    """Train (or continue training) ``role`` of ``preset``; returns its latest checkpoint.
    ``work_dir`` replaces the preset's run folder (``ikd resume DIR`` continues DIR itself)."""
    from ikd_cli.config.mmdet import build_config

    return template.run(template.Run(
        preset, build=lambda: build_config(preset, role, start=True), run_info={"command": "train", "role": role},
        title=f"train {role}", role=role, counts=training_keys(preset, role),
        announce=lambda session, cfg: f"training the [bold]{role}[/] of preset [bold]{preset['name']}[/] on "
                                      f"{session.where}",
        done=lambda work_dir: f"{work_dir / LATEST}{_best_line(work_dir)}"),
        device=device, launcher=launcher, verbose=verbose, restart=restart, must_resume=must_resume, work_dir=work_dir)


def _best_line(work_dir: Path) -> str:
    best = best_checkpoints(work_dir)
    return f" (best: {best[-1].name})" if best else ""
