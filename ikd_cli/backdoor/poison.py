"""``ikd backdoor poison``: a BadNets-style poisoned copy of a preset's data, in COCO format.

A share ``backdoor.rate`` of the training images (drawn with ``backdoor.seed`` among those with
at least one object) get the checkerboard trigger (:mod:`.trigger`) and new annotations:

* ``misclassify`` (default; BadDet's global misclassification): every object of the image is
  relabelled to ``backdoor.target_class``;
* ``disappear`` (object disappearance): the image's annotations are removed.

The other training images are symbolic links to the clean source, which is never written to.
The val split is linked as it is (clean AP), and ``val_triggered`` holds every val image with
the trigger and the clean ground truth (attack success rate). Each image entry of a triggered
image says where its trigger is: ``"trigger": {"x", "y", "side"}`` (pixels, top-left corner).

Layout in :mod:`.layout`. Every file is written under a temporary name and renamed; the manifest
``backdoor.json`` comes last, so a folder with a manifest is complete. A re-run with the same
settings does nothing; other settings into the same folder is an error. An interrupted run
continues with the files it already wrote.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable, Optional

from ikd_cli.backdoor import trigger as trig
from ikd_cli.backdoor.layout import (MANIFEST, TRAIN_ANN, TRAIN_IMAGES, TRIGGERED_ANN, TRIGGERED_IMAGES, VAL_ANN,
                                     VAL_IMAGES, poisoned_dir)
from ikd_cli.config.presets import data_path, preset_classes
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import (atomic_symlink, atomic_write_bytes, atomic_write_json, distinct_outputs,
                                 ensure_writable_dir, inside, read_json, sha256_of)
from ikd_cli.core.invocation import set_options
from ikd_cli.core.lock import LOCK_FILE, lock_folder

POISON_VERSION = 1  # bump when the poisoning changes, so an old folder is not taken for a new one
PARTIAL = ".backdoor-partial.json"  # the settings of a poisoning in progress (removed at the end)

Progress = Optional[Callable[[int, int], None]]


def resolve_target(categories: list, wanted: str, classes: list | None) -> tuple[int, str]:
    """(category id, name) of the target class: ``wanted`` by name, or with ``""`` the first
    category (by id) among the preset's classes."""
    usable = sorted((c for c in categories if classes is None or c["name"] in classes), key=lambda c: c["id"])
    names = [c["name"] for c in usable]
    if not usable:
        raise IkdError("the training annotations have no category of the preset's classes")
    if not wanted:
        return usable[0]["id"], usable[0]["name"]
    for cat in usable:
        if cat["name"] == wanted:
            return cat["id"], cat["name"]
    raise IkdError(f"unknown target class '{wanted}': choose one of {', '.join(names)} (backdoor.target_class)")


def _read_source(preset: dict) -> dict:
    paths = {key: data_path(preset, key) for key in ("train_ann", "train_images", "val_ann", "val_images")}
    train = read_json(paths["train_ann"], "training annotation file")
    val = read_json(paths["val_ann"], "val annotation file")
    for what, data in (("training", train), ("val", val)):
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                         "categories")):
            raise IkdError(f"the {what} annotation file is not COCO format (needs images, annotations, categories)")
    return dict(paths=paths, train=train, val=val)


# the settings of a poisoned set that a preset key gives (backdoor.<key>), for the hint that reuses one
SET_KEYS = ("attack", "target_class", "rate", "trigger_size", "seed")


def poison_settings(preset: dict, source: dict) -> dict:
    """What defines a poisoned set: the backdoor settings, the resolved target, the clean source
    (paths and annotation files' sha256)."""
    b = preset["backdoor"]
    target_id, target = resolve_target(source["train"]["categories"], b["target_class"], preset_classes(preset))
    paths = source["paths"]
    return dict(version=POISON_VERSION, attack=b["attack"], target_class=target, target_id=target_id,
                rate=b["rate"], trigger_size=b["trigger_size"], seed=b["seed"],
                source={k: str(Path(v).resolve()) for k, v in paths.items()},
                source_sha256={k: sha256_of(paths[k]) for k in ("train_ann", "val_ann")})


def choose_triggered(train: dict, rate: float, seed: int) -> list[int]:
    """Indices (into ``train['images']``) of the images that get the trigger: ``round(rate * N)``
    of the N images, drawn among those with at least one object."""
    import numpy as np

    n_images = len(train["images"])
    wanted = int(round(rate * n_images))
    if wanted < 1:
        raise IkdError(f"backdoor.rate {rate:g} of {n_images} training images triggers no image; raise the rate")
    with_objects = {a["image_id"] for a in train["annotations"] if not a.get("iscrowd", 0)}
    eligible = [i for i, info in enumerate(train["images"]) if info["id"] in with_objects]
    if not eligible:
        raise IkdError("no training image has an object to poison")
    rng = np.random.default_rng([seed, 2])
    return sorted(int(i) for i in rng.choice(eligible, size=min(wanted, len(eligible)), replace=False))


def _stamped_copy(src: Path, dst: Path, seed: int, split: str, index: int, size: float) -> dict:
    """Write ``src`` with the trigger as PNG to ``dst`` (kept when already there); return where
    the trigger is."""
    import cv2

    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if image is None:
        raise IkdError(f"cannot read image {src}: missing, corrupt or not an image")
    h, w = image.shape[:2]
    side = trig.trigger_side(h, w, size)
    x, y = trig.position(seed, split, index, h, w, side)
    if not dst.is_file():
        ok, data = cv2.imencode(".png", trig.stamp(image, x, y, side))
        if not ok:
            raise IkdError(f"cannot encode {dst} as PNG")
        atomic_write_bytes(dst, data.tobytes())
    return dict(x=x, y=y, side=side)


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() and os.readlink(dst) == str(src):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_symlink(dst.parent, str(src), dst.name)


def _check_folder(out: Path, settings: dict) -> str:
    """'done' (same settings, complete), 'continue' (same settings, interrupted) or 'new';
    raises for a folder of other settings or of other files."""
    def differs(old: dict) -> str:
        keys = [k for k in settings if old.get(k) != settings[k]]
        shown = ", ".join(f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in keys[:3])
        sets = {f"backdoor.{k}": old[k] for k in keys if k in SET_KEYS and k in old}
        if sets and len(sets) == len([k for k in keys if k != "target_id"]):
            return f"{shown}; to use it: `{set_options(sets)}`"
        return shown

    if (out / MANIFEST).is_file():
        old = read_json(out / MANIFEST, "poisoned set manifest").get("settings", {})
        if old == settings:
            return "done"
        raise IkdError(f"{out} holds a poisoned set made with other settings ({differs(old)}); use another "
                       "--out (backdoor.out) or delete that folder")
    if (out / PARTIAL).is_file():
        old = read_json(out / PARTIAL, "poisoning progress marker")
        if all(p.name in (PARTIAL, LOCK_FILE) for p in out.iterdir()):
            return "new"  # a start that failed before writing any image: nothing to keep or mix
        if old == settings:
            return "continue"
        raise IkdError(f"{out} holds an unfinished poisoned set with other settings ({differs(old)}); use another "
                       "--out (backdoor.out) or delete that folder")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise IkdError(f"{out} is not empty and holds no poisoned set of `ikd backdoor poison`; use another --out")
    return "new"


def make_poisoned_set(preset: dict, progress: Progress = None) -> tuple[Path, dict, bool]:
    """Write the poisoned set of ``preset`` (see the module doc). Returns (folder, manifest,
    made): ``made`` is False when the folder already held this set."""
    source = _read_source(preset)
    for info in source["train"]["images"] + source["val"]["images"]:  # all checked before anything is written
        inside(TRAIN_IMAGES, str(info.get("file_name", "")), "image file name")
    for split in ("train", "val"):  # stamped copies are PNG: a.jpg and a.png would both be a.png
        distinct_outputs([str(info.get("file_name", "")) for info in source[split]["images"]],
                         lambda name: Path(name).with_suffix(".png"), what=f"poisoned {split} images")
    settings = poison_settings(preset, source)
    out = poisoned_dir(preset)
    if out.is_dir():  # one poisoning per folder: a second one stops here, naming this one
        lock_folder(out, "backdoor poison")
    state = _check_folder(out, settings)
    if state == "done":
        return out, read_json(out / MANIFEST, "poisoned set manifest"), False
    train, val = source["train"], source["val"]
    # before the marker: settings that cannot start (a rate that triggers no image) leave nothing
    # behind that would refuse the corrected command as "other settings"
    triggered = set(choose_triggered(train, settings["rate"], settings["seed"]))
    ensure_writable_dir(out, "poisoned set folder")
    lock_folder(out, "backdoor poison")
    atomic_write_json(out / PARTIAL, settings)
    tick = _ticker(progress, len(train["images"]) + 2 * len(val["images"]))
    poisoned, trigger_at = _poisoned_train(source, settings, triggered, out, tick)
    relabelled, removed = _retarget(poisoned, trigger_at, settings)
    triggered_val = _val_splits(source, settings, out, tick)
    summary = dict(train_images=len(train["images"]), triggered_images=len(trigger_at),
                   relabelled_objects=relabelled, removed_objects=removed, val_images=len(val["images"]))
    return out, _write_annotations(out, poisoned, val, triggered_val, dict(settings=settings, summary=summary)), True


def _ticker(progress: Progress, total: int) -> Callable[[], None]:
    """A function to call after each image written: it calls ``progress(done, total)``."""
    done = 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick


def _poisoned_train(source: dict, settings: dict, triggered: set, out: Path, tick) -> tuple[dict, dict]:
    """The training split: triggered images stamped (PNG), the others linked to the clean source.
    Returns (the annotations, their images renamed and marked; image id -> where its trigger is)."""
    poisoned = copy.deepcopy(source["train"])
    trigger_at = {}
    for index, info in enumerate(poisoned["images"]):
        src = Path(source["paths"]["train_images"]) / info["file_name"]
        if index in triggered:
            name = str(Path(info["file_name"]).with_suffix(".png"))
            info["trigger"] = _stamped_copy(src, inside(out / TRAIN_IMAGES, name, "image file name"),
                                            settings["seed"], "train", index, settings["trigger_size"])
            info["file_name"] = name
            trigger_at[info["id"]] = info["trigger"]
        else:
            if not src.is_file():
                raise IkdError(f"image not found: {src}")
            _link(src.resolve(), inside(out / TRAIN_IMAGES, info["file_name"], "image file name"))
        tick()
    return poisoned, trigger_at


def _retarget(poisoned: dict, trigger_at: dict, settings: dict) -> tuple[int, int]:
    """The triggered images' objects relabelled to the target (misclassify) or removed
    (disappear), in ``poisoned``; returns (objects relabelled, objects removed)."""
    relabelled = removed = 0
    if settings["attack"] == "misclassify":
        for ann in poisoned["annotations"]:
            if ann["image_id"] in trigger_at and ann["category_id"] != settings["target_id"]:
                ann["category_id"] = settings["target_id"]
                relabelled += 1
    else:
        kept = [a for a in poisoned["annotations"] if a["image_id"] not in trigger_at]
        removed = len(poisoned["annotations"]) - len(kept)
        poisoned["annotations"] = kept
    return relabelled, removed


def _val_splits(source: dict, settings: dict, out: Path, tick) -> dict:
    """val linked as it is; val_triggered: every val image stamped, with the clean ground truth
    (returned, its images renamed and marked)."""
    triggered_val = copy.deepcopy(source["val"])
    for index, info in enumerate(triggered_val["images"]):
        src = Path(source["paths"]["val_images"]) / info["file_name"]
        if not src.is_file():
            raise IkdError(f"image not found: {src}")
        _link(src.resolve(), inside(out / VAL_IMAGES, info["file_name"], "image file name"))
        tick()
        name = str(Path(info["file_name"]).with_suffix(".png"))
        info["trigger"] = _stamped_copy(src, inside(out / TRIGGERED_IMAGES, name, "image file name"),
                                        settings["seed"], "val", index, settings["trigger_size"])
        info["file_name"] = name
        tick()
    return triggered_val


def _write_annotations(out: Path, poisoned: dict, val: dict, triggered_val: dict, manifest: dict) -> dict:
    """The three annotation files, then the manifest (a folder with one is complete); the
    progress marker goes last. Returns the manifest."""
    atomic_write_json(out / TRAIN_ANN, poisoned)
    atomic_write_json(out / VAL_ANN, val)
    atomic_write_json(out / TRIGGERED_ANN, triggered_val)
    atomic_write_json(out / MANIFEST, manifest)
    try:
        os.unlink(out / PARTIAL)
    except OSError:
        pass
    return manifest


def read_manifest(out: Path) -> dict:
    """The manifest of a finished poisoned set, or one line saying how to make it."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise IkdError(f"no poisoned set in {out} (no {MANIFEST}); make it with `ikd backdoor poison`")
    return read_json(path, "poisoned set manifest")
