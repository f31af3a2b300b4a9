"""``ikd evaluate CKPT --robustness``: one checkpoint scored on four kinds of val images.

    clean       the split as it is                                  <stem>.eval-val.json
    transfer    the teacher's adversarial copy of the split          <stem>.eval-val-<set folder>.json
                (the preset's ``ikd attack --split val`` set)
    white-box   the preset's attack against this checkpoint's own    <stem>.eval-val-whitebox-<key>.json
                classification loss (:mod:`.whitebox`)
    corruptions each corruption at each severity (:mod:`.corruptions`) <stem>.eval-val-corruption-<name>-<s>.json

and the summary ``<stem>.robustness-val.json`` (AP of each, mPC, rPC, seconds). A setting that
cannot run on the model (the white-box attack on a head without the loss terms it raises) is
skipped in one line, its reason kept as ``<key>_skipped``, and the others still score;
``--no-whitebox`` skips the white-box attack. :data:`SETTINGS`
lists them (how each runs, where the summary keeps it, its label); the report reads the same
list. Each setting's eval file records the checkpoint's sha256 and the setting; a re-run finds
it and skips that setting, so an interrupted run continues where it stopped, and new weights
are scored afresh.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ikd_cli.config.layout import corruption_tag, eval_file, images_tag, robustness_file, whitebox_tag
from ikd_cli.core.errors import IkdError
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


@dataclass(frozen=True)
class _Job:
    """What every setting of one ``--robustness`` run shares."""
    ev: object  # the loaded checkpoint (:class:`ikd_cli.evaluate.run.Evaluation`)
    split: str
    digest: str  # the checkpoint's sha256, a part of every setting
    batch: int  # images per inference batch (:func:`batch_size`)
    seed: int
    corruptions: str  # the corruption set's label
    plan: list[tuple[str, int]]  # (corruption, severity) to run
    whitebox: bool = True  # False: --no-whitebox


def _skipped(setting: "Setting", why: str) -> tuple[None, dict, list]:
    """A setting that does not run: said in one line, and its reason kept in the summary
    (``<key>_skipped``), where the report and a reader find why its figure is missing."""
    console.print(f"[yellow]{setting.name}: skipped[/] ({why})", soft_wrap=True)
    return None, {f"{setting.key}_skipped": why}, []


def _run_setting(setting: "Setting", job: _Job, summary: dict) -> tuple[dict | None, dict, list]:
    """A setting's entry, more summary fields and scored entries. A setting other than clean that
    cannot run on this model (one line of ikd's, or the model's own code failing: a head whose
    loss the attack cannot use) is skipped, so the settings after it still score; clean, the
    plain evaluation every other figure is read against, stops the command."""
    if setting is CLEAN:
        return setting.run(job, summary)
    try:
        return setting.run(job, summary)
    except Exception as err:  # whatever the model's code raises: the other settings still run
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return _skipped(setting, text if isinstance(err, IkdError) else f"{type(err).__name__}: {text}")


# A setting's runner: (job, the summary so far) -> (its entry in the summary, more summary
# fields, the eval entries it scored, for the cost).
def _clean(job: _Job, summary: dict) -> tuple[dict, dict, list]:
    # clean also stores AP per class (free: COCOeval's precision array is computed anyway), so a
    # study scored for robustness gets the report's per-class table without another evaluation
    setting = {"kind": "clean", "checkpoint_sha256": job.digest, "classwise": True}
    entry = _entry(_setting_result(job.ev, job.split, job.split, setting, classwise=True), job.split)
    return entry, {}, [entry]


def _transfer(job: _Job, summary: dict) -> tuple[dict | None, dict, list]:
    entry, why = _transfer_entry(job.ev, job.split, job.digest, job.batch)
    if entry is None:
        return _skipped(TRANSFER, why)
    return entry, {"transfer_skipped": None}, [entry]


def _transfer_entry(ev, split: str, digest: str, batch: int) -> tuple[dict | None, str]:
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
    tag = images_tag(split, folder)
    setting = {"kind": "transfer", "checkpoint_sha256": digest, "images": str(folder),
               "attack_sha256": sha256_of(folder / ATTACK_SETTINGS_FILE), "batch_size": batch}
    report = _setting_result(ev, split, tag, setting, images=folder, samples_per_gpu=batch)
    return _entry(report, tag, images=str(folder)), ""


def _ann_file(ev, split: str) -> str:
    from ikd_cli.config.mmdet import base_dataset

    return base_dataset(ev.cfg.data.train).ann_file if split == "train" else ev.cfg.data.test.ann_file


def _whitebox(job: _Job, summary: dict) -> tuple[dict | None, dict, list]:
    if not job.whitebox:
        return _skipped(WHITEBOX, "--no-whitebox")
    if job.ev.preset is None:
        return _skipped(WHITEBOX, "no preset: pass --preset NAME --model ...")
    entry = _whitebox_entry(job.ev, job.split, job.digest, job.batch)
    return entry, {}, [entry]


def _whitebox_entry(ev, split: str, digest: str, batch: int) -> dict:
    from ikd_cli.evaluate.whitebox import make_whitebox_set

    cpu = cpu_seconds()
    folder, attack = make_whitebox_set(ev, split)
    attack_cpu = round(cpu_seconds() - cpu, 2) if not attack.get("reused") else _stored_attack_cpu(ev, split, folder)
    tag = whitebox_tag(split, folder)
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


def _corruptions(job: _Job, summary: dict) -> tuple[dict, dict, list]:
    rows = _corruption_rows(job.ev, job.split, job.digest, job.plan, job.seed, job.batch)
    entry = {"set": job.corruptions, "seed": job.seed, "results": rows,
             **corruption_summary(rows, CLEAN.value(summary))}
    return entry, {}, rows


def _corruption_rows(ev, split: str, digest: str, plan: list[tuple[str, int]], seed: int, batch: int) -> list[dict]:
    from ikd_cli.evaluate.corruptions import pipeline_step

    rows = []
    for name, severity in plan:
        tag = corruption_tag(split, name, severity)
        setting = {"kind": "corruption", "checkpoint_sha256": digest, "corruption": name, "severity": severity,
                   "seed": seed, "batch_size": batch}
        report = _setting_result(ev, split, tag, setting, extra_steps=[pipeline_step(name, severity, seed)],
                                 samples_per_gpu=batch)
        rows.append(_entry(report, tag, corruption=name, severity=severity))
    return rows


def _cost(scored: list[dict | None], whitebox: dict | None) -> dict:
    """Wall and CPU seconds of every setting as it was scored (whichever run scored it) and of
    the white-box attack: what the whole evaluation of this checkpoint costs from scratch."""
    entries = [e for e in scored if e is not None]
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
    return {"per_corruption": per_mean, CORRUPTIONS.field: mpc, RPC.field: rpc}


def evaluate_robustness(checkpoint: Path, *, preset: dict | None, model: str, overrides: dict | None,
                        device: str | None, verbose: bool, corruptions: str | None = None,
                        severities: str | None = None, split: str = "val", whitebox: bool = True) -> dict:
    """Score ``checkpoint`` in every setting of :data:`SETTINGS` (``corruptions``: a set name or
    names, None: the default set; ``whitebox`` False: no white-box attack) and write the summary
    beside it. A setting that cannot run on the model is skipped (:func:`_run_setting`)."""
    from ikd_cli.evaluate.corruptions import DEFAULT_SET, corruption_plan
    from ikd_cli.evaluate.run import load_evaluation

    # a bad --corruptions ('' included: it names none, 'none' runs none) stops before any work
    label, plan = corruption_plan(DEFAULT_SET if corruptions is None else corruptions, severities)
    start, cpu = time.perf_counter(), cpu_seconds()
    ev = load_evaluation(checkpoint, preset=preset, model=model, overrides=overrides, device=device, verbose=verbose)
    digest = sha256_of(ev.checkpoint)
    seed = int((ev.preset or {}).get("train", {}).get("seed", 0))
    job = _Job(ev, split, digest, batch_size(ev, split), seed, label, plan, whitebox)
    summary, scored = {"checkpoint": str(ev.checkpoint), "checkpoint_sha256": digest, "split": split}, []
    for setting in SETTINGS:
        if setting.run is not None:
            entry, more, entries = _run_setting(setting, job, summary)
            summary.update({setting.key: entry, **more})
            scored += entries
    summary.update({"batch_size": job.batch, "seconds": round(time.perf_counter() - start, 2),
                    "cpu_seconds": round(cpu_seconds() - cpu, 2), "cost": _cost(scored, summary[WHITEBOX.key])})
    out = robustness_file(ev.checkpoint, split)
    atomic_write_json(out, summary)
    print_robustness(summary)
    console.print(f"robustness: {out}")
    return summary


def print_robustness(summary: dict) -> None:
    from rich.table import Table

    corruptions = (summary[CORRUPTIONS.key] or {}).get("set", "skipped")
    table = Table(*(f"{s.label} ({corruptions})" if s is CORRUPTIONS else s.label for s in SETTINGS),
                  title=f"{Path(summary['checkpoint']).name} on {summary['split']}: robustness (AP %)")
    table.add_row(*("-" if s.value(summary) is None else f"{100 * s.value(summary):.1f}{'%' if s.ratio else ''}"
                    for s in SETTINGS))
    console.print(table)
    cost = summary.get("cost") or {}
    if cost.get("cpu_seconds") is not None:
        console.print(f"cost of every setting as scored, the white-box attack included: {cost['seconds']:.0f} s wall, "
                      f"{cost['cpu_seconds']:.0f} s CPU (batch {summary['batch_size']})")


@dataclass(frozen=True)
class Setting:
    """One setting of ``ikd evaluate --robustness`` and the figure it gives: its name in
    messages, how it runs (None: a figure computed with another setting's), where the summary
    keeps it (``summary[key][field]``) and its label in tables and pictures. ``ratio``: not on
    the AP scale, so in tables only."""
    name: str
    run: Optional[Callable]
    key: str
    label: str
    field: str = "AP"
    ratio: bool = False

    def value(self, summary: dict):
        """The figure in a robustness summary (a fraction; None: not measured)."""
        entry = summary.get(self.key)
        return entry.get(self.field) if isinstance(entry, dict) else None


CLEAN = Setting("clean", _clean, "clean", "AP clean")
TRANSFER = Setting("transfer", _transfer, "transfer", "AP transfer")
WHITEBOX = Setting("white-box", _whitebox, "whitebox", "AP white-box")
CORRUPTIONS = Setting("corruptions", _corruptions, "corruptions", "mPC", field="mPC")
RPC = Setting("corruptions", None, "corruptions", "rPC", field="rPC", ratio=True)  # mPC / AP clean
# Every setting in the order it runs and the report shows it: the one list the evaluation, the
# report's tables (report/table.py) and its picture (report/robustness.py) read.
SETTINGS = (CLEAN, TRANSFER, WHITEBOX, CORRUPTIONS, RPC)
ROBUSTNESS = tuple(s.label for s in SETTINGS)  # the report's robustness columns
FIGURES = tuple(s.label for s in SETTINGS if not s.ratio)  # those on one AP scale: the picture's
