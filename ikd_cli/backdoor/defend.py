"""``ikd backdoor defend --method finetune|nad|ikd``: the defences, each given what NAD's defender
has: the victim and a small clean share of the training data (:mod:`.subset`).

* ``finetune``: the victim trained on the clean subset (``backdoor.epochs``, ``backdoor.lr``).
* ``nad`` (Li et al., ICLR 2021): teacher = the victim fine-tuned as above (the ``finetune``
  run, made first when missing); the victim, as student, trained on the clean subset with its
  detection loss plus attention distillation towards that teacher on ``backdoor.nad.levels``.
  This is ``ikd distill``'s IKDDistiller with attention-transfer entries in place of FGD and the student
  started from the victim's weights, ``--dfa-until 0``.
* ``ikd``: NAD plus IKD's inconsistent-knowledge augmentation for the first
  ``backdoor.dfa_until`` epochs: adversarial copies of the clean subset against the teacher
  (``ikd attack``, into ``backdoor/ikd-adv``), the adversarial feature loss on ``distill.levels``
  (``distill.alpha_adv``), instance corruption and the adaptive crop (``distill.*``).

Every run continues where it stopped when the same command runs again (``--restart`` starts
over); ``run.json`` names the victim (and teacher) a run started from by sha256 prefix, so a
retrained victim is never mixed with an older defence.
"""

from __future__ import annotations

from pathlib import Path

from ikd_cli.backdoor.layout import METHODS, STEP_NAMES, clean_subset_file, poisoned_dir, step_dir, subset_seed
from ikd_cli.backdoor.poison import read_manifest
from ikd_cli.backdoor.subset import write_clean_subset
from ikd_cli.backdoor.victim import finished_checkpoint, require_victim
from ikd_cli.config.layout import STUDENT_LATEST
from ikd_cli.config.presets import data_path, derive
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import sha256_of
from ikd_cli.train import template


def defence_preset(preset: dict, method: str, victim: Path, teacher: Path | None) -> dict:
    """The preset a defence trains with: the clean subset as training data, the clean val split,
    the victim's model config as teacher and student, the ``backdoor.*`` schedule, and no
    validation: ``ikd backdoor evaluate`` measures the result, clean AP included (a validation
    after the last epoch would repeat that half of it at a real share of the defence's time,
    and changes no weight: it runs after the last checkpoint)."""
    b = preset["backdoor"]
    config = preset[b["victim"]]["config"]
    absolute = {key: str(Path(data_path(preset, key)).resolve()) for key in ("train_images", "val_ann", "val_images")}
    # the defence's schedule, also where the victim is the teacher model (whose own schedule, if the
    # preset gives one, is for training it from scratch)
    own_schedule = {f"teacher.{k}": None for k in ("epochs", "lr_steps") if k in preset["teacher"]}
    # the victim's own subset is named one way (null), so a run is the same run however it was asked
    k = subset_seed(preset)
    return derive(preset, {
        **own_schedule,
        "data.train_ann": str(clean_subset_file(preset).resolve()), "data.train_images": absolute["train_images"],
        "data.val_ann": absolute["val_ann"], "data.val_images": absolute["val_images"], "data.shapes": None,
        "teacher.config": config, "teacher.checkpoint": str(teacher or ""), "teacher.download": "",
        "student.config": config, "student.checkpoint": str(victim), "student.download": "",
        "train.epochs": b["epochs"], "train.lr": b["lr"], "train.lr_steps": list(b["lr_steps"]),
        "train.warmup_iters": b["warmup_iters"], "train.eval_interval": 0,
        "distill.init_student": False, "distill.dfa_until": min(b["dfa_until"], b["epochs"]) if method == "ikd" else 0,
        "attack.out": str(step_dir(preset, "ikd-adv")),
        "backdoor.out": str(poisoned_dir(preset)), "backdoor.victim_checkpoint": str(victim),
        "backdoor.subset_seed": None if k == b["seed"] else k,
    })


def _check(preset: dict, method: str) -> None:
    b = preset["backdoor"]
    if method not in METHODS:
        raise IkdError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    nad = b["nad"]  # each value is checked by the schema; here only how they go together
    if not nad["levels"] or len(nad["betas"]) != len(nad["levels"]):
        raise IkdError(f"backdoor.nad needs levels and one beta per level; got {len(nad['levels'])} level(s), "
                       f"{len(nad['betas'])} beta(s)")


def defend(preset: dict, method: str, *, device, launcher: str, verbose: bool, restart: bool = False) -> Path:
    """Run one defence (and the fine-tuning NAD and IKD need first); returns the defended model's
    checkpoint."""
    _check(preset, method)
    subset, n_images = write_clean_subset(preset)
    read_manifest(poisoned_dir(preset))  # the experiment's poisoned set (evaluation reads it)
    victim = require_victim(preset)
    finetuned = _finetune(preset, victim, n_images, device=device, launcher=launcher, verbose=verbose,
                          restart=restart and method == "finetune")
    if method == "finetune":
        return finetuned
    teacher = finished_checkpoint(finetuned.parent, "fine-tuned victim (NAD's teacher)",
                                  "run `ikd backdoor defend --method finetune`")
    return _distil(preset, method, victim, teacher, n_images, device=device, launcher=launcher, verbose=verbose,
                   restart=restart)


def _start_from_hook(checkpoint: Path):
    """A hook that loads ``checkpoint`` into the model before a FRESH run's first iteration
    (checked to fit); a resumed run keeps the weights it resumed."""
    from mmcv.runner import Hook

    from ikd_cli.core.checkpoints import load_weights, read_checkpoint

    class StartFrom(Hook):
        def before_run(self, runner):
            if runner.epoch == 0 and runner.iter == 0:
                model = getattr(runner.model, "module", runner.model)
                load_weights(model, read_checkpoint(checkpoint)["state_dict"], str(checkpoint))

    return StartFrom()


def _finetune(preset: dict, victim: Path, n_images: int, *, device, launcher, verbose, restart) -> Path:
    from ikd_cli.config.mmdet import build_config

    dp = defence_preset(preset, "finetune", victim, None)
    role = dp["backdoor"]["victim"]

    def build():
        cfg = build_config(dp, role)
        cfg.work_dir = str(step_dir(preset, "finetune"))
        return cfg

    return template.run(template.Run(
        dp, build=build, run_info={"command": "backdoor", "step": "finetune", "from": f"victim {sha256_of(victim)[:12]}"},
        title="defend finetune", role=role, hooks=lambda session, cfg: [(_start_from_hook(victim), "VERY_HIGH")],
        announce=lambda session, cfg: f"defence [bold]fine-tuning[/]: the victim {victim} on the clean subset "
                                      f"({n_images} images) for {dp['train']['epochs']} epochs on {session.where}"),
        device=device, launcher=launcher, verbose=verbose, restart=restart)


def _distil(preset: dict, method: str, victim: Path, teacher: Path, n_images: int, *, device, launcher, verbose,
            restart) -> Path:
    from ikd_cli.distill.run import stage1_loader

    dp = defence_preset(preset, method, victim, teacher)
    nad = dp["backdoor"]["nad"]
    if method == "ikd" and dp["distill"]["dfa_until"] > 0:
        from ikd_cli.attack.run import run_attack

        run_attack(dp, split="train", device=device, launcher=launcher, verbose=verbose)

    def build():
        import mmcv

        from ikd_cli.distill.config import build_distill_config

        cfg = build_distill_config(dp)
        cfg.model.update(init_student=False, student_checkpoint=str(victim), losses=nad_losses(dp))
        cfg.work_dir = str(step_dir(preset, method))
        mmcv.utils.import_modules_from_strings(**cfg.custom_imports)
        return cfg

    def hooks(session, cfg):
        from ikd_cli.distill.hooks import StudentCheckpointHook

        out = [(StudentCheckpointHook.for_preset(dp), 60)]  # no validation, so no best student
        if cfg.dfa_until > 0:  # without the stage hook no adversarial image ever arrives: NAD alone
            out.append((_stage_hook(cfg.dfa_until, stage1_loader(cfg, dp, session.distributed)), "VERY_HIGH"))
        return out

    what = "NAD" if method == "nad" else "IKD (NAD + IKD's augmentation)"
    return template.run(template.Run(
        dp, build=build, title=f"defend {method}", role="distill", result=STUDENT_LATEST, hooks=hooks,
        find_unused=True,
        run_info={"command": "backdoor", "step": method,
                  "from": f"victim {sha256_of(victim)[:12]}, teacher {sha256_of(teacher)[:12]}"},
        announce=lambda session, cfg: f"defence [bold]{what}[/]: student = the victim, teacher = the fine-tuned "
                                      f"victim, on the clean subset ({n_images} images), attention on "
                                      f"{', '.join(nad['levels'])}; {_stages_text(cfg.dfa_until, cfg.runner.max_epochs)}",
        done=lambda work_dir: f"{STEP_NAMES[method]} student {work_dir / STUDENT_LATEST}"),
        device=device, launcher=launcher, verbose=verbose, restart=restart)


def nad_losses(preset: dict) -> list[dict]:
    """The NAD defences' distiller: attention transfer on each of ``backdoor.nad.levels`` (its own
    beta) in place of FGD, then IKD's adversarial feature loss (stage 1 of the IKD defence only)."""
    from ikd_cli.distill.config import adv_loss

    nad = preset["backdoor"]["nad"]
    return [dict(type="AttentionTransferLoss", image="clean", levels=[level], p=nad["p"], beta=float(beta))
            for level, beta in zip(nad["levels"], nad["betas"])] + [adv_loss(preset)]


def _stages_text(dfa_until: int, epochs: int) -> str:
    if dfa_until == 0:
        return "NAD alone"
    if dfa_until >= epochs:
        return f"IKD's augmentation + NAD for all {epochs} epochs"
    return f"stage 1 (IKD's augmentation + NAD) epochs 1-{dfa_until}, stage 2 (NAD) epochs {dfa_until + 1}-{epochs}"


def _stage_hook(dfa_until: int, loader):
    """``ikd distill``'s stage switch (:class:`DFAStageHook`), its stages named for NAD."""
    from ikd_cli.distill.hooks import DFAStageHook

    return DFAStageHook(dfa_until, loader, stage1="NAD + IKD augmentation (adversarial features)", stage2="NAD")
