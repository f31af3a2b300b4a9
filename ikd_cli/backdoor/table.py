"""``ikd backdoor table WORK_DIR...``: victim, fine-tuning, NAD and IKD side by side, mean ± sd
over the given work dirs (one per seed), from the ``.backdoor.json`` files that
``ikd backdoor evaluate`` wrote beside each step's checkpoint. No torch, no mmcv."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.backdoor.layout import STEP_NAMES, result_file, step_result
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import read_json
from ikd_cli.core.stats import interval, mean_sd

STEPS = ("clean", "victim", "finetune", "nad", "ikd")
# "clean": a model trained on the clean data, linked into backdoor/clean/ (scripts/backdoor_shapes.sh
# links the preset's teacher, the victim's starting point): the reference for the victim's clean
# AP and for the ASR a model shows without any backdoor.
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
            path = result_file(folder / step_result(step))
            if path.is_file():
                found[step].append((Path(work_dir), read_json(path, "backdoor evaluation")))
    if not any(found.values()):
        raise IkdError("no step is evaluated yet in " + ", ".join(map(str, work_dirs)) +
                       " (run `ikd backdoor evaluate CKPT`)")
    return found


def _stats(values: list) -> tuple[float | None, float | None, int]:
    s = mean_sd([v for v in values if v is not None])
    return s["mean"], s["sd"], s["n"]


def _columns(step: str, found: dict) -> dict[str, dict[str, float | None]]:
    """column -> {work dir: value in %} for one step. The ASR drop is the victim's ASR minus the
    step's in the same work dir (None for the clean model and the victim)."""
    victim_asr = {str(w): r["asr"]["asr"] for w, r in found["victim"]}

    def drop(w, r):
        if step in ("clean", "victim") or victim_asr.get(str(w)) is None or r["asr"]["asr"] is None:
            return None
        return victim_asr[str(w)] - r["asr"]["asr"]

    values = {
        "clean AP": lambda w, r: r["clean"]["AP"],
        "ASR": lambda w, r: r["asr"]["asr"],
        "ASR drop": drop,
        "ASR, objects found": lambda w, r: r["asr"].get("asr_detected"),
        "same rate, clean images": lambda w, r: r["clean_rate"]["asr"],
    }
    return {col: {str(w): None if get(w, r) is None else 100 * get(w, r) for w, r in found[step]}
            for col, get in values.items()}


def summarise(work_dirs) -> list[dict]:
    """One row per step present: mean, sd and count (in %) of each column (the ASR drop taken
    per work dir, then averaged)."""
    found = read_results(work_dirs)
    rows = []
    for step in STEPS:
        if not found[step]:
            continue
        row = {"step": step, "name": STEP_NAMES[step], "attack": found[step][0][1]["attack"]}
        for col, per_dir in _columns(step, found).items():
            mean, sd, n = _stats(list(per_dir.values()))
            row[col] = dict(mean=mean, sd=sd, n=n)
        rows.append(row)
    return rows


# The paired comparisons the table is for, each over the work dirs (seeds) that have both:
# what the poison costs on clean images, and the seed's claim (IKD removes more of the backdoor
# than NAD) with the baseline every paper reports.
PAIRS = (("victim", "clean", "clean AP"), ("nad", "finetune", "ASR drop"), ("ikd", "finetune", "ASR drop"),
         ("ikd", "nad", "ASR drop"))


def paired(work_dirs) -> list[dict]:
    """For each of :data:`PAIRS` with both steps evaluated: the differences a - b per work dir
    and their mean with a 95% Student-t interval (established when it excludes 0)."""
    found = read_results(work_dirs)
    out = []
    for a, b, col in PAIRS:
        va, vb = _columns(a, found)[col], _columns(b, found)[col]
        dirs = [w for w in va if w in vb and va[w] is not None and vb[w] is not None]
        if dirs:
            diffs = [va[w] - vb[w] for w in dirs]
            out.append(dict(a=a, b=b, column=col, work_dirs=dirs, differences=diffs, **interval(diffs)))
    return out


def paired_line(p: dict) -> str:
    ci = ("n < 2, no interval" if p["ci"] is None else
          f"95% CI {p['ci'][0]:+.1f} to {p['ci'][1]:+.1f}, n = {p['n']}: "
          + ("established" if p["established"] else "not established"))
    each = ", ".join(f"{d:+.1f}" for d in p["differences"])
    return f"{STEP_NAMES[p['a']]} - {STEP_NAMES[p['b']]}, {p['column']}: {p['mean']:+.1f} ({ci}; per seed {each})"


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
