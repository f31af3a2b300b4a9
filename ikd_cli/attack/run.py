"""``ikd attack``: adversarial copies of a split's images against the teacher, lossless, at the
original resolution, under the same relative paths (see :mod:`ikd_cli.config.layout`), resumable
through the folder's manifest (:mod:`.manifest`) and sharded over torch.distributed ranks."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ikd_cli.attack.manifest import (check_settings, output_names, read_records, record_skipped, refuse_onto_inputs,
                                     summarise)
from ikd_cli.config.layout import ATTACK_PREVIEW_FILE, adversarial_set_dir, attack_log_file, records_file
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import ensure_writable_dir, sha256_of
from ikd_cli.core.lock import lock_folder
from ikd_cli.core.ui import console, progress_bar, quiet_to_log


class AttackData:
    """Original images (as read, BGR uint8) and their gt boxes, one item per dataset index.
    Unreadable images come back as failures instead of stopping the run."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        import numpy as np

        index = self.indices[i]
        info = self.dataset.data_infos[index]
        try:
            results = self.dataset.prepare_train_img(index)
        except IkdError as err:
            return dict(index=index, name=info["filename"], error=str(err))
        if results is None:
            return dict(index=index, name=info["filename"], error="no usable annotations")
        return dict(index=index, name=info["filename"], img=np.ascontiguousarray(results["img"]),
                    bboxes=results["gt_bboxes"], labels=results["gt_labels"])


def attack_dataset(cfg, split: str):
    """The split as a CocoDataset that only loads images and boxes (no resize: attack at the
    original resolution)."""
    from ikd_cli.config.mmdet import base_dataset
    from ikd_cli.data.loading import build_dataset_checked

    ds = base_dataset(cfg.data.train if split == "train" else cfg.data.val).copy()
    ds.pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True)]
    ds.test_mode = False
    # Training never sees an image without boxes (mmdet filters them), so the train split skips
    # them; evaluation scores every val image, so the val split attacks them too (the loss then
    # pushes the teacher towards false detections).
    ds.filter_empty_gt = split == "train"
    return build_dataset_checked(ds, f"{split}")


@dataclass(frozen=True)
class Target:
    """The detector whose classification loss an attack raises: the preset's teacher for
    ``ikd attack``, or any checkpoint's own model (``ikd evaluate --robustness``, white-box).
    ``role`` names its settings keys (``teacher_config``/``teacher_sha256`` or ``model_...``), so
    a teacher's set records exactly what it always did and distillation still recognises it."""

    cfg: Any  # its mmdet config (model and test pipeline)
    checkpoint: Path  # the file its weights come from (its sha256 is a setting of the set)
    config_name: str
    state_dict: dict | None = None  # None: the checkpoint's own state_dict
    role: str = "teacher"


def teacher_target(preset: dict, checkpoint: Path | None = None) -> Target:
    from ikd_cli.config.mmdet import build_config
    from ikd_cli.config.layout import teacher_checkpoint

    return Target(build_config(preset, "teacher"), teacher_checkpoint(preset, checkpoint), preset["teacher"]["config"])


def load_teacher(cfg, checkpoint: Path, device: str, state_dict: dict | None = None):
    from ikd_cli.attack.teacher_loss import prepare_teacher
    from ikd_cli.core import compat
    from ikd_cli.core.checkpoints import build_detector_with_weights, read_checkpoint

    compat.apply()
    if state_dict is None:
        state_dict = read_checkpoint(checkpoint)["state_dict"]
    model = build_detector_with_weights(cfg, state_dict, str(checkpoint))
    return prepare_teacher(model).to(device)


PREVIEW_IMAGES = 4  # rows of preview.png
# `ikd attack`'s options that are not preset keys: they change what a run costs, never its pixels.
WORKERS = 2  # image-loading worker processes
RECORD_LOSS = True  # measure the teacher's loss before and after (2 extra forward passes)


def write_attack_preview(path: Path, teacher, cfg, dataset, names: list[str], eps: float) -> None:
    """``preview.png``: for a few attacked images, clean | adversarial (each with the teacher's
    detections) | the perturbation amplified to the full range."""
    from mmdet.apis import inference_detector

    from ikd_cli.attack.preview import write_preview
    from ikd_cli.attack.storage import find_adversarial, read_adversarial

    index = {info["filename"]: i for i, info in enumerate(dataset.data_infos)}
    # a copy: inference_detector rewrites its config's test pipeline in place (LoadImageFromWebcam
    # for arrays), which would break whoever evaluates with ``cfg`` next (evaluate --robustness)
    teacher.cfg = copy.deepcopy(cfg)
    items = []
    with _heads_in_eval_mode(teacher):
        for name in names:
            clean = dataset.prepare_train_img(index[name])["img"]
            adv_path, fmt = find_adversarial(path.parent, name)
            adv = read_adversarial(adv_path, clean, fmt=fmt, eps=eps)
            det = [inference_detector(teacher, im) for im in (clean, adv)]
            det = [d[0] if isinstance(d, tuple) else d for d in det]  # (bbox, segm) of mask models
            items.append(dict(name=name, clean=clean, adv=adv, det_clean=det[0], det_adv=det[1]))
    write_preview(path, items, eps, list(dataset.CLASSES))


class _heads_in_eval_mode:
    """The attack sets its heads' own training flag (RepPoints needs it for the loss); detecting
    needs it off. Restored on exit."""

    def __init__(self, model):
        self.heads = [getattr(model, n) for n in ("bbox_head", "rpn_head") if getattr(model, n, None) is not None]

    def __enter__(self):
        self.flags = [h.training for h in self.heads]
        for head in self.heads:
            head.training = False

    def __exit__(self, *exc):
        for head, flag in zip(self.heads, self.flags):
            head.training = flag
        return False


SKIP_HINT = "; attack the others: --skip-bad"


def preset_attack(preset: dict):
    """The attack of ``preset['attack']`` (unknown methods and bad options are errors)."""
    from ikd_cli.attack.methods import build_attack

    from ikd_cli.config.schema import pixel_options

    opts = preset["attack"]
    return build_attack(opts["method"], None, **{k: opts[k] for k in pixel_options()})


def set_settings(preset: dict, attack, ckpt_path: Path, split: str, *, role: str = "teacher",
                 config_name: str | None = None) -> dict:
    """What an adversarial set records in ``attack.json``: everything its pixels depend on. The
    random draws follow the seed and the batches (:func:`batch_seed`), so both are settings too,
    and a resumed attack never mixes two. ``role``/``config_name``: the attacked model (see
    :class:`Target`), the preset's teacher by default."""
    from ikd_cli.config.presets import flatten
    from ikd_cli.config.schema import attack_set_keys

    flat = flatten(preset)
    recorded = {name: flat[key] for key, name in attack_set_keys().items()}
    del recorded["teacher_config"]  # the attacked model's, below: the teacher's, or the model's own
    model = {f"{role}_config": preset["teacher"]["config"] if config_name is None else config_name,
             f"{role}_sha256": sha256_of(ckpt_path)}
    return dict(attack.settings(), **model, **recorded, split=split)


def batch_seed(preset: dict, index: int) -> int:
    """Random draws (random start, input diversity) depend only on the seed and the first image
    of the batch, so the same batches give the same pixels however the work is sharded."""
    return int(preset["train"]["seed"]) * 1_000_003 + index


@dataclass
class AttackRun:
    """What every batch of one ``ikd attack`` process needs, built once by :func:`run_attack`
    (and by ``scripts/bench_attack.py``, which times :func:`attack_images` with it)."""
    preset: dict
    attack: Any
    teacher: Any
    prep: Any
    dataset: Any
    out_dir: Path
    device: str
    rank: int = 0
    world: int = 1
    workers: int = WORKERS
    record_loss: bool = RECORD_LOSS


def run_attack(preset: dict, *, split: str = "train", limit: int | None = None, device: str | None = None,
               launcher: str = "none", overwrite: bool = False, checkpoint: Path | None = None,
               out: Path | None = None, workers: int = WORKERS, record_loss: bool = RECORD_LOSS,
               verbose: bool = False, skip_bad: bool = False, target: Target | None = None,
               teacher_check: Callable[[Path], dict] | None = None) -> dict:
    """Attack ``split`` against ``target`` (default: the preset's teacher, ``checkpoint`` or its
    usual file) into ``out`` (default: the preset's adversarial set folder); ``skip_bad`` goes on
    without the images the data check finds unreadable (recorded as skipped); ``teacher_check``
    scores the checkpoint before the attack (``ikd_cli.evaluate.teacher_check``, from the API)."""
    from ikd_cli.attack.teacher_loss import Preprocess
    from ikd_cli.core.distributed import barrier, init_distributed, pick_device
    from ikd_cli.core.machine import pin_compute

    attack = preset_attack(preset)  # built first: a bad method or option stops here, before anything is written
    refuse_onto_inputs(preset, out or adversarial_set_dir(preset, split), "--out")
    pin_compute(preset)
    device = pick_device(device)
    distributed, rank, world = init_distributed(launcher, device)
    bad = _checked_data(preset, split, skip_bad, distributed, rank)
    target = target or teacher_target(preset, checkpoint)
    cfg, ckpt_path = target.cfg, target.checkpoint
    if teacher_check is not None and rank == 0:  # before hours of attack, a teacher near 0 AP stops here
        teacher_check(ckpt_path)
    out_dir = ensure_writable_dir(out or adversarial_set_dir(preset, split), "attack output folder")
    if rank == 0:  # one attack per folder: a second one stops here, naming this one
        lock_folder(out_dir, "attack")
    settings = set_settings(preset, attack, ckpt_path, split, role=target.role, config_name=target.config_name)
    log = out_dir / attack_log_file(rank)
    with quiet_to_log(log, verbose=verbose):
        dataset = attack_dataset(cfg, split)
        run = AttackRun(preset, attack, load_teacher(cfg, ckpt_path, device, target.state_dict),
                        Preprocess.from_config(cfg), dataset, out_dir, device, rank, world, workers, record_loss)
        _check_loss(run)
        todo_all, todo = _todo(run, settings, overwrite, limit, distributed, bad)
        if todo:
            attack_images(run, todo[rank::world], total=len(todo))
        barrier(distributed)
    summary = _finish(run, cfg, settings, todo_all, log, verbose) if rank == 0 else {}
    barrier(distributed)
    _stop_if_unperturbed(summary)
    if summary.get("failed"):
        shown = ", ".join(summary["failed_images"][:5])
        raise IkdError(f"{summary['failed']} image(s) could not be read and were skipped: {shown}")
    return summary


def _checked_data(preset: dict, split: str, skip_bad: bool, distributed: bool, rank: int) -> dict:
    """The split made (built-in data) and checked on rank 0; the images it cannot read, which
    ``skip_bad`` lets the attack go on without (image -> why; every rank gets the same)."""
    from ikd_cli.core.distributed import barrier
    from ikd_cli.data.check import check_preset, run_data_check
    from ikd_cli.data.setup import ensure_dataset

    bad = {}
    if rank == 0:
        ensure_dataset(preset)
        bad = run_data_check(preset, (split,), skip_bad=skip_bad, skip_hint=SKIP_HINT)[0].bad_images
    barrier(distributed)
    if skip_bad and rank != 0:  # every rank shards the same to-do list
        bad = check_preset(preset, (split,))[0].bad_images
    return bad


def _check_loss(run: AttackRun) -> None:
    """The attacked loss of the split's first image, before the folder records any settings: a
    detector that reports none of the terms ``attack.loss_keys`` picks stops here, in one line
    naming its losses, and the folder is free for the run with the right keys."""
    import torch

    from ikd_cli.attack.batch import image_losses, pad_batch

    item = AttackData(run.dataset, [0])[0]
    if "error" in item:  # an unreadable image: the data check has said so
        return
    image_losses(run.teacher, run.prep, pad_batch([item["img"]], run.device), [item["img"]],
                 [torch.as_tensor(item["bboxes"])], [torch.as_tensor(item["labels"], dtype=torch.long)],
                 run.preset["attack"].get("loss_keys"))


def _todo(run: AttackRun, settings: dict, overwrite: bool, limit: int | None, distributed: bool, bad: dict):
    """(the indices this run is asked for, those of them not yet done), the settings checked
    against the folder's first; ``bad`` images are recorded as skipped instead (rank 0, which
    also says what an earlier run already did)."""
    from ikd_cli.core.distributed import barrier

    output_names([info["filename"] for info in run.dataset.data_infos], run.preset["attack"]["format"])
    if run.rank == 0:
        check_settings(run.out_dir, settings, overwrite)
    barrier(distributed)  # settings checked (the folder cleared on --overwrite) first
    done, _ = read_records(run.out_dir)
    # Every rank must shard the same to-do list: none may write a record before all have read.
    barrier(distributed)
    names = [info["filename"] for info in run.dataset.data_infos]
    todo_all = list(range(len(names)))[: limit if limit else None]
    todo = [i for i in todo_all if names[i] not in done and names[i] not in bad]
    skipped = {names[i]: bad[names[i]] for i in todo_all if names[i] in bad and names[i] not in done}
    if run.rank == 0:
        record_skipped(run.out_dir, skipped)
    if run.rank == 0 and skipped:
        console.print(f"skipping {len(skipped)} unreadable images (--skip-bad): recorded as skipped in "
                      f"{run.out_dir}'s records; distill trains them without an adversarial copy", soft_wrap=True)
    already = len(todo_all) - len(todo) - len(skipped)
    if run.rank == 0 and already and not todo:
        console.print(f"all {already} images already attacked in {run.out_dir}: nothing to do "
                      "(--overwrite attacks them again)", soft_wrap=True)
    elif run.rank == 0 and already:
        console.print(f"resuming: {already} of {len(todo_all)} images already done in {run.out_dir}")
    return todo_all, todo


def attack_images(run: AttackRun, indices: list[int], total: int | None = None) -> None:
    """Attack the dataset's images ``indices`` in batches and write each into ``run.out_dir``
    with its record (``total``: the images of all ranks, for rank 0's progress bar)."""
    import torch

    from ikd_cli.attack.batch import attack_batch
    from ikd_cli.attack.writer import SetWriter
    from ikd_cli.core.processes import WorkerInit

    opts, show = run.preset["attack"], run.rank == 0
    loader = torch.utils.data.DataLoader(AttackData(run.dataset, indices), batch_size=opts["batch_size"],
                                         num_workers=run.workers, collate_fn=list, worker_init_fn=WorkerInit())
    with progress_bar(disable=not show) as progress, \
            SetWriter(run.out_dir, run.out_dir / records_file(run.rank), run.attack.eps, opts["format"]) as writer:
        task = progress.add_task(f"attack {run.attack.name}", total=(total or len(indices)) if show else 0,
                                 completed=0, info="", unit="img")
        for batch in loader:
            writer.fail([b for b in batch if "error" in b])
            batch = [b for b in batch if "error" not in b]
            if not batch:
                continue
            results = attack_batch(run.attack, run.teacher, run.prep, [b["img"] for b in batch],
                                   [b["bboxes"] for b in batch], [b["labels"] for b in batch], device=run.device,
                                   seed=batch_seed(run.preset, batch[0]["index"]), record_loss=run.record_loss,
                                   amp=opts["amp"], loss_keys=opts.get("loss_keys"))
            _stop_if_not_finite(batch, results)
            writer.save(batch, results)  # encoded and written in the background, while the next batch runs
            first = results[0]
            progress.update(task, advance=len(batch) * run.world if show else 0,
                            info=f"loss {first.loss_before:.3f} -> {first.loss_after:.3f}" if run.record_loss else "")


def _stop_if_not_finite(batch: list, results: list) -> None:
    """Before a batch is written: a NaN or infinite teacher loss gives the attack no gradient to
    follow, and it would write unperturbed images as attacked ones."""
    for item, result in zip(batch, results):
        for loss in (result.loss_before, result.loss_after):
            if loss is not None and not math.isfinite(loss):
                raise IkdError(f"the teacher's loss is {loss} on {item['name']}: its outputs are not finite, so the "
                               "attack has no gradient to follow; stopped (check the teacher checkpoint; --no-amp)")


def _stop_if_unperturbed(summary: dict) -> None:
    """A set whose every image equals its source teaches distillation nothing adversarial."""
    if summary.get("attacked") and not summary.get("linf_max"):
        raise IkdError(f"the attack left all {summary['attacked']} images unperturbed (max L-inf 0): the teacher's "
                       "loss gives it no gradient, or eps rounds to no change of an 8-bit pixel; check the teacher "
                       "(ikd evaluate) or raise --eps")


def _finish(run: AttackRun, cfg, settings: dict, todo_all: list[int], log: Path, verbose: bool) -> dict:
    """Rank 0, once every rank is done: the summary over the images asked for, its table, and the
    preview of the first few attacked."""
    names = [info["filename"] for info in run.dataset.data_infos]
    summary = summarise(run.out_dir, {names[i] for i in todo_all}, settings)
    _report(summary, run.out_dir)
    done, _ = read_records(run.out_dir)
    shown = [names[i] for i in todo_all if names[i] in done][:PREVIEW_IMAGES]
    if shown:
        with quiet_to_log(log, verbose=verbose):
            write_attack_preview(run.out_dir / ATTACK_PREVIEW_FILE, run.teacher, cfg, run.dataset, shown,
                                 run.attack.eps)
        console.print(f"preview: {run.out_dir / ATTACK_PREVIEW_FILE}")
    return summary


def _report(summary: dict, out_dir: Path) -> None:
    from rich.table import Table

    s = summary["settings"]
    skipped = summary["skipped"] > 0  # a column only where --skip-bad left images out (80 columns are few)
    loss = "cls loss" if s.get("loss_keys") is None else "loss"  # attack.loss_keys: the terms it names
    table = Table("images", "attacked", "failed", *(["skipped"] if skipped else []), "max L-inf", f"{loss} clean",
                  f"{loss} adv", "s/img",
                  title=f"{s['method']} eps {s['eps']:g} alpha {s['alpha']:g} steps {s['steps']} -> {out_dir}")
    table.add_row(str(summary["images"]), str(summary["attacked"]), str(summary["failed"]),
                  *([str(summary["skipped"])] if skipped else []), f"{summary['linf_max']}",
                  _fmt(summary["loss_before_mean"]), _fmt(summary["loss_after_mean"]),
                  f"{summary['seconds_per_image']:.3f}")
    console.print(table)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
