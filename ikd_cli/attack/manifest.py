"""The bookkeeping of an adversarial set's folder, so that an attack can stop and continue:

    attack.json          the settings and the teacher checkpoint's sha256
    records-<rank>.jsonl one line per finished image (loss before/after, L-inf, seconds) or failure,
                         or an image skipped as unreadable (``--skip-bad``: ``{"image", "skipped"}``)
    summary.json         totals, written when a run finishes

Each image file is renamed into place before its record is appended, so a record always names a
complete file; a torn last line (a process killed mid-write) is ignored and that image redone.
"""

from __future__ import annotations

import json
from pathlib import Path

from ikd_cli.config.layout import ATTACK_PREVIEW_FILE, ATTACK_SETTINGS_FILE, DELTA_SUFFIX, adversarial_name
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import (atomic_write_json, distinct_outputs, files_below, inside, open_append, parse_json,
                                 read_json, unlinked)
from ikd_cli.config.layout import ATTACK_SUMMARY_FILE, RECORDS_GLOB, records_file


def _records(out_dir: Path):
    """Every record of every rank's records file, in order; a torn line (a kill mid-write) is
    passed over."""
    for path in sorted(Path(out_dir).glob(RECORDS_GLOB)):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = parse_json(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def read_records(out_dir: Path) -> tuple[dict, dict]:
    """(done, failed): image -> record, from every rank's records file."""
    done, failed = {}, {}
    for rec in _records(out_dir):
        if "skipped" in rec:
            continue
        (failed if "error" in rec else done)[rec["image"]] = rec
    done = {k: v for k, v in done.items() if (inside(out_dir, v["out"], "record's file name")).is_file()}
    for key in done:
        failed.pop(key, None)
    return done, failed


def set_budget(out_dir: Path) -> float | None:
    """The eps the set in ``out_dir`` was made with (its attack.json; None without one): what
    every reader holds its images to, so a file edited after the attack is refused."""
    path = Path(out_dir) / ATTACK_SETTINGS_FILE
    settings = read_json(path, "attack settings") if path.is_file() else {}
    eps = settings.get("eps") if isinstance(settings, dict) else None
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float))):
        raise IkdError(f"{path}: eps must be a number, not {eps!r}")
    return eps


def read_settings(out_dir: Path) -> dict:
    """The settings the set in ``out_dir`` records (its attack.json; {} without one)."""
    path = Path(out_dir) / ATTACK_SETTINGS_FILE
    return (read_json(path, "attack settings") or {}) if path.is_file() else {}


def differing(out_dir: Path, wanted: dict, ignore: tuple = ()) -> list[str]:
    """The names of ``wanted``'s settings (less ``ignore``) in which the set in ``out_dir``
    differs ([] when none do or the folder records no settings)."""
    old = read_settings(out_dir)
    return [k for k in wanted if k not in ignore and old.get(k) != wanted[k]] if old else []


def settings_difference(out_dir: Path, wanted: dict, ignore: tuple = ()) -> str:
    """'key old -> new' for the first few of ``wanted``'s settings (less ``ignore``) in which the
    set in ``out_dir`` differs; '' when none differ or the folder records no settings."""
    old = read_settings(out_dir)
    return ", ".join(f"{k} {old.get(k)!r} -> {wanted[k]!r}" for k in differing(out_dir, wanted, ignore)[:3])


def setting_keys() -> dict[str, str]:
    """attack.json name -> the preset key that sets it (``steps`` -> ``attack.steps``, ``seed`` ->
    ``train.seed``); the checkpoint's digest and the split have none."""
    from ikd_cli.config.schema import attack_set_keys, pixel_options

    return {"method": "attack.method", **{name: f"attack.{name}" for name in pixel_options()},
            **{name: key for key, name in attack_set_keys().items()}}


def matching_sets(out_dir: Path, names: list[str]) -> str:
    """What gives the set in ``out_dir`` its values of ``names``: '`--set attack.steps=1 ...`', and
    for a setting no preset key holds (the teacher's weights, the split), that it differs."""
    import shlex

    old, keys = read_settings(out_dir), setting_keys()
    sets = [shlex.quote(f"{keys[n]}={old[n] if isinstance(old[n], str) else json.dumps(old[n])}")
            for n in names if n in keys and n in old]
    unset = [n for n in names if n not in keys or n not in old]
    parts = [f"`{' '.join('--set ' + s for s in sets)}`"] if sets else []
    if unset:
        weights = " (it was made against other weights)" if any(n.endswith("_sha256") for n in unset) else ""
        parts.append(f"no --set gives its {', '.join(unset)}{weights}")
    return ", and ".join(parts)


def check_settings(out_dir: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to mix two attacks in one folder, naming the --set that continues the set there.
    With ``overwrite``, empty the folder of the old attack (its images, records and summary)
    first, so it holds only images of the new settings."""
    path = out_dir / ATTACK_SETTINGS_FILE
    if path.exists() and not overwrite:
        shown = settings_difference(out_dir, settings)
        if shown:
            raise IkdError(f"{out_dir} holds an attack with other settings ({shown}); to continue that set: "
                           f"{matching_sets(out_dir, differing(out_dir, settings))}; or choose another --out, or "
                           "pass --overwrite to replace it with these settings")
        return
    if overwrite and path.exists():
        clear_set(out_dir)
    atomic_write_json(path, settings)


# The files a set's folder keeps for itself: no adversarial image may take one of these names.
SET_FILES = (ATTACK_SETTINGS_FILE, ATTACK_PREVIEW_FILE, ATTACK_SUMMARY_FILE)


def output_names(names, fmt: str, what: str = "") -> dict:
    """Where each of ``names`` is written in a set of format ``fmt``, refused in one line where two
    would share a file or one would take a file of the set's own (``png`` drops the extension:
    ``a.jpg`` and ``a.png``, or an image ``preview.png``; ``delta`` keeps it). ``what``: the
    folder's name in the message (an export's, which cannot choose delta)."""
    hint = " (or store the set as --format delta, which keeps the extension)" if fmt == "png" and not what else ""
    try:
        return distinct_outputs(names, lambda name: adversarial_name(name, fmt), SET_FILES, what or f"{fmt} set")
    except IkdError as err:
        raise IkdError(f"{err}{hint}") from None


def refuse_onto_inputs(preset: dict, dest: Path, option: str, sources=()) -> None:
    """An output folder (``--out``, ``--export``) is never the preset's images or inside them,
    nor one of ``sources`` ((what, folder) pairs: the set an export reads): its files would
    overwrite the images they are made from."""
    from ikd_cli.config.presets import data_path

    target = Path(dest).resolve()
    for what, folder in (("the preset's training images", data_path(preset, "train_images")),
                         ("the preset's val images", data_path(preset, "val_images")), *sources):
        folder = Path(folder).resolve()
        if target == folder or folder in target.parents:
            raise IkdError(f"{option} {dest} is {'inside ' if target != folder else ''}{what} ({folder}); "
                           "write into a new folder")


def clear_set(out_dir: Path) -> None:
    """Remove an adversarial set's images and bookkeeping (only called on a folder that holds an
    ``attack.json``, so a wrong --out cannot empty a folder of other files)."""
    done, failed = read_records(out_dir)
    for rec in done.values():
        # only a name the attack gives its images: a record is data, and may name anything
        if Path(rec["out"]) in (adversarial_name(rec["image"], fmt) for fmt in ("png", "delta")):
            unlinked(out_dir, rec["out"], "record's file name").unlink(missing_ok=True)
    # Images renamed into place just before a kill, whose record was never written:
    for stray in files_below(out_dir, DELTA_SUFFIX):
        stray.unlink()
    for name in (RECORDS_GLOB, ATTACK_SUMMARY_FILE, ATTACK_PREVIEW_FILE, ATTACK_SETTINGS_FILE):
        for path in out_dir.glob(name):
            path.unlink()


def read_skipped(out_dir: Path) -> dict:
    """Images the set's records list as skipped (image -> why), less those attacked since."""
    skipped = {rec["image"]: rec["skipped"] for rec in _records(out_dir) if "skipped" in rec}
    done, _ = read_records(out_dir) if skipped else ({}, {})
    return {name: why for name, why in skipped.items() if name not in done}


def record_skipped(out_dir: Path, bad: dict, rank: int = 0) -> None:
    """Append a "skipped" record for each of ``bad`` (image -> why) the set does not list yet."""
    new = {name: why for name, why in bad.items() if name not in read_skipped(out_dir)}
    if new:
        with open_append(Path(out_dir) / records_file(rank)) as records:
            records.write("".join(json.dumps({"image": name, "skipped": why}) + "\n" for name, why in new.items()))


def missing_or_stale(out_dir: Path, names) -> list[str]:
    """Images of ``names`` that the set in ``out_dir`` has no finished record and file for (what
    distillation's pre-flight refuses to start without)."""
    done, _ = read_records(out_dir)
    return [name for name in names if name not in done]


def asked_images(out_dir: Path) -> int | None:
    """How many images the last finished attack into ``out_dir`` was asked for (its summary.json;
    fewer than the split: ``--limit``), None without one."""
    path = Path(out_dir) / ATTACK_SUMMARY_FILE
    summary = read_json(path, "attack summary") if path.is_file() else None
    images = summary.get("images") if isinstance(summary, dict) else None
    return images if isinstance(images, int) and not isinstance(images, bool) else None


def summarise(out_dir: Path, wanted: set, settings: dict) -> dict:
    """Totals over the images this run was asked for, written to ``summary.json``."""
    done, failed = read_records(out_dir)
    skipped = read_skipped(out_dir)
    got = [done[n] for n in wanted if n in done]
    measured = [r for r in got if r.get("loss_before") is not None]
    summary = dict(
        settings=settings, images=len(wanted), attacked=len(got), failed=len([n for n in wanted if n in failed]),
        failed_images=sorted(n for n in wanted if n in failed),
        skipped=len([n for n in wanted if n in skipped]), skipped_images=sorted(n for n in wanted if n in skipped),
        linf_max=max((r["linf"] for r in got), default=0),
        loss_before_mean=sum(r["loss_before"] for r in measured) / len(measured) if measured else None,
        loss_after_mean=sum(r["loss_after"] for r in measured) / len(measured) if measured else None,
        seconds_per_image=sum(r["seconds"] for r in got) / max(len(got), 1),
    )
    atomic_write_json(out_dir / ATTACK_SUMMARY_FILE, summary)
    return summary
