"""The set-up every training command shares (``ikd train``, ``ikd distill``, and ``ikd resume``
through them): pick the device, join the processes, make the built-in data, prove the work dir
writable, save the run's files, print one banner, train with MMDetection's chatter in the log,
and say where the result is."""

from __future__ import annotations

import os
import time
from typing import Callable
from pathlib import Path

from ikd_cli.config.layout import (BEST_CHECKPOINTS_GLOB, CONFIG_FILE, EPOCH_CHECKPOINTS_GLOB, LATEST, LOG_FILE,
                                   LOG_JSON_GLOB, PRESET_FILE, RUN_FILE, STUDENT_CHECKPOINTS_GLOB, epoch_in_name)
from ikd_cli.config.presets import dump
from ikd_cli.core.distributed import barrier, init_distributed, pick_device
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_symlink, atomic_write_json, atomic_write_text, ensure_writable_dir, read_json
from ikd_cli.core.lock import lock_folder
from ikd_cli.core.machine import compute_fingerprint, fingerprint_change, pin_compute
from ikd_cli.core.ui import console, quiet_to_log
from ikd_cli.data.check import run_data_check
from ikd_cli.data.setup import ensure_dataset


FINISHED = "finished"  # prepare()'s answer when the run in the work dir is complete


def load_saved_preset(work_dir: Path) -> dict:
    from ikd_cli.config.presets import load

    return load(str(work_dir / PRESET_FILE), saved=True)


# Settings that say how a run is kept and logged, not what it learns: a run continues whatever
# they are (keep fewer checkpoints from now on, log more often).
# train.threads too: a continuation at another count says so (run.json's compute), as it does
# for OMP_NUM_THREADS.
BOOKKEEPING = {"work_dir", "train.max_keep_ckpts", "train.log_interval", "train.tensorboard",
               "train.wandb", "distill.diagnostics", "train.threads"}


def differing_keys(saved: dict, wanted: dict, counts: Callable[[str], bool] | None = None) -> list[str]:
    """The dotted keys in which two presets differ, bookkeeping left out (the work dir may be
    spelled differently, ...). With ``counts``, only the dotted keys it accepts are compared (a
    finished teacher is not "other settings" because distill.* changed)."""
    from ikd_cli.config.presets import flatten

    a, b = flatten(saved), flatten(wanted)
    return [k for k in sorted(set(a) | set(b)) if k not in BOOKKEEPING and a.get(k) != b.get(k)
            and (counts is None or counts(k))]


def preset_difference(saved: dict, wanted: dict, counts: Callable[[str], bool] | None = None) -> str:
    """'key old -> new' for the first few settings that differ ('' when none do); see :func:`differing_keys`."""
    from ikd_cli.config.presets import flatten

    a, b = flatten(saved), flatten(wanted)
    return ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in differing_keys(saved, wanted, counts)[:3])


def matching_sets(saved: dict, keys: list[str]) -> str:
    """'--set k=v ...' giving ``keys`` their values in ``saved``, as a command line takes them."""
    from ikd_cli.config.presets import flatten
    from ikd_cli.core.invocation import set_options

    a = flatten(saved)
    return set_options({k: a.get(k) for k in keys})


def checkpoint_epoch(path: Path) -> int:
    from ikd_cli.core.checkpoints import read_checkpoint

    return int((read_checkpoint(path).get("meta") or {}).get("epoch", 0))


def resume_point(work_dir: Path) -> tuple[Path | None, str]:
    """The checkpoint a run in ``work_dir`` continues from, and a note when it is not latest.pth:
    a latest.pth whose target is gone (deleted, or a folder copied without it) gives way to the newest epoch_N.pth that reads (never a silent restart at epoch 1 that
    overwrites the epochs on disk). (None, '') when nothing was saved yet."""
    from ikd_cli.core.checkpoints import read_checkpoint

    latest = work_dir / LATEST
    if latest.is_file():  # written atomically: whole, or not there
        return latest, ""
    if latest.is_symlink():
        why = f"{LATEST} points to {os.readlink(latest)}, which is gone"
    else:
        why = f"there is no {LATEST}"
    epochs = sorted(work_dir.glob(EPOCH_CHECKPOINTS_GLOB), key=epoch_in_name, reverse=True)
    for path in epochs:
        if path.resolve() == latest.resolve():
            continue
        try:
            read_checkpoint(path)
        except IkdError:
            why += f"; {path.name} cannot be read either"
            continue
        return path, f"{why}: continuing from {path.name}, the newest complete checkpoint"
    if latest.is_symlink() or latest.exists():
        raise IkdError(f"{why} and no earlier epoch_N.pth of {work_dir} reads; start over with --restart")
    return None, ""


# What a train or distill run writes into its folder under names of its own (mmcv's runner, its
# EvalHook, the student hook and the logs): all that --restart may remove.
RUN_OUTPUTS = (EPOCH_CHECKPOINTS_GLOB, LATEST, BEST_CHECKPOINTS_GLOB, STUDENT_CHECKPOINTS_GLOB, LOG_JSON_GLOB, LOG_FILE)


def clear_run(work_dir: Path) -> None:
    """What --restart removes: the files an ikd run writes (:data:`RUN_OUTPUTS`), and only in a
    folder whose run.json says an ikd run lived there; a folder without one is refused if it
    holds files of those names (another tool's, which the new run would overwrite). A link is
    removed, never what it points to; a folder of such a name is left alone."""
    outputs = sorted({p for pattern in RUN_OUTPUTS for p in work_dir.glob(pattern) if p.is_symlink() or p.is_file()})
    if outputs and not (work_dir / RUN_FILE).is_file():
        shown = ", ".join(p.name for p in outputs[:3]) + (" ..." if len(outputs) > 3 else "")
        raise IkdError(f"{work_dir} holds {shown} but no {RUN_FILE}: no ikd run wrote them, and --restart removes "
                       "only what one did; use another --work-dir")
    for path in outputs:
        path.unlink()


def replaced(cfg) -> list[str]:
    """What the run's preset replaced of its model config's recipe, one line each (``build_config``)."""
    return list(cfg.get("ikd_replaced") or [])


class TrainingSession:
    """One training command's process: ``device``, ``distributed``, ``rank``, ``world``."""

    def __init__(self, preset: dict, *, device: str | None, launcher: str, skip_bad=frozenset(),
                 skip_hint: str = ""):
        self.preset = preset
        pin_compute(preset)
        self.device = pick_device(device)
        self.distributed, self.rank, self.world = init_distributed(launcher, self.device)
        if self.rank == 0:
            ensure_dataset(preset)
            # before hours of compute; ``skip_bad``: image files the run goes on without
            run_data_check(preset, skip_bad=skip_bad, skip_hint=skip_hint)
        barrier(self.distributed)  # the data exists (and was checked) before any rank reads it
        self.started = time.time()

    @property
    def where(self) -> str:
        return f"{self.device}{f' x{self.world}' if self.distributed else ''}"

    def prepare(self, cfg, run_info: dict, *, restart: bool = False,
                counts: Callable[[str], bool] | None = None) -> tuple[Path, str | None]:
        """The work dir, writable, with the run's files in it, and the checkpoint to continue
        from: re-running a command on its own work dir continues it (``restart`` starts over).
        ``counts``: which dotted preset keys the run depends on (None: all of them); a saved run
        whose settings differ in one of those is refused.
        Returns (work_dir, resume_from); resume_from is ``FINISHED`` when nothing is left to do."""
        work_dir = ensure_writable_dir(cfg.work_dir, "work dir")
        if self.rank == 0:  # one writer per work dir: a second command on it stops here, naming this one
            lock_folder(work_dir, " ".join(str(v) for v in run_info.values()))
        resume_from = None if restart else self._continue_from(work_dir, cfg, run_info, counts)
        if restart and self.rank == 0:
            clear_run(work_dir)
        barrier(self.distributed)
        if resume_from is None and self.rank == 0:
            atomic_write_text(work_dir / PRESET_FILE, dump(self.preset))
            atomic_write_text(work_dir / CONFIG_FILE, cfg.pretty_text)
            atomic_write_json(work_dir / RUN_FILE, dict(run_info, preset=self.preset["name"],
                                                        compute=compute_fingerprint(), replaced=replaced(cfg),
                                                        epochs=cfg.runner.max_epochs))
        elif resume_from not in (None, FINISHED):
            saved = read_json(work_dir / RUN_FILE, "run file") if (work_dir / RUN_FILE).is_file() else {}
            started = (saved or {}).get("compute") or {}
            now = compute_fingerprint()
            changed = fingerprint_change(started, now)
            if changed:
                self.say(f"[yellow]note[/]: this run started on other compute ({changed}); it continues, but "
                         "its numbers will not equal a run made in one go (pin the count with OMP_NUM_THREADS)")
                if self.rank == 0:  # on the record too, for `ikd report` to say beside its figures
                    continued = list(saved.get("continued") or []) + [
                        dict(after_epoch=checkpoint_epoch(Path(resume_from)), change=changed, compute=now)]
                    atomic_write_json(work_dir / RUN_FILE, dict(saved, continued=continued))
        return work_dir, resume_from

    def _continue_from(self, work_dir: Path, cfg, run_info: dict, counts: Callable[[str], bool] | None) -> str | None:
        latest, note = resume_point(work_dir)
        if latest is None:
            return None  # nothing saved yet: (re)start
        saved_run = read_json(work_dir / RUN_FILE, "run file") if (work_dir / RUN_FILE).is_file() else {}
        what = " ".join(str(v) for v in run_info.values())
        if saved_run and {k: saved_run.get(k) for k in run_info} != run_info:
            raise IkdError(f"{work_dir} holds a {' '.join(str(saved_run.get(k)) for k in run_info)} run, not "
                           f"{what}; use another --work-dir (or --restart to replace it)")
        saved = load_saved_preset(work_dir)
        diff = preset_difference(saved, self.preset, counts)
        if diff:
            same = matching_sets(saved, differing_keys(saved, self.preset, counts))
            raise IkdError(f"{work_dir} holds a run with other settings ({diff}); continue it with "
                           f"`ikd resume {work_dir}` or this command with `{same}`, start over with --restart, or "
                           "use another --work-dir")
        epoch = checkpoint_epoch(latest)
        epochs = cfg.runner.max_epochs
        if epoch >= epochs:
            self.say(f"{what} run in {work_dir} already finished ({epoch} of {epochs} epochs): nothing to do "
                     "(--restart trains it again)")
            return FINISHED
        if note:
            self.say(f"[yellow]note[/]: {note}")
            if self.rank == 0:  # what reads latest.pth next (a distill's teacher, ikd evaluate) finds it
                atomic_symlink(work_dir, latest.name, LATEST)
        self.say(f"continuing the {what} run in {work_dir} after epoch {epoch} of {epochs} (--restart starts over)")
        return str(latest)

    def say(self, text: str) -> None:
        if self.rank == 0:
            console.print(text, soft_wrap=True)

    def log_to(self, work_dir: Path, verbose: bool):
        """MMDetection's chatter into the run's log file (on the terminal too with ``verbose``)."""
        return quiet_to_log(work_dir / LOG_FILE, verbose=verbose)

    def train(self, cfg, **run_kwargs):
        from ikd_cli.train.engine import run_training

        from ikd_cli.train.loggers import prepare_logger_hooks

        prepare_logger_hooks(cfg)
        if self.rank == 0:  # the ImageNet init mmcv loads, verified on disk before the model is built
            from ikd_cli.train.downloads import fetch_inits

            fetch_inits(cfg, self.preset, self.say)
        barrier(self.distributed)
        return run_training(cfg, device=self.device, distributed=self.distributed, **run_kwargs)

    def done(self, where: str) -> None:
        self.say(f"[green]done[/] in {(time.time() - self.started) / 60:.1f} min: {where}")
