"""The white-box adversarial copy of a split for ``ikd evaluate --robustness``: the preset's attack
(method and budget of its ``attack:`` section) against the evaluated checkpoint's OWN
classification loss, made by ``ikd attack``'s loop (:func:`ikd_cli.attack.run.run_attack`) and
stored in its lossless format beside the checkpoint.

The folder's name carries a key made of the checkpoint's sha256 and every attack setting, so a
re-run finds it finished and costs nothing, and other weights or another budget never reuse it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ikd_cli.core.errors import IkdError
from ikd_cli.config.layout import ATTACK_SUMMARY_FILE


def model_name(cfg) -> str:
    """A readable name of the attacked model for its set's settings ("RetinaNet ResNet18")."""
    model = cfg.model
    backbone = model.get("backbone") or {}
    return f"{model.get('type', '?')} {backbone.get('type', '')}{backbone.get('depth', '')}".strip()


def whitebox_plan(ev, split: str) -> tuple[Path, dict]:
    """(folder, settings) of ``ev``'s white-box set: what ``attack.json`` will hold there."""
    from ikd_cli.attack.run import preset_attack, set_settings
    from ikd_cli.config.layout import whitebox_set_dir

    if ev.preset is None:
        raise IkdError("the white-box attack takes its method and budget from a preset's attack section; "
                       "pass --preset NAME --model teacher|student for this checkpoint")
    settings = set_settings(ev.preset, preset_attack(ev.preset), ev.checkpoint, split, role="model",
                            config_name=model_name(ev.cfg))
    # a setting at null is hashed as if absent: a set made before the setting existed (attack.loss_keys)
    # keeps its folder
    given = {k: v for k, v in settings.items() if v is not None}
    key = hashlib.sha256(json.dumps(given, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return whitebox_set_dir(ev.checkpoint, split, key), settings


def finished_summary(folder: Path, settings: dict) -> dict | None:
    """The set's ``summary.json`` when it holds every image of a finished attack with exactly
    ``settings``; else None (absent, interrupted, or images that failed)."""
    from ikd_cli.config.layout import ATTACK_SETTINGS_FILE
    from ikd_cli.core.fileio import read_json

    summary_file = folder / ATTACK_SUMMARY_FILE
    if not (summary_file.is_file() and (folder / ATTACK_SETTINGS_FILE).is_file()):
        return None
    stored = read_json(folder / ATTACK_SETTINGS_FILE, "attack settings")
    wanted = json.loads(json.dumps(settings))
    # a key the stored settings lack was null (its default) when the set was made
    if not isinstance(stored, dict) or stored != {k: v for k, v in wanted.items() if k in stored or v is not None}:
        return None
    summary = read_json(summary_file, "attack summary")
    if summary.get("failed") or summary.get("attacked") != summary.get("images"):
        return None
    return summary


def make_whitebox_set(ev, split: str) -> tuple[Path, dict]:
    """The finished white-box set of ``ev`` on ``split`` (made, or continued, when needed) and its
    summary (images, L-inf, the model's own loss before and after)."""
    from ikd_cli.attack.run import WORKERS, Target, run_attack
    from ikd_cli.core.ui import console

    folder, settings = whitebox_plan(ev, split)
    summary = finished_summary(folder, settings)
    if summary is not None:
        console.print(f"white-box set: {folder} (finished; reused)")
        return folder, {**summary, "reused": True}
    target = Target(ev.cfg, ev.checkpoint, settings["model_config"], ev.weights, role="model")
    summary = run_attack(ev.preset, split=split, device=ev.device, out=folder, target=target,
                         verbose=ev.verbose, workers=min(WORKERS, ev.cfg.data.workers_per_gpu))
    return folder, summary
