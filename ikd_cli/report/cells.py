"""How the report's tables write a number: one place for the cells every table shares (AP in
percent with one decimal, "mean ± sd", a paired difference's row with its 95% interval)."""

from __future__ import annotations

PAIRED_HEADER = ["metric", "n", "mean diff", "sd", "95% CI", "excludes 0"]


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def mean_sd(stats: dict) -> str:
    """``21.5 ± 0.4``; the mean alone for one value; ``n/a`` for none."""
    if stats["mean"] is None or stats["sd"] is None:
        return number(stats["mean"])
    return f"{stats['mean']:.1f} ± {stats['sd']:.1f}"


def ci(stats: dict) -> str:
    return "n/a" if stats["ci"] is None else f"{stats['ci'][0]:+.1f} to {stats['ci'][1]:+.1f}"


def paired_row(metric: str, stats: dict) -> list[str]:
    """One metric's paired differences (:func:`ikd_cli.core.stats.interval`) under PAIRED_HEADER."""
    return [metric, str(stats["n"]), number(stats["mean"]), number(stats["sd"]), ci(stats),
            "yes" if stats["established"] else "no"]
