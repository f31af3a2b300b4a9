"""Training through MMDetection's own runner (mmcv EpochBasedRunner), with ikd's hooks: a rich
progress bar, a stop on non-finite losses, and CPU-friendly data parallel wrappers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import IkdError
from .fileio import atomic_write_text, ensure_writable_dir
from .ui import console, quiet_to_log

def build_dataset_checked(dataset_cfg, what: str):
    """mmdet's build_dataset, with missing or corrupt annotation files turned into one line."""
    from mmdet.datasets import build_dataset

    ann = Path(dataset_cfg.get("ann_file", ""))
    images = Path(dataset_cfg.get("img_prefix", ""))
    if not ann.is_file():
        raise IkdError(f"{what} annotation file not found: {ann}")
    if not images.is_dir():
        raise IkdError(f"{what} image folder not found: {images}")
    try:
        dataset = build_dataset(dataset_cfg)
    except (ValueError, KeyError, TypeError, AssertionError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise IkdError(f"cannot load {what} annotations {ann}: {first}") from None
    if len(dataset) == 0:
        raise IkdError(f"{what} annotations {ann} hold no usable images")
    _check_image_loading(dataset)
    return dataset


class CheckedImageLoad:
    """Wraps the pipeline's image-loading step so that a missing or corrupt image stops the run
    with its file name, instead of an AttributeError several steps later. Applied at run time,
    so the saved configs stay stock MMDetection configs."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, results):
        info = results.get("img_info", {})
        name = Path(results.get("img_prefix") or "") / info.get("filename", "")
        if not name.is_file():
            raise IkdError(f"image not found: {name}")
        try:
            out = self.transform(results)
        except Exception:
            out = None
        if out is None or out.get("img") is None:
            raise IkdError(f"cannot read image {name}: corrupt or not an image")
        return out

    def __repr__(self):
        return f"CheckedImageLoad({self.transform!r})"


def _check_image_loading(dataset) -> None:
    datasets = [dataset]
    while hasattr(datasets[-1], "dataset"):
        datasets.append(datasets[-1].dataset)
    for ds in datasets:
        transforms = getattr(getattr(ds, "pipeline", None), "transforms", None)
        if transforms and type(transforms[0]).__name__.startswith("LoadImage"):
            transforms[0] = CheckedImageLoad(transforms[0])


def save_run_files(work_dir: Path, cfg, preset: dict) -> None:
    """The resolved preset and mmdet config of every run, saved in its work dir."""
    from .presets import dump

    atomic_write_text(work_dir / "preset.yaml", dump(preset))
    atomic_write_text(work_dir / "config.py", cfg.pretty_text)


def run_training(cfg, *, device: str, distributed: bool, resume_from: str | None = None,
                 extra_hooks=(), title: str = "train", meta: dict | None = None,
                 find_unused: bool = False):
    """Train ``cfg.model`` with mmcv's EpochBasedRunner.

    Returns the runner after the last epoch. Everything MMDetection logs goes wherever the
    caller's ``quiet_to_log`` sends it.
    """
    from mmcv.runner import build_optimizer, build_runner, get_dist_info
    from mmdet import __version__ as mmdet_version
    from mmdet.apis import set_random_seed
    from mmdet.core import DistEvalHook, EvalHook
    from mmdet.datasets import build_dataloader, replace_ImageToTensor
    from mmdet.models import build_detector
    from mmdet.utils import get_root_logger

    from . import compat
    from .runner import FiniteLossHook, RichProgressHook, wrap_model

    compat.apply()

    logger = get_root_logger(log_level="INFO")
    # Seed before the model is built: its random initialisation (a distiller's student backbone
    # and loss modules included) is part of what makes two runs with one seed the same.
    set_random_seed(cfg.seed, deterministic=False)
    rank, world_size = get_dist_info()

    dataset = build_dataset_checked(cfg.data.train, "training")
    model = build_detector(cfg.model)
    model.init_weights()  # for a distiller: student init, teacher weights, init_student
    model.CLASSES = dataset.CLASSES

    loader = build_dataloader(dataset, cfg.data.samples_per_gpu, cfg.data.workers_per_gpu, num_gpus=1,
                              dist=distributed, seed=cfg.seed, runner_type="EpochBasedRunner",
                              persistent_workers=False)
    model = wrap_model(model, device, distributed, find_unused)
    optimizer = build_optimizer(model, cfg.optimizer)
    run_meta = dict(mmdet_version=mmdet_version, config=cfg.pretty_text, seed=cfg.seed,
                    ikd=dict(cfg.get("ikd", {})), **(meta or {}))
    cfg.runner.type = "IKDEpochBasedRunner"  # stock runner + atomic checkpoints + stage switch
    runner = build_runner(cfg.runner, default_args=dict(model=model, optimizer=optimizer,
                                                        work_dir=cfg.work_dir, logger=logger, meta=run_meta))
    runner.timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    cfg.checkpoint_config.meta = dict(mmdet_version=mmdet_version, CLASSES=dataset.CLASSES)
    runner.register_training_hooks(cfg.lr_config, cfg.optimizer_config, cfg.checkpoint_config, cfg.log_config,
                                   cfg.get("momentum_config"))
    runner.register_hook(FiniteLossHook(), priority="HIGH")  # before OptimizerHook (ABOVE_NORMAL)
    for hook, priority in extra_hooks:
        runner.register_hook(hook, priority=priority)

    if cfg.evaluation.get("interval", 0) > 0:
        val_cfg = cfg.data.val.copy()
        val_cfg.test_mode = True
        val_cfg.pipeline = replace_ImageToTensor(val_cfg.pipeline)
        val_dataset = build_dataset_checked(val_cfg, "validation")
        val_loader = build_dataloader(val_dataset, samples_per_gpu=1, workers_per_gpu=cfg.data.workers_per_gpu,
                                      dist=distributed, shuffle=False, persistent_workers=False)
        eval_cfg = {k: v for k, v in cfg.evaluation.items()}
        eval_cfg["by_epoch"] = True
        if distributed and device == "cpu":
            # mmdet gathers results through a CUDA tensor unless given a shared folder.
            eval_cfg["tmpdir"] = os.path.join(cfg.work_dir, ".eval_hook")
        hook_cls = DistEvalHook if distributed else EvalHook
        runner.register_hook(hook_cls(val_loader, **eval_cfg), priority="LOW")
    # After evaluation (LOW, 70) so the epoch line can show the mAP; before the text logger (90).
    runner.register_hook(RichProgressHook(title), priority=75)

    if cfg.get("dfa_until", 0) > 0:
        dfa_dataset = build_dataset_checked(cfg.data.train_dfa, "training (DFA)")
        runner.dfa_loader = build_dataloader(dfa_dataset, cfg.data.samples_per_gpu, cfg.data.workers_per_gpu,
                                             num_gpus=1, dist=distributed, seed=cfg.seed,
                                             runner_type="EpochBasedRunner", persistent_workers=False)
        runner.dfa_until = cfg.dfa_until
    if resume_from:
        runner.resume(resume_from, map_location="cpu" if device == "cpu" else "default")
    runner.run([loader], cfg.workflow)
    return runner


def train_detector_cli(preset: dict, role: str, *, resume: bool, device: str | None, launcher: str,
                       verbose: bool) -> None:
    """``ikd train``: build the config, make the data if it is built-in, train, report."""
    from .datasets_setup import ensure_dataset
    from .launch import init_distributed, pick_device
    from .mmdet_config import build_config

    device = pick_device(device)
    distributed, rank, world = init_distributed(launcher, device)
    cfg = build_config(preset, role)
    work_dir = ensure_writable_dir(cfg.work_dir, "work dir")
    if rank == 0:
        ensure_dataset(preset)
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    resume_from = None
    if resume:
        latest = work_dir / "latest.pth"
        if not latest.exists():
            raise IkdError(f"nothing to resume in {work_dir} (no latest.pth)")
        resume_from = str(latest)
    if rank == 0:
        save_run_files(work_dir, cfg, preset)
        from .distill_run import RUN_FILE
        from .fileio import atomic_write_json

        atomic_write_json(work_dir / RUN_FILE, {"command": "train", "role": role, "preset": preset["name"]})
        console.print(f"training the [bold]{role}[/] of preset [bold]{preset['name']}[/] on {device}"
                      f"{f' x{world}' if distributed else ''}; log: {work_dir / 'train.log'}")
    start = time.time()
    with quiet_to_log(work_dir / "train.log", verbose=verbose):
        runner = run_training(cfg, device=device, distributed=distributed, resume_from=resume_from,
                              title=f"train {role}", meta=dict(ikd_preset=preset, ikd_role=role))
    if rank == 0:
        minutes = (time.time() - start) / 60
        console.print(f"[green]done[/] in {minutes:.1f} min: {work_dir / 'latest.pth'}"
                      + _best_line(work_dir))
    return runner


def _best_line(work_dir: Path) -> str:
    best = sorted(work_dir.glob("best_bbox_mAP_epoch_*.pth"))
    return f" (best: {best[-1].name})" if best else ""
