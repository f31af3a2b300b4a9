"""The defender's resources besides the victim: a small clean share of the training data
(``backdoor.clean_fraction``, as NAD's 5%), drawn with ``backdoor.subset_seed`` (null: ``backdoor.seed``)
from the CLEAN training annotations, written as its own COCO annotation file whose images are the clean ones."""

from __future__ import annotations

import json
from pathlib import Path

from ikd_cli.backdoor.layout import clean_subset_file, subset_seed
from ikd_cli.config.presets import data_path
from ikd_cli.config.schema import check
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write_text, read_json


def choose_subset(train: dict, fraction: float, seed: int) -> list[int]:
    """Indices into ``train['images']``: ``round(fraction * N)`` of the N images, drawn among
    those with at least one object, in file order."""
    import numpy as np

    fraction = check("backdoor.clean_fraction", fraction)
    n_images = len(train["images"])
    wanted = int(round(fraction * n_images))
    with_objects = {a["image_id"] for a in train["annotations"] if not a.get("iscrowd", 0)}
    eligible = [i for i, info in enumerate(train["images"]) if info["id"] in with_objects]
    if wanted < 1 or not eligible:
        raise IkdError(f"the clean subset is empty: backdoor.clean_fraction {fraction:g} of {n_images} training "
                       "images selects no image; raise it")
    rng = np.random.default_rng([seed, 3])
    return sorted(int(i) for i in rng.choice(eligible, size=min(wanted, len(eligible)), replace=False))


def write_clean_subset(preset: dict) -> tuple[Path, int]:
    """Write (or keep, when unchanged) the clean subset's annotation file; returns (path, images).
    Its images are the preset's clean training images (``data.train_images``)."""
    b = preset["backdoor"]
    source = data_path(preset, "train_ann")
    train = read_json(source, "training annotation file")
    seed = subset_seed(preset)
    chosen = choose_subset(train, b["clean_fraction"], seed)
    ids = {train["images"][i]["id"] for i in chosen}
    subset = dict(train)
    subset["info"] = dict(train.get("info") or {}, ikd_clean_subset=dict(
        source=str(Path(source).resolve()), images=str(Path(data_path(preset, "train_images")).resolve()),
        fraction=b["clean_fraction"], seed=seed))
    subset["images"] = [train["images"][i] for i in chosen]
    subset["annotations"] = [a for a in train["annotations"] if a["image_id"] in ids]
    path = clean_subset_file(preset)
    text = json.dumps(subset, indent=2) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)  # unchanged content keeps its time (the data check's cache)
    return path, len(chosen)
