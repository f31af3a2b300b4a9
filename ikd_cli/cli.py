"""The ``ikd`` command line. One function per subcommand; each parses and checks its options,
then hands over to the module that does the work. Heavy imports (torch, mmcv, mmdet) happen
inside the commands, never at module level, so ``ikd --help`` stays fast."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Optional

import typer

from .errors import IkdError

app = typer.Typer(
    name="ikd",
    help="IKD: Inconsistent Knowledge Distillation for object detection, on stock MMDetection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
presets_app = typer.Typer(help="List the named presets or show one resolved into MMDetection configs.",
                          no_args_is_help=True)
data_app = typer.Typer(help="Make the built-in datasets.", no_args_is_help=True)
app.add_typer(presets_app, name="presets")
app.add_typer(data_app, name="data")

_state = {"debug": False}

# Options shared by the commands that resolve a preset.
PresetOpt = typer.Option("shapes", "--preset", "-p", help="Preset name (see `ikd presets list`) or a YAML path.")
SetOpt = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                      help="Override any preset value, e.g. --set distill.alpha_adv=2e-5 (repeatable).")
DataRootOpt = typer.Option(None, "--data-root", help="Dataset root (overrides data.root).")
WorkDirOpt = typer.Option(None, "--work-dir", help="Where runs write checkpoints and logs (overrides work_dir).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Show MMDetection's log on the terminal too.")
# Options shared by the commands that run on one or many devices.
DeviceOpt = typer.Option(None, help="cpu or cuda (default: cuda where available).")
GpusOpt = typer.Option(1, help="Processes (GPUs) on this machine; >1 relaunches under torchrun.")
LauncherOpt = typer.Option("none", help="none, pytorch (under torchrun) or slurm.")


def _first_line_of(err: BaseException) -> str:
    text = str(err).strip()
    # An IkdError raised inside a DataLoader worker comes back wrapped with the worker's
    # traceback; the user only needs its own message, which is the last line.
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split("IkdError: ", 1)[-1]
    return text.splitlines()[0] if text else err.__class__.__name__


def handle_errors(func):
    """Turn expected failures into one line on stderr and a non-zero exit (``--debug`` re-raises)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from .ui import console

        try:
            return func(*args, **kwargs)
        except IkdError as err:
            if _state["debug"]:
                raise
            console.print(f"[bold red]error:[/] {_first_line_of(err)}", soft_wrap=True)
            raise typer.Exit(err.exit_code)
        except KeyboardInterrupt:
            if _state["debug"]:
                raise
            console.print("[bold yellow]interrupted[/]: finished outputs are complete; run the same command "
                          "again (or `ikd resume`) to continue", soft_wrap=True)
            raise typer.Exit(130)
        except MemoryError:
            if _state["debug"]:
                raise
            console.print("[bold red]error:[/] out of memory; try a smaller --batch-size", soft_wrap=True)
            raise typer.Exit(1)
        except OSError as err:
            if _state["debug"]:
                raise
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            console.print(f"[bold red]error:[/] {err.strerror or err}{where}", soft_wrap=True)
            raise typer.Exit(1)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as err:  # a bug or an input we did not foresee: still one line
            if _state["debug"]:
                raise
            console.print(f"[bold red]error:[/] {err.__class__.__name__}: {_first_line_of(err)} "
                          "(run with --debug for the traceback)", soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                       is_eager=True)):
    if version:
        from . import __version__

        typer.echo(f"ikd {__version__}")
        raise typer.Exit()
    _state["debug"] = debug
    _silence_import_notices()


def _silence_import_notices() -> None:
    """Two notices print on every mmcv import and say nothing about the user's run: mmcv's
    'MMCV 2.0 is coming' and torch's 'no CUDA runtime' on CPU machines. Cheap: imports nothing."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="On January 1, 2023, MMCV will release")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _load_preset(preset: str, sets: Optional[List[str]], data_root: Optional[str] = None,
                 work_dir: Optional[str] = None, extra: Optional[dict] = None) -> dict:
    from . import presets

    overrides = presets.parse_set(sets or [])
    if data_root is not None:
        overrides["data.root"] = data_root
    if work_dir is not None:
        overrides["work_dir"] = work_dir
    for key, value in (extra or {}).items():
        if value is not None:
            overrides[key] = value
    return presets.load(preset, overrides)


# ----------------------------------------------------------------------------------- presets
@presets_app.command("list")
@handle_errors
def presets_list():
    """List the named presets."""
    from rich.table import Table

    from . import presets
    from .ui import console

    table = Table("preset", "teacher", "student", "description")
    for name in presets.available():
        p = presets.load(name)
        table.add_row(name, Path(p["teacher"]["config"]).stem, Path(p["student"]["config"]).stem,
                      p["description"])
    console.print(table)


@presets_app.command("show")
@handle_errors
def presets_show(
    name: str = typer.Argument("shapes", help="Preset name or YAML path."),
    model: str = typer.Option("preset", "--model", "-m",
                              help="What to show: preset (the merged YAML), teacher, student or distill "
                                   "(the fully resolved MMDetection config)."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
):
    """Print a preset, or one of its fully resolved MMDetection configs."""
    from . import presets
    from .ui import console

    preset = _load_preset(name, sets, data_root)
    if model == "preset":
        console.print(presets.dump(preset), markup=False, highlight=False)
        return
    from .mmdet_config import build_config

    cfg = build_config(preset, model)
    console.print(cfg.pretty_text, markup=False, highlight=False)


# -------------------------------------------------------------------------------------- data
@data_app.command("shapes")
@handle_errors
def data_shapes(
    out: Path = typer.Option(Path("data/shapes"), "--out", "-o", help="Output folder."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same files."),
    num_train: int = typer.Option(400, help="Training images."),
    num_val: int = typer.Option(100, help="Validation images."),
    image_size: int = typer.Option(160, help="Side of the square images, in pixels."),
):
    """Generate the built-in synthetic "shapes" detection dataset (COCO format)."""
    from .datasets_setup import make_shapes

    layout = make_shapes(out, seed=seed, num_train=num_train, num_val=num_val, image_size=image_size)
    from .ui import console

    console.print(f"shapes dataset ready in [bold]{layout.root}[/] ({num_train} train, {num_val} val)")


# ------------------------------------------------------------------------------------- train
@app.command()
@handle_errors
def train(
    preset: str = PresetOpt,
    model: str = typer.Option("teacher", "--model", "-m", help="Which detector to train: teacher or student."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (overrides train.epochs)."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    work_dir: Optional[str] = WorkDirOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in the work dir."),
    device: Optional[str] = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: str = LauncherOpt,
    verbose: bool = VerboseOpt,
):
    """Train a plain detector (the teacher for the built-in data, or a student baseline)."""
    if model not in ("teacher", "student"):
        raise IkdError(f"--model must be teacher or student, got '{model}'")
    from .launch import maybe_relaunch

    maybe_relaunch(gpus, launcher)
    cfg_preset = _load_preset(preset, sets, data_root, work_dir, {"train.epochs": epochs})
    from .engine import train_detector_cli

    train_detector_cli(cfg_preset, model, resume=resume, device=device, launcher=launcher, verbose=verbose)


# ---------------------------------------------------------------------------------- evaluate
@app.command()
@handle_errors
def evaluate(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pth) to evaluate."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p",
                                         help="Preset to take the model config from when the checkpoint "
                                              "has none embedded (model-zoo files)."),
    model: str = typer.Option("student", "--model", "-m", help="With --preset: teacher or student."),
    images: Optional[Path] = typer.Option(None, "--images",
                                          help="Evaluate on another copy of the images (e.g. an adversarial set)."),
    split: str = typer.Option("val", help="val or train."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    device: Optional[str] = DeviceOpt,
    verbose: bool = VerboseOpt,
):
    """COCO mAP of a checkpoint (pycocotools' COCOeval), as a table and a JSON file beside it."""
    if split not in ("val", "train"):
        raise IkdError(f"--split must be val or train, got '{split}'")
    # Without --preset, --set/--data-root apply to the preset embedded in the checkpoint.
    preset_tree = _load_preset(preset, sets, data_root) if preset else None
    from .evaluation import evaluate_checkpoint

    evaluate_checkpoint(checkpoint, preset=preset_tree, model=model, images=images, split=split,
                        overrides=sets, data_root=data_root, device=device, verbose=verbose)


# ---------------------------------------------------------------------------------- download
@app.command()
@handle_errors
def download(
    name: Optional[str] = typer.Argument(None, help="teacher, student, a registry name or a URL."),
    dest: Path = typer.Option(Path("checkpoints"), "--dir", "-d", help="Where checkpoints go."),
    preset: str = PresetOpt,
    force: bool = typer.Option(False, help="Replace a file that exists but does not verify."),
    list_: bool = typer.Option(False, "--list", "-l", help="List the registry."),
):
    """Download a model-zoo checkpoint, verified by sha256, resumable."""
    from .download import CHECKPOINTS, resolve
    from .download import download as fetch
    from .ui import console

    if list_ or name is None:
        from rich.table import Table

        table = Table("name", "file")
        for key, ck in CHECKPOINTS.items():
            table.add_row(key, ck.filename)
        console.print(table)
        return
    if name in ("teacher", "student"):
        p = _load_preset(preset, None)
        registry_name = p[name]["download"]
        if not registry_name:
            raise IkdError(f"preset '{p['name']}' has no {name} to download "
                           f"(its {name} is trained with `ikd train --preset {p['name']} --model {name}`)")
        name = registry_name
    ckpt = resolve(name)
    if not ckpt.verifiable:
        console.print(f"[yellow]note:[/] {ckpt.filename} carries no sha256 prefix in its name; it cannot be verified")
    with _DownloadProgress(ckpt.filename) as progress:
        path = fetch(ckpt, dest, progress=progress, force=force)
    console.print(f"[green]{'verified' if ckpt.verifiable else 'downloaded'}[/] {path}")


class _DownloadProgress:
    """A rich bar with size and speed for a download; a callable for download()."""

    def __init__(self, label: str):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        from .ui import console

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self.task = self.progress.add_task(label, total=None)

    def __enter__(self):
        self.progress.start()
        return self

    def __call__(self, done: int, total: Optional[int]):
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        self.progress.stop()
        return False


# ------------------------------------------------------------------------------------ attack
@app.command()
@handle_errors
def attack(
    preset: str = PresetOpt,
    method: Optional[str] = typer.Option(None, help="difgsm (default), mifgsm, tifgsm, vmifgsm, m_difgsm, pgd, fgsm."),
    eps: Optional[float] = typer.Option(None, help="L-inf budget in 0-255 pixel units [preset: 8]."),
    alpha: Optional[float] = typer.Option(None, help="Step size in pixel units [preset: 2]."),
    steps: Optional[int] = typer.Option(None, help="Iterations [preset: 5]."),
    decay: Optional[float] = typer.Option(None, help="Momentum decay [preset: 1.0]."),
    resize_rate: Optional[float] = typer.Option(None, help="Input diversity: smallest resize factor [0.9]."),
    diversity_prob: Optional[float] = typer.Option(None, help="Input diversity: probability per step [0.5]."),
    random_start: Optional[bool] = typer.Option(None, "--random-start/--no-random-start",
                                                help="Start from a random point in the eps-ball."),
    kernel_len: Optional[int] = typer.Option(None, help="TI-FGSM gaussian kernel length [15]."),
    nsig: Optional[float] = typer.Option(None, help="TI-FGSM kernel radius in sigmas [3]."),
    beta: Optional[float] = typer.Option(None, help="VMI-FGSM neighbourhood factor [1.5]."),
    n: Optional[int] = typer.Option(None, "--n", help="VMI-FGSM neighbours sampled [20]."),
    batch_size: Optional[int] = typer.Option(None, help="Images attacked at once."),
    limit: Optional[int] = typer.Option(None, help="Attack only the first K images of the split."),
    split: str = typer.Option("train", help="train or val."),
    checkpoint: Optional[Path] = typer.Option(None, help="Teacher checkpoint (default: the preset's)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the preset's attack.out)."),
    overwrite: bool = typer.Option(False, help="Replace an attack with other settings in the same folder."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    device: Optional[str] = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: str = LauncherOpt,
    workers: int = typer.Option(2, help="Image-loading worker processes."),
    record_loss: bool = typer.Option(True, "--record-loss/--no-record-loss",
                                     help="Measure the teacher's loss before and after (2 extra forward passes)."),
    verbose: bool = VerboseOpt,
):
    """Make adversarial examples against the teacher (DI-FGSM family), lossless and resumable."""
    if split not in ("train", "val"):
        raise IkdError(f"--split must be train or val, got '{split}'")
    if limit is not None and limit < 1:
        raise IkdError("--limit must be at least 1")
    from .launch import maybe_relaunch

    maybe_relaunch(gpus, launcher)
    extra = {f"attack.{k}": v for k, v in dict(
        method=method, eps=eps, alpha=alpha, steps=steps, decay=decay, resize_rate=resize_rate,
        diversity_prob=diversity_prob, random_start=random_start, kernel_len=kernel_len, nsig=nsig, beta=beta,
        n=n, batch_size=batch_size).items()}
    tree = _load_preset(preset, sets, data_root, None, extra)
    from .attack_run import run_attack

    run_attack(tree, split=split, limit=limit, device=device, launcher=launcher, overwrite=overwrite,
               checkpoint=checkpoint, out=out, workers=workers, record_loss=record_loss, verbose=verbose)


# ----------------------------------------------------------------------------------- distill
@app.command()
@handle_errors
def distill(
    preset: str = PresetOpt,
    dfa_until: Optional[int] = typer.Option(None, "--dfa-until",
                                            help="Last epoch of stage 1 (IKD augmentation); 0 = plain FGD [preset: 16 of 24]."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (overrides train.epochs)."),
    sets: Optional[List[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    work_dir: Optional[str] = WorkDirOpt,
    device: Optional[str] = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: str = LauncherOpt,
    verbose: bool = VerboseOpt,
):
    """Distil the teacher into the student: FGD + IKD's augmentation, both stages in one run."""
    from .launch import maybe_relaunch

    maybe_relaunch(gpus, launcher)
    tree = _load_preset(preset, sets, data_root, work_dir, {"distill.dfa_until": dfa_until, "train.epochs": epochs})
    from .distill_run import run_distill

    run_distill(tree, device=device, launcher=launcher, verbose=verbose)


# ------------------------------------------------------------------------------------ resume
@app.command()
@handle_errors
def resume(
    work_dir: Path = typer.Argument(..., help="The run's folder, e.g. work_dirs/shapes/distill."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Check that the run is of this preset."),
    device: Optional[str] = DeviceOpt,
    gpus: int = GpusOpt,
    launcher: str = LauncherOpt,
    verbose: bool = VerboseOpt,
):
    """Continue an interrupted distill or train run where it stopped (same stage, epoch, optimiser)."""
    from .launch import maybe_relaunch

    maybe_relaunch(gpus, launcher)
    from .distill_run import resume_run

    resume_run(work_dir, preset_name=preset, device=device, launcher=launcher, verbose=verbose)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
