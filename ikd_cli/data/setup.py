"""Getting a preset's data in place: the built-in shapes set is generated on first use."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.config.presets import data_path
from ikd_cli.core.ui import console, progress_bar


def make_shapes(out, *, seed: int, num_train: int, num_val: int, image_size: int):
    """Generate the shapes dataset with a progress bar (instant when it already exists)."""
    from ikd_cli.data.shapes import generate_shapes

    with progress_bar(transient=True) as progress:
        task = progress.add_task("shapes data", total=num_train + num_val, info="", unit="img")
        return generate_shapes(Path(out), seed=seed, num_train=num_train, num_val=num_val,
                               image_size=image_size,
                               progress=lambda done, total: progress.update(task, completed=done, total=total))


def ensure_dataset(preset: dict) -> None:
    """Make the built-in data when the preset describes it and it is not there yet."""
    shapes = preset["data"]["shapes"]
    if shapes is None:
        return
    if data_path(preset, "train_ann").is_file() and data_path(preset, "val_ann").is_file():
        return
    root = Path(preset["data"]["root"])
    console.print(f"generating the built-in shapes dataset in {root}")
    make_shapes(root, **shapes)
