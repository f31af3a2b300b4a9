"""``ikd backdoor evaluate CKPT``: attack success rate and clean AP of a checkpoint.

Both runs are ``ikd evaluate``'s own (:func:`ikd_cli.evaluate.run.evaluate_checkpoint`): on the
clean val split (COCO AP, ``CKPT.eval-val.json``) and on the triggered copy of its images
(``--images <poisoned set>/val_triggered``: the AP under the trigger, and the detections). The
ASR (:mod:`.asr`) is counted on those detections against the clean ground truth, with the
poisoned set's own attack and target class; the same count on the clean images is reported as
``clean_rate``. Everything lands in ``CKPT.backdoor.json``, and a picture of a few images, clean
and triggered, with the detections in ``CKPT.backdoor.png``; a re-run with the same checkpoint and
settings prints it again without running the model (``--force`` runs it).
"""

from __future__ import annotations

from pathlib import Path

from ikd_cli.backdoor.asr import attack_success
from ikd_cli.backdoor.layout import (TRIGGERED_ANN, TRIGGERED_IMAGES, VAL_IMAGES, poisoned_dir, result_file,
                                     result_picture)
from ikd_cli.backdoor.poison import read_manifest
from ikd_cli.backdoor.preview import write_backdoor_preview
from ikd_cli.config.layout import detections_suffix, eval_file, images_tag
from ikd_cli.config.schema import check
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write_json, read_json
from ikd_cli.core.ui import console


RESULT_VERSION = 2  # 2: the best matching detection decides; ASR over the objects found too


def _checkpoint_preset(checkpoint: Path, preset: dict | None) -> dict:
    """The preset that says where the poisoned set is: the one given, else the checkpoint's own."""
    if preset is not None:
        return preset
    from ikd_cli.config.presets import resolve
    from ikd_cli.core.checkpoints import read_checkpoint

    embedded = (read_checkpoint(checkpoint).get("meta") or {}).get("ikd_preset")
    if not embedded:
        raise IkdError(f"{checkpoint} carries no ikd preset; say which with --preset NAME (and its --set)")
    return resolve(embedded, received_from=f"{checkpoint}'s preset")


def _stamp(checkpoint: Path) -> dict:
    stat = checkpoint.resolve().stat()
    return dict(file=str(checkpoint.resolve()), size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def evaluate_backdoor(checkpoint: Path, *, preset: dict | None = None, score_thr: float | None = None,
                      iou_thr: float | None = None, device=None, verbose: bool = False, force: bool = False) -> dict:
    from ikd_cli.evaluate.run import evaluate_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise IkdError(f"checkpoint not found: {checkpoint}")
    tree = _checkpoint_preset(checkpoint, preset)
    b = tree["backdoor"]
    score_thr = b["score_thr"] if score_thr is None else check("backdoor.score_thr", score_thr)
    iou_thr = b["iou_thr"] if iou_thr is None else check("backdoor.iou_thr", iou_thr)
    out = poisoned_dir(tree)
    settings = read_manifest(out)["settings"]
    wanted = dict(version=RESULT_VERSION, checkpoint=_stamp(checkpoint), poisoned_set=str(out.resolve()),
                  poison=settings, score_thr=score_thr, iou_thr=iou_thr)
    path = result_file(checkpoint)
    if path.is_file() and not force:
        old = read_json(path, "backdoor evaluation")
        if {k: old.get(k) for k in wanted} == wanted:
            console.print(f"{checkpoint} already evaluated with these settings: {path} (--force runs it again)",
                          soft_wrap=True)
            print_result(old, title=checkpoint.name)
            if not result_picture(checkpoint).is_file():  # evaluated before there were pictures
                _picture(checkpoint, out, settings, score_thr, *_detections(checkpoint, out))
            return old

    role = tree["backdoor"]["victim"] if preset is not None else "student"
    common = dict(preset=preset, model=role, split="val", overrides=None, device=device,
                  verbose=verbose)
    clean = evaluate_checkpoint(checkpoint, images=None, **common)
    triggered = evaluate_checkpoint(checkpoint, images=out / TRIGGERED_IMAGES, **common)
    gt, dets_clean, dets_triggered = _detections(checkpoint, out)
    count = dict(attack=settings["attack"], target_id=settings["target_id"], score_thr=score_thr, iou_thr=iou_thr)
    result = dict(wanted, attack=settings["attack"], target_class=settings["target_class"],
                  asr=attack_success(gt, dets_triggered, **count), clean_rate=attack_success(gt, dets_clean, **count),
                  clean=clean["bbox"], triggered=triggered["bbox"])
    atomic_write_json(path, result)
    print_result(result, title=checkpoint.name)
    console.print(f"backdoor metrics: {path}", soft_wrap=True)
    _picture(checkpoint, out, settings, score_thr, gt, dets_clean, dets_triggered)
    return result


def _detections(checkpoint: Path, out: Path) -> tuple[dict, list, list]:
    """The triggered val ground truth and the checkpoint's detections on the clean and the
    triggered val images (the files its two evaluations wrote)."""
    return (read_json(out / TRIGGERED_ANN, "triggered val annotations"),
            read_json(eval_file(checkpoint, "val", detections_suffix("bbox")), "detections"),
            read_json(eval_file(checkpoint, images_tag("val", TRIGGERED_IMAGES), detections_suffix("bbox")), "detections"))


def _picture(checkpoint: Path, out: Path, settings: dict, score_thr: float, gt: dict, dets_clean: list,
             dets_triggered: list) -> None:
    picture = result_picture(checkpoint)
    write_backdoor_preview(picture, gt, out / VAL_IMAGES, out / TRIGGERED_IMAGES, dets_clean, dets_triggered,
                           score_thr, title=f"{checkpoint}: {settings['attack']} -> {settings['target_class']}")
    console.print(f"picture: {picture}", soft_wrap=True)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_result(result: dict, title: str) -> None:
    from rich.table import Table

    what = ("non-target objects detected as the target" if result["attack"] == "misclassify"
            else "objects no longer detected")
    table = Table("clean AP", "triggered AP", "ASR", "ASR, objects found", "same rate, clean images", "objects",
                  title=f"{title}: {result['attack']} -> {result['target_class']} (ASR: {what}, "
                        f"score >= {result['score_thr']:g}, IoU >= {result['iou_thr']:g})")
    table.add_row(_pct(result["clean"]["AP"]), _pct(result["triggered"]["AP"]), _pct(result["asr"]["asr"]),
                  _pct(result["asr"]["asr_detected"]), _pct(result["clean_rate"]["asr"]), str(result["asr"]["objects"]))
    console.print(table)
