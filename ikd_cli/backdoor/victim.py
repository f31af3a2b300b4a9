"""``ikd backdoor train-victim``: the attacker's model, ``ikd train`` of the preset's
``backdoor.victim`` model config (the teacher's by default) on the poisoned set, with the
schedule ``ikd train --model <victim>`` would use. Re-running continues the run; the result is
``<work_dir>/backdoor/victim/latest.pth``.

For object disappearance the triggered training images have no annotation left, and stock
mmdet drops such images from training (``filter_empty_gt``); the victim keeps them, or the
backdoor would never be learnt. (Global misclassification also trains with
``ikd train --set data.root=<poisoned set> --set data.shapes=null``.)
"""

from __future__ import annotations

from pathlib import Path

from ikd_cli.backdoor.layout import (TRAIN_ANN, TRAIN_IMAGES, VAL_ANN, VAL_IMAGES, poisoned_dir, step_dir,
                                     victim_checkpoint)
from ikd_cli.backdoor.poison import read_manifest
from ikd_cli.config import presets
from ikd_cli.config.layout import LATEST
from ikd_cli.core.errors import IkdError


def victim_preset(preset: dict) -> dict:
    """The preset the victim trains with: the poisoned set as its data (never regenerated), and
    backdoor.victim_epochs / victim_lr_steps, where given, as its model's schedule."""
    out = poisoned_dir(preset)
    read_manifest(out)
    b = preset["backdoor"]
    section = "teacher" if b["victim"] == "teacher" else "train"  # where `ikd train` reads the schedule
    schedule = {f"{section}.{key}": b[f"victim_{key}"] for key in ("epochs", "lr_steps")
                if b[f"victim_{key}"] is not None}
    return presets.derive(preset, {"data.root": str(out), "data.train_ann": TRAIN_ANN, "data.train_images": TRAIN_IMAGES + "/",
                           "data.val_ann": VAL_ANN, "data.val_images": VAL_IMAGES + "/", "data.shapes": None,
                           "backdoor.out": str(out), **schedule})


def victim_keys(preset: dict):
    """The settings a victim run depends on: its model's training (as `ikd train`) and the
    poisoning and the attacker's schedule (not the defences' backdoor.* keys)."""
    from ikd_cli.train.run import training_keys

    trains = training_keys(preset, preset["backdoor"]["victim"])
    attacker = {"backdoor." + key for key in ("attack", "target_class", "rate", "trigger_size", "seed", "out", "victim",
                                              "victim_init", "victim_epochs", "victim_lr_steps")}
    if preset["backdoor"]["victim_init"] == "teacher":  # the weights the attacker fine-tunes
        attacker.add("teacher.checkpoint")
    return lambda key: trains(key) or key in attacker


def victim_init(preset: dict) -> Path | None:
    """The weights the attacker starts from (backdoor.victim_init): None (from scratch), a
    checkpoint file, or ``teacher``: the preset's teacher checkpoint, a model trained on the clean
    data that the attacker fine-tunes on the poisoned set."""
    from ikd_cli.config.layout import teacher_checkpoint

    init = preset["backdoor"]["victim_init"]
    if not init:
        return None
    if init == "teacher":
        return teacher_checkpoint(preset)
    if not Path(init).is_file():
        raise IkdError(f"checkpoint to start the victim from not found: {init} (backdoor.victim_init)")
    return Path(init)


def train_victim(preset: dict, *, device, launcher: str, verbose: bool, restart: bool = False) -> Path:
    """Train (or continue training) the victim on the poisoned set; returns its checkpoint."""
    from ikd_cli.config.mmdet import base_dataset, build_config
    from ikd_cli.train import template

    vp = victim_preset(preset)
    s = read_manifest(poisoned_dir(preset))["settings"]
    role = vp["backdoor"]["victim"]
    init = victim_init(vp)

    def build():
        cfg = build_config(vp, role)
        cfg.work_dir = str(step_dir(vp, "victim"))
        if init:
            cfg.load_from = str(init)
        if s["attack"] == "disappear":
            base_dataset(cfg.data.train).filter_empty_gt = False  # the triggered images have no objects left
        return cfg

    return template.run(template.Run(
        vp, build=build, run_info={"command": "backdoor", "step": "victim", "model": role}, title="train victim",
        role=role, counts=victim_keys(vp),
        announce=lambda session, cfg: f"training the victim ({role} model of [bold]{vp['name']}[/]) on the poisoned "
                                      f"set {vp['data']['root']} ({s['attack']}, target {s['target_class']}, rate "
                                      f"{s['rate']:g}){f', starting from {init}' if init else ''} on {session.where}"),
        device=device, launcher=launcher, verbose=verbose, restart=restart)


def finished_checkpoint(work_dir: Path, what: str, how: str) -> Path:
    """``work_dir/latest.pth`` of a run that trained all its epochs, or one line saying how to get it."""
    from ikd_cli.train.session import checkpoint_epoch, load_saved_preset

    latest = Path(work_dir) / LATEST
    if not latest.exists():
        raise IkdError(f"no {what} in {work_dir}: {how}")
    from ikd_cli.config.mmdet import build_config

    saved = load_saved_preset(Path(work_dir))
    epochs = build_config(saved, saved["backdoor"]["victim"]).runner.max_epochs  # the run's own schedule
    epoch = checkpoint_epoch(latest)
    if epoch < epochs:
        raise IkdError(f"the {what} in {work_dir} has trained {epoch} of {epochs} epochs: {how} (re-running it "
                       "continues it)")
    return latest


def require_victim(preset: dict) -> Path:
    """The victim's checkpoint: ``backdoor.victim_checkpoint`` as given, or the finished run of
    ``ikd backdoor train-victim``."""
    given = preset["backdoor"]["victim_checkpoint"]
    if given:
        if not Path(given).is_file():
            raise IkdError(f"victim checkpoint not found: {given} (backdoor.victim_checkpoint)")
        return Path(given)
    path = victim_checkpoint(preset)
    return finished_checkpoint(path.parent, "victim", f"train it with `ikd backdoor train-victim --preset "
                                                      f"{preset['name']}` and the same --work-dir/--set")
