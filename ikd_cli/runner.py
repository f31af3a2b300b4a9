"""The mmcv runner layer of ikd: the runner, its hooks and the data-parallel wrappers. Imports
mmcv at module level, so only the commands that train import it (never ``ikd --help``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from mmcv.parallel import MMDataParallel, MMDistributedDataParallel, scatter_kwargs
from mmcv.runner import HOOKS, RUNNERS, EpochBasedRunner, Hook, get_dist_info, weights_to_cpu

from .errors import IkdError
from .fileio import atomic_write
from .ui import console, progress_bar


def point_latest(folder: Path, target: str, name: str) -> None:
    """Atomically make ``folder/name`` a symlink to ``target`` (a file in the same folder)."""
    tmp = folder / f".{name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, folder / name)


@HOOKS.register_module(force=True)
class RichProgressHook(Hook):
    """Iterations, losses, ETA on a rich bar; one line per epoch with the validation mAP."""

    def __init__(self, title: str = "train"):
        self.title = title
        self.progress = None

    def before_run(self, runner):
        if get_dist_info()[0] != 0:
            return
        self.progress = progress_bar()
        self.task = self.progress.add_task(self.title, total=runner.max_iters, completed=runner.iter,
                                           info="", unit="it")
        self.progress.start()

    def after_train_iter(self, runner):
        if self.progress is None:
            return
        log_vars = runner.outputs.get("log_vars", {}) if runner.outputs else {}
        loss = log_vars.get("loss")
        info = f"epoch {runner.epoch + 1}/{runner.max_epochs}"
        if loss is not None:
            info += f"  loss {loss:.4f}"
        self.progress.update(self.task, completed=runner.iter + 1, info=info)

    def after_train_epoch(self, runner):
        if self.progress is None:
            return
        out = runner.log_buffer.output
        maps = {k: v for k, v in out.items() if k.endswith("_mAP")}
        if maps:
            text = "  ".join(f"{k} {v:.3f}" for k, v in maps.items())
            self.progress.console.print(f"epoch {runner.epoch + 1}: {text}")

    def after_run(self, runner):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

@HOOKS.register_module(force=True)
class FiniteLossHook(Hook):
    """Stop at the first NaN/inf loss, before the optimiser step spreads it into the weights
    (this hook runs before OptimizerHook) and before a checkpoint could save it."""

    def after_train_iter(self, runner):
        loss = runner.outputs.get("log_vars", {}).get("loss") if runner.outputs else None
        if loss is not None and not math.isfinite(loss):
            latest = Path(runner.work_dir) / "latest.pth"
            keep = f"; the last good checkpoint is {latest}" if latest.exists() else ""
            raise IkdError(f"the loss became {loss} at epoch {runner.epoch + 1}, iteration "
                           f"{runner.inner_iter + 1}{keep}; lower the learning rate (--set train.lr=...)")

@RUNNERS.register_module(force=True)
class IKDEpochBasedRunner(EpochBasedRunner):
    """mmcv's EpochBasedRunner with two changes: checkpoints are written under a temporary
    name and renamed into place (a crash never leaves a half-written epoch_N.pth or a
    latest.pth that points at one), and with ``dfa_loader`` set, epochs before ``dfa_until``
    train on IKD's stage-1 data and the rest on the plain data, switching inside one run."""

    dfa_loader = None
    dfa_until = 0

    def train(self, data_loader, **kwargs):
        stage1 = self.dfa_loader is not None and self.epoch < self.dfa_until
        model = getattr(self.model, "module", self.model)
        if hasattr(model, "dfa") and (model.dfa != stage1 or self.epoch == self._epoch_started):
            what = "stage 1: FGD + IKD augmentation (adversarial features)" if stage1 else "stage 2: plain FGD"
            self.logger.info(f"epoch {self.epoch + 1}: {what}")
            if get_dist_info()[0] == 0:
                console.print(f"epoch {self.epoch + 1}: {what}")
            model.dfa = stage1
        super().train(self.dfa_loader if stage1 else data_loader, **kwargs)

    def run(self, data_loaders, workflow, **kwargs):
        self._epoch_started = self.epoch
        return super().run(data_loaders, workflow, **kwargs)

    def save_checkpoint(self, out_dir, filename_tmpl="epoch_{}.pth", save_optimizer=True, meta=None,
                        create_symlink=True):
        final = filename_tmpl.format(self.epoch + 1)
        tmp = f".{final}.tmp"
        try:
            super().save_checkpoint(out_dir, filename_tmpl=tmp, save_optimizer=save_optimizer, meta=meta,
                                    create_symlink=False)
            os.replace(os.path.join(out_dir, tmp), os.path.join(out_dir, final))
        except BaseException:
            if os.path.exists(os.path.join(out_dir, tmp)):
                os.unlink(os.path.join(out_dir, tmp))
            raise
        if create_symlink:
            point_latest(Path(out_dir), final, "latest.pth")


@HOOKS.register_module(force=True)
class StudentCheckpointHook(Hook):
    """Beside each full checkpoint (teacher, student, losses, optimiser: what resume needs),
    save the student alone as a clean mmdet checkpoint: ``student_epoch_N.pth``,
    ``student_latest.pth`` and, when validation finds a new best, ``student_best.pth``."""

    def __init__(self, interval: int, student_config_text: str, meta: dict):
        self.interval = interval
        self.config_text = student_config_text
        self.meta = meta
        self.best = None

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
            name = f"student_epoch_{runner.epoch + 1}.pth"
            self._save(runner, name)
            point_latest(Path(runner.work_dir), name, "student_latest.pth")
        best = (runner.meta or {}).get("hook_msgs", {}).get("best_ckpt")
        if best and best != self.best:
            self.best = best
            self._save(runner, "student_best.pth")


def wrap_model(model, device: str, distributed: bool, find_unused: bool = False):
    """MMDataParallel / MMDistributedDataParallel, with the DataContainer scatter done on CPU too."""
    if not distributed:
        if device == "cuda":
            return MMDataParallel(model.cuda(), device_ids=[torch.cuda.current_device()])
        return MMDataParallel(model.cpu(), device_ids=None)

    class DistributedDataParallel(MMDistributedDataParallel):
        """mmcv's DDP wrapper, mended in two places:
        * mmcv scatters DataContainers only when device_ids are given (GPU); on CPU (gloo) they
          are unwrapped here first;
        * mmcv 1.7's _run_ddp_forward reads an attribute that newer torch DDP no longer has,
          which breaks every forward outside train_step (evaluation during training)."""

        def _cpu_scatter(self, inputs, kwargs):
            if self.device_ids:
                return inputs, kwargs
            inputs, kwargs = scatter_kwargs(inputs, kwargs, [-1])
            return inputs[0], kwargs[0]

        def train_step(self, *inputs, **kwargs):
            inputs, kwargs = self._cpu_scatter(inputs, kwargs)
            return super().train_step(*inputs, **kwargs)

        def val_step(self, *inputs, **kwargs):
            inputs, kwargs = self._cpu_scatter(inputs, kwargs)
            return super().val_step(*inputs, **kwargs)

        def forward(self, *inputs, **kwargs):
            inputs, kwargs = self._cpu_scatter(inputs, kwargs)
            return super().forward(*inputs, **kwargs)

        def _run_ddp_forward(self, *inputs, **kwargs):
            if self.device_ids:
                inputs, kwargs = self.to_kwargs(inputs, kwargs, self.device_ids[0])
                return self.module(*inputs[0], **kwargs[0])
            return self.module(*inputs, **kwargs)

    if device == "cuda":
        return DistributedDataParallel(model.cuda(), device_ids=[torch.cuda.current_device()],
                                       broadcast_buffers=False, find_unused_parameters=find_unused)
    return DistributedDataParallel(model.cpu(), device_ids=None, broadcast_buffers=False,
                                   find_unused_parameters=find_unused)
