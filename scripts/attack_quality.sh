#!/usr/bin/env bash
# What lossless saving buys: the shapes teacher's mAP on the clean val images, on the adversarial
# val set as `ikd attack` saves it (PNG), and on the same adversarial images saved as JPEG
# quality 95 (the reference implementation's way). Needs `bash scripts/run_shapes.sh` first.
set -euo pipefail
cd "$(dirname "$0")/.."
IKD=.venv/bin/ikd
CKPT=$("$IKD" presets show shapes --path teacher)
SET=$("$IKD" presets show shapes --path attack.out_val)   # the compact (delta) set of run_shapes.sh
ADV=${SET}_png                       # the same images as PNG files
JPEG=${SET}_jpeg95
CLEAN=$("$IKD" presets show shapes --path data.val_images)
"$IKD" attack --preset shapes --split val --export "$ADV"
.venv/bin/python - "$ADV" "$JPEG" "$CLEAN" <<'PY'
import sys
from pathlib import Path
import cv2, numpy as np
src, dst, clean = map(Path, sys.argv[1:])
dst.mkdir(parents=True, exist_ok=True)
kept = []
for png in sorted(src.glob("*.png")):
    adv = cv2.imread(str(png))
    ok, buf = cv2.imencode(".jpg", adv, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (dst / png.with_suffix(".jpg").name).write_bytes(buf.tobytes())
    jpg = cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float64)
    x0 = cv2.imread(str(clean / png.name)).astype(np.float64)
    delta, after = adv - x0, jpg - x0
    # Share of the perturbation that survives: projection of what JPEG left onto what the attack added.
    kept.append(float((after * delta).sum() / max((delta * delta).sum(), 1e-9)))
print(f"JPEG q95 keeps {100 * np.mean(kept):.1f}% of the perturbation (mean projection over {len(kept)} images)")
PY
"$IKD" evaluate "$CKPT"
"$IKD" evaluate "$CKPT" --images "$SET"
"$IKD" evaluate "$CKPT" --images "$ADV"
"$IKD" evaluate "$CKPT" --images "$JPEG"
.venv/bin/python - "$CKPT" "$(basename "$SET")" "$(basename "$ADV")" "$(basename "$JPEG")" <<'PY'
import json, sys
from ikd_cli.config.layout import eval_file  # what `ikd evaluate` wrote beside the checkpoint
ckpt, delta, adv, jpeg = sys.argv[1:]
rows = [("clean val images", eval_file(ckpt, "val")), ("adversarial, delta (ikd default)", eval_file(ckpt, f"val-{delta}")),
        ("adversarial, PNG (ikd --format png)", eval_file(ckpt, f"val-{adv}")),
        ("adversarial, JPEG q95 (reference)", eval_file(ckpt, f"val-{jpeg}"))]
print("| shapes teacher on | AP | AP50 | AP75 | AP_S | AP_M | AP_L |\n|---|---|---|---|---|---|---|")
for name, path in rows:
    m = json.load(open(path))["bbox"]
    print(f"| {name} | " + " | ".join(f"{100 * m[k]:.1f}" for k in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")) + " |")
PY
