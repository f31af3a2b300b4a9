"""Stage 1's training pipeline: the student's own training pipeline (its dataset wrappers' steps
included) with IKD's steps added, in which the adversarial image goes through every step exactly
as the clean image does, or the distill config is refused in one line naming the step.

After ``LoadAnnotations`` the adversarial copy (``adv_img``) travels beside ``img``. Each later
step is one of:

- a step of mmdet's that transforms every entry of ``img_fields`` with ONE random draw
  (``ONE_DRAW_FOR_ALL_FIELDS``): ``adv_img`` is one more entry;
- a step that does not touch the pixels (``NO_PIXELS``): it runs once;
- a step that mixes other training images in (Mosaic, MixUp, CopyPaste: any step with mmdet's
  ``get_indexes``): refused, those images have no adversarial copy drawn with them;
- any other step (PhotoMetricDistortion, Expand, MinIoURandomCrop, RandomCrop, RandomAffine,
  YOLOXHSVRandomAug, a step of the user's own, ...): wrapped in ``SameDraw``
  (:mod:`ikd_cli.distill.pipelines`), which runs it on each image from the same random state
  and refuses, naming the step, a draw that came out differently.
"""

from __future__ import annotations

import copy

from ikd_cli.core.errors import IkdError

# mmdet 2.28 steps that loop over img_fields after drawing once (RandomCrop is NOT one: it draws
# a new offset per field), and IKD's own crop, which draws once for all fields.
ONE_DRAW_FOR_ALL_FIELDS = frozenset({"Resize", "RandomFlip", "RandomShift", "Pad", "Normalize", "AdaptiveCrop"})
NO_PIXELS = frozenset({"LoadAnnotations", "FilterAnnotations", "SegRescale", "DefaultFormatBundle", "Collect",
                       "ImageToTensor", "ToTensor", "Transpose", "ToDataContainer", "WrapFieldsToLists",
                       "FormatAdversarialImage"})
MULTI_IMAGE = frozenset({"Mosaic", "MixUp", "CopyPaste"})
NEEDED = ("LoadAnnotations", "Resize", "RandomFlip", "Collect")


def mixes_images(step_type: str) -> bool:
    """True for a step that draws other training images into a sample (mmdet's ``get_indexes``)."""
    if step_type in MULTI_IMAGE:
        return True
    from mmdet.datasets.builder import PIPELINES

    return hasattr(PIPELINES.get(step_type), "get_indexes")


def training_steps(train: dict) -> list:
    """The steps one training sample goes through: the innermost dataset's pipeline, then each
    wrapper's own (MultiImageMixDataset), innermost first, less the steps a wrapper skips."""
    wrappers = []
    while train is not None and "dataset" in train:
        if train.get("pipeline"):
            wrappers.append(train)
        train = train["dataset"]
    steps = [(step, None) for step in train["pipeline"]]
    for wrapper in reversed(wrappers):
        skip = set(wrapper.get("skip_type_keys") or ())
        steps += [(step, wrapper["type"]) for step in wrapper["pipeline"] if step["type"] not in skip]
    mixing = [(step["type"], where) for step, where in steps if mixes_images(step["type"])]
    if mixing:
        names = list(dict.fromkeys(name for name, _ in mixing))
        where = f" ({mixing[0][1]}'s pipeline)" if mixing[0][1] else ""
        steps_text = f"steps {', '.join(names)}{where}: they mix" if len(names) > 1 else f"step {names[0]}{where}: it mixes"
        raise IkdError(f"stage 1 of ikd distill cannot use the student's training {steps_text} other training images "
                       "into each sample, and those have no adversarial copy drawn with them; give the student a "
                       f"config whose training pipeline has no {' or '.join(names)}")
    return [copy.deepcopy(step) for step, _ in steps]


def check_steps(steps: list) -> None:
    """The anchors IKD's steps are placed at, and nothing but loading before the adversarial image."""
    types = [step["type"] for step in steps]
    for needed in NEEDED:
        if needed not in types:
            raise IkdError(f"the student's training pipeline has no {needed} step; IKD's stage 1 needs one "
                           f"(its steps are placed at {', '.join(NEEDED)})")
    early = [t for t in types[:types.index("LoadAnnotations")] if not t.startswith("Load")]
    if early:
        raise IkdError(f"the student's training pipeline has {early[0]} before LoadAnnotations, where IKD's stage 1 "
                       "reads the adversarial image, which would miss that step; move it after LoadAnnotations")


def paired(step: dict) -> dict:
    """``step`` as it runs with the adversarial image beside the clean one."""
    if step["type"] in ONE_DRAW_FOR_ALL_FIELDS or step["type"] in NO_PIXELS:
        return step
    return dict(type="SameDraw", transform=step)


def stage1_pipeline(train: dict, distill: dict, adv_dir: str, skipped=()) -> list:
    """Stage 1's pipeline for the training set config ``train`` (wrappers included): the adversarial
    image and instance corruption after LoadAnnotations, the adaptive crop after RandomFlip, the
    adversarial image formatted and collected; every step after the adversarial image is paired."""
    steps = training_steps(train)
    check_steps(steps)
    out, after_adv = [], False
    for step in steps:
        if step["type"] == "Collect":
            out.append(dict(type="FormatAdversarialImage"))
            step["keys"] = list(step["keys"]) + ["adv_img"]
        out.append(paired(step) if after_adv else step)
        if step["type"] == "LoadAnnotations":
            out.append(dict(type="LoadAdversarialImage", adv_dir=adv_dir, skipped=sorted(skipped)))
            out.append(dict(type="InstanceCorruption", prob=distill["corruption_prob"],
                            severity=distill["corruption_severity"], small_area=distill["small_area"]))
            after_adv = True
        if step["type"] == "RandomFlip":
            out.append(dict(type="AdaptiveCrop", crop_range=distill["crop_range"], small_area=distill["small_area"]))
    return out
