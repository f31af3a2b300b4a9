"""Preset -> MMDetection config. Loads the teacher's or student's stock mmdet config and writes
the preset's data paths, classes, schedule and work dir into it. The distiller's config (a model
that holds both) is built one layer up, in :mod:`ikd_cli.distill.config`, from the two made here."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.core.errors import IkdError
from ikd_cli.config.layout import run_dir
from ikd_cli.config.presets import data_path, preset_classes, resolve_config_path
from ikd_cli.config.recipe import apply_recipe

ROLES = ("teacher", "student")


def load_mmdet_config(path: Path):
    from mmcv import Config

    try:
        return Config.fromfile(str(path))
    except Exception as err:  # mmcv raises many types for a broken config file
        raise IkdError(f"cannot load model config {path}: {err}") from None


def base_dataset(ds):
    """The dataset config inside RepeatDataset/ClassBalancedDataset-style wrappers."""
    while ds is not None and "dataset" in ds:
        ds = ds["dataset"]
    return ds


def _datasets(cfg_data):
    """Yield (split, dataset dict) for train/val/test, unwrapped."""
    for split in ("train", "val", "test"):
        ds = base_dataset(cfg_data.get(split))
        if ds is not None:
            yield split, ds


def _set_num_classes(model_cfg, num_classes: int) -> None:
    """Set ``num_classes`` in every head of the model config (single- and multi-stage heads)."""
    if isinstance(model_cfg, dict):
        for key, value in model_cfg.items():
            if key == "num_classes":
                model_cfg[key] = num_classes
            else:
                _set_num_classes(value, num_classes)
    elif isinstance(model_cfg, list):
        for item in model_cfg:
            _set_num_classes(item, num_classes)


def _set_img_scale(pipeline, scale) -> None:
    for step in pipeline:
        if step.get("type") in ("Resize", "MultiScaleFlipAug") and "img_scale" in step:
            step["img_scale"] = tuple(scale)
        if "transforms" in step:
            _set_img_scale(step["transforms"], scale)


def apply_data(cfg, preset: dict) -> None:
    data = preset["data"]
    classes = preset_classes(preset)
    split_paths = {
        "train": (data_path(preset, "train_ann"), data_path(preset, "train_images")),
        "val": (data_path(preset, "val_ann"), data_path(preset, "val_images")),
        "test": (data_path(preset, "val_ann"), data_path(preset, "val_images")),
    }
    for split, ds in _datasets(cfg.data):
        ann, images = split_paths[split]
        ds["ann_file"] = str(ann)
        ds["img_prefix"] = str(images).rstrip("/") + "/"
        if classes:
            ds["classes"] = tuple(classes)
        if data["img_scale"]:
            _set_img_scale(ds["pipeline"], data["img_scale"])
    if classes:
        _set_num_classes(cfg.model, len(classes))
    cfg.data.samples_per_gpu = data["samples_per_gpu"]
    cfg.data.workers_per_gpu = data["workers_per_gpu"]


def apply_schedule(cfg, preset: dict, role: str = "student") -> None:
    """The run's recipe (optimizer, clip, lr schedule, epochs, custom_hooks: ``train.optimizer``,
    :mod:`ikd_cli.config.recipe`; what it replaced in ``cfg.ikd_replaced``, one line each) and
    ikd's own bookkeeping (checkpoints, evaluation, logging, seed)."""
    t = dict(preset["train"])
    cfg.ikd_replaced = apply_recipe(cfg, preset, role)
    cfg.ikd_amp = bool(t["amp"])  # applied by the training engine, which knows the device
    cfg.checkpoint_config = dict(interval=t["checkpoint_interval"], max_keep_ckpts=t["max_keep_ckpts"])
    metric = ["bbox", "segm"] if _has_masks(cfg.model) else "bbox"
    cfg.evaluation = dict(interval=t["eval_interval"], metric=metric, save_best="bbox_mAP", rule="greater")
    hooks = [dict(type="TextLoggerHook")] + ([dict(type="TensorboardLoggerHook")] if t["tensorboard"] else [])
    if t.get("wandb"):
        hooks.append(wandb_hook(preset))
    cfg.log_config = dict(interval=t["log_interval"], hooks=hooks)
    cfg.seed = t["seed"]
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=16)


def wandb_hook(preset: dict) -> dict:
    """mmcv's own W&B logger: one W&B run per launch, in the project ``ikd-<preset>`` (the
    training session names the run and points its files at the work dir). The log files are not uploaded as an artifact (they stay in the work dir); where the run's files
    go and whether it goes online are W&B's own settings (WANDB_DIR, WANDB_MODE=offline, ...)."""
    return dict(type="WandbLoggerHook", log_artifact=False, init_kwargs=dict(project=f"ikd-{preset['name']}"))


def _has_masks(model_cfg) -> bool:
    return bool(model_cfg.get("roi_head", {}).get("mask_head")) if hasattr(model_cfg, "get") else False


def has_masks(cfg) -> bool:
    return _has_masks(cfg.model)


def student_start(preset: dict) -> str | None:
    """``student.checkpoint``: the weights a student run starts from (None: its own
    initialisation); a path where no file is, is refused in one line before any work."""
    path = preset["student"]["checkpoint"]
    if path and not Path(path).is_file():
        raise IkdError(f"student.checkpoint not found: {path} (the weights to start the student from); fix the "
                       "path, or set student.checkpoint='' to start from the student's own initialisation")
    return path or None


def build_config(preset: dict, role: str, *, start: bool = False):
    """The mmdet Config for ``role`` (teacher or student) of ``preset``, ready to train or test;
    ``start``: for training, the student starts from ``student.checkpoint`` (mmdet's ``load_from``)."""
    if role not in ROLES:
        raise IkdError(f"model must be teacher or student, got '{role}'")
    cfg = load_mmdet_config(resolve_config_path(preset[role]["config"]))
    apply_data(cfg, preset)
    apply_schedule(cfg, preset, role)
    if role == "student" and not preset["student"].get("pretrained", True):
        drop_pretrained(cfg.model)
    start_from = student_start(preset) if start and role == "student" else None
    if start_from:
        cfg.load_from = start_from
    cfg.work_dir = str(run_dir(preset, role))
    cfg.gpu_ids = [0]
    cfg.ikd = dict(preset=preset["name"], role=role)
    return cfg


def _pretrained_nodes(node, found: list) -> list:
    """Every place in a model config that names weights to start from: ``init_cfg`` entries of
    type ``Pretrained`` (the zoo's backbones) and the older ``pretrained='torchvision://...'``."""
    if isinstance(node, dict):
        if node.get("type") == "Pretrained" and isinstance(node.get("checkpoint"), str):
            found.append((node, "checkpoint"))
        if isinstance(node.get("pretrained"), str):
            found.append((node, "pretrained"))
        for value in node.values():
            _pretrained_nodes(value, found)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _pretrained_nodes(item, found)
    return found


def pretrained_sources(model_cfg) -> list[str]:
    """The checkpoints a model's ``init_weights()`` loads (``torchvision://resnet50``, a URL, a
    path), in config order, each once."""
    return list(dict.fromkeys(node[key] for node, key in _pretrained_nodes(model_cfg, [])))


def drop_pretrained(node) -> None:
    """Start the model from random weights: no ``Pretrained`` init, no ``pretrained`` URL (mmdet
    then initialises those modules as it does without one)."""
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if key == "pretrained" and isinstance(value, str):
                node[key] = None
            elif key == "init_cfg" and _is_pretrained(value):
                node[key] = None
            elif key == "init_cfg" and isinstance(value, list):
                node[key] = [v for v in value if not _is_pretrained(v)] or None
            else:
                drop_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            drop_pretrained(item)


def _is_pretrained(init_cfg) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get("type") == "Pretrained"


def pipeline_steps(pipeline) -> list[dict]:
    """Every step of a pipeline in order, the steps inside wrappers (MultiScaleFlipAug) included."""
    steps = []
    for step in pipeline:
        steps.append(step)
        steps += pipeline_steps(step.get("transforms", []))
    return steps


def normalisation(steps: list[dict]) -> dict:
    """The Normalize step's mean, std and channel swap; a pipeline without one (YOLOX) feeds the
    model raw pixels in the order read: mean 0, std 1, no swap."""
    step = next((s for s in steps if s.get("type") == "Normalize"), None)
    if step is None:
        return dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), to_rgb=False)
    return dict(mean=tuple(step["mean"]), std=tuple(step["std"]), to_rgb=step.get("to_rgb", True))
