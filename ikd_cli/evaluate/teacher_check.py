"""The teacher check before ``ikd attack`` and ``ikd distill``: the teacher scored on the first
``distill.teacher_check_images`` val images and refused below ``distill.teacher_check_min_ap``.

A teacher whose keys fit its config can still be useless: randomly initialised, or trained on
other data. Attacking or distilling it costs hours and gives a student at baseline; scoring it
on a few images costs seconds (one model build and N forward passes), and the score is cached
per checkpoint digest in ``teacher-check.json`` beside the checkpoint, so a study pays it once
per teacher. The check runs in the calling process before the run seeds its generators, and
keeps the generators' states as they were anyway (a DataLoader draws its base seed from torch's):
the run's numbers are those it gives without the check.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from ikd_cli.config.layout import TEACHER_CHECK_FILE
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write_json, read_json, sha256_of
from ikd_cli.core.ui import console, quiet_to_log

SKIPPED = {"skipped": "--no-teacher-check"}  # what run.json records when the check was switched off


def check_teacher(preset: dict, *, checkpoint: Path | None = None, device: str | None = None,
                  enabled: bool = True, refuse: bool = True) -> dict:
    """Score the teacher (``checkpoint``, or the preset's), say it, and refuse one below the
    preset's minimum in one line (``refuse=False``: leave that to the caller, the dry run);
    returns the record for run.json (AP, images, sha256, min_ap, passed, cached)."""
    if not enabled:
        console.print("teacher check: skipped (--no-teacher-check)")
        return dict(SKIPPED)
    result = teacher_score(preset, checkpoint, device)
    console.print(f"teacher check: {100 * result['AP']:.1f} AP on the first {result['images']} val images"
                  f"{' (cached)' if result['cached'] else ''}", soft_wrap=True)
    if refuse and not result["passed"]:
        raise IkdError(refusal(result))
    return result


def refusal(result: dict) -> str:
    return (f"the teacher {result['checkpoint']} scores {100 * result['AP']:.1f} AP on the first {result['images']} "
            f"val images, below distill.teacher_check_min_ap ({100 * result['min_ap']:.1f}): a random teacher, or "
            "one of other data whose keys fit? Check it with `ikd evaluate`; --no-teacher-check goes on anyway")


def teacher_score(preset: dict, checkpoint: Path | None, device: str | None) -> dict:
    """The teacher's bbox AP on the first N val images, from the cache beside the checkpoint
    when it holds this file's digest on this subset."""
    from ikd_cli.config.presets import data_path
    from ikd_cli.config.layout import teacher_checkpoint

    path = teacher_checkpoint(preset, checkpoint)
    d = preset["distill"]
    subset = dict(val_ann=str(Path(data_path(preset, "val_ann")).resolve()), first=d["teacher_check_images"],
                  config=preset["teacher"]["config"], img_scale=preset["data"]["img_scale"])
    digest = sha256_of(path)
    cache = path.resolve().parent / TEACHER_CHECK_FILE
    entry = _cached(cache).get(digest)
    cached = bool(entry and entry.get("subset") == subset)
    if not cached:
        ap, images = _score_first(preset, path, subset["first"], device)
        entry = dict(subset=subset, AP=ap, images=images)
        _remember(cache, digest, entry)
    return dict(checkpoint=str(path), sha256=digest, AP=entry["AP"], images=entry["images"],
                min_ap=d["teacher_check_min_ap"], passed=entry["AP"] >= d["teacher_check_min_ap"], cached=cached)


def _cached(cache: Path) -> dict:
    try:
        data = read_json(cache, "teacher check cache") if cache.is_file() else {}
    except IkdError:  # a damaged cache is only a cache: score again
        return {}
    return data if isinstance(data, dict) else {}


def _remember(cache: Path, digest: str, entry: dict) -> None:
    try:
        atomic_write_json(cache, dict(_cached(cache), **{digest: entry}))
    except (IkdError, OSError):  # a read-only checkpoint folder: the check is simply not cached
        pass


def _score_first(preset: dict, path: Path, first: int, device: str | None) -> tuple[float, int]:
    """(bbox AP, images) of the teacher on the first ``first`` val images, nothing left on disk."""
    from mmdet.datasets import build_dataloader

    from ikd_cli.config.mmdet import build_config
    from ikd_cli.core.checkpoints import build_detector_with_weights, read_checkpoint
    from ikd_cli.core.distributed import pick_device
    from ikd_cli.core.machine import pin_compute
    from ikd_cli.data.check import run_data_check
    from ikd_cli.data.loading import build_dataset_checked
    from ikd_cli.data.setup import ensure_dataset
    from ikd_cli.evaluate.run import _test_dataset_cfg, coco_metrics, run_inference

    pin_compute(preset)  # before the first kernel: the run's own kernels (train.cpu_kernels)
    ensure_dataset(preset)
    # the check the run makes of val, said as it says it; unreadable images are left out here
    bad = run_data_check(preset, ("val",), skip_bad=True)[0].bad_images
    cfg = build_config(preset, "teacher")
    with tempfile.TemporaryDirectory(prefix=".ikd-teacher-check-") as tmp, \
            quiet_to_log(Path(tmp) / "check.log"), _generators_kept():
        dataset = build_dataset_checked(_test_dataset_cfg(cfg, "val", None), "val")
        keep = [i for i, info in enumerate(dataset.data_infos) if info["filename"] not in bad][:first]
        dataset.data_infos = [dataset.data_infos[i] for i in keep]
        dataset.img_ids = [dataset.img_ids[i] for i in keep]
        loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=0, dist=False, shuffle=False,
                                  persistent_workers=False)
        model = build_detector_with_weights(cfg, read_checkpoint(path)["state_dict"], str(path))
        model.CLASSES = dataset.CLASSES
        results = run_inference(model, loader, pick_device(device), title="teacher check")
        metrics = coco_metrics(dataset, results, "bbox", Path(tmp) / "detections.bbox.json")
    return metrics["AP"], len(dataset)


@contextlib.contextmanager
def _generators_kept():
    """Python's, numpy's and torch's random states as they were before the block."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
