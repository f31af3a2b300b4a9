"""Stage 1's training set: the student's own training pipeline (its dataset wrappers' steps
included) with IKD's steps added, in which the adversarial image goes through every step exactly
as the clean image does, or the distill config is refused in one line naming the step.

After ``LoadAnnotations`` the adversarial copy (``adv_img``) travels beside ``img``. Each later
step is one of:

- a step of mmdet's that transforms every entry of ``img_fields`` with ONE random draw
  (``ONE_DRAW_FOR_ALL_FIELDS``): ``adv_img`` is one more entry;
- a step that does not touch the pixels (``NO_PIXELS``): it runs once;
- any other step (PhotoMetricDistortion, Expand, MinIoURandomCrop, RandomCrop, RandomAffine,
  YOLOXHSVRandomAug, Mosaic, MixUp, AutoAugment with the steps of its policies, a step of the
  user's own, ...): wrapped in ``SameDraw`` (:mod:`ikd_cli.distill.pipelines`), which runs it
  on each image from the same random state and refuses, naming the step, a draw that came out
  differently.

A MultiImageMixDataset wrapper stays one (``IKDMultiImageMixDataset``) around a dataset whose
loading steps read the adversarial copies: the images that Mosaic or MixUp mix in bring theirs,
and the adversarial sample is the same mosaic of the adversarial copies. Wrappers without steps
(RepeatDataset, ClassBalancedDataset) stay as they are: a stage-1 epoch is a stage-2 epoch.
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
# the dataset wrapper whose steps mix other images in (Mosaic, MixUp, CopyPaste) -> its stage-1 version
MIX_WRAPPERS = {"MultiImageMixDataset": "IKDMultiImageMixDataset"}
# Where IKD's steps go. No Resize is needed: InstanceCorruption and AdaptiveCrop read the resize
# factor only when a Resize ran before them, and DETR's Resize sits inside AutoAugment's policies,
# after RandomFlip (AutoAugment runs in SameDraw: one policy and one draw for both images).
NEEDED = ("LoadAnnotations", "RandomFlip", "Collect")


def dataset_chain(train: dict) -> tuple[dict, list]:
    """The innermost dataset config of the student's training set and the wrappers around it,
    innermost first. A wrapper with steps of its own must be one stage 1 knows (MultiImageMixDataset);
    one without (RepeatDataset, ClassBalancedDataset) stays as it is around stage 1's set, so that
    a stage-1 epoch is a stage-2 epoch (``distill.dfa_until`` counts the same epochs)."""
    wrappers = []
    while train is not None and "dataset" in train:
        if train.get("pipeline") and train["type"] not in MIX_WRAPPERS:
            raise IkdError(f"stage 1 of ikd distill does not know the student's dataset wrapper {train['type']}, "
                           f"which has training steps of its own (it knows {', '.join(MIX_WRAPPERS)})")
        wrappers.append(train)
        train = train["dataset"]
    return train, wrappers[::-1]


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


def stage1_dataset(train: dict, distill: dict, adv_dir: str, skipped=()) -> dict:
    """Stage 1's dataset config for the student's training set config ``train``: its steps
    (wrappers' included, each kept in its own pipeline) with the adversarial image and instance
    corruption after LoadAnnotations, the adaptive crop after RandomFlip, the adversarial image
    formatted and collected; every step after the adversarial image is paired."""
    base, wrappers = dataset_chain(train)
    steps = [(copy.deepcopy(step), 0) for step in base["pipeline"]]
    for level, wrapper in enumerate(wrappers, 1):
        steps += [(copy.deepcopy(step), level) for step in wrapper.get("pipeline") or ()]
    check_steps([step for step, _ in steps])
    bundle = next((step for step, _ in steps if step["type"] == "DefaultFormatBundle"), {})
    to_float = dict(img_to_float=bundle["img_to_float"]) if "img_to_float" in bundle else {}
    out, after_adv = [], False
    # A load step that gives float pixels (CenterNet's to_float32) reads 8 bits here: the
    # adversarial copy is rebuilt on its 8-bit source; the float copy is made after IKD's steps.
    to_float32 = [s for s, _ in steps if s["type"] == "LoadImageFromFile" and s.get("to_float32")]
    for load in to_float32:
        load["to_float32"] = False
    for step, level in steps:
        if step["type"] == "Collect":
            out.append((dict(type="FormatAdversarialImage", **to_float), level))
            step["keys"] = list(step["keys"]) + ["adv_img"]
        out.append((paired(step) if after_adv else step, level))
        if step["type"] == "LoadAnnotations":
            out.append((dict(type="LoadAdversarialImage", adv_dir=adv_dir, skipped=sorted(skipped)), level))
            out.append((dict(type="InstanceCorruption", prob=distill["corruption_prob"],
                             severity=distill["corruption_severity"], small_area=distill["small_area"]), level))
            if to_float32:
                out.append((dict(type="PixelsToFloat32"), level))
            after_adv = True
        if step["type"] == "RandomFlip":
            out.append((dict(type="AdaptiveCrop", crop_range=distill["crop_range"],
                             small_area=distill["small_area"]), level))
    dataset = dict(copy.deepcopy(base), pipeline=[step for step, at in out if at == 0])
    for level, wrapper in enumerate(wrappers, 1):
        own = copy.deepcopy({k: v for k, v in wrapper.items() if k != "dataset"})
        if wrapper.get("pipeline"):  # a mixing wrapper's images carry their adversarial copies
            own.update(type=MIX_WRAPPERS[wrapper["type"]], pipeline=[step for step, at in out if at == level])
        dataset = dict(own, dataset=dataset)
    return dataset
