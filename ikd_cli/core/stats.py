"""Small-sample statistics for comparing methods over seeds, without scipy: mean ± sample sd,
and the mean of paired differences with its two-sided Student-t interval. A difference is
"established" only when that interval excludes 0."""

from __future__ import annotations

import math
import statistics


def mean_sd(values: list[float]) -> dict:
    """Mean and sample sd (n - 1); sd is ``None`` for fewer than two values."""
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else None}


def t_two_sided(confidence: float, df: int) -> float:
    """Student-t critical value: P(|T| < t) = confidence with ``df`` degrees of freedom.

    Exact for integer df without scipy: the central mass has a closed form (Abramowitz &
    Stegun 26.7.3-4), which is inverted by bisection (it rises monotonically in t).
    """
    if df < 1 or not 0 < confidence < 1:
        raise ValueError(f"need df >= 1 and 0 < confidence < 1, got df={df}, confidence={confidence}")
    lo, hi = 0.0, 1e7
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central_mass(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| < t) for integer df: A&S 26.7.3 (odd df) and 26.7.4 (even df)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    total, term = 0.0, (math.cos(theta) if df % 2 else 1.0)
    for power in range(df % 2, df - 1, 2):  # cos powers 1, 3, .., df-2 (odd) or 0, 2, .., df-2 (even)
        total += term
        term *= c2 * (power + 1) / (power + 2)
    if df % 2:
        return 2 / math.pi * (theta + math.sin(theta) * total)
    return math.sin(theta) * total


def interval(differences: list[float], confidence: float = 0.95) -> dict:
    """Mean of paired differences with its Student-t interval (``ci`` is ``None`` for n < 2)."""
    stats = mean_sd(differences)
    n = stats["n"]
    if n < 2:
        return {**stats, "t": None, "ci": None, "established": False}
    t = t_two_sided(confidence, n - 1)
    half = t * stats["sd"] / math.sqrt(n)
    lo, hi = stats["mean"] - half, stats["mean"] + half
    return {**stats, "t": t, "ci": [lo, hi], "established": lo > 0 or hi < 0}
