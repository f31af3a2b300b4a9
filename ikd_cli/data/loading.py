"""Building mmdet datasets with errors a user can act on: a missing or corrupt annotation file,
image folder or image gives one line naming the file, before any model is built."""

from __future__ import annotations

from pathlib import Path

from ikd_cli.core.errors import IkdError


def build_dataset_checked(dataset_cfg, what: str, skip=()):
    """mmdet's build_dataset, with missing or corrupt annotation files turned into one line.
    ``skip``: image file names that may fail to load (``--skip-bad``): such an image is dropped
    from its batch, and MMDetection's training set draws another in its place."""
    from mmdet.datasets import build_dataset

    from ikd_cli.config.mmdet import base_dataset

    files = base_dataset(dataset_cfg)  # inside RepeatDataset, MultiImageMixDataset and the like
    ann = Path(files.get("ann_file", ""))
    images = Path(files.get("img_prefix", ""))
    if not ann.is_file():
        raise IkdError(f"{what} annotation file not found: {ann}")
    if not images.is_dir():
        raise IkdError(f"{what} image folder not found: {images}")
    try:
        dataset = build_dataset(dataset_cfg)
    except (ValueError, KeyError, TypeError, AssertionError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise IkdError(f"cannot load {what} annotations {ann}: {first}") from None
    if len(dataset) == 0:
        raise IkdError(f"{what} annotations {ann} hold no usable images")
    _check_image_loading(dataset, frozenset(skip))
    return dataset


class CheckedImageLoad:
    """Wraps the pipeline's image-loading step so that a missing or corrupt image stops the run
    with its file name, instead of an AttributeError several steps later. Applied at run time,
    so the saved configs stay stock MMDetection configs."""

    def __init__(self, transform, skip=frozenset()):
        self.transform = transform
        self.skip = skip

    def __call__(self, results):
        info = results.get("img_info", {})
        name = Path(results.get("img_prefix") or "") / info.get("filename", "")
        if not name.is_file():
            if info.get("filename") in self.skip:
                return None
            raise IkdError(f"image not found: {name}")
        try:
            out = self.transform(results)
        except Exception:
            out = None
        if out is None or out.get("img") is None:
            if info.get("filename") in self.skip:
                return None
            raise IkdError(f"cannot read image {name}: corrupt or not an image")
        return out

    def __repr__(self):
        return f"CheckedImageLoad({self.transform!r})"


def _check_image_loading(dataset, skip=frozenset()) -> None:
    datasets = [dataset]
    while hasattr(datasets[-1], "dataset"):
        datasets.append(datasets[-1].dataset)
    for ds in datasets:
        transforms = getattr(getattr(ds, "pipeline", None), "transforms", None)
        if transforms and type(transforms[0]).__name__.startswith("LoadImage"):
            transforms[0] = CheckedImageLoad(transforms[0], skip)
