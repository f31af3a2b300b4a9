"""``ikd distill --dry-run``: every check a run makes before it spends hours, and one training
iteration of each stage, in one table; nothing is trained or saved, and the only file written
into the work dir is the table (``dry-run.txt``). A check that fails makes the command exit 1,
after the table; a warning (a student that inherits part of its neck and head, a term out of
balance) does not."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ikd_cli.config.layout import DRY_RUN_FILE, run_dir
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write_text
from ikd_cli.core.ui import console, quiet_to_log
from ikd_cli.distill import checks

OK, WARN, FAIL, SKIP = "ok", "warning", "FAILED", "skipped"


@dataclass
class Row:
    check: str
    status: str
    detail: str


def dry_run_distill(preset: dict, *, device: str | None, teacher_check: Callable[[Path], dict]) -> Path:
    """Run the checks of a distillation of ``preset`` (``teacher_check``: scores a teacher
    checkpoint, from the layer above) and one iteration of each stage; returns the table's file."""
    from ikd_cli.core.distributed import pick_device
    from ikd_cli.core.machine import pin_compute

    pin_compute(preset)
    with tempfile.TemporaryDirectory(prefix=".ikd-dry-run-") as tmp, quiet_to_log(Path(tmp) / "dry-run.log"):
        rows = _run_rows(preset, pick_device(device), teacher_check)
    path = run_dir(preset, "distill") / DRY_RUN_FILE
    _table_out(rows, path, preset["name"])
    failed = [r.check for r in rows if r.status == FAIL]
    if failed:
        raise IkdError(f"dry run: {len(failed)} check(s) failed ({', '.join(failed)}); the table: {path}")
    return path


def _row(name: str, fn, *args) -> Row:
    """One check: ``fn(*args)`` -> (status, detail); an error is the row's failure, never a traceback."""
    try:
        status, detail = fn(*args)
    except IkdError as err:
        status, detail = FAIL, str(err)
    except Exception as err:  # noqa: BLE001  (a dry run reports what the run would have died of)
        status, detail = FAIL, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return Row(name, status, detail)


def _teacher_row(preset: dict, teacher_check: Callable[[Path], dict]):
    from ikd_cli.config.layout import teacher_checkpoint

    result = teacher_check(teacher_checkpoint(preset))
    if "AP" not in result:
        return SKIP, "--no-teacher-check"
    detail = (f"{100 * result['AP']:.1f} AP on the first {result['images']} val images "
              f"(min {100 * result['min_ap']:.1f}){' (cached)' if result['cached'] else ''}")
    return (OK if result["passed"] else FAIL), detail


def _run_rows(preset: dict, device: str, teacher_check: Callable[[Path], dict]) -> list[Row]:
    """Every row; those that need the data, the config or the model are skipped where it failed."""
    state: dict = {}
    rows = [_row("data", _data_row, preset), _row("config and files", _config_row, preset, state)]
    if any(r.status == FAIL for r in rows):
        return rows + [Row("teacher check", SKIP, "needs the rows above")]
    rows.append(_row("teacher check", _teacher_row, preset, teacher_check))
    rows.append(_row("model and weights", _model_row, state))
    if rows[-1].status == FAIL:
        return rows
    rows.append(_row("init_student", _inherit_row, state))
    cfg = state["cfg"]
    for stage1, on in ((True, cfg.dfa_until > 0), (False, cfg.dfa_until < cfg.runner.max_epochs)):
        name = f"stage {1 if stage1 else 2} iteration"
        rows.append(_row(name, _iteration_row, preset, state, stage1, device) if on
                    else Row(name, SKIP, "not in this run's schedule"))
    return rows


def _data_row(preset: dict):
    from ikd_cli.data.check import run_data_check
    from ikd_cli.data.setup import ensure_dataset

    ensure_dataset(preset)
    reports = run_data_check(preset)
    return OK, ", ".join(f"{r.split}: {r.images} images" for r in reports)


def _config_row(preset: dict, state: dict):
    import mmcv

    from ikd_cli.config.mmdet import student_start
    from ikd_cli.core import compat
    from ikd_cli.config.layout import teacher_checkpoint
    from ikd_cli.distill.config import build_distill_config

    compat.apply()
    cfg = state["cfg"] = build_distill_config(preset)
    teacher = teacher_checkpoint(preset)
    start = student_start(preset)
    mmcv.utils.import_modules_from_strings(**cfg.custom_imports)
    return OK, f"teacher {teacher}" + (f", student from {start}" if start else "")


def _model_row(state: dict):
    """The distiller built and initialised as the run does it (seeded), its weights checked."""
    from mmdet.apis import set_random_seed
    from mmdet.models import build_detector

    cfg = state["cfg"]
    set_random_seed(cfg.seed, deterministic=False)
    model = state["model"] = build_detector(cfg.model)
    model.init_weights()  # reads the teacher (fits, finite floats), init_student, student.checkpoint
    return OK, "teacher and student weights fit and are finite floats"


def _inherit_row(state: dict):
    inherited = state["model"].inherited
    if inherited is None:
        return SKIP, "off (distill.init_student: false, or a student.checkpoint)"
    return (WARN if checks.inheritance_warning(inherited) else OK), checks.inheritance_text(inherited)


def _iteration_row(preset: dict, state: dict, stage1: bool, device: str):
    """One forward and backward pass of the stage on its first batch; no optimiser step."""
    model, cfg = state["model"], state["cfg"]
    model.dfa = stage1
    log_vars = _one_step(model, cfg, preset, stage1, device)
    balance = checks.loss_balance(log_vars, list(model.entries))
    # what a run only warns about fails here: a dry run is asked to find what to change
    warnings = checks.balance_warnings(balance, checks.weight_keys(preset))
    if warnings or not math.isfinite(log_vars["loss"]):
        return FAIL, "; ".join(warnings) or f"the loss is {log_vars['loss']}"
    worst = max(balance, key=balance.get, default=None)
    largest = f"; largest term {worst} {balance[worst]:.3g}x detection" if worst else ""
    return OK, f"loss {log_vars['loss']:.4g}{largest}"


def _one_step(model, cfg, preset: dict, stage1: bool, device: str) -> dict:
    from ikd_cli.data.loading import build_dataset_checked
    from ikd_cli.distill.run import stage1_loader
    from ikd_cli.train.engine import build_train_loader
    from ikd_cli.train.runner import wrap_model

    if stage1:
        loader = stage1_loader(cfg, preset, False)
    else:
        dataset = build_dataset_checked(cfg.data.train, "training", skip=cfg.get("ikd_skipped") or ())
        loader = build_train_loader(dataset, cfg, False)
    wrapped = wrap_model(model, device, False, find_unused=True)
    wrapped.train()
    outputs = wrapped.train_step(next(iter(loader)), None)
    outputs["loss"].backward()
    model.zero_grad(set_to_none=True)
    return outputs["log_vars"]


def _table_out(rows: list[Row], path: Path, name: str) -> None:
    """The table on the terminal and, as plain text, in ``path`` (the one file a dry run writes)."""
    from rich.table import Table

    table = Table("check", "status", "detail", title=f"ikd distill --dry-run: {name}")
    for row in rows:
        style = {FAIL: "red", WARN: "yellow"}.get(row.status, "")
        table.add_row(row.check, f"[{style}]{row.status}[/]" if style else row.status, row.detail)
    console.print(table)
    # the file in plain columns, each row on one line whatever its length (a terminal wraps them)
    lines = [f"ikd distill --dry-run: {name}", *(f"{r.check:<18} {r.status:<8} {r.detail}" for r in rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    console.print(f"table: {path}")
