"""``ikd evaluate``: run a detector over a split and score it with pycocotools' COCOeval.

The numbers are COCOeval's own ``stats`` on the detections this command writes beside the
checkpoint (``<name>.<tag>.bbox.json``), so anyone can re-check them with pycocotools alone."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ikd_cli.config.layout import EVAL_LOG_SUFFIX, detections_suffix, eval_file, images_tag
from ikd_cli.config.schema import METRICS
from ikd_cli.core.checkpoints import build_detector_with_weights, config_from_checkpoint, read_checkpoint
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write_json, ensure_writable_dir
from ikd_cli.core.machine import compute_fingerprint
from ikd_cli.core.ui import console, progress_bar, quiet_to_log



def config_for_checkpoint(ckpt: dict, preset: dict | None, role: str, overrides: dict | None):
    """Which mmdet config goes with a checkpoint: the preset given on the command line, else the
    preset ikd embedded when it trained it (with ``overrides``, dotted settings, applied), else
    the plain mmdet config text in its meta."""
    from ikd_cli.config import presets as presets_mod
    from ikd_cli.config.mmdet import build_config

    meta = ckpt.get("meta") or {}
    if preset is not None:
        return build_config(preset, role), preset
    embedded = meta.get("ikd_preset")
    if embedded:
        tree = presets_mod.resolve(embedded, dict(overrides or {}), received_from="this checkpoint's preset")
        # A full distillation checkpoint (epoch_N.pth) holds teacher, student and losses: its
        # student is what is evaluated, exactly as student_epoch_N.pth would be.
        role = meta.get("ikd_role", "student")
        return build_config(tree, "student" if role == "distill" else role), tree
    if meta.get("config"):
        if overrides:
            raise IkdError("--set/--data-root need a preset: pass --preset for this checkpoint")
        return config_from_checkpoint(ckpt, "this checkpoint"), None
    raise IkdError("this checkpoint carries no config; say which with --preset NAME --model teacher|student")


def _test_dataset_cfg(cfg, split: str, images: Path | None, extra_steps=()):
    from mmdet.datasets import replace_ImageToTensor

    from ikd_cli.config.mmdet import base_dataset

    ds = cfg.data.test.copy()
    if split == "train":
        train = base_dataset(cfg.data.train)
        ds.ann_file, ds.img_prefix = train.ann_file, train.img_prefix
    ds.test_mode = True
    ds.pipeline = replace_ImageToTensor(ds.pipeline)
    steps = list(extra_steps)  # right after LoadImageFromFile: they see the image as read (corruptions)
    if images is not None:
        if not Path(images).is_dir():
            raise IkdError(f"image folder not found: {images}")
        if is_attack_set(Path(images)):
            # An adversarial set is read as distillation reads it: the clean image first, then
            # its copy checked against it (format, size before decoding, the set's budget), or a
            # delta rebuilt on it.
            import ikd_cli.distill.pipelines  # noqa: F401  (registers LoadAdversarialImage)

            steps.insert(0, dict(type="LoadAdversarialImage", adv_dir=str(images), replace=True))
        else:
            ds.img_prefix = str(images).rstrip("/") + "/"
    if steps:
        ds.pipeline = _after_load(ds.pipeline, steps)
    return ds


def _after_load(pipeline: list, steps: list) -> list:
    """``steps`` inserted right after the pipeline's LoadImageFromFile, on the 8-bit image as read
    (a corruption; an adversarial copy, rebuilt on its source). A load step that gives float
    pixels (CenterNet's ``to_float32``) reads 8 bits here, and the same float copy is made after
    ``steps``: the model sees what it would have."""
    load = dict(pipeline[0])
    if not load.get("to_float32"):
        return [pipeline[0], *steps, *pipeline[1:]]
    import ikd_cli.distill.pipelines  # noqa: F401  (registers PixelsToFloat32)

    load["to_float32"] = False
    return [load, *steps, dict(type="PixelsToFloat32"), *pipeline[1:]]


def is_attack_set(folder: Path) -> bool:
    """A folder ``ikd attack`` wrote (its attack.json), as opposed to a folder of plain images."""
    from ikd_cli.config.layout import ATTACK_SETTINGS_FILE

    return (folder / ATTACK_SETTINGS_FILE).is_file()


def point_at_images(dataset, images: Path, sources: Path) -> None:
    """Use ``images`` instead of the annotation's image folder (``sources``). Each image is looked
    up under the same relative path; a copy saved in another format (``ikd attack`` writes .png
    for .jpg sources) is found by its stem. Each must have its source's size (the boxes are
    the source's), read from both headers before anything is decoded."""
    for info in dataset.data_infos:
        rel = Path(info["filename"])
        if not (images / rel).is_file():
            for suffix in (".png", ".jpg", ".jpeg", ".bmp"):
                if (images / rel.with_suffix(suffix)).is_file():
                    info["filename"] = str(rel.with_suffix(suffix))
                    break
        _same_size_as_source(images / info["filename"], sources / rel)


def _same_size_as_source(path: Path, source: Path) -> None:
    from ikd_cli.data.check import image_size

    if not path.is_file() or not source.is_file():
        return  # said by the loader, naming the file
    try:
        got, want = image_size(path), image_size(source)
    except (OSError, ValueError) as err:  # ImageTooLarge too: a header declaring a bomb's size
        raise IkdError(f"cannot read image {path} ({err})") from None
    if got != want:
        raise IkdError(f"{path} is {got[1]} x {got[0]} but its source {source} is {want[1]} x {want[0]}: "
                       "its boxes would not fit it")


def run_inference(model, loader, device: str, title: str = "evaluate"):
    """Detections for every image of ``loader`` (rank 0 only; single process)."""
    import torch
    from mmcv.parallel import MMDataParallel
    from mmdet.core import encode_mask_results

    wrapped = MMDataParallel(model.cuda() if device == "cuda" else model.cpu(),
                             device_ids=[0] if device == "cuda" else None)
    wrapped.eval()
    results = []
    with progress_bar() as progress:
        task = progress.add_task(title, total=len(loader.dataset), info="", unit="img")
        for data in loader:
            with torch.no_grad():
                out = wrapped(return_loss=False, rescale=True, **data)
            if out and isinstance(out[0], tuple):  # (boxes, masks): COCO json wants RLE masks
                out = [(boxes, encode_mask_results(masks)) for boxes, masks in out]
            results.extend(out)
            progress.update(task, advance=len(out))
    return results


def coco_metrics(dataset, results, iou_type: str, json_path: Path, classwise: bool = False) -> dict:
    """Write the detections as COCO json (atomically) and score them with COCOeval; with
    ``classwise``, also AP per category (``"classwise": {name: AP}``, see :mod:`.classwise`)."""
    from pycocotools.cocoeval import COCOeval

    tmp_dir = Path(tempfile.mkdtemp(prefix=".ikd-eval-", dir=json_path.parent))
    try:
        files = dataset.results2json(results, str(tmp_dir / "det"))
        det_file = Path(files[iou_type if iou_type in files else "bbox"])
        detections = json.loads(det_file.read_text())
        json_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(det_file), str(json_path))  # same folder: an atomic rename
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if not detections:
        empty = {name: 0.0 for name in METRICS} | {"detections": 0}
        return empty | ({"classwise": {name: 0.0 for name in dataset.CLASSES}} if classwise else {})
    coco_dt = dataset.coco.loadRes(str(json_path))
    evaluator = COCOeval(dataset.coco, coco_dt, iou_type)
    evaluator.params.catIds = dataset.cat_ids
    evaluator.params.imgIds = dataset.img_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    metrics = {name: float(evaluator.stats[i]) for i, name in enumerate(METRICS)}
    metrics["detections"] = len(detections)
    if classwise:
        from ikd_cli.evaluate.classwise import classwise_ap

        metrics["classwise"] = classwise_ap(evaluator, list(dataset.cat_ids), list(dataset.CLASSES))
    return metrics


def metrics_path(checkpoint: Path, tag: str, out: Path | None) -> Path:
    """``<checkpoint stem>.eval-<tag>.json`` beside the checkpoint, or in the folder ``out``, or
    ``out`` itself when it names a .json file; its folder proven writable before any inference
    (a read-only checkpoint folder is said in one line, with the way out)."""
    path = eval_file(checkpoint, tag)
    if out is not None:
        out = Path(out)
        path = out if out.suffix == ".json" and not out.is_dir() else out / path.name
    try:
        ensure_writable_dir(path.parent, "metrics folder")
    except IkdError as err:
        raise IkdError(f"{err}; write the metrics elsewhere with --out FILE.json or --out FOLDER") from None
    return path


@dataclass
class Evaluation:
    """A checkpoint made ready to score, once, for any number of settings (``ikd evaluate
    --robustness`` scores one model on many copies of the val images)."""

    checkpoint: Path
    cfg: Any  # the mmdet config its model is built from
    preset: dict | None  # the preset that config came from (None: a model-zoo file's own config)
    weights: dict
    device: str
    verbose: bool
    net: Any = None  # built on first use, then reused


def load_evaluation(checkpoint: Path, *, preset: dict | None, model: str, overrides: dict | None, device: str | None,
                    verbose: bool) -> Evaluation:
    from ikd_cli.core.distributed import pick_device
    from ikd_cli.core.machine import pin_compute

    device = pick_device(device)
    checkpoint = Path(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    cfg, tree = config_for_checkpoint(ckpt, preset, model, overrides)
    if tree is not None:  # the run's compute settings score its weights as they were trained
        pin_compute(tree)
    weights = ckpt["state_dict"]
    if (ckpt.get("meta") or {}).get("ikd_role") == "distill" and preset is None:
        weights = {k[len("student."):]: v for k, v in weights.items() if k.startswith("student.")}
    return Evaluation(checkpoint, cfg, tree, weights, device, verbose)


def score(ev: Evaluation, split: str, *, images: Path | None = None, tag: str | None = None, extra_steps=(),
          extra: dict | None = None, classwise: bool = False, out: Path | None = None,
          samples_per_gpu: int = 1) -> dict:
    """Run ``ev``'s model over ``split`` (another copy of its images with ``images``; with
    ``extra_steps`` inserted after the image is read) and write ``<stem>.eval-<tag>.json``
    beside the checkpoint (or where ``out`` says, see :func:`metrics_path`). ``samples_per_gpu``
    > 1 runs the model on batches (mmdet pads a batch to its largest image: the same input only
    when all images have one size; plain ``ikd evaluate`` keeps 1)."""
    from mmdet.datasets import build_dataloader

    from ikd_cli.config.mmdet import has_masks
    from ikd_cli.core.processes import bind_workers
    from ikd_cli.data.check import check_split_cached, require_usable
    from ikd_cli.data.loading import build_dataset_checked

    cfg, checkpoint = ev.cfg, ev.checkpoint
    test_cfg = _test_dataset_cfg(cfg, split, images, extra_steps)
    classes = list(test_cfg["classes"]) if test_cfg.get("classes") else None
    require_usable([check_split_cached(split, Path(test_cfg.ann_file), None if images else Path(test_cfg.img_prefix),
                                       classes)], "")
    tag = tag or (split if images is None else images_tag(split, images))
    out_json = metrics_path(checkpoint, tag, out)  # the detections and the log go beside it
    with quiet_to_log(out_json.with_suffix(EVAL_LOG_SUFFIX), verbose=ev.verbose):
        dataset = build_dataset_checked(test_cfg, f"{split}")
        if images is not None and not is_attack_set(Path(images)):
            point_at_images(dataset, Path(images), Path(_test_dataset_cfg(cfg, split, None).img_prefix))
        loader = bind_workers(build_dataloader(dataset, samples_per_gpu=samples_per_gpu,
                                               workers_per_gpu=min(2, cfg.data.workers_per_gpu), dist=False,
                                               shuffle=False, persistent_workers=False))
        if ev.net is None:
            ev.net = build_detector_with_weights(cfg, ev.weights, str(checkpoint))
        ev.net.CLASSES = dataset.CLASSES
        results = run_inference(ev.net, loader, ev.device, title=f"evaluate {tag}")
        metrics = {"bbox": coco_metrics(dataset, results, "bbox", out_json.with_suffix(detections_suffix("bbox")), classwise)}
        if has_masks(cfg):
            metrics["segm"] = coco_metrics(dataset, results, "segm", out_json.with_suffix(detections_suffix("segm")), classwise)
    # the digits depend on the thread count and the CPU's kernels: each eval file says which it had
    report = {"checkpoint": str(checkpoint), "split": split, "images": str(images or dataset.img_prefix),
              "num_images": len(dataset), **(extra or {}), **metrics,
              "compute": {"device": ev.device, **compute_fingerprint()}}
    atomic_write_json(out_json, report)
    print_metrics_table(metrics, title=f"{checkpoint.name} on {tag} ({len(dataset)} images)")
    if classwise:
        from ikd_cli.evaluate.classwise import print_classwise

        for iou_type, values in metrics.items():
            print_classwise(values["classwise"], title=f"{iou_type} AP per class (%)")
    console.print(f"metrics: {out_json}")
    return report


def evaluate_checkpoint(checkpoint: Path, *, preset: dict | None, model: str, images: Path | None, split: str,
                        overrides: dict | None, device: str | None, verbose: bool, classwise: bool = False,
                        out: Path | None = None) -> dict:
    ev = load_evaluation(checkpoint, preset=preset, model=model, overrides=overrides, device=device, verbose=verbose)
    return score(ev, split, images=images, classwise=classwise, out=out)


def print_metrics_table(metrics: dict, title: str) -> None:
    from rich.table import Table

    table = Table(*(["type"] + list(METRICS)), title=title)
    for iou_type, values in metrics.items():
        table.add_row(iou_type, *(f"{100 * values[name]:.1f}" for name in METRICS))
    console.print(table)
