"""Pictures without pyplot: a matplotlib ``Figure`` bound to an Agg canvas of its own (no global
backend switch, no figure registry, nothing left behind for other code in the process), rendered
into memory and written atomically. Every picture ikd writes (attack and backdoor previews, the
report's plots, the backdoor verdict) is made this way."""

from __future__ import annotations

import io
from pathlib import Path

from ikd_cli.core.fileio import atomic_write_bytes


def new_figure(width: float, height: float):
    """A figure of ``width`` x ``height`` inches at 100 dpi, constrained layout, on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
