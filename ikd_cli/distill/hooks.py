"""The two hooks of a distillation run, registered by :mod:`.run`:

* :class:`DFAStageHook`: IKD's stage switch. Epochs 1..``dfa_until`` train on the stage-1 data
  (adversarial image, instance corruption, adaptive crop) with the adversarial feature loss on;
  the later epochs on the plain data, the distiller alone. One run, no manual resume between stages.
* :class:`StudentCheckpointHook`: the student alone, as a clean mmdet checkpoint, each epoch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from mmcv.runner import HOOKS, Hook, get_dist_info, weights_to_cpu

from ikd_cli.config.layout import (STUDENT_BEST, STUDENT_EPOCH_CHECKPOINT, STUDENT_EPOCH_CHECKPOINTS_GLOB,
                                   STUDENT_LATEST, epoch_in_name)
from ikd_cli.core.fileio import atomic_symlink, atomic_write
from ikd_cli.core.ui import console


@HOOKS.register_module(force=True)
class DFAStageHook(Hook):
    """Stage 1 (data and feature augmentation) for epochs ``1..dfa_until``, stage 2 after.

    Before each epoch the runner is pointed at ``dfa_loader`` (stage 1) or left on its own loader
    (stage 2), and the distiller's ``dfa`` flag turns the adversarial feature loss on or off. The
    epoch a run starts or resumes in, and each switch, are logged. Registered at VERY_HIGH so the
    hooks after it (logger, timers) see the loader of the epoch.
    """

    def __init__(self, dfa_until: int, dfa_loader, stage1: str, stage2: str):
        self.dfa_until = int(dfa_until)
        self.dfa_loader = dfa_loader
        self.names = (stage1, stage2)  # what each stage is called in the log
        self.started_at = None

    def before_run(self, runner):
        self.started_at = runner.epoch

    def before_train_epoch(self, runner):
        stage1 = runner.epoch < self.dfa_until
        model = getattr(runner.model, "module", runner.model)
        if model.dfa != stage1 or runner.epoch == self.started_at:
            what = f"stage 1: {self.names[0]}" if stage1 else f"stage 2: {self.names[1]}"
            runner.logger.info(f"epoch {runner.epoch + 1}: {what}")
            if get_dist_info()[0] == 0:
                console.print(f"epoch {runner.epoch + 1}: {what}")
        model.dfa = stage1
        if stage1:
            runner.data_loader = self.dfa_loader


@HOOKS.register_module(force=True)
class StudentCheckpointHook(Hook):
    """Beside each full checkpoint (teacher, student, losses, optimiser: what resume needs),
    save the student alone as a clean mmdet checkpoint: ``student_epoch_N.pth``,
    ``student_latest.pth`` and, when validation finds a new best, ``student_best.pth``. Like
    mmcv's checkpoint hook, only the last ``max_keep`` of the epoch files stay (-1: all)."""

    def __init__(self, interval: int, student_config_text: str, meta: dict, max_keep: int = -1):
        self.interval = interval
        self.max_keep = max_keep
        self.config_text = student_config_text
        self.meta = meta
        self.best = None

    @classmethod
    def for_preset(cls, preset: dict) -> "StudentCheckpointHook":
        """The hook as a run of ``preset`` uses it: train.checkpoint_interval and max_keep_ckpts,
        the student's own config text and the preset in the saved meta."""
        from ikd_cli.config.mmdet import build_config

        train = preset["train"]
        return cls(train["checkpoint_interval"], build_config(preset, "student").pretty_text,
                   dict(ikd_preset=preset, ikd_role="student"), train["max_keep_ckpts"])

    def _save(self, runner, name: str) -> None:
        model = getattr(runner.model, "module", runner.model)
        ckpt = {"state_dict": weights_to_cpu(model.student.state_dict()),
                "meta": dict(self.meta, config=self.config_text, epoch=runner.epoch, iter=runner.iter,
                             CLASSES=getattr(model, "CLASSES", None))}
        with atomic_write(Path(runner.work_dir) / name, "wb") as fh:
            torch.save(ckpt, fh)

    def after_train_epoch(self, runner):
        if get_dist_info()[0] != 0:
            return
        if self.every_n_epochs(runner, self.interval) or self.is_last_epoch(runner):
            name = STUDENT_EPOCH_CHECKPOINT.format(runner.epoch + 1)
            self._save(runner, name)
            atomic_symlink(runner.work_dir, name, STUDENT_LATEST)
            if self.max_keep > 0:
                saved = sorted(Path(runner.work_dir).glob(STUDENT_EPOCH_CHECKPOINTS_GLOB), key=epoch_in_name)
                for old in saved[:-self.max_keep]:
                    old.unlink()

    def with_best(self) -> list:
        """This hook (priority 60: beside the full checkpoints) and its best-student part, which
        must run after mmdet's EvalHook (LOW, 70) has judged this epoch: run before it, it would
        save this epoch's student for the previous epoch's best."""
        return [(self, 60), (_StudentBest(self), 71)]


class _StudentBest(Hook):
    """``student_best.pth``: the student of the epoch mmdet's EvalHook just found best."""

    def __init__(self, saver: StudentCheckpointHook):
        self.saver = saver

    def after_train_epoch(self, runner):
        if get_dist_info()[0] != 0:
            return
        best = (runner.meta or {}).get("hook_msgs", {}).get("best_ckpt")
        if best and best != self.saver.best:
            self.saver.best = best
            self.saver._save(runner, STUDENT_BEST)


@HOOKS.register_module(force=True)
class DiagnosticsHook(Hook):
    """Stage 1's diagnostics of the adversarial term (:mod:`.diagnostics`), measured on the
    iterations the logger writes (every ``interval``-th of an epoch), so each log line holds the
    measurement of its own iteration: mmcv's logger averages a key over its last ``interval``
    entries, so the older measurements are dropped from the buffer first. Registered at NORMAL,
    before the logger hooks (VERY_LOW)."""

    def __init__(self, interval: int):
        self.interval = int(interval)

    def before_train_iter(self, runner):
        model = getattr(runner.model, "module", runner.model)
        model.diagnose = self.every_n_inner_iters(runner, self.interval)

    def after_train_iter(self, runner):
        from ikd_cli.distill.diagnostics import PREFIX

        buffer = runner.log_buffer
        for key in [k for k in buffer.val_history if k.startswith(PREFIX)]:
            buffer.val_history[key] = buffer.val_history[key][-1:]
            buffer.n_history[key] = buffer.n_history[key][-1:]
