"""Options several commands share, and the preset loading behind them. Defaults and choices come
from their one home (:mod:`ikd_cli.config.presets`, :mod:`ikd_cli.core.distributed`), so
``--help`` shows what a run would use; a preset key's option comes from :func:`setting_option`. Importing this module imports no torch."""

from __future__ import annotations

import inspect
from enum import Enum
from typing import List, Optional

import typer

from ikd_cli.config import presets, schema
from ikd_cli.core.distributed import Launcher


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


PresetOpt = typer.Option(presets.DEFAULT_PRESET, "--preset", "-p",
                         help="Preset name (see `ikd presets list`) or a YAML path.")
SetOpt = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                      help="Override any preset value, e.g. --set distill.alpha_adv=2e-5 (repeatable).")
DataRootOpt = typer.Option(None, "--data-root", help="Dataset root (overrides data.root).")
WorkDirOpt = typer.Option(None, "--work-dir", help="Where runs write checkpoints and logs (overrides work_dir).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Show MMDetection's log on the terminal too.")
DeviceOpt = typer.Option(Device.auto, help="auto = cuda where torch sees a GPU, else cpu.")
RestartOpt = typer.Option(False, "--restart", help="Start over: remove the work dir's checkpoints first "
                                                   "(re-running the same command continues the run).")
AmpOpt = typer.Option(None, "--amp/--no-amp", show_default=False,
                      help="Mixed precision: fp16 + loss scaling on GPU, bf16 autocast on CPU (train.amp; off "
                           "unless the preset sets it).")


def _trust_checkpoint(value: bool) -> bool:
    # Set while the command line is parsed: every checkpoint the command reads afterwards (its
    # torchrun ranks too) is trusted, wherever in the code it is read.
    if value:
        from ikd_cli.core.checkpoints import trust_checkpoints

        trust_checkpoints()
    return value


TrustCheckpointOpt = typer.Option(False, "--trust-checkpoint", callback=_trust_checkpoint,
                                  help="Load checkpoints with Python's full unpickler and run the config text they "
                                       "carry: only for files you trust (by default only weights and the metadata "
                                       "mmcv/mmdet write are read; anything else is refused).")
GpusOpt = typer.Option(1, help="Processes (GPUs) on this machine; >1 relaunches under torchrun.")
TeacherCheckOpt = typer.Option(True, "--teacher-check/--no-teacher-check",
                               help="First score the teacher on a few val images and refuse one near 0 AP "
                                    "(distill.teacher_check_*; cached per checkpoint).")
LauncherOpt = typer.Option(Launcher.none, help="none, pytorch (under torchrun) or slurm (under srun).")


def setting_option(key: str, *names: str, help: str = ""):
    """The command-line option of preset key ``key``, from the settings schema: its help (or
    ``help``), its bounds, the schema default shown (a preset may set another), its choices (the
    option's Enum type). Its value is None when not given: the preset's applies. The bounds are checked by the schema
    with the preset (one line, exit 1), not as Typer's min=/max= (a usage box, exit 2), so a
    value is refused the same way on the command line, in --set and in a preset file."""
    s = schema.SETTINGS[key]
    value = s.default
    shown = ("per method" if s.per_method else "null") if value is None else \
        (f"{value:g}" if isinstance(value, float) else value)
    text = (help or s.help[:1].upper() + s.help[1:]).rstrip(".")
    if s.bounds_text() and s.choices is None:
        text += f"; {s.bounds_text()}"
    if s.type is list:  # a repeated option (section_options)
        text += "; repeat the option for more"
    return typer.Option(None, *names, help=f"{text} ({key}; {shown} unless the preset sets it: `ikd presets show`).",
                        show_default=False)


def section_options(section: str, *, but: tuple[str, ...] = ()):
    """A decorator: the command gets, after its first parameter, the option of every key of
    ``section`` in the settings schema (but the keys ``but``), each from :func:`setting_option`
    and named after its key (``attack.resize_rate``: ``--resize-rate``; a true/false key also
    ``--no-...``). Their values reach the command in its ``**options`` (None: not given), so a
    key is written once, in the schema, and a new one is on the command line by itself."""
    keys = [k for k in schema.SETTINGS if k.startswith(f"{section}.") and k not in but]

    def option(key: str) -> inspect.Parameter:
        s, name = schema.SETTINGS[key], key.split(".", 1)[1]
        flag = "--" + name.replace("_", "-")
        flags = f"{flag}/--no-{flag[2:]}" if s.type is bool else flag
        # a list key is a repeated option (--loss-keys a --loss-keys b)
        kind = List[str] if s.type is list else s.choices or s.type
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[kind],
                                 default=setting_option(key, flags))

    def decorate(command):
        first, *rest = [p for p in inspect.signature(command).parameters.values() if p.kind != p.VAR_KEYWORD]
        command.__signature__ = inspect.Signature([first, *map(option, keys), *rest])
        return command
    return decorate


def cli_settings(sets: Optional[List[str]], data_root: Optional[str] = None, work_dir: Optional[str] = None,
                 extra: Optional[dict] = None) -> dict:
    """--set, --data-root, --work-dir and a command's own options (``extra``: dotted key -> value,
    None = not given) as the dotted settings of :mod:`ikd_cli.api`."""
    overrides = presets.parse_set(sets or [])
    if data_root is not None:
        overrides["data.root"] = data_root
    if work_dir is not None:
        overrides["work_dir"] = work_dir
    for key, value in (extra or {}).items():
        if value is not None:
            overrides[key] = value.value if isinstance(value, Enum) else value
    return overrides


def load_preset(preset: str, sets: Optional[List[str]], data_root: Optional[str] = None,
                work_dir: Optional[str] = None, extra: Optional[dict] = None) -> dict:
    """The preset with --set, --data-root, --work-dir and a command's own options applied
    (``extra``: dotted key -> value, None = not given)."""
    from ikd_cli.api import load_preset as api_load_preset

    return api_load_preset(preset, cli_settings(sets, data_root, work_dir, extra))


def relaunch(gpus: int, launcher: Launcher) -> str:
    """Re-run under torchrun for ``--gpus N`` (returns only in the process that does the work)."""
    from ikd_cli.cli.app import debugging
    from ikd_cli.core.distributed import maybe_relaunch

    maybe_relaunch(gpus, launcher.value, debug=debugging())
    return launcher.value
