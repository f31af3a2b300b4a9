"""``ikd evaluate CKPT --robustness``: one checkpoint scored on four kinds of val images.

    clean       the split as it is                                  <stem>.eval-val.json
    transfer    the teacher's adversarial copy of the split          <stem>.eval-val-<set folder>.json
                (the preset's ``ikd attack --split val`` set)
    white-box   the preset's attack against this checkpoint's own    <stem>.eval-val-whitebox-<key>.json
                classification loss (:mod:`.whitebox`)
    corruptions each corruption at each severity (:mod:`.corruptions`) <stem>.eval-val-corruption-<name>-<s>.json

and the summary ``<stem>.robustness-val.json`` (AP of each, mPC, rPC, seconds). Each setting's
eval file records the checkpoint's sha256 and the setting; a re-run finds it and skips that
setting, so an interrupted run continues where it stopped, and new weights are scored afresh.

Every setting but clean runs the model on batches of ``robustness.batch_size`` images (default:
``data.samples_per_gpu`` when all images of the split have one size, so a batch pads nothing and
the detections are batch 1's up to float rounding; else 1). Clean stays at batch 1: it is the
file plain ``ikd evaluate`` writes, with its numbers. Each eval file records wall and CPU seconds
(this process and its loader workers): on a shared machine the CPU seconds are the cost.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from pathlib import Path

from ikd_cli.config.layout import eval_file, robustness_file
from ikd_cli.core.fileio import atomic_write_json, read_json, sha256_of
from ikd_cli.core.ui import console


def _setting_result(ev, split: str, tag: str, setting: dict, **score_args) -> dict:
    """The eval report of one setting: the stored one when it is of these weights and this
    setting, else scored now (and stored)."""
    from ikd_cli.evaluate.run import score

    path = eval_file(ev.checkpoint, tag)
    if path.is_file():
        stored = read_json(path, "eval file")
        if isinstance(stored, dict) and stored.get("setting") == json.loads(json.dumps(setting)) \
                and isinstance(stored.get("bbox"), dict):
            console.print(f"{tag}: AP {100 * stored['bbox']['AP']:.1f} (stored in {path.name})")
            return stored
    start, cpu = time.perf_counter(), cpu_seconds()
    report = score(ev, split, tag=tag, extra={"setting": setting}, **score_args)
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["cpu_seconds"] = round(cpu_seconds() - cpu, 2)
    atomic_write_json(path, report)
    return report


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children (the loader's
    worker processes, once joined): what a setting costs on one core, whatever else runs."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def batch_size(ev, split: str) -> int:
    """Images per inference batch of the robustness settings: ``robustness.batch_size``, or
    ``data.samples_per_gpu`` when every image of the split has one size (mmdet pads a batch to
    its largest image; one size pads nothing), else 1."""
    robust = (ev.preset or {}).get("robustness") or {}
    if robust.get("batch_size"):
        return int(robust["batch_size"])
    sizes = {(im.get("width"), im.get("height")) for im in read_json(Path(_ann_file(ev, split)), "annotation file")["images"]}
    return int(ev.cfg.data.samples_per_gpu) if len(sizes) == 1 and None not in next(iter(sizes)) else 1


def _entry(report: dict | None, tag: str, **more) -> dict | None:
    if report is None:
        return None
    return {"AP": report["bbox"]["AP"], "file": eval_file(report["checkpoint"], tag).name,
            "seconds": report.get("seconds"), "cpu_seconds": report.get("cpu_seconds"), **more}


def _transfer(ev, split: str, digest: str, batch: int) -> tuple[dict | None, str]:
    """The teacher's adversarial set of ``split``, scored; (None, why) when there is none to score."""
    from ikd_cli.attack.manifest import missing_or_stale
    from ikd_cli.config.layout import ATTACK_SETTINGS_FILE, adversarial_set_dir

    if ev.preset is None:
        return None, "no preset, so no adversarial set of its teacher"
    folder = adversarial_set_dir(ev.preset, split)
    names = [im["file_name"] for im in read_json(Path(_ann_file(ev, split)), "annotation file")["images"]]
    if not (folder / ATTACK_SETTINGS_FILE).is_file() or missing_or_stale(folder, names):
        return None, (f"{folder} does not hold every {split} image; `ikd attack --split {split}` with the preset "
                      "makes it")
    tag = f"{split}-{folder.name}"
    setting = {"kind": "transfer", "checkpoint_sha256": digest, "images": str(folder),
               "attack_sha256": sha256_of(folder / ATTACK_SETTINGS_FILE), "batch_size": batch}
    report = _setting_result(ev, split, tag, setting, images=folder, samples_per_gpu=batch)
    return _entry(report, tag, images=str(folder)), ""


def _ann_file(ev, split: str) -> str:
    from ikd_cli.config.mmdet import base_dataset

    return base_dataset(ev.cfg.data.train).ann_file if split == "train" else ev.cfg.data.test.ann_file


def _whitebox(ev, split: str, digest: str, batch: int) -> dict:
    from ikd_cli.evaluate.whitebox import make_whitebox_set

    cpu = cpu_seconds()
    folder, attack = make_whitebox_set(ev, split)
    attack_cpu = round(cpu_seconds() - cpu, 2) if not attack.get("reused") else _stored_attack_cpu(ev, split, folder)
    tag = f"{split}-whitebox-{folder.name.rsplit('-', 1)[-1]}"
    setting = {"kind": "whitebox", "checkpoint_sha256": digest, "images": folder.name, "batch_size": batch}
    report = _setting_result(ev, split, tag, setting, images=folder, samples_per_gpu=batch)
    s = attack["settings"]
    return _entry(report, tag, images=str(folder), method=s["method"], eps=s["eps"], steps=s["steps"],
                  linf_max=attack["linf_max"], loss_before_mean=attack["loss_before_mean"],
                  loss_after_mean=attack["loss_after_mean"],
                  attack_seconds=round(attack["seconds_per_image"] * attack["attacked"], 2),
                  attack_cpu_seconds=attack_cpu)


def _stored_attack_cpu(ev, split: str, folder: Path) -> float | None:
    """The CPU seconds of a white-box set made by an earlier run: from that run's summary."""
    path = robustness_file(ev.checkpoint, split)
    old = read_json(path, "robustness file") if path.is_file() else {}
    entry = old.get("whitebox") if isinstance(old, dict) else None
    return entry.get("attack_cpu_seconds") if isinstance(entry, dict) and entry.get("images") == str(folder) else None


def _corruptions(ev, split: str, digest: str, plan: list[tuple[str, int]], seed: int, batch: int) -> list[dict]:
    from ikd_cli.evaluate.corruptions import pipeline_step

    rows = []
    for name, severity in plan:
        tag = f"{split}-corruption-{name}-{severity}"
        setting = {"kind": "corruption", "checkpoint_sha256": digest, "corruption": name, "severity": severity,
                   "seed": seed, "batch_size": batch}
        report = _setting_result(ev, split, tag, setting, extra_steps=[pipeline_step(name, severity, seed)],
                                 samples_per_gpu=batch)
        rows.append(_entry(report, tag, corruption=name, severity=severity))
    return rows


def _cost(clean: dict, transfer: dict | None, whitebox: dict | None, rows: list[dict]) -> dict:
    """Wall and CPU seconds of every setting as it was scored (whichever run scored it) and of
    the white-box attack: what the whole evaluation of this checkpoint costs from scratch."""
    entries = [e for e in (clean, transfer, whitebox, *rows) if e is not None]
    out = {}
    for key in ("seconds", "cpu_seconds"):
        values = [e.get(key) for e in entries] + ([whitebox.get(f"attack_{key}")] if whitebox else [])
        out[key] = None if None in values else round(sum(values), 2)
    return out


def corruption_summary(rows: list[dict], clean_ap: float) -> dict:
    """mPC (mean AP over every corruption and severity run: each corruption's mean over its
    severities, then the mean over corruptions, as mmdet's benchmark; the same number when every
    corruption ran at the same severities), per-corruption means and rPC = mPC / clean AP."""
    per = {}
    for row in rows:
        per.setdefault(row["corruption"], []).append(row["AP"])
    per_mean = {name: statistics.fmean(aps) for name, aps in per.items()}
    mpc = statistics.fmean(per_mean.values()) if per_mean else None
    rpc = mpc / clean_ap if mpc is not None and clean_ap > 0 else None
    return {"per_corruption": per_mean, "mPC": mpc, "rPC": rpc}


def evaluate_robustness(checkpoint: Path, *, preset: dict | None, model: str, overrides, data_root,
                        device: str | None, verbose: bool, corruptions: str = "default",
                        severities: str | None = None, split: str = "val") -> dict:
    from ikd_cli.evaluate.corruptions import corruption_plan
    from ikd_cli.evaluate.run import load_evaluation

    label, plan = corruption_plan(corruptions, severities)  # a bad --corruptions stops before any work
    start, cpu = time.perf_counter(), cpu_seconds()
    ev = load_evaluation(checkpoint, preset=preset, model=model, overrides=overrides, data_root=data_root,
                         device=device, verbose=verbose)
    digest = sha256_of(ev.checkpoint)
    seed = int((ev.preset or {}).get("train", {}).get("seed", 0))
    batch = batch_size(ev, split)
    # clean also stores AP per class (free: COCOeval's precision array is computed anyway), so a
    # study scored for robustness gets the report's per-class table without another evaluation
    clean = _entry(_setting_result(ev, split, split, {"kind": "clean", "checkpoint_sha256": digest, "classwise": True},
                                   classwise=True), split)
    transfer, why = _transfer(ev, split, digest, batch)
    if transfer is None:
        console.print(f"[yellow]transfer: skipped[/] ({why})", soft_wrap=True)
    whitebox = _whitebox(ev, split, digest, batch) if ev.preset is not None else None
    if whitebox is None:
        console.print("[yellow]white-box: skipped[/] (no preset: pass --preset NAME --model ...)", soft_wrap=True)
    rows = _corruptions(ev, split, digest, plan, seed, batch)
    summary = {"checkpoint": str(ev.checkpoint), "checkpoint_sha256": digest, "split": split, "clean": clean,
               "transfer": transfer, "transfer_skipped": why or None, "whitebox": whitebox,
               "corruptions": {"set": label, "seed": seed, "results": rows,
                               **corruption_summary(rows, clean["AP"])},
               "batch_size": batch, "seconds": round(time.perf_counter() - start, 2),
               "cpu_seconds": round(cpu_seconds() - cpu, 2), "cost": _cost(clean, transfer, whitebox, rows)}
    out = robustness_file(ev.checkpoint, split)
    atomic_write_json(out, summary)
    print_robustness(summary)
    console.print(f"robustness: {out}")
    return summary


def print_robustness(summary: dict) -> None:
    from rich.table import Table

    def pct(entry):
        return "-" if entry is None else f"{100 * entry['AP']:.1f}"

    c = summary["corruptions"]
    table = Table("AP clean", "AP transfer", "AP white-box", f"mPC ({c['set']})", "rPC",
                  title=f"{Path(summary['checkpoint']).name} on {summary['split']}: robustness (AP %)")
    table.add_row(pct(summary["clean"]), pct(summary["transfer"]), pct(summary["whitebox"]),
                  "-" if c["mPC"] is None else f"{100 * c['mPC']:.1f}",
                  "-" if c["rPC"] is None else f"{100 * c['rPC']:.1f}%")
    console.print(table)
    cost = summary.get("cost") or {}
    if cost.get("cpu_seconds") is not None:
        console.print(f"cost of every setting as scored, the white-box attack included: {cost['seconds']:.0f} s wall, "
                      f"{cost['cpu_seconds']:.0f} s CPU (batch {summary['batch_size']})")
