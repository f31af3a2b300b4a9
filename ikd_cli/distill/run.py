"""``ikd distill``: IKD's two stages in one MMDetection run — stage 1 (the distiller, FGD or MGD,
plus the adversarial feature loss on IKD's augmented data) for ``--dfa-until`` epochs, then
stage 2 (the distiller alone)."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.attack.manifest import missing_or_stale
from ikd_cli.core.invocation import preset_args
from ikd_cli.core.errors import IkdError
from ikd_cli.train.session import FINISHED, TrainingSession


def check_adversarial_set(dataset, adv_dir: Path, preset: dict) -> None:
    """Pre-flight before stage 1: the set was made by the preset's attack against the preset's
    teacher (``attack.json``), and every training image has its adversarial copy, recorded as
    finished by the set's own records (a file alone may be left over from other settings)."""
    from ikd_cli.attack.manifest import settings_difference
    from ikd_cli.attack.run import TRAINING_INDIFFERENT, preset_attack, set_settings
    from ikd_cli.core.checkpoints import teacher_checkpoint

    a = preset["attack"]
    wanted = set_settings(preset, preset_attack(preset), teacher_checkpoint(preset), "train")
    diff = settings_difference(adv_dir, wanted, ignore=TRAINING_INDIFFERENT)
    if diff:
        raise IkdError(f"the adversarial set {adv_dir} was made with other settings than this preset's ({diff}); "
                       f"make it again with `ikd attack {preset_args(preset)} --overwrite`, or point "
                       "attack.out at a set made with these settings")
    missing = missing_or_stale(adv_dir, [info["filename"] for info in dataset.data_infos])
    if missing:
        raise IkdError(
            f"{len(missing)} of {len(dataset)} training images have no adversarial copy in {adv_dir} "
            f"(first: {missing[0]}); make them with `ikd attack {preset_args(preset)} --eps {a['eps']:g} "
            f"--steps {a['steps']} --method {a['method']}`, or train without stage 1: --dfa-until 0")


def stages_text(dfa_until: int, epochs: int, method: str = "FGD") -> str:
    if dfa_until == 0:
        return f"plain {method} (--dfa-until 0)"
    if dfa_until >= epochs:
        return f"stage 1 (DFA, {method}) for all {epochs} epochs"
    return f"stage 1 (DFA, {method}) epochs 1-{dfa_until}, stage 2 ({method}) epochs {dfa_until + 1}-{epochs}"


def counts_for_distill(preset: dict):
    """Which settings a finished or interrupted distillation is compared on: those of data, train,
    teacher, student, distill and attack (backdoor.* and the like change nothing here), less the
    weights of the distiller it does not use (an FGD run ignores distill.mgd.*, and so on)."""
    sections = ("data", "train", "teacher", "student", "distill", "attack")
    unused = tuple(f"distill.{m}." for m in ("fgd", "mgd") if m != preset["distill"]["method"])
    return lambda key: key.split(".", 1)[0] in sections and not key.startswith(unused)


def run_distill(preset: dict, *, device: str | None, launcher: str, verbose: bool, restart: bool = False,
                must_resume: bool = False, work_dir: Path | None = None):
    """Distil (or continue distilling) with ``preset``; ``must_resume`` insists on continuing;
    ``work_dir`` replaces the preset's run folder (``ikd resume DIR`` continues DIR itself)."""
    import mmcv

    from ikd_cli.core.checkpoints import teacher_checkpoint
    from ikd_cli.distill.config import build_distill_config

    session = TrainingSession(preset, device=device, launcher=launcher)
    cfg = build_distill_config(preset)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    teacher_checkpoint(preset)  # fail early, before any model is built
    mmcv.utils.import_modules_from_strings(**cfg.custom_imports)
    from ikd_cli.distill.hooks import DFAStageHook, StudentCheckpointHook

    work_dir, resume_from = session.prepare(cfg, {"command": "distill"}, restart=restart,
                                            counts=counts_for_distill(preset))
    if must_resume and resume_from is None:
        raise IkdError(f"nothing to resume in {work_dir} (no latest.pth)")
    if resume_from == FINISHED:
        return
    method = preset["distill"]["method"].upper()
    session.say(f"distilling [bold]{preset['name']}[/] on {session.where}: "
                f"{stages_text(cfg.dfa_until, cfg.runner.max_epochs, method)}; log: {work_dir / 'train.log'}")
    stage_hook = DFAStageHook(cfg.dfa_until, None, stage1=f"{method} + IKD augmentation (adversarial features)",
                              stage2=f"plain {method}")
    student_hook = StudentCheckpointHook.for_preset(preset)
    with session.log_to(work_dir, verbose):
        stage_hook.dfa_loader = stage1_loader(cfg, preset, session.distributed) if cfg.dfa_until > 0 else None
        session.train(cfg, resume_from=resume_from, title="distill", find_unused=True,
                      extra_hooks=[(stage_hook, "VERY_HIGH"), (student_hook, 60)],
                      meta=dict(ikd_preset=preset, ikd_role="distill"))
    best = " (best: student_best.pth)" if (work_dir / "student_best.pth").exists() else ""
    session.done(f"student checkpoint {work_dir / 'student_latest.pth'}{best}")


def stage1_loader(cfg, preset: dict, distributed: bool):
    """The stage-1 training data (IKD's pipeline), checked against the adversarial set first."""
    from ikd_cli.data.loading import build_dataset_checked
    from ikd_cli.train.engine import build_train_loader

    dataset = build_dataset_checked(cfg.data.train_dfa, "training (DFA)")
    check_adversarial_set(dataset, Path(cfg.adv_dir), preset)
    return build_train_loader(dataset, cfg, distributed)
