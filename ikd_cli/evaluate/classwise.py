"""Per-category AP, as mmdet's ``CocoDataset.evaluate(classwise=True)`` computes it: from the
accumulated COCOeval's precision array ``[iou thr, recall, category, area, max dets]``, area
"all" and the largest max-dets setting, the mean over the entries that are defined (COCOeval
marks undefined ones -1). A category with no ground truth in the split has none: ``None``."""

from __future__ import annotations

from ikd_cli.core.ui import console


def classwise_ap(evaluator, cat_ids: list[int], names: list[str]) -> dict[str, float | None]:
    """``{class name: AP in [0, 1] or None}`` in the order of ``cat_ids`` (an accumulated COCOeval)."""
    precision = evaluator.eval["precision"]
    order = list(evaluator.params.catIds)
    out = {}
    for cat_id, name in zip(cat_ids, names):
        values = precision[:, :, order.index(cat_id), 0, -1]
        values = values[values > -1]
        out[name] = float(values.mean()) if values.size else None
    return out


def print_classwise(per_class: dict[str, float | None], title: str) -> None:
    from rich.table import Table

    table = Table("class", "AP", title=title)
    for name, ap in per_class.items():
        table.add_row(name, "n/a" if ap is None else f"{100 * ap:.1f}")
    console.print(table)
