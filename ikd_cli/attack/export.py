"""``ikd attack --export DIR``: a finished adversarial set (any storage format) written again as
plain PNG images, with its settings and records, so that other tools read it as images and
``ikd`` reads it like any other set."""

from __future__ import annotations

import json
from pathlib import Path

from ikd_cli.attack.manifest import clear_set, output_names, read_records, refuse_onto_inputs, set_budget
from ikd_cli.config.layout import ATTACK_SETTINGS_FILE, adversarial_name, adversarial_set_dir, records_file
from ikd_cli.config.presets import data_path
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import (atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_writable_dir, inside,
                                 read_json, unlinked)
from ikd_cli.core.lock import LOCK_FILE, lock_folder
from ikd_cli.core.ui import console, progress_bar


def export_set(preset: dict, *, split: str, out: Path | None, dest: Path) -> int:
    """Write an adversarial set (any format) as plain PNG images, with its settings and records,
    into ``dest``: a set other tools read as images, and ``ikd`` reads like any other."""
    import cv2

    from ikd_cli.attack.storage import encode_png, read_adversarial

    src = Path(out or adversarial_set_dir(preset, split))
    settings = read_json(src / ATTACK_SETTINGS_FILE, "attack settings")
    done, _ = read_records(src)
    if not done:
        raise IkdError(f"{src} holds no finished adversarial image to export")
    images = data_path(preset, f"{split}_images")
    _check_export_folder(preset, src, Path(dest))
    output_names(list(done), "png", "export")  # a delta set keeps a.jpg and a.png apart; PNGs would not
    dest = ensure_writable_dir(dest, "export folder")
    lock_folder(dest, "export")
    if (dest / ATTACK_SETTINGS_FILE).is_file():
        clear_set(dest)  # an earlier export: its images and records go, none of them stays stale
    lines, budget = [], set_budget(src)
    with progress_bar() as progress:
        task = progress.add_task("export png", total=len(done), info="", unit="img")
        for name, rec in sorted(done.items()):
            unlinked(dest, adversarial_name(name, "png"), "image file name")  # before any read
            # decoded as the attack and the training pipeline decode it (mmcv's cv2 backend)
            clean = cv2.imread(str(images / name), cv2.IMREAD_COLOR)
            if clean is None:
                raise IkdError(f"cannot read source image {images / name}")
            adv = read_adversarial(inside(src, rec["out"], "record's file name"), clean,
                                   fmt=settings.get("format", "png"), eps=budget)
            rel = adversarial_name(name, "png")
            atomic_write_bytes(unlinked(dest, rel, "image file name"), encode_png(adv))
            lines.append(json.dumps(dict(rec, out=str(rel))))
            progress.update(task, advance=1)
    atomic_write_text(dest / records_file(0), "\n".join(lines) + "\n")
    atomic_write_json(dest / ATTACK_SETTINGS_FILE, dict(settings, format="png", exported_from=str(src)))
    console.print(f"exported {len(done)} images of {src} as PNG into {dest}")
    return len(done)


def _check_export_folder(preset: dict, src: Path, dest: Path) -> None:
    """An export goes into an empty folder or an earlier export, never onto the preset's data or
    the set itself (its images would be overwritten, or mixed with files of no record)."""
    refuse_onto_inputs(preset, dest, "--export", [("the adversarial set being exported", src)])
    if not dest.is_dir():
        return
    settings = dest / ATTACK_SETTINGS_FILE
    if settings.is_file() and "exported_from" in read_json(settings, "attack settings"):
        return  # an earlier export: replaced
    if any(p.name != LOCK_FILE for p in dest.iterdir()):
        raise IkdError(f"--export {dest} is not empty and holds no export of `ikd attack`; export into an empty "
                       "or new folder")
