"""``ikd backdoor verdict WORK_DIR...``: IKD vs NAD decided on a nested design, one victim per work
dir and many defender subsets per victim. No torch, no mmcv.

Each work dir holds one victim (its seed sets which images are poisoned, where the trigger lands
and the victim's data order) and, for each clean subset the defender may hold, the three
defences on that same subset: ``backdoor/`` for the victim's own subset (subset seed =
backdoor.seed), ``backdoor/subset-<k>/`` for the others (``backdoor.subset_seed``). The ASR drop
of a defence is the victim's ASR minus the defence's, in points; the differences between
methods are paired per (victim, subset).

The interval. Subsets are nested in victims: the subsets of one victim share its weights and
how strongly it learnt the trigger, so their differences are not independent draws of the
effect; the victims are. The estimate is the mean over victims of each victim's mean difference
over its subsets, with a Student-t interval over the victims (df = victims - 1). For a balanced
design this is exactly the interval of the grand mean in the normal random-effects model
(victim, and subset within victim): the variance of a victim's mean is the between-victim
variance plus the subset variance over the subset count, and the spread of the victim means
estimates just that. Few victims make it wide (t = 4.30 at 3 victims): the honest price of
having few. Per victim, the mean over its subsets gets a t-interval over the subsets, which says
what holds for that victim, not in general. All pairs are drawn, one panel per victim.

``--keep DIR`` copies what the verdict read (each step's evaluation, settings and run record, each
subset's clean-subset file; no weights) into ``DIR/<work dir name>/``, so ``ikd backdoor verdict
DIR/*`` gives the same verdict after the work dirs are gone, and a design spread over sessions or
machines is decided as one.
"""

from __future__ import annotations

from pathlib import Path

from ikd_cli.backdoor.layout import (CLEAN_SUBSET_FILE, DESIGN_JSON, DESIGN_PLOT, METHODS, SHARED_STEPS, STEP_NAMES,
                                     SUBSET_PREFIX, result_file, step_result)
from ikd_cli.config.layout import PRESET_FILE, RUN_FILE
from ikd_cli.core.errors import IkdError
from ikd_cli.core.figures import new_figure, save_png
from ikd_cli.core.fileio import atomic_write_json, copy_file, ensure_writable_dir, read_json, refuse_inside
from ikd_cli.core.stats import interval, mean_sd

PAIRS = (("ikd", "nad"), ("nad", "finetune"), ("ikd", "finetune"))
# The seed's claim (reference README): ASR drop 18.44 for IKD vs 13.82 for NAD.
CLAIM = dict(ikd=18.44, nad=13.82)


def _asr(path: Path) -> float | None:
    """ASR (%) of the evaluation beside a checkpoint, None when not evaluated yet."""
    path = result_file(path)
    if not path.is_file():
        return None
    asr = read_json(path, "backdoor evaluation")["asr"]["asr"]
    return None if asr is None else 100 * asr


def _subset_label(folder: Path) -> str:
    """A subset's name: its seed, from the folder (subset-<k>) or, for the victim's own subset,
    from the clean subset file the defences trained on."""
    if folder.name.startswith(SUBSET_PREFIX):
        return folder.name[len(SUBSET_PREFIX):]
    info = folder / CLEAN_SUBSET_FILE
    seed = (read_json(info, "clean subset").get("info") or {}).get("ikd_clean_subset", {}).get("seed") \
        if info.is_file() else None
    return "own" if seed is None else str(seed)


def _experiment_folder(work_dir: Path) -> Path:
    folder = work_dir if work_dir.name == "backdoor" else work_dir / "backdoor"
    if not folder.is_dir():
        raise IkdError(f"{work_dir} holds no backdoor experiment (no {folder})")
    return folder


def _subset_folders(folder: Path) -> list[Path]:
    """The victim's own subset (the experiment folder itself), then subset-<k>/ by k."""
    seed = (lambda p: int(p.name[len(SUBSET_PREFIX):]) if p.name[len(SUBSET_PREFIX):].isdigit() else -1)
    others = sorted((p for p in folder.glob(SUBSET_PREFIX + "*") if p.is_dir()), key=lambda p: (seed(p), p.name))
    return [folder] + others


def read_victim(work_dir: Path) -> dict:
    """One victim: its ASR and, per subset with at least one defence evaluated, the ASR drop of
    each defence evaluated there (points)."""
    work_dir = Path(work_dir)
    folder = _experiment_folder(work_dir)
    victim = _asr(folder / step_result("victim"))
    if victim is None:
        raise IkdError(f"the victim in {work_dir} is not evaluated yet (run `ikd backdoor evaluate "
                       f"{folder / step_result('victim')}`)")
    subsets = {}
    for sub in _subset_folders(folder):
        drops = {m: victim - asr for m in METHODS if (asr := _asr(sub / step_result(m))) is not None}
        if drops:
            subsets[_subset_label(sub)] = drops
    return dict(work_dir=str(work_dir), victim_asr=victim, subsets=subsets)


def pair(victims: list[dict], a: str, b: str) -> dict:
    """The paired difference a - b of ASR drops: per victim over its subsets with both, and the
    mean of the victim means with a t-interval over the victims."""
    per_victim = []
    for v in victims:
        diffs = {k: d[a] - d[b] for k, d in v["subsets"].items() if a in d and b in d}
        if diffs:
            per_victim.append(dict(work_dir=v["work_dir"], differences=diffs, **interval(list(diffs.values()))))
    overall = interval([p["mean"] for p in per_victim])
    pooled = [d for p in per_victim for d in p["differences"].values()]
    return dict(a=a, b=b, victims=per_victim, pairs=len(pooled), pooled_mean=mean_sd(pooled)["mean"],
                within_sd=_within_sd(per_victim), **overall)


def _within_sd(per_victim: list[dict]) -> float | None:
    """Pooled sd of the differences between subsets of the same victim (what a subset adds)."""
    ss = sum(p["sd"] ** 2 * (p["n"] - 1) for p in per_victim if p["sd"] is not None)
    df = sum(p["n"] - 1 for p in per_victim if p["sd"] is not None)
    return (ss / df) ** 0.5 if df else None


def verdict(p: dict) -> str:
    """What the IKD - NAD interval says about the seed's claim (IKD's drop larger by 4.62 points)."""
    claim = CLAIM["ikd"] - CLAIM["nad"]
    if p["ci"] is None:
        return f"not established (an interval needs 2 victims, {p['n']} given)"
    lo, hi = p["ci"]
    if lo > 0:
        head = "IKD removes more of the backdoor than NAD: established"
    elif hi < 0:
        head = "NAD removes more of the backdoor than IKD: established (the opposite of the claim)"
    else:
        head = "IKD's advantage over NAD is not established"
    fits = (f"the claimed +{claim:.2f} lies inside the interval" if lo <= claim <= hi else
            f"the claimed +{claim:.2f} lies outside the interval (" + ("larger" if claim > hi else "smaller")
            + " than what was measured)")
    return f"{head} (IKD - NAD {p['mean']:+.1f} points, 95% CI {lo:+.1f} to {hi:+.1f}, {p['n']} victims); {fits}"


def pair_line(p: dict) -> str:
    ci = ("n < 2 victims, no interval" if p["ci"] is None else
          f"95% CI {p['ci'][0]:+.1f} to {p['ci'][1]:+.1f} over {p['n']} victims: "
          + ("established" if p["established"] else "not established"))
    each = "; ".join(f"{Path(v['work_dir']).name} {v['mean']:+.1f}" +
                     (f" ({v['ci'][0]:+.1f} to {v['ci'][1]:+.1f}, {v['n']} subsets)" if v["ci"] else
                      f" ({v['n']} subset)") for v in p["victims"])
    spread = f", sd between subsets {p['within_sd']:.1f}" if p["within_sd"] is not None else ""
    return (f"{STEP_NAMES[p['a']]} - {STEP_NAMES[p['b']]}, ASR drop: {p['mean']:+.1f} ({ci}; "
            f"{p['pairs']} pairs{spread}; per victim: {each})")


def report(work_dirs) -> dict:
    """Everything the verdict says, as written to the design JSON."""
    victims = [read_victim(w) for w in work_dirs]
    pairs = [pair(victims, a, b) for a, b in PAIRS]
    if not any(v["subsets"] for v in victims):
        raise IkdError("no defence is evaluated yet in " + ", ".join(map(str, work_dirs)))
    ikd_nad = pairs[0]
    return dict(victims=victims, pairs=pairs, claim=CLAIM,
                verdict=verdict(ikd_nad) if ikd_nad["victims"] else "not established (no subset has IKD and NAD)")


def keep(work_dirs, dest: Path) -> int:
    """Copy the records the verdict reads into ``dest/<work dir name>/backdoor/...``: per step
    with an evaluation, that evaluation (the ASR) with the step's settings and run record; per
    subset, its clean-subset file. Returns the number of files copied. Refused, before anything
    is written, inside the work dirs it copies or when two work dirs share a name."""
    folders = [_experiment_folder(Path(w)) for w in work_dirs]  # each <work dir>/backdoor
    dest = Path(dest)
    names = [folder.parent.name for folder in folders]
    if len(set(names)) < len(names):
        raise IkdError(f"--keep names each victim's records by its work dir, and these share a name: {', '.join(names)}")
    refuse_inside(dest, [folder.parent for folder in folders], "work dir")
    ensure_writable_dir(dest, "records folder")
    copied = 0
    for name, folder in zip(names, folders):
        for sub in _subset_folders(folder):
            target = dest / name / "backdoor" / sub.relative_to(folder)
            files = [sub / CLEAN_SUBSET_FILE]
            for step in METHODS + (SHARED_STEPS if sub == folder else ()):
                result = result_file(sub / step_result(step))
                if result.is_file():
                    files += [result, result.parent / RUN_FILE, result.parent / PRESET_FILE]
            for path in files:
                if path.is_file():
                    copy_file(path, target / path.relative_to(sub))
                    copied += 1
    return copied


MARKERS = dict(finetune=("o", "C0"), nad=("s", "C1"), ikd=("^", "C2"))


def plot(rep: dict, path: Path) -> None:
    """One column per victim: above, the ASR drop of each defence per subset (a marker per
    method); below, IKD - NAD per subset, with the victim's mean and the claimed difference."""
    victims = rep["victims"]
    fig = new_figure(max(5.0, 4.2 * len(victims)), 6.5)
    axes = fig.subplots(2, len(victims), squeeze=False, sharey="row")
    ikd_nad = {v["work_dir"]: v for v in rep["pairs"][0]["victims"]}
    claim = CLAIM["ikd"] - CLAIM["nad"]
    for col, v in enumerate(victims):
        top, bottom = axes[0][col], axes[1][col]
        labels = list(v["subsets"])
        for method, (marker, colour) in MARKERS.items():
            points = [(i, d[method]) for i, d in enumerate(v["subsets"].values()) if method in d]
            if points:
                top.plot(*zip(*points), marker, color=colour, label=STEP_NAMES[method], alpha=0.85)
        top.set(title=f"victim {Path(v['work_dir']).name} (ASR {v['victim_asr']:.1f}%)", ylabel="ASR drop (points)")
        diffs = ikd_nad.get(v["work_dir"])
        if diffs:
            xs = [labels.index(k) for k in diffs["differences"]]
            bottom.plot(xs, list(diffs["differences"].values()), "D", color="C3", label="IKD - NAD")
            bottom.axhline(diffs["mean"], color="C3", lw=1, label="victim's mean")
            ci = f", 95% CI {diffs['ci'][0]:+.1f} to {diffs['ci'][1]:+.1f}" if diffs["ci"] else ""
            bottom.set_title(f"IKD - NAD: mean {diffs['mean']:+.1f}{ci}", fontsize="medium")
        bottom.axhline(0, color="k", lw=0.8)
        bottom.axhline(claim, color="grey", ls=":", lw=1, label=f"claimed +{claim:.2f}")
        bottom.set(xlabel="defender subset (seed)", ylabel="IKD - NAD, ASR drop")
        for ax in (top, bottom):
            ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 12 else 0)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    axes[1][0].legend(fontsize="small")
    p = rep["pairs"][0]
    # on a line of its own: beside the first it runs off a figure of one or two victims
    overall = (f"\nIKD - NAD over victims {p['mean']:+.1f}, 95% CI {p['ci'][0]:+.1f} to {p['ci'][1]:+.1f}"
               if p["ci"] else "")
    fig.suptitle(f"Per-subset ASR drops, paired per (victim, subset){overall}")
    save_png(fig, path)


def write(rep: dict, out: Path) -> tuple[Path, Path]:
    """The design JSON and its picture into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / DESIGN_JSON, rep)
    plot(rep, out / DESIGN_PLOT)
    return out / DESIGN_JSON, out / DESIGN_PLOT


def markdown(rep: dict) -> str:
    """Per victim and subset, the three ASR drops (a table), then the paired lines and the verdict."""
    lines = ["| victim | subset | " + " | ".join(STEP_NAMES[m] for m in METHODS) + " | IKD - NAD |",
             "|---|---|" + "---|" * (len(METHODS) + 1)]
    for v in rep["victims"]:
        for k, d in v["subsets"].items():
            cells = [f"{d[m]:.1f}" if m in d else "-" for m in METHODS]
            diff = f"{d['ikd'] - d['nad']:+.1f}" if "ikd" in d and "nad" in d else "-"
            lines.append(f"| {Path(v['work_dir']).name} | {k} | " + " | ".join(cells) + f" | {diff} |")
    return "\n".join(lines + [""] + [f"- {pair_line(p)}" for p in rep["pairs"] if p["victims"]]
                     + [f"- verdict: {rep['verdict']}"])
