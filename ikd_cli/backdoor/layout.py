"""Where the backdoor experiment's files live, and what they are called. Pure paths.

    <backdoor.out>/                   the poisoned dataset (``ikd backdoor poison``)
        backdoor.json                 its settings and counts, written last
        annotations/instances_train.json, train/           poisoned training split
        annotations/instances_val.json, val/               the clean val split (links)
        annotations/instances_val_triggered.json, val_triggered/   every val image triggered
    <work_dir>/backdoor/
        clean/                        (optional) a model trained on the clean data, for reference
        victim/                       the attacker's model, trained on the poisoned set
        clean_subset.json             the defender's clean share of the training images
        finetune/ nad/ ikd/           the defences (NAD's and IKD's teacher: finetune's result)
        ikd-adv/                      adversarial copies of the clean subset against that teacher
        subset-<k>/                   the same four for the clean subset of backdoor.subset_seed k
                                      (when k is not backdoor.seed): one victim, many defenders
"""

from __future__ import annotations

from pathlib import Path

from ikd_cli.core.errors import IkdError
from ikd_cli.config.layout import LATEST, STUDENT_LATEST

MANIFEST = "backdoor.json"
TRAIN_ANN = "annotations/instances_train.json"
VAL_ANN = "annotations/instances_val.json"
TRIGGERED_ANN = "annotations/instances_val_triggered.json"
TRAIN_IMAGES = "train"
VAL_IMAGES = "val"
TRIGGERED_IMAGES = "val_triggered"
METHODS = ("finetune", "nad", "ikd")
STEP_NAMES = {"clean": "clean model (no poison)", "victim": "victim", "finetune": "fine-tuning", "nad": "NAD",
              "ikd": "IKD"}
SHARED_STEPS = ("clean", "victim")  # one per experiment; the defences are one per clean subset
SUBSET_PREFIX = "subset-"
CLEAN_SUBSET_FILE = "clean_subset.json"  # the defender's images, in each subset's folder
RESULT_SUFFIX = ".backdoor.json"  # beside a checkpoint: CKPT stem + this
# ``ikd backdoor verdict``: the nested design (victims x defender subsets), into its --out folder
DESIGN_JSON = "backdoor_verdict.json"
DESIGN_PLOT = "backdoor_verdict.png"


def poisoned_dir(preset: dict) -> Path:
    """``backdoor.out`` with its fields filled (``{name}`` and any backdoor key), or the default
    ``data/<name>_backdoor_<attack>_<rate>_s<seed>``."""
    b = preset["backdoor"]
    pattern = b["out"] or "data/{name}_backdoor_{attack}_{rate:g}_s{seed}"
    try:
        return Path(pattern.format(name=preset["name"], **{k: v for k, v in b.items() if k != "name"}))
    except (KeyError, ValueError, IndexError) as err:
        raise IkdError(f"backdoor.out '{b['out']}' has an unknown field: {err}") from None


def backdoor_dir(preset: dict) -> Path:
    return Path(preset["work_dir"]) / "backdoor"


def subset_seed(preset: dict) -> int:
    """The seed of the defender's clean subset: ``backdoor.subset_seed``, or ``backdoor.seed``
    when null (the subset then follows the victim's seed, as before the setting existed)."""
    b = preset["backdoor"]
    return b["seed"] if b.get("subset_seed") is None else b["subset_seed"]


def subset_folder(seed: int) -> str:
    return f"{SUBSET_PREFIX}{seed}"


def defence_dir(preset: dict) -> Path:
    """Where the defences of one clean subset live: the experiment's backdoor folder for the
    victim's own subset (subset seed = backdoor.seed, so runs made before the setting keep their
    place), ``backdoor/subset-<k>/`` for any other. The victim stays in ``backdoor/victim``:
    every subset defends the same victim."""
    k = subset_seed(preset)
    return backdoor_dir(preset) if k == preset["backdoor"]["seed"] else backdoor_dir(preset) / subset_folder(k)


def step_dir(preset: dict, step: str) -> Path:
    """The folder of one step: victim (or clean), finetune, nad, ikd (or ikd-adv) of this subset."""
    return (backdoor_dir(preset) if step in SHARED_STEPS else defence_dir(preset)) / step


def clean_subset_file(preset: dict) -> Path:
    return defence_dir(preset) / CLEAN_SUBSET_FILE


def victim_checkpoint(preset: dict) -> Path:
    return Path(preset["backdoor"]["victim_checkpoint"] or step_dir(preset, "victim") / LATEST)


def step_result(step: str) -> str:
    """What a step delivers, relative to the experiment's backdoor folder: the clean model, the
    victim or finetune's detector (``<step>/latest.pth``), NAD's or IKD's student."""
    return f"{step}/{STUDENT_LATEST if step in ('nad', 'ikd') else LATEST}"


def result_file(checkpoint: str | Path) -> Path:
    """The backdoor evaluation JSON beside a checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + RESULT_SUFFIX)


def result_picture(checkpoint: str | Path) -> Path:
    """The picture of a checkpoint's backdoor evaluation, beside its JSON: ``<stem>.backdoor.png``."""
    return result_file(checkpoint).with_suffix(".png")
