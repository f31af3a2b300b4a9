"""The feature distillers IKD adds to (``distill.method``): the one list of them.

Each entry names the registered loss that does the maths (one file in
``ikd_cli/distill/losses/``), the label reports give its arms ("FGD", "IKD (FGD)"), the paper,
and its weights: the preset keys ``distill.<method>.<key>``, each with the loss argument it fills
and its setting (default, help, bounds). The schema's ``DistillMethod`` choices and
``distill.<method>.*`` rows, ``--help``, the distiller's config, the settings a finished run is
compared on and the report's labels are all read from here: adding a distiller is its loss file,
one entry below, its weights in the presets that use it, and its tests.

The defaults are each paper's own detection weights (FPN outputs, COCO, 256 channels); a preset
for another model or data says its own (``configs/shapes.yaml`` explains its choice).
Pure Python: no torch (``ikd --help`` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Weight:
    """One preset key of a distiller: the loss argument it fills, and its setting (as in
    :class:`ikd_cli.config.schema.Setting`: default, help, bounds)."""
    arg: str
    default: float
    help: str
    bounds: dict = field(default_factory=dict)  # low, high, low_open, high_open


@dataclass(frozen=True)
class Distiller:
    loss: str  # the registered loss type (mmdet LOSSES) built once per distilled level
    label: str  # in reports and on the terminal
    paper: str
    weights: dict[str, Weight]


_POSITIVE = dict(low=0.0, low_open=True)
_NON_NEGATIVE = dict(low=0.0)

DISTILLERS: dict[str, Distiller] = {
    "fgd": Distiller(
        "FGDLoss", "FGD", "Focal and Global Knowledge Distillation for Detectors (Yang et al., CVPR 2022)", {
            "temp": Weight("temp", 0.5, "FGD attention temperature", _POSITIVE),
            "alpha": Weight("alpha_fgd", 1e-3, "FGD foreground feature weight", _NON_NEGATIVE),
            "beta": Weight("beta_fgd", 5e-4, "FGD background feature weight", _NON_NEGATIVE),
            "gamma": Weight("gamma_fgd", 5e-4, "FGD attention weight", _NON_NEGATIVE),
            "lambda": Weight("lambda_fgd", 5e-6, "FGD global (GcBlock) weight", _NON_NEGATIVE),
        }),
    "mgd": Distiller(
        "MGDLoss", "MGD", "Masked Generative Distillation (Yang et al., ECCV 2022)", {
            "alpha": Weight("alpha_mgd", 2e-5, "MGD loss weight", _NON_NEGATIVE),
            "lambda": Weight("lambda_mgd", 0.65, "MGD: share of student pixels masked out",
                             dict(low=0.0, high=1.0, high_open=True)),
        }),
    # CWD's and the IKD authors' detection configs: tau 1.0, weight 5.0 on the FPN outputs
    "cwd": Distiller(
        "CWDLoss", "CWD", "Channel-wise Knowledge Distillation for Dense Prediction (Shu et al., ICCV 2021)", {
            "tau": Weight("tau", 1.0, "CWD softmax temperature", _POSITIVE),
            "alpha": Weight("alpha_cwd", 5.0, "CWD loss weight", _NON_NEGATIVE),
        }),
    # mmrazor's RetinaNet X101-64x4d -> R50 config: 10 per FPN level (its Faster R-CNN one: 6)
    "pkd": Distiller(
        "PKDLoss", "PKD", "Pearson correlation distillation (Cao et al., NeurIPS 2022)", {
            "alpha": Weight("alpha_pkd", 10.0, "PKD loss weight", _NON_NEGATIVE),
        }),
}


def label(method: str) -> str:
    """The report's name of a method ("FGD"); an unknown one (an old record) in capitals."""
    entry = DISTILLERS.get(method)
    return entry.label if entry else method.upper()
