"""One training run through MMDetection's own runner (mmcv EpochBasedRunner) with ikd's hooks:
a rich progress bar, a stop on non-finite losses, atomic checkpoints and CPU-friendly data
parallel wrappers. Stage-specific behaviour (IKD's stage switch, student checkpoints) comes in
as extra hooks from the caller."""

from __future__ import annotations

import copy
import os
import time

from ikd_cli.data.loading import build_dataset_checked


def build_train_loader(dataset, cfg, distributed: bool):
    """A training DataLoader over ``dataset`` with the run's batch size, workers and seed."""
    from mmdet.datasets import build_dataloader

    from ikd_cli.core.processes import bind_workers

    return bind_workers(build_dataloader(dataset, cfg.data.samples_per_gpu, cfg.data.workers_per_gpu, num_gpus=1,
                                         dist=distributed, seed=cfg.seed, runner_type="EpochBasedRunner",
                                         persistent_workers=False))


def run_training(cfg, *, device: str, distributed: bool, resume_from: str | None = None,
                 extra_hooks=(), title: str = "train", meta: dict | None = None,
                 find_unused: bool = False):
    """Train ``cfg.model`` with mmcv's EpochBasedRunner.

    ``extra_hooks`` is a sequence of (hook, priority). Returns the runner after the last epoch.
    Everything MMDetection logs goes wherever the caller's ``quiet_to_log`` sends it.
    """
    from mmdet.apis import set_random_seed

    from ikd_cli.core import compat
    from ikd_cli.train.hooks import BestOfThisRunHook, FiniteLossHook, RichProgressHook

    compat.apply()
    # Seed before the model is built: its random initialisation (a distiller's student backbone
    # and loss modules included) is part of what makes two runs with one seed the same.
    set_random_seed(cfg.seed, deterministic=False)
    model, dataset = _model_and_data(cfg, device, resume_from)
    loader = build_train_loader(dataset, cfg, distributed)
    runner = _runner(cfg, model, dataset, device, distributed, find_unused, meta)
    runner.register_hook(FiniteLossHook(), priority="HIGH")  # before OptimizerHook (ABOVE_NORMAL)
    runner.register_hook(BestOfThisRunHook(), priority="VERY_HIGH")  # before EvalHook's before_run
    for hook, priority in extra_hooks:
        runner.register_hook(hook, priority=priority)
    # the model config's own (EMA, mode switches ...), kept with train.optimizer: config, as mmdet's train_detector
    runner.register_custom_hooks([dict(h) for h in cfg.get("custom_hooks") or []])
    if cfg.evaluation.get("interval", 0) > 0:
        runner.register_hook(_eval_hook(cfg, device, distributed), priority="LOW")
    # After evaluation (LOW, 70) so the epoch line can show the mAP; before the text logger (90).
    runner.register_hook(RichProgressHook(title), priority=75)
    if resume_from:
        runner.resume(resume_from)
    runner.run([loader], cfg.workflow)
    return runner


def _model_and_data(cfg, device: str, resume_from: str | None):
    """The detector, initialised (and started from ``load_from`` on a fresh run), and its data."""
    from mmdet.models import build_detector

    dataset = build_dataset_checked(cfg.data.train, "training", skip=cfg.get("ikd_skipped") or ())
    model = build_detector(copy.deepcopy(cfg.model))  # some heads change their config while built (DETRHead)
    model.init_weights()  # for a distiller: student init, teacher weights, init_student
    if cfg.get("load_from") and not resume_from:
        # Start from these weights at epoch 0 (mmdet's load_from); checked to fit the model.
        from ikd_cli.core.checkpoints import load_weights, read_checkpoint

        load_weights(model, read_checkpoint(cfg.load_from)["state_dict"], cfg.load_from)
    model.CLASSES = dataset.CLASSES
    if cfg.get("ikd_amp") and device == "cuda":
        # mmcv's own mixed precision: fp16 forward (auto_fp16), dynamic loss scaling.
        from mmcv.runner import wrap_fp16_model

        wrap_fp16_model(model)
        cfg.optimizer_config = dict(cfg.optimizer_config, type="Fp16OptimizerHook", loss_scale="dynamic")
    return model, dataset


def _runner(cfg, model, dataset, device: str, distributed: bool, find_unused: bool, meta: dict | None):
    """mmcv's runner (ikd's atomic-checkpoint subclass) with the config's training hooks."""
    from mmcv.runner import build_optimizer, build_runner
    from mmdet import __version__ as mmdet_version
    from mmdet.utils import get_root_logger

    from ikd_cli.train.runner import wrap_model

    model = wrap_model(model, device, distributed, find_unused,
                       autocast_cpu=bool(cfg.get("ikd_amp")) and device == "cpu")
    optimizer = build_optimizer(model, cfg.optimizer)
    run_meta = dict(mmdet_version=mmdet_version, config=cfg.pretty_text, seed=cfg.seed,
                    ikd=dict(cfg.get("ikd", {})), **(meta or {}))
    cfg.runner.type = "IKDEpochBasedRunner"  # stock runner + atomic checkpoints
    runner = build_runner(cfg.runner, default_args=dict(model=model, optimizer=optimizer, work_dir=cfg.work_dir,
                                                        logger=get_root_logger(log_level="INFO"), meta=run_meta))
    runner.timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    cfg.checkpoint_config.meta = dict(mmdet_version=mmdet_version, CLASSES=dataset.CLASSES)
    runner.register_training_hooks(cfg.lr_config, cfg.optimizer_config, cfg.checkpoint_config, cfg.log_config,
                                   cfg.get("momentum_config"))
    return runner


def _eval_hook(cfg, device: str, distributed: bool):
    """mmdet's (Dist)EvalHook on the val split, every ``train.eval_interval`` epochs."""
    from mmdet.core import DistEvalHook, EvalHook
    from mmdet.datasets import build_dataloader, replace_ImageToTensor

    from ikd_cli.core.processes import bind_workers

    val_cfg = cfg.data.val.copy()
    val_cfg.test_mode = True
    val_cfg.pipeline = replace_ImageToTensor(val_cfg.pipeline)
    val_dataset = build_dataset_checked(val_cfg, "validation")
    val_loader = bind_workers(build_dataloader(val_dataset, samples_per_gpu=1, workers_per_gpu=cfg.data.workers_per_gpu,
                                               dist=distributed, shuffle=False, persistent_workers=False))
    eval_cfg = {k: v for k, v in cfg.evaluation.items()}
    eval_cfg["by_epoch"] = True
    if distributed and device == "cpu":
        # mmdet gathers results through a CUDA tensor unless given a shared folder.
        eval_cfg["tmpdir"] = os.path.join(cfg.work_dir, ".eval_hook")
    return (DistEvalHook if distributed else EvalHook)(val_loader, **eval_cfg)
