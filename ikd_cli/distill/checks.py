"""What a distillation says before it spends hours (the first complaint about distillation code
is "my distilled student is at baseline", found out at the end):

* how much of its neck and head the student inherited from the teacher (``init_student``);
* the balance of the losses at the first iteration: per distilled level, each distillation term
  against the detection loss. A term that is not finite, or more than :data:`TOO_LARGE` times
  the detection loss (FGD's explosion on the finest level), is one warning naming the weight to
  lower;
* when the loss becomes NaN or infinite, its likely cause (a distillation weight, the starting
  weights) instead of always the learning rate.

:class:`RunChecksHook` does all three in a run (and records them in ``run.json``); ``ikd distill
--dry-run`` (:mod:`.dry_run`) reads the same functions.
"""

from __future__ import annotations

import math
from pathlib import Path

from mmcv.runner import HOOKS, Hook, get_dist_info

from ikd_cli.config.layout import RUN_FILE
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write_json, read_json
from ikd_cli.core.ui import console

TOO_LARGE = 100.0  # a distillation term this many times the detection loss swamps it


def inheritance_text(inherited: dict) -> str:
    """``inherited 2 of 32 neck/head tensors from the teacher (30 skipped: 28 shape / 2 missing)``."""
    skipped = inherited["of"] - inherited["inherited"]
    return (f"inherited {inherited['inherited']} of {inherited['of']} neck/head tensors from the teacher "
            f"({skipped} skipped: {inherited['shape']} shape / {inherited['missing']} missing)")


def inheritance_warning(inherited: dict) -> str:
    """The line to warn with when the student did not inherit all of its neck and head ('' when it did)."""
    if inherited["inherited"] == inherited["of"]:
        return ""
    return (f"{inheritance_text(inherited)}: the student's neck or head differ from the teacher's, so it starts "
            "partly from scratch (distill.init_student: false starts it from its own initialisation)")


def weight_keys(preset: dict) -> dict[str, str]:
    """A loss key's prefix -> the setting that weighs it (``loss_fgd_`` -> ``distill.fgd.alpha``)."""
    method = preset["distill"]["method"]
    return {f"loss_{method}_": f"distill.{method}.alpha", "loss_adv_": "distill.alpha_adv"}


def detection_loss(log_vars: dict, distill_keys) -> float:
    """The student's own loss in one step's log: every loss but the distillation terms and the total."""
    return sum(v for k, v in log_vars.items() if "loss" in k and k != "loss" and k not in distill_keys)


def loss_balance(log_vars: dict, distill_keys) -> dict[str, float]:
    """Each distillation term of one step over the detection loss (inf or nan where not finite)."""
    det = detection_loss(log_vars, distill_keys)
    return {k: _ratio(log_vars[k], det) for k in distill_keys if k in log_vars}


def _ratio(term: float, det: float) -> float:
    if not math.isfinite(term):
        return term
    return abs(term) / abs(det) if det else (math.inf if term else 0.0)


def balance_warnings(balance: dict[str, float], weights: dict[str, str]) -> list[str]:
    """One line per term that is not finite or more than TOO_LARGE x the detection loss."""
    lines = []
    for key, ratio in balance.items():
        weight = next((w for prefix, w in weights.items() if key.startswith(prefix)), "its weight")
        if not math.isfinite(ratio):
            lines.append(f"{key} is {ratio} at the first iteration: lower {weight}")
        elif ratio > TOO_LARGE:
            lines.append(f"{key} is {ratio:.3g}x the detection loss at the first iteration (over {TOO_LARGE:g}x): "
                         f"lower {weight}")
    return lines


def balance_text(balance: dict[str, float]) -> str:
    """The log line: ``loss_fgd_neck_fpn_convs_0_conv 0.12, loss_adv_... 0.003`` (term / detection loss)."""
    return ", ".join(f"{k} {v:.3g}" for k, v in balance.items())


def nan_cause(log_vars: dict, distill_keys, weights: dict[str, str], first: bool, flagged: list[str]) -> str:
    """Why the loss of a step is not finite, where the step tells ('' when the learning rate is
    the likely cause: the weights diverged over the updates). ``flagged``: the warnings of the
    first iteration's balance; ``first``: no update has been made yet."""
    det = detection_loss(log_vars, distill_keys)
    bad = [k for k in distill_keys if k in log_vars and not math.isfinite(log_vars[k])]
    if bad and math.isfinite(det):
        weight = next((w for prefix, w in weights.items() if bad[0].startswith(prefix)), "its weight")
        return (f"the distillation term {bad[0]} is {log_vars[bad[0]]} while the detection loss is finite: "
                f"lower {weight}")
    if flagged:
        return f"at the first iteration {flagged[0]}"
    if first:
        return ("it is so before any update, so not the learning rate: the teacher's or the student's starting "
                "weights, or the data")
    return ""


@HOOKS.register_module(force=True)
class RunChecksHook(Hook):
    """Says and records (``run.json``) what init_student inherited and the teacher check's score;
    logs the loss balance of the run's first iteration with one warning per term out of
    balance; and stops a non-finite loss naming its likely cause. Registered at VERY_HIGH: its
    stop comes before ikd's FiniteLossHook (HIGH), whose message blames the learning rate."""

    def __init__(self, weights: dict[str, str], record: dict | None = None):
        self.weights = weights
        self.record = dict(record or {})  # more for run.json (the teacher check)
        self.first = None  # the iteration this process starts at
        self.flagged: list[str] = []

    def before_run(self, runner):
        self.first = runner.iter
        model = getattr(runner.model, "module", runner.model)
        inherited = getattr(model, "inherited", None)
        if get_dist_info()[0] != 0 or runner.iter:  # a continued run said it when it started
            return
        if inherited:
            warning = inheritance_warning(inherited)
            _say(runner, warning or inheritance_text(inherited), warn=bool(warning))
        _record(Path(runner.work_dir), dict(self.record, init_student=inherited))

    def after_train_iter(self, runner):
        log_vars = runner.outputs.get("log_vars", {}) if runner.outputs else {}
        model = getattr(runner.model, "module", runner.model)
        keys = list(model.entries)
        if runner.iter == self.first and log_vars:
            balance = loss_balance(log_vars, keys)
            runner.logger.info(f"loss balance at the first iteration (term / detection loss): {balance_text(balance)}")
            self.flagged = balance_warnings(balance, self.weights)
            for line in self.flagged:
                _say(runner, line, warn=True)
        loss = log_vars.get("loss")
        if loss is not None and not math.isfinite(loss):
            cause = nan_cause(log_vars, keys, self.weights, runner.iter == self.first, self.flagged)
            if cause:
                raise IkdError(f"the loss became {loss} at epoch {runner.epoch + 1}, iteration "
                               f"{runner.inner_iter + 1}; likely cause: {cause}")


def _say(runner, text: str, warn: bool = False) -> None:
    if warn:
        runner.logger.warning(text)
    else:
        runner.logger.info(text)
    if get_dist_info()[0] == 0:
        console.print(f"[yellow]warning[/]: {text}" if warn else text, soft_wrap=True)


def _record(work_dir: Path, entries: dict) -> None:
    """Add ``entries`` to the run's run.json (written by the session before training)."""
    path = work_dir / RUN_FILE
    saved = read_json(path, "run file") if path.is_file() else {}
    atomic_write_json(path, dict(saved or {}, **entries))
