"""``ikd distill``: IKD's two stages in one MMDetection run — stage 1 (the distiller,
``distill.method``, plus the adversarial feature loss on IKD's augmented data) for
``--dfa-until`` epochs, then stage 2 (the distiller alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ikd_cli.attack.manifest import missing_or_stale, read_skipped
from ikd_cli.config.distillers import DISTILLERS, label
from ikd_cli.config.layout import STUDENT_BEST, STUDENT_LATEST
from ikd_cli.core.invocation import preset_args
from ikd_cli.core.errors import IkdError
from ikd_cli.train import template


def check_adversarial_set(dataset, adv_dir: Path, preset: dict) -> None:
    """Pre-flight before stage 1: the set was made by the preset's attack against the preset's
    teacher (``attack.json``), and every training image has its adversarial copy, recorded as
    finished by the set's own records (a file alone may be left over from other settings). A
    refusal names what makes it work: the ``--set`` that matches the set on disk, or the attack
    that makes or finishes it."""
    from ikd_cli.attack.manifest import differing, matching_sets, settings_difference
    from ikd_cli.attack.run import preset_attack, set_settings
    from ikd_cli.config.schema import distill_ignored
    from ikd_cli.config.layout import teacher_checkpoint

    wanted = set_settings(preset, preset_attack(preset), teacher_checkpoint(preset), "train")
    diff = settings_difference(adv_dir, wanted, ignore=distill_ignored())
    if diff:
        names = differing(adv_dir, wanted, ignore=distill_ignored())
        ours = ", ".join(f"{k} {wanted[k]!r}" for k in names if not k.endswith("_sha256"))
        raise IkdError(f"the adversarial set {adv_dir} was made with other settings than this preset's ({diff}); "
                       f"to distil from it: {matching_sets(adv_dir, names)}; or make it again with this preset's "
                       f"settings{f' ({ours})' if ours else ''}: `ikd attack {preset_args(preset)} --overwrite`, or "
                       "point attack.out at a set made with these settings")
    skipped = read_skipped(adv_dir)  # trained without an adversarial copy (ikd attack --skip-bad)
    while not hasattr(dataset, "data_infos"):  # the images inside RepeatDataset, ClassBalancedDataset
        dataset = dataset.dataset
    missing = [n for n in missing_or_stale(adv_dir, [info["filename"] for info in dataset.data_infos])
               if n not in skipped]
    if missing:
        raise IkdError(f"{len(missing)} of {len(dataset)} training images have no adversarial copy in {adv_dir} "
                       f"(first: {missing[0]}); {_attack_hint(adv_dir, preset, len(dataset))}, or train without "
                       "stage 1: --dfa-until 0")


def _attack_hint(adv_dir: Path, preset: dict, images: int) -> str:
    """How to get the missing copies: the set's attack over the whole split, which continues a
    set made with ``--limit`` (a trial, which distillation cannot use)."""
    from ikd_cli.attack.manifest import asked_images

    asked = asked_images(adv_dir)
    if asked is not None and asked < images:
        return (f"the set was made with --limit ({asked} of {images} images), and distill needs every training "
                f"image: run the attack without --limit, which continues the set: `ikd attack {preset_args(preset)}`")
    a = preset["attack"]
    return (f"make them with `ikd attack {preset_args(preset)} --eps {a['eps']:g} --steps {a['steps']} "
            f"--method {a['method']}`")


def stages_text(dfa_until: int, epochs: int, method: str) -> str:
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
    # ... and the teacher check's settings, which decide whether a run starts, not what it learns
    unused = tuple(f"distill.{m}." for m in DISTILLERS if m != preset["distill"]["method"]) + ("distill.teacher_check",)
    return lambda key: key.split(".", 1)[0] in sections and not key.startswith(unused)


def run_distill(preset: dict, *, device: str | None, launcher: str, verbose: bool, restart: bool = False,
                must_resume: bool = False, work_dir: Path | None = None,
                teacher_check: Callable[[Path], dict] | None = None) -> Path:
    """Distil (or continue distilling) with ``preset``; returns the student's latest checkpoint.
    ``work_dir`` replaces the preset's run folder (``ikd resume DIR`` continues DIR itself);
    ``teacher_check`` scores the teacher's checkpoint before any model is built
    (``ikd_cli.evaluate.teacher_check``, from the API), and run.json records its answer."""
    from ikd_cli.distill.config import skipped_images

    method = label(preset["distill"]["method"])
    # Images the adversarial set skipped as unreadable (--skip-bad) do not stop the data check.
    skipped = skipped_images(preset) if preset["distill"]["dfa_until"] > 0 else {}
    checked = {}  # what build()'s teacher check said, for run.json

    def build():
        import mmcv

        from ikd_cli.config.mmdet import student_start
        from ikd_cli.config.layout import teacher_checkpoint
        from ikd_cli.distill.config import build_distill_config

        cfg = build_distill_config(preset)
        teacher = teacher_checkpoint(preset)  # fail early, before any model is built
        student_start(preset)
        if teacher_check is not None:  # before the run seeds its generators (and they are kept anyway)
            checked["teacher_check"] = teacher_check(teacher)
        mmcv.utils.import_modules_from_strings(**cfg.custom_imports)
        return cfg

    def hooks(session, cfg):
        from ikd_cli.distill.checks import RunChecksHook, weight_keys
        from ikd_cli.distill.hooks import DFAStageHook, StudentCheckpointHook

        if skipped:
            _say_skipped(session, len(skipped), cfg.adv_dir)
        loader = stage1_loader(cfg, preset, session.distributed) if cfg.dfa_until > 0 else None
        stage = DFAStageHook(cfg.dfa_until, loader, stage1=f"{method} + IKD augmentation (adversarial features)",
                             stage2=f"plain {method}")
        checks = RunChecksHook(weight_keys(preset), checked)
        return [(stage, "VERY_HIGH"), (checks, "VERY_HIGH"), *StudentCheckpointHook.for_preset(preset).with_best(),
                *diagnostics_hooks(preset)]

    def done(work_dir: Path) -> str:
        best = f" (best: {STUDENT_BEST})" if (work_dir / STUDENT_BEST).exists() else ""
        return f"student checkpoint {work_dir / STUDENT_LATEST}{best}"

    return template.run(template.Run(
        preset, build=build, run_info={"command": "distill"}, title="distill", role="distill",
        result=STUDENT_LATEST, counts=counts_for_distill(preset), hooks=hooks, find_unused=True, done=done,
        session=dict(skip_bad=frozenset(skipped),
                     skip_hint=f"; `ikd attack {preset_args(preset)} --skip-bad` records them as skipped, "
                               "and distill then goes on without them"),
        announce=lambda session, cfg: f"distilling [bold]{preset['name']}[/] on {session.where}: "
                                      f"{stages_text(cfg.dfa_until, cfg.runner.max_epochs, method)}"),
        device=device, launcher=launcher, verbose=verbose, restart=restart, must_resume=must_resume, work_dir=work_dir)


def diagnostics_hooks(preset: dict) -> list:
    """Stage 1's measurements of the adversarial term, at the logging interval (``distill.diagnostics``)."""
    from ikd_cli.distill.hooks import DiagnosticsHook

    d = preset["distill"]
    return [(DiagnosticsHook(preset["train"]["log_interval"]), "NORMAL")] if d["diagnostics"] and d["dfa_until"] else []


def _say_skipped(session, count: int, adv_dir: str) -> None:
    """On the terminal and in train.log: which images stage 1 trains without an adversarial copy."""
    from mmdet.utils import get_root_logger

    text = (f"{count} training images have no adversarial copy ({adv_dir} lists them as skipped, "
            "ikd attack --skip-bad): stage 1 trains them without one; one that still cannot be read is "
            "left out (MMDetection draws another image in its place)")
    session.say(f"[yellow]note[/]: {text}")
    if session.rank == 0:
        get_root_logger().warning(text)


def stage1_loader(cfg, preset: dict, distributed: bool):
    """The stage-1 training data (IKD's pipeline), checked against the adversarial set first."""
    from ikd_cli.data.loading import build_dataset_checked
    from ikd_cli.train.engine import build_train_loader

    dataset = build_dataset_checked(cfg.data.train_dfa, "training (DFA)", skip=cfg.get("ikd_skipped") or ())
    check_adversarial_set(dataset, Path(cfg.adv_dir), preset)
    return build_train_loader(dataset, cfg, distributed)
