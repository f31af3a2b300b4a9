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
"""

from __future__ import annotations

import json
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
    start = time.perf_counter()
    report = score(ev, split, tag=tag, extra={"setting": setting}, **score_args)
    report["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_json(path, report)
    return report


def _entry(report: dict | None, tag: str, **more) -> dict | None:
    if report is None:
        return None
    return {"AP": report["bbox"]["AP"], "file": eval_file(report["checkpoint"], tag).name,
            "seconds": report.get("seconds"), **more}


def _transfer(ev, split: str, digest: str) -> tuple[dict | None, str]:
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
               "attack_sha256": sha256_of(folder / ATTACK_SETTINGS_FILE)}
    report = _setting_result(ev, split, tag, setting, images=folder)
    return _entry(report, tag, images=str(folder)), ""


def _ann_file(ev, split: str) -> str:
    from ikd_cli.config.mmdet import base_dataset

    return base_dataset(ev.cfg.data.train).ann_file if split == "train" else ev.cfg.data.test.ann_file


def _whitebox(ev, split: str, digest: str) -> dict:
    from ikd_cli.evaluate.whitebox import make_whitebox_set

    folder, attack = make_whitebox_set(ev, split)
    tag = f"{split}-whitebox-{folder.name.rsplit('-', 1)[-1]}"
    setting = {"kind": "whitebox", "checkpoint_sha256": digest, "images": folder.name}
    report = _setting_result(ev, split, tag, setting, images=folder)
    s = attack["settings"]
    return _entry(report, tag, images=str(folder), method=s["method"], eps=s["eps"], steps=s["steps"],
                  linf_max=attack["linf_max"], loss_before_mean=attack["loss_before_mean"],
                  loss_after_mean=attack["loss_after_mean"])


def _corruptions(ev, split: str, digest: str, plan: list[tuple[str, int]], seed: int) -> list[dict]:
    from ikd_cli.evaluate.corruptions import pipeline_step

    rows = []
    for name, severity in plan:
        tag = f"{split}-corruption-{name}-{severity}"
        setting = {"kind": "corruption", "checkpoint_sha256": digest, "corruption": name, "severity": severity,
                   "seed": seed}
        report = _setting_result(ev, split, tag, setting, extra_steps=[pipeline_step(name, severity, seed)])
        rows.append(_entry(report, tag, corruption=name, severity=severity))
    return rows


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
    start = time.perf_counter()
    ev = load_evaluation(checkpoint, preset=preset, model=model, overrides=overrides, data_root=data_root,
                         device=device, verbose=verbose)
    digest = sha256_of(ev.checkpoint)
    seed = int((ev.preset or {}).get("train", {}).get("seed", 0))
    clean = _entry(_setting_result(ev, split, split, {"kind": "clean", "checkpoint_sha256": digest}), split)
    transfer, why = _transfer(ev, split, digest)
    if transfer is None:
        console.print(f"[yellow]transfer: skipped[/] ({why})", soft_wrap=True)
    whitebox = _whitebox(ev, split, digest) if ev.preset is not None else None
    if whitebox is None:
        console.print("[yellow]white-box: skipped[/] (no preset: pass --preset NAME --model ...)", soft_wrap=True)
    rows = _corruptions(ev, split, digest, plan, seed)
    summary = {"checkpoint": str(ev.checkpoint), "checkpoint_sha256": digest, "split": split, "clean": clean,
               "transfer": transfer, "transfer_skipped": why or None, "whitebox": whitebox,
               "corruptions": {"set": label, "seed": seed, "results": rows,
                               **corruption_summary(rows, clean["AP"])},
               "seconds": round(time.perf_counter() - start, 2)}
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
