"""``ikd backdoor table WORK_DIR...``: victim, fine-tuning, NAD and IKD side by side, mean ± sd
over the given work dirs (one per seed), from the ``.backdoor.json`` files that
``ikd backdoor evaluate`` wrote beside each step's checkpoint. No torch, no mmcv."""

from __future__ import annotations

import statistics
from pathlib import Path

from ikd_cli.backdoor.layout import STEP_NAMES, result_file
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import read_json

STEPS = ("clean", "victim", "finetune", "nad", "ikd")
# "clean": a model trained on the clean data with the victim's schedule, copied into the work dir
# (scripts/backdoor_shapes.sh does it), the reference for the victim's clean AP and the ASR a
# model shows without any backdoor.
_CHECKPOINT = {"clean": "clean/latest.pth", "victim": "victim/latest.pth", "finetune": "finetune/latest.pth",
               "nad": "nad/student_latest.pth", "ikd": "ikd/student_latest.pth"}
COLUMNS = ("clean AP", "ASR", "ASR drop", "ASR, objects found", "same rate, clean images")


def _backdoor_folder(work_dir: Path) -> Path:
    work_dir = Path(work_dir)
    return work_dir if work_dir.name == "backdoor" else work_dir / "backdoor"


def read_results(work_dirs) -> dict:
    """step -> list of (work dir, result) for every step evaluated in each work dir."""
    found = {step: [] for step in STEPS}
    for work_dir in work_dirs:
        folder = _backdoor_folder(work_dir)
        if not folder.is_dir():
            raise IkdError(f"{work_dir} holds no backdoor experiment (no {folder})")
        for step in STEPS:
            path = result_file(folder / _CHECKPOINT[step])
            if path.is_file():
                found[step].append((Path(work_dir), read_json(path, "backdoor evaluation")))
    if not any(found.values()):
        raise IkdError("no step is evaluated yet in " + ", ".join(map(str, work_dirs)) +
                       " (run `ikd backdoor evaluate CKPT`)")
    return found


def _stats(values: list) -> tuple[float | None, float | None, int]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def summarise(work_dirs) -> list[dict]:
    """One row per step present: mean, sd and count (in %) of each column. The ASR drop is the
    victim's ASR minus the step's, per work dir, then averaged."""
    found = read_results(work_dirs)
    victim_asr = {str(w): r["asr"]["asr"] for w, r in found["victim"]}
    rows = []
    for step in STEPS:
        if not found[step]:
            continue
        cols = {
            "clean AP": [r["clean"]["AP"] for _, r in found[step]],
            "ASR": [r["asr"]["asr"] for _, r in found[step]],
            "ASR drop": [None if step in ("clean", "victim") or victim_asr.get(str(w)) is None
                         or r["asr"]["asr"] is None else victim_asr[str(w)] - r["asr"]["asr"] for w, r in found[step]],
            "ASR, objects found": [r["asr"].get("asr_detected") for _, r in found[step]],
            "same rate, clean images": [r["clean_rate"]["asr"] for _, r in found[step]],
        }
        row = {"step": step, "name": STEP_NAMES[step], "attack": found[step][0][1]["attack"]}
        for col, values in cols.items():
            mean, sd, n = _stats([None if v is None else 100 * v for v in values])
            row[col] = dict(mean=mean, sd=sd, n=n)
        rows.append(row)
    return rows


def cell(stat: dict) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.1f}" + (f" ± {stat['sd']:.1f}" if stat["sd"] is not None else "")


def markdown(rows: list[dict]) -> str:
    lines = ["| method | seeds | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append(f"| {row['name']} | {row['clean AP']['n']} | " + " | ".join(cell(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def print_table(rows: list[dict], title: str = "") -> None:
    from rich.table import Table

    from ikd_cli.core.ui import console

    table = Table("method", "seeds", *COLUMNS, title=title or None)
    for row in rows:
        table.add_row(row["name"], str(row["clean AP"]["n"]), *(cell(row[c]) for c in COLUMNS))
    console.print(table)
