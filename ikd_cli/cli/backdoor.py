"""``ikd backdoor ...``: IKD as a backdoor defence for detectors (the reference README's backdoor
table): poison the data, train the victim, defend (fine-tuning, NAD, IKD), evaluate, tabulate."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from ikd_cli.backdoor.layout import METHODS
from ikd_cli.cli.app import app, handle_errors
from ikd_cli.cli.options import (DataRootOpt, Device, DeviceOpt, GpusOpt, LauncherOpt, PresetOpt, SetOpt,
                                 TrustCheckpointOpt, VerboseOpt, WorkDirOpt, load_preset, relaunch, setting_option)
from ikd_cli.config.schema import BackdoorAttack
from ikd_cli.core.distributed import Launcher

backdoor_app = typer.Typer(
    help="Backdoor defence by distillation, on detectors. In order: [bold]poison[/] (a BadNets-style poisoned "
         "copy of the preset's data and a triggered val split), [bold]train-victim[/] (the attacker's model, "
         "trained on it), [bold]defend --method finetune|nad|ikd[/] (given the victim and a small clean share of "
         "the training data), [bold]evaluate CKPT[/] (attack success rate and clean AP), [bold]table[/] (mean ± sd "
         "over seeds), [bold]verdict[/] (IKD vs NAD over victims x defender subsets: scripts/backdoor_design.sh). "
         "Every command takes the same --preset/--set (the backdoor.* keys: `ikd presets show`) "
         "and --work-dir; re-running a command continues it. The whole table on the built-in data: "
         "scripts/backdoor_shapes.sh.",
    no_args_is_help=True)
app.add_typer(backdoor_app, name="backdoor")

Method = Enum("Method", {m: m for m in METHODS}, type=str)

AttackOpt = setting_option("backdoor.attack", "--attack")
TargetOpt = typer.Option(None, "--target", show_default=False,
                         help="Target class name, backdoor.target_class (default: the first class).")
RateOpt = setting_option("backdoor.rate", "--rate")


def _experiment(attack, target, rate) -> dict:
    return {"backdoor.attack": attack, "backdoor.target_class": target, "backdoor.rate": rate}


@backdoor_app.command("poison")
@handle_errors
def poison(
    preset: str = PresetOpt,
    attack: Optional[BackdoorAttack] = AttackOpt,
    target: Optional[str] = TargetOpt,
    rate: Optional[float] = RateOpt,
    trigger_size: Optional[float] = setting_option("backdoor.trigger_size", "--trigger-size"),
    out: Optional[str] = typer.Option(None, "--out", "-o", show_default=False,
                                      help="Poisoned set folder, backdoor.out (default: "
                                           "data/<preset>_backdoor_<attack>_<rate>_s<backdoor.seed>)."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
):
    """Write the poisoned copy of the preset's data and the triggered val split.

    A checkerboard trigger on a share of the training images, whose objects are relabelled to the
    target class (misclassify) or erased (disappear); every val image triggered, with the clean
    ground truth. The clean data is never modified; a re-run with the same settings does nothing."""
    tree = load_preset(preset, sets, data_root, extra=dict(_experiment(attack, target, rate), **{
        "backdoor.trigger_size": trigger_size, "backdoor.out": out}))
    from ikd_cli.backdoor.poison import make_poisoned_set
    from ikd_cli.core.ui import console, progress_bar
    from ikd_cli.data.check import run_data_check
    from ikd_cli.data.setup import ensure_dataset

    ensure_dataset(tree)
    run_data_check(tree)
    with progress_bar(transient=True) as progress:
        task = progress.add_task("poison", total=None, info="", unit="img")
        folder, manifest, made = make_poisoned_set(
            tree, progress=lambda done, total: progress.update(task, completed=done, total=total))
    s, n = manifest["settings"], manifest["summary"]
    changed = (f"{n['relabelled_objects']} objects relabelled to {s['target_class']}" if s["attack"] == "misclassify"
               else f"{n['removed_objects']} annotations removed")
    console.print(f"{'poisoned set ready' if made else 'poisoned set already made (same settings)'}: "
                  f"[bold]{folder}[/]: {n['triggered_images']} of {n['train_images']} training images triggered "
                  f"({s['attack']}: {changed}), {n['val_images']} triggered val images")


@backdoor_app.command("train-victim")
@handle_errors
def train_victim(
    preset: str = PresetOpt,
    attack: Optional[BackdoorAttack] = AttackOpt,
    target: Optional[str] = TargetOpt,
    rate: Optional[float] = RateOpt,
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    work_dir: Optional[str] = WorkDirOpt,
    restart: bool = typer.Option(False, "--restart", help="Start over (re-running the command continues the run)."),
    device: Device = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: Launcher = LauncherOpt,
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
):
    """Train the victim (the attacker's model) on the poisoned set.

    The preset's backdoor.victim model config (the teacher's by default) with the schedule
    `ikd train --model <victim>` would use (train.*, or teacher.epochs/lr_steps where the preset
    sets them), into <work_dir>/backdoor/victim/. Re-running continues the run."""
    launcher = relaunch(gpus, launcher)
    tree = load_preset(preset, sets, data_root, work_dir, _experiment(attack, target, rate))
    from ikd_cli.backdoor.victim import train_victim as run

    run(tree, device=device, launcher=launcher, verbose=verbose, restart=restart)


@backdoor_app.command("defend")
@handle_errors
def defend(
    method: Method = typer.Option(..., "--method", "-m",
                                  help="finetune: the victim trained on the clean subset; nad: attention "
                                       "distillation from the fine-tuned victim (NAD); ikd: NAD + IKD's "
                                       "augmentation (adversarial images and features, sample-specific "
                                       "augmentation). nad and ikd run finetune first."),
    preset: str = PresetOpt,
    attack: Optional[BackdoorAttack] = AttackOpt,
    target: Optional[str] = TargetOpt,
    rate: Optional[float] = RateOpt,
    clean_fraction: Optional[float] = setting_option("backdoor.clean_fraction", "--clean-fraction"),
    epochs: Optional[int] = setting_option("backdoor.epochs", "--epochs"),
    victim: Optional[str] = typer.Option(None, "--victim", show_default=False,
                                         help="Victim checkpoint (default: the one `ikd backdoor train-victim` "
                                              "trained in the work dir)."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    work_dir: Optional[str] = WorkDirOpt,
    restart: bool = typer.Option(False, "--restart", help="Start this defence over (re-running continues it)."),
    device: Device = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: Launcher = LauncherOpt,
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
):
    """Defend the victim with a clean share of the training data: fine-tuning, NAD or IKD.

    Into <work_dir>/backdoor/<method>/, or <work_dir>/backdoor/subset-<k>/<method>/ for
    --set backdoor.subset_seed=k other than backdoor.seed (one victim, many defenders). NAD and
    IKD: the student is the victim, the teacher the fine-tuned victim. Re-running continues the run."""
    launcher = relaunch(gpus, launcher)
    tree = load_preset(preset, sets, data_root, work_dir, dict(_experiment(attack, target, rate), **{
        "backdoor.clean_fraction": clean_fraction, "backdoor.epochs": epochs, "backdoor.victim_checkpoint": victim}))
    from ikd_cli.backdoor.defend import defend as run

    run(tree, method.value, device=device, launcher=launcher, verbose=verbose, restart=restart)


@backdoor_app.command("evaluate")
@handle_errors
def evaluate(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pth): the victim's or a defence's."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p",
                                         help="Preset of the experiment, for checkpoints that carry none (the "
                                              "ones ikd makes carry theirs)."),
    score_thr: Optional[float] = setting_option("backdoor.score_thr", "--score-thr"),
    iou_thr: Optional[float] = setting_option("backdoor.iou_thr", "--iou-thr"),
    force: bool = typer.Option(False, "--force", help="Run the model again even if the result is up to date."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    device: Device = DeviceOpt,
    verbose: bool = VerboseOpt,
    trust_checkpoint: bool = TrustCheckpointOpt,
):
    """Attack success rate (triggered val images) and AP (clean val images) of a checkpoint.

    ASR, misclassify: the share of the non-target objects detected as the target class; disappear:
    the share of objects no longer detected. A table, and CKPT.backdoor.json beside the checkpoint."""
    tree = load_preset(preset, sets, data_root) if preset else None
    if tree is None and (sets or data_root):
        from ikd_cli.core.errors import IkdError

        raise IkdError("--set/--data-root need --preset here (a checkpoint made by ikd carries its own)")
    from ikd_cli.backdoor.evaluate import evaluate_backdoor

    evaluate_backdoor(checkpoint, preset=tree, score_thr=score_thr, iou_thr=iou_thr, device=device,
                      verbose=verbose, force=force)


@backdoor_app.command("table")
@handle_errors
def table(
    work_dirs: List[Path] = typer.Argument(..., help="Work dirs of the experiment, one per seed."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table too."),
):
    """Victim, fine-tuning, NAD and IKD: clean AP, ASR and ASR drop, mean ± sd over the work dirs,
    and the paired differences that matter (per work dir, with a 95% t-interval)."""
    from ikd_cli.backdoor.table import markdown, paired, paired_line, print_table, summarise
    from ikd_cli.core.ui import console

    rows = summarise(work_dirs)
    print_table(rows, title=f"backdoor defence ({rows[0]['attack']}), {len(work_dirs)} work dir(s)")
    lines = [paired_line(p) for p in paired(work_dirs)]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)
    if as_markdown:
        typer.echo(markdown(rows) + "".join(f"\n{'' if i else chr(10)}- {line}" for i, line in enumerate(lines)))


@backdoor_app.command("verdict")
@handle_errors
def verdict(
    work_dirs: List[Path] = typer.Argument(..., help="Work dirs of the experiment, one per victim (seed); in each, "
                                                     "the defences of every subset (backdoor/subset-<k>/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for backdoor_verdict.json and .png (default: "
                                                          "the first work dir's parent)."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Print the per-subset Markdown table too."),
    keep: Optional[Path] = typer.Option(None, "--keep", metavar="DIR",
                                        help="Also copy what the verdict read (evaluations, settings; no weights) "
                                             "into DIR/<work dir name>/, so `ikd backdoor verdict DIR/*` redraws it "
                                             "once the work dirs are gone."),
):
    """IKD vs NAD on the nested design: per victim and defender subset, the ASR drop of each defence
    (paired per subset), IKD - NAD, NAD - fine-tuning, IKD - fine-tuning as the mean of the
    victims' means with a 95% t-interval over the victims, a picture, and the verdict."""
    from ikd_cli.backdoor.design import keep as keep_records, markdown, pair_line, report, write
    from ikd_cli.core.ui import console

    rep = report(work_dirs)
    if keep is not None:
        console.print(f"kept {keep_records(work_dirs, keep)} files in {keep}", soft_wrap=True, highlight=False)
    json_path, png_path = write(rep, out if out is not None else Path(work_dirs[0]).parent)
    for p in rep["pairs"]:
        if p["victims"]:
            console.print(pair_line(p), soft_wrap=True, highlight=False)
    console.print(f"verdict: {rep['verdict']}", soft_wrap=True, highlight=False)
    console.print(f"wrote {json_path} and {png_path}", soft_wrap=True, highlight=False)
    if as_markdown:
        typer.echo(markdown(rep))
