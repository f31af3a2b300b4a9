"""Common corruptions of the test images, in the style of MMDetection's robustness benchmark
(Michaelis et al. 2019, "Benchmarking Robustness in Object Detection": the 15 ImageNet-C
corruptions of Hendrycks & Dietterich at severities 1-5, through the ``imagecorruptions``
package that mmdet's ``tools/analysis_tools/test_robustness.py`` uses).

    mPC = mean AP over the corruptions and severities run;  rPC = mPC / clean AP

Applied in the test pipeline right after ``LoadImageFromFile`` (:class:`SeededCorrupt`), as
mmdet's own ``Corrupt`` step is, with two differences: each image's random draws are seeded from
its file name, the corruption and the severity (a re-run gives the same pixels, on any number of
loader workers), and the image is handed over as RGB, the order the corruptions are defined in
(mmdet passes mmcv's BGR as it is, which turns frost, snow and brightness a little blue).

Only numpy here at import time; ``imagecorruptions`` (and mmdet, for the registry) are imported
when a corruption is built, so ``ikd --help`` stays light.
"""

from __future__ import annotations

import hashlib

from ikd_cli.core.errors import IkdError

# imagecorruptions.get_corruption_names("common"), in its order (written out: importing the
# package costs scikit-image and scipy, which the CLI must not pay to list its choices).
COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
          "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
          "jpeg_compression")
# The named sets of --corruptions: (corruptions, severities). "default" runs in minutes on the
# shapes val split: both noises, one blur, one digital change of the whole image, JPEG.
SUBSETS = {
    "default": (("gaussian_noise", "shot_noise", "motion_blur", "contrast", "jpeg_compression"), (1, 3, 5)),
    "all": (COMMON, (1, 2, 3, 4, 5)),
}
DEFAULT_SET = "default"  # what --robustness runs without --corruptions
NO_CORRUPTIONS = "none"
MIN_SIDE = 32  # imagecorruptions refuses smaller images


def describe_sets() -> str:
    """The named sets for ``--help``: "'default' (gaussian_noise, ... at severities 1,3,5), 'all' (...)"."""
    def what(names, levels):
        if names == COMMON:
            return f"the {len(names)} x {len(levels)} of the benchmark"
        return f"{', '.join(names)} at severities {','.join(map(str, levels))}"
    return ", ".join(f"'{name}' ({what(*subset)})" for name, subset in SUBSETS.items())


def corruption_plan(corruptions: str, severities: str | None = None) -> tuple[str, list[tuple[str, int]]]:
    """(label, [(corruption, severity)]) for ``--corruptions`` (a name of :data:`SUBSETS`,
    ``none``, or corruption names separated by commas; an empty text is refused, not read as
    the default) and ``--severities`` ("1,3,5"; default: the subset's, 1,3,5 for a list of names)."""
    text = (corruptions or "").strip().lower()
    if text == NO_CORRUPTIONS:
        return NO_CORRUPTIONS, []
    if text in SUBSETS:
        names, levels = SUBSETS[text]
        label = text
    else:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in COMMON]
        if not names or unknown:
            what = (f"unknown corruption '{unknown[0]}'" if unknown else
                    f"--corruptions {corruptions!r} names no corruption")
            raise IkdError(f"{what}; choose {', '.join(SUBSETS)}, {NO_CORRUPTIONS} (no corruption), or names among: "
                           f"{', '.join(COMMON)}")
        levels, label = SUBSETS[DEFAULT_SET][1], ",".join(names)
    if severities is not None:
        try:
            levels = tuple(sorted({int(s) for s in severities.split(",") if s.strip()}))
        except ValueError:
            levels = ()
        if not levels or not all(1 <= s <= 5 for s in levels):
            raise IkdError(f"--severities takes numbers 1-5 separated by commas, got '{severities}'")
        label += " @" + ",".join(map(str, levels))
    return label, [(name, level) for name in names for level in levels]


def image_seed(seed: int, corruption: str, severity: int, filename: str) -> int:
    """The numpy seed of one image's corruption: the same on every run, machine and worker."""
    digest = hashlib.sha256(f"{seed}/{corruption}/{severity}/{filename}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def load_corrupt():
    """``imagecorruptions.corrupt``, with scikit-image's newer ``gaussian`` accepted (see
    :func:`_accept_multichannel`); one line if the package is not installed."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources import warns on every start
            from imagecorruptions import corrupt, corruptions
    except ImportError as err:
        raise IkdError(f"corruptions need the imagecorruptions package ({err}); run scripts/install.sh, or "
                       "pip install scikit-image 'numpy<2' && pip install --no-deps imagecorruptions==1.1.2") from None
    _accept_multichannel(corruptions)
    return corrupt


def _accept_multichannel(module) -> None:
    """imagecorruptions 1.1.2 calls ``skimage.filters.gaussian(..., multichannel=True)`` (glass
    blur); scikit-image 0.19 renamed that argument ``channel_axis=-1`` and later versions dropped
    the old name. Passing it on under the new name is exactly what scikit-image's own deprecation
    shim did, so the corruption is unchanged."""
    import inspect

    gaussian = module.gaussian
    if getattr(gaussian, "ikd_shim", False) or "multichannel" in inspect.signature(gaussian).parameters:
        return

    def shim(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return gaussian(image, *args, **kwargs)

    shim.ikd_shim = True
    module.gaussian = shim


def corrupt_image(img, corruption: str, severity: int, seed: int, filename: str, corrupt=None):
    """One image (H x W x 3 uint8, BGR as mmcv reads it) corrupted, BGR uint8 of the same size."""
    import numpy as np

    if corruption not in COMMON or severity not in (1, 2, 3, 4, 5):
        raise IkdError(f"unknown corruption {corruption} at severity {severity}")
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise IkdError(f"corruptions need images of at least {MIN_SIDE} x {MIN_SIDE} pixels; {filename} is {h} x {w}")
    corrupt = corrupt or load_corrupt()
    state = np.random.get_state()  # imagecorruptions draws from numpy's global generator
    np.random.seed(image_seed(seed, corruption, severity, filename))
    try:
        out = corrupt(np.ascontiguousarray(img[..., ::-1]), severity=severity, corruption_name=corruption)
    finally:
        np.random.set_state(state)
    out = np.asarray(out, dtype=np.uint8)[: h, : w]  # frost and zoom return the input's size; be sure
    return np.ascontiguousarray(out[..., ::-1])


class SeededCorrupt:
    """Test-pipeline step (registered into mmdet's PIPELINES by :func:`register`): replace
    ``results['img']`` by its corrupted copy, seeded per image."""

    def __init__(self, corruption: str, severity: int, seed: int = 0):
        self.corruption, self.severity, self.seed = corruption, int(severity), int(seed)
        self._corrupt = None

    def __call__(self, results):
        if self._corrupt is None:  # once per loader worker
            self._corrupt = load_corrupt()
        name = (results.get("img_info") or {}).get("filename") or str(results.get("filename"))
        results["img"] = corrupt_image(results["img"], self.corruption, self.severity, self.seed, name,
                                       self._corrupt)
        return results

    def __repr__(self):
        return f"SeededCorrupt(corruption={self.corruption!r}, severity={self.severity}, seed={self.seed})"


def register() -> None:
    """Register :class:`SeededCorrupt` into mmdet's PIPELINES (once; mmdet is imported only here)."""
    from mmdet.datasets.builder import PIPELINES

    if "SeededCorrupt" not in PIPELINES.module_dict:
        PIPELINES.register_module(module=SeededCorrupt)


def pipeline_step(corruption: str, severity: int, seed: int) -> dict:
    register()
    return dict(type="SeededCorrupt", corruption=corruption, severity=severity, seed=seed)
