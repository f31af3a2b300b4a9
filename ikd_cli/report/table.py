"""Group runs by arm and say what the numbers support.

Every AP here is in percent (COCO fraction x 100). Per arm: mean ± sample sd (n - 1) over its
runs' final metrics. Between two arms: differences paired by seed (same seed = same data order
and initialisation, so pairing removes most of the seed-to-seed spread) with a two-sided 95%
Student-t interval; a gain is "established" only when that interval excludes 0.
"""

from __future__ import annotations

from pathlib import Path

from ikd_cli.core.errors import IkdError
from ikd_cli.core.stats import interval, mean_sd
from ikd_cli.core.ui import console
from ikd_cli.evaluate.robustness import ROBUSTNESS
from ikd_cli.report import cells
from ikd_cli.report.classwise import classwise_tables
from ikd_cli.report.robustness import robustness_tables
from ikd_cli.report.runs import METRICS, Run
from ikd_cli.report.sweep import sweep_tables


def summarize(runs: list[Run], compare=None) -> dict:
    """Everything ``report.json`` holds: the runs, the per-arm table and, with ``compare`` (one
    pair ``(a, b)`` or a list of pairs), per pair the paired differences a − b and the one-line
    verdict on AP: ``comparisons`` and ``verdicts`` in the order given; ``comparison`` and
    ``verdict`` are the first pair's (what the per-class table pairs)."""
    comparisons = [paired_comparison(runs, a, b) for a, b in compare_pairs(compare)]
    summary = {"units": "COCO bbox AP in percent", "runs": [_run_record(r) for r in runs],
               "arms": arm_table(runs), "comparisons": comparisons, "verdicts": [verdict(c) for c in comparisons]}
    summary["comparison"] = comparisons[0] if comparisons else None
    summary["verdict"] = summary["verdicts"][0] if comparisons else None
    summary["compute"] = compute_table(runs)
    summary["notes"] = compute_notes(runs, summary["compute"])
    return summary


# What a run's floats depend on besides its settings (run.json's ``compute``): the thread count
# orders sums, the kernels (instruction set) pick the code, and so do the CPU and torch.
COMPUTE_KEYS = ("threads", "kernels", "cpu", "torch")


def compute_table(runs: list[Run]) -> list[dict]:
    """One row per way the runs were computed: those fields, how many runs, which arms."""
    rows: dict[tuple, dict] = {}
    for run in runs:
        key = tuple(str((run.compute or {}).get(k, "not recorded")) for k in COMPUTE_KEYS)
        row = rows.setdefault(key, dict(zip(COMPUTE_KEYS, key), runs=0, arms=[]))
        row["runs"] += 1
        if run.arm not in row["arms"]:
            row["arms"].append(run.arm)
    return list(rows.values())


def compute_notes(runs: list[Run], table: list[dict]) -> list[str]:
    """What the reader of a difference must know: runs computed more than one way, runs
    continued on other compute than they started on."""
    notes = []
    if len(table) > 1:
        notes.append(f"these runs were computed {len(table)} ways (table 'Compute'): a difference between runs "
                     "computed differently mixes the compute with the method")
    for run in runs:
        for c in run.continued:
            notes.append(f"{run.arm} seed {run.seed} ({run.path}) continued after epoch {c.get('after_epoch')} on "
                         f"other compute ({c.get('change')}): its numbers are not those of a run made in one go")
    return notes


def compare_pairs(compare) -> list[tuple[str, str]]:
    """``None``, one pair ``(a, b)`` or a list of pairs -> the list of pairs, each once."""
    if not compare:
        return []
    pairs = [tuple(compare)] if isinstance(compare[0], str) else [tuple(p) for p in compare]
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(x, str) and x for x in pair):
            raise IkdError(f"a comparison is two arm names (A, B), got {pair!r}")
    return list(dict.fromkeys(pairs))


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _run_record(run: Run) -> dict:
    return {"path": str(run.path), "arm": run.arm, "kind": run.kind, "preset": run.preset, "role": run.role,
            "seed": run.seed, "dfa_until": run.dfa_until, "alpha_adv": run.alpha_adv,
            "final": {m: _pct(run.final[m]) for m in METRICS} if run.final else None,
            "final_source": run.final_source, "final_checkpoint": run.final_checkpoint,
            "compute": run.compute, "continued": run.continued,
            "robustness": ({m: _pct(run.robustness[m]) for m in ROBUSTNESS}
                           | {"corruptions": run.robustness["corruptions"],
                              "per_corruption": {k: _pct(v) for k, v in run.robustness.get("per_corruption", {}).items()}}
                           if run.robustness else None),
            "val": [{"epoch": v["epoch"], **{m: _pct(v[m]) for m in METRICS}} for v in run.val]}


def _group(runs: list[Run]) -> dict[str, list[Run]]:
    arms: dict[str, list[Run]] = {}
    for run in runs:
        arms.setdefault(run.arm, []).append(run)
    return arms


def arm_table(runs: list[Run]) -> list[dict]:
    rows = []
    for arm, members in _group(runs).items():
        done = [r for r in members if r.final]  # unfinished runs are listed, not averaged
        finals = [r.final for r in done]
        rows.append({"arm": arm, "n": len(done), "seeds": [r.seed for r in done],
                     "metrics": {m: mean_sd([100.0 * f[m] for f in finals if f[m] is not None]) for m in METRICS},
                     "robustness": _robustness_stats(done)})
    return rows


def _robustness_value(run: Run, metric: str) -> float | None:
    value = (run.robustness or {}).get(metric)
    return None if value is None else 100.0 * value


def _robustness_stats(runs: list[Run]) -> dict:
    """Per robustness figure, mean ± sd over the runs that measured it (in percent; rPC too),
    and the corruption sets their mPC came from (a mean over different sets is no mean)."""
    stats = {m: mean_sd([v for v in (_robustness_value(r, m) for r in runs) if v is not None]) for m in ROBUSTNESS}
    stats["corruptions"] = sorted({r.robustness["corruptions"] for r in runs if r.robustness
                                   and r.robustness.get("corruptions")})
    return stats


def _arm_named(name: str, arms: dict[str, list[Run]]) -> str:
    if name in arms:
        return name
    matches = [a for a in arms if a.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    raise IkdError(f"no arm named '{name}' to compare; the arms are: " + ", ".join(f"'{a}'" for a in arms))


def _by_seed(arm: str, members: list[Run]) -> dict[int, Run]:
    by_seed: dict[int, Run] = {}
    for run in members:
        if run.seed in by_seed:
            raise IkdError(f"arm '{arm}' has two runs with seed {run.seed} ({by_seed[run.seed].path} and {run.path}); "
                           f"pairing by seed needs one run per seed")
        if run.seed is not None:
            by_seed[run.seed] = run
    return by_seed


def paired_comparison(runs: list[Run], a: str, b: str) -> dict:
    """Differences a − b of the final metrics, paired by seed, per metric."""
    arms = _group(runs)
    a, b = _arm_named(a, arms), _arm_named(b, arms)
    runs_a, runs_b = _by_seed(a, arms[a]), _by_seed(b, arms[b])
    seeds = sorted(set(runs_a) & set(runs_b))
    out = {"a": a, "b": b, "metrics": {}}
    for m in METRICS:
        paired = [s for s in seeds if runs_a[s].final and runs_b[s].final
                  and runs_a[s].final[m] is not None and runs_b[s].final[m] is not None]
        diffs = [100.0 * (runs_a[s].final[m] - runs_b[s].final[m]) for s in paired]
        out["metrics"][m] = {"seeds": paired, "differences": diffs, **interval(diffs)}
    out["robustness"] = {}
    for m in ROBUSTNESS:
        paired = [s for s in seeds if _robustness_value(runs_a[s], m) is not None
                  and _robustness_value(runs_b[s], m) is not None]
        diffs = [_robustness_value(runs_a[s], m) - _robustness_value(runs_b[s], m) for s in paired]
        out["robustness"][m] = {"seeds": paired, "differences": diffs, **interval(diffs)}
    if not out["metrics"]["AP"]["n"]:
        raise IkdError(f"no seed has a finished run in both '{a}' (seeds {sorted(runs_a)}) and '{b}' "
                       f"(seeds {sorted(runs_b)}); nothing to pair")
    return out


def verdict(comparison: dict) -> str:
    """One line on AP: the paired mean difference, its interval and whether it excludes 0."""
    ap = comparison["metrics"]["AP"]
    head = f"{comparison['a']} − {comparison['b']} = {ap['mean']:+.1f} AP"
    if ap["ci"] is None:
        return f"{head} (n = {ap['n']}: too few paired seeds for an interval): not established"
    lo, hi = ap["ci"]
    return (f"{head} (95% CI {lo:+.1f} to {hi:+.1f}, n = {ap['n']}): "
            + ("established" if ap["established"] else "not established"))


def tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows) of strings, for Markdown and the terminal alike."""
    out = [("Arms: final COCO bbox AP (%), mean ± sd over runs", ["arm", "n", *METRICS],
            [[a["arm"], str(a["n"]), *(cells.mean_sd(a["metrics"][m]) for m in METRICS)] for a in summary["arms"]])]
    for comp in summary.get("comparisons") or []:
        out.append((f"{comp['a']} − {comp['b']}, paired by seed (AP points)", cells.PAIRED_HEADER,
                    [cells.paired_row(m, d) for m, d in comp["metrics"].items()]))
    out += classwise_tables(summary.get("classwise"))
    out += robustness_tables(summary)
    out += sweep_tables(summary.get("sweep"))
    out.append(("Compute: what the runs' floats depend on besides their settings (run.json)",
                ["threads", "kernels", "CPU", "torch", "runs", "arms"],
                [[r["threads"], r["kernels"], r["cpu"], r["torch"], str(r["runs"]), ", ".join(r["arms"])]
                 for r in summary.get("compute") or []]))
    out.append(("Runs", ["arm", "seed", "kind", "dfa_until", "AP", "AP50", "AP_S", "final from", "path"],
                [[r["arm"], str(r["seed"]), r["kind"], "" if r["dfa_until"] is None else str(r["dfa_until"]),
                  *(cells.number((r["final"] or {}).get(m)) for m in ("AP", "AP50", "AP_S")), _final_from(r), r["path"]]
                 for r in summary["runs"]]))
    return out


def _final_from(run: dict) -> str:
    """The eval file or log epoch the final numbers are from; the checkpoint when not the latest."""
    if run.get("final_checkpoint"):
        return f"{run['final_checkpoint']} (not latest)"
    return Path(run["final_source"]).name


def render_markdown(summary: dict, figures: list[str]) -> str:
    lines = ["# ikd report", ""]
    for line in summary.get("verdicts") or []:
        lines += [f"**{line}**", ""]
    for note in summary.get("notes") or []:
        lines += [f"*Note: {note}.*", ""]
    for title, header, rows in tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    lines += [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def print_summary(summary: dict) -> None:
    from rich.table import Table

    for title, header, rows in tables(summary):
        keep = [i for i, name in enumerate(header) if name != "path"]  # too wide for a terminal; report.md has it
        table = Table(*(header[i] for i in keep), title=title)
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        console.print(table)
    for line in summary.get("verdicts") or []:
        console.print(f"[bold]{line}[/]")
    for note in summary.get("notes") or []:
        console.print(f"[yellow]note[/]: {note}", soft_wrap=True)
