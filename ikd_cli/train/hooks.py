"""Hooks every ikd training run registers (mmcv ``Hook``s, built in :mod:`.engine`): a rich
progress bar with the losses and the validation mAP, and a stop at the first non-finite loss."""

from __future__ import annotations

import math
from pathlib import Path

from mmcv.runner import HOOKS, Hook, get_dist_info

from ikd_cli.core.errors import IkdError
from ikd_cli.core.ui import progress_bar
from ikd_cli.config.layout import LATEST, best_checkpoints, epoch_in_name


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
            latest = Path(runner.work_dir) / LATEST
            keep = f"; the last good checkpoint is {latest}" if latest.exists() else ""
            raise IkdError(f"the loss became {loss} at epoch {runner.epoch + 1}, iteration "
                           f"{runner.inner_iter + 1}{keep}; lower the learning rate (--set train.lr=...)")


@HOOKS.register_module(force=True)
class BestOfThisRunHook(Hook):
    """Before mmcv's EvalHook reads which checkpoint is best (its ``before_run``), make that the
    newest ``best_*_epoch_N.pth`` of THIS work dir at or before the epoch the run continues from,
    and remove the others: a best of epochs after that point (an earlier continuation, a
    dangling latest.pth) is of weights no longer on disk and would survive beside the new best;
    and a copied run folder's checkpoints name the original's best, which EvalHook would delete."""

    def before_run(self, runner):
        from ikd_cli.core.checkpoints import read_checkpoint

        if runner.meta is None:
            runner.meta = {}
        msgs = runner.meta.setdefault("hook_msgs", {})
        files = best_checkpoints(runner.work_dir)
        kept = [path for path in files if epoch_in_name(path) <= runner.epoch]
        newest = kept[-1] if kept else None
        if get_dist_info()[0] == 0:
            for path in files:
                if path != newest:
                    path.unlink()
                    runner.logger.info(f"removed {path.name}: its epoch is not part of this run")
        if newest is None:
            msgs.pop("best_ckpt", None)
            msgs.pop("best_score", None)
            return
        saved = (read_checkpoint(newest).get("meta") or {}).get("hook_msgs") or {}
        msgs["best_ckpt"] = str(newest)
        if "best_score" in saved:
            msgs["best_score"] = saved["best_score"]
