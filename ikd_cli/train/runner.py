"""The mmcv runner layer of ikd: the runner (atomic checkpoints) and the data-parallel wrappers.
Imports mmcv at module level, so only the commands that train import it (never ``ikd --help``)."""

from __future__ import annotations

import os

import torch
from mmcv.parallel import MMDataParallel, MMDistributedDataParallel, scatter_kwargs
from mmcv.runner import RUNNERS, EpochBasedRunner, load_state_dict

from ikd_cli.core.checkpoints import read_checkpoint
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_symlink
from ikd_cli.config.layout import EPOCH_CHECKPOINT, LATEST


@RUNNERS.register_module(force=True)
class IKDEpochBasedRunner(EpochBasedRunner):
    """mmcv's EpochBasedRunner whose checkpoints are written under a temporary name and renamed
    into place: a crash never leaves a half-written epoch_N.pth, or a latest.pth that points at
    one. (IKD's stage switch is a hook, :class:`ikd_cli.distill.hooks.DFAStageHook`.)"""

    def save_checkpoint(self, out_dir, filename_tmpl=EPOCH_CHECKPOINT, save_optimizer=True, meta=None,
                        create_symlink=True):
        final = filename_tmpl.format(self.epoch + 1)
        tmp = f".{final}.tmp"
        try:
            super().save_checkpoint(out_dir, filename_tmpl=tmp, save_optimizer=save_optimizer, meta=meta,
                                    create_symlink=False)
            os.replace(os.path.join(out_dir, tmp), os.path.join(out_dir, final))
        except BaseException as err:
            if os.path.exists(os.path.join(out_dir, tmp)):
                os.unlink(os.path.join(out_dir, tmp))
            # torch.save reports a full disk as a RuntimeError without the file's name (and a
            # Ctrl-C inside it as one too: that stays an interrupt).
            if isinstance(err, (OSError, RuntimeError)) and not isinstance(err.__context__, KeyboardInterrupt):
                reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
                raise IkdError(f"cannot write checkpoint {os.path.join(out_dir, final)} ({reason}); is the disk "
                               "full? The previous checkpoint is intact") from err
            raise
        if create_symlink:
            atomic_symlink(out_dir, final, LATEST)

    def load_checkpoint(self, filename, map_location="cpu", strict=False, revise_keys=()):
        """Read through :func:`read_checkpoint` (only what checkpoints hold, unless trusted), not
        mmcv's torch.load. Tensors land on the CPU; the model and the optimiser copy them to
        their own device. The meta handed on leaves out ``config``: mmcv's resume would run that
        Python text, only to rescale the iteration count by its ``gpu_ids`` (always [0] in ikd's
        configs, whatever the world size: the rescaling was wrong under --gpus N anyway)."""
        ckpt = read_checkpoint(filename)
        model = self.model.module if hasattr(self.model, "module") else self.model
        load_state_dict(model, {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}, strict,
                        self.logger)
        return dict(ckpt, meta={k: v for k, v in (ckpt.get("meta") or {}).items() if k != "config"})

    def resume(self, checkpoint, resume_optimizer=True, map_location="default"):
        """mmcv's resume (on the CPU: see load_checkpoint); the checkpoints saved next record
        this run's own config text (the resumed run's settings were checked to be the same)."""
        own_config = (self.meta or {}).get("config")
        super().resume(checkpoint, resume_optimizer=resume_optimizer, map_location="cpu")
        if own_config is not None:
            self.meta["config"] = own_config


class _CpuAutocast:
    """Mixin: each training step under bf16 autocast on the CPU (``--amp`` there); weights,
    gradients and the optimiser stay fp32, and the distillation losses compute in fp32."""

    def train_step(self, *inputs, **kwargs):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            return super().train_step(*inputs, **kwargs)


def wrap_model(model, device: str, distributed: bool, find_unused: bool = False, autocast_cpu: bool = False):
    """MMDataParallel / MMDistributedDataParallel, with the DataContainer scatter done on CPU too
    (and each training step under bf16 autocast with ``autocast_cpu``)."""
    if not distributed:
        if device == "cuda":
            return MMDataParallel(model.cuda(), device_ids=[torch.cuda.current_device()])
        cls = type("AutocastDataParallel", (_CpuAutocast, MMDataParallel), {}) if autocast_cpu else MMDataParallel
        return cls(model.cpu(), device_ids=None)

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
    cls = type("AutocastDDP", (_CpuAutocast, DistributedDataParallel), {}) if autocast_cpu else DistributedDataParallel
    return cls(model.cpu(), device_ids=None, broadcast_buffers=False, find_unused_parameters=find_unused)
