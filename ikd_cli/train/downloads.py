"""The files from the internet that a preset's runs need: the teacher's checkpoint (a model-zoo
file) and the ImageNet weights a model config starts its backbone from (``torchvision://resnet50``
in the zoo's student configs). ``ikd download --preset NAME`` fetches them all, verified; a
training run fetches its own init before it starts, or says in one line, offline, which file to
put where."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ikd_cli.core.errors import IkdError
from ikd_cli.zoo.registry import Checkpoint, resolve
from ikd_cli.zoo.transfer import ProgressFn, download
from ikd_cli.zoo.pretrained import init_checkpoint

OFF_SWITCH = "--set student.pretrained=false"


@dataclass(frozen=True)
class Needed:
    what: str  # "teacher checkpoint", "student backbone init torchvision://resnet50"
    ckpt: Checkpoint
    folder: Path

    @property
    def path(self) -> Path:
        return self.folder / self.ckpt.filename


def model_inits(model_cfg, role: str) -> list[Needed]:
    """The downloadable init files of a model config (local files are the user's to provide)."""
    from ikd_cli.config.mmdet import pretrained_sources

    found = []
    for source in pretrained_sources(model_cfg):
        entry = init_checkpoint(source)
        if entry is not None:
            found.append(Needed(f"{role} backbone init {source}", *entry))
    return found


def _teacher(preset: dict, folder: Optional[Path]) -> Needed:
    """The teacher's zoo file, named and placed as ``teacher.checkpoint`` says (where distill and
    attack read it), unless ``folder`` is given."""
    ckpt = resolve(preset["teacher"]["download"])
    target = Path(preset["teacher"]["checkpoint"]) if preset["teacher"]["checkpoint"] else None
    if folder is None and target is not None:
        ckpt = Checkpoint(ckpt.name, ckpt.url, target.name, ckpt.sha256_prefix, ckpt.description)
        return Needed("teacher checkpoint", ckpt, target.parent)
    return Needed("teacher checkpoint", ckpt, folder or Path("checkpoints"))


def preset_files(preset: dict, folder: Optional[Path] = None) -> list[Needed]:
    """Every file the preset's attack and distillation need from the internet: the teacher's
    checkpoint (when the preset downloads it; a trained teacher instead needs its own init) and
    the student's backbone init (unless ``student.pretrained`` is false)."""
    from ikd_cli.config.mmdet import build_config

    needed = []
    if preset["teacher"]["download"]:
        needed.append(_teacher(preset, folder))
    else:
        needed += model_inits(build_config(preset, "teacher").model, "teacher")
    needed += model_inits(build_config(preset, "student").model, "student")
    return list({n.path: n for n in needed}.values())


def fetch(needed: Needed, *, force: bool = False, progress: Optional[ProgressFn] = None) -> Path:
    return download(needed.ckpt, needed.folder, force=force, progress=progress)


def fetch_inits(cfg, preset: dict, say: Callable[[str], None]) -> None:
    """Before a run builds its model: each init file mmcv will load is on disk and verified
    (fetched here, resumable, where it is missing), so that mmcv never reaches for the internet
    itself. Offline, one line names the file, its URL and where to put it."""
    role = cfg.get("ikd", {}).get("role", "model")
    for needed in model_inits(cfg.model, "student" if role == "distill" else role):
        if not needed.path.is_file():
            say(f"downloading the {needed.what}: {needed.ckpt.url} -> {needed.path}")
        try:
            download(needed.ckpt, needed.folder)
        except IkdError as err:
            off = f", or start the backbone from random weights: {OFF_SWITCH}" if role in ("student", "distill") else ""
            raise IkdError(f"cannot get the {needed.what}: {err}; or get every file of the preset with "
                           f"`ikd download --preset {preset['name']}`{off}", exit_code=err.exit_code) from None
