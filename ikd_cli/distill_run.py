"""``ikd distill`` and ``ikd resume``: IKD's two stages in one MMDetection run, and picking up
any interrupted run (train or distill) from its work dir with its saved settings."""

from __future__ import annotations

import time
from pathlib import Path

from .errors import IkdError
from .fileio import atomic_write_json, ensure_writable_dir, read_json
from .ui import console, quiet_to_log

RUN_FILE = "run.json"  # what kind of run a work dir holds, for `ikd resume`


def check_adversarial_set(cfg, preset: dict) -> None:
    """Pre-flight: every training image needs its adversarial copy before stage 1 starts."""
    from .attack_run import adversarial_name
    from .engine import build_dataset_checked

    if cfg.dfa_until <= 0:
        return
    dataset = build_dataset_checked(cfg.data.train, "training")
    adv_dir = Path(cfg.adv_dir)
    missing = [info["filename"] for info in dataset.data_infos if not (adv_dir / adversarial_name(info["filename"])).is_file()]
    if missing:
        a = preset["attack"]
        raise IkdError(
            f"{len(missing)} of {len(dataset)} training images have no adversarial copy in {adv_dir} "
            f"(first: {missing[0]}); make them with `ikd attack --preset {preset['name']} --eps {a['eps']:g} "
            f"--steps {a['steps']} --method {a['method']}`, or train without stage 1: --dfa-until 0")


def run_distill(preset: dict, *, device: str | None, launcher: str, verbose: bool, resume_from: str | None = None):
    import mmcv

    from .checkpoints import teacher_checkpoint
    from .datasets_setup import ensure_dataset
    from .engine import run_training, save_run_files
    from .launch import init_distributed, pick_device
    from .mmdet_config import build_config

    device = pick_device(device)
    distributed, rank, world = init_distributed(launcher, device)
    if rank == 0:
        ensure_dataset(preset)
    cfg = build_config(preset, "distill")
    work_dir = ensure_writable_dir(cfg.work_dir, "work dir")
    teacher_checkpoint(preset)  # fail early, before any model is built
    mmcv.utils.import_modules_from_strings(**cfg.custom_imports)
    student_cfg = build_config(preset, "student")
    if rank == 0:
        save_run_files(work_dir, cfg, preset)
        atomic_write_json(work_dir / RUN_FILE, {"command": "distill", "preset": preset["name"]})
        epochs = cfg.runner.max_epochs
        if cfg.dfa_until == 0:
            stages = "plain FGD (--dfa-until 0)"
        elif cfg.dfa_until >= epochs:
            stages = f"stage 1 (DFA) for all {epochs} epochs"
        else:
            stages = f"stage 1 (DFA) epochs 1-{cfg.dfa_until}, stage 2 (FGD) epochs {cfg.dfa_until + 1}-{epochs}"
        console.print(f"distilling [bold]{preset['name']}[/] on {device}{f' x{world}' if distributed else ''}: "
                      f"{stages}; log: {work_dir / 'train.log'}")
    from .runner import StudentCheckpointHook

    student_hook = StudentCheckpointHook(preset["train"]["checkpoint_interval"], student_cfg.pretty_text,
                            dict(ikd_preset=preset, ikd_role="student"))
    start = time.time()
    with quiet_to_log(work_dir / "train.log", verbose=verbose):
        check_adversarial_set(cfg, preset)
        run_training(cfg, device=device, distributed=distributed, resume_from=resume_from,
                     extra_hooks=[(student_hook, 60)], title="distill",
                     meta=dict(ikd_preset=preset, ikd_role="distill"), find_unused=True)
    if rank == 0:
        console.print(f"[green]done[/] in {(time.time() - start) / 60:.1f} min: student checkpoint "
                      f"{work_dir / 'student_latest.pth'}" + (" (best: student_best.pth)"
                                                               if (work_dir / 'student_best.pth').exists() else ""))


def resume_run(work_dir: Path, *, preset_name: str | None, device: str | None, launcher: str, verbose: bool):
    """Continue the run in ``work_dir`` from its latest full checkpoint, with its saved preset."""
    from . import presets as presets_mod

    work_dir = Path(work_dir)
    if not (work_dir / RUN_FILE).is_file() or not (work_dir / "preset.yaml").is_file():
        raise IkdError(f"{work_dir} is not an ikd run folder (no {RUN_FILE} / preset.yaml)")
    run = read_json(work_dir / RUN_FILE, "run file")
    saved = presets_mod.load(str(work_dir / "preset.yaml"))
    if preset_name and preset_name != saved["name"]:
        raise IkdError(f"{work_dir} is a run of preset '{saved['name']}', not '{preset_name}'")
    latest = work_dir / "latest.pth"
    if not latest.exists():
        raise IkdError(f"nothing to resume in {work_dir}: no checkpoint was saved yet (start the run again)")
    from .checkpoints import read_checkpoint

    epoch = (read_checkpoint(latest).get("meta") or {}).get("epoch", "?")
    console.print(f"resuming {run['command']} of preset [bold]{saved['name']}[/] after epoch {epoch}")
    if run["command"] == "distill":
        run_distill(saved, device=device, launcher=launcher, verbose=verbose, resume_from=str(latest))
    else:
        from .engine import train_detector_cli

        train_detector_cli(saved, run["role"], resume=True, device=device, launcher=launcher, verbose=verbose)
