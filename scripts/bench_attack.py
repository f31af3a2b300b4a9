"""Benchmark of `ikd attack`, as ratios against baselines measured in the same run (machines are
noisy, so only ratios are meaningful; every variant is timed interleaved, the median kept).

  1. attack overhead: DI-FGSM's attack call per image vs `steps x (forward + backward)` of the
     teacher's loss on the same batch (the floor of any iterative attack); and the whole per-batch
     work of `ikd attack` (plus loss before/after, uint8, delta encoding) vs that floor.
  2. batching: images/s at batch 4 vs batch 1.
  3. --amp: the whole per-batch work with bf16 autocast of the teacher's passes vs fp32 (on CPU
     bf16 is only faster where the CPU has native bf16 units; the GPU figure needs a GPU).

Usage: .venv/bin/python scripts/bench_attack.py [--checkpoint work_dirs/shapes/teacher/latest.pth]
       [--repeats 5] [--device cuda] [--batches 1,4,8] [--amp-batches 1,4,8] [--json OUT.json].
Without a checkpoint the teacher is randomly initialised (same cost). --json writes images/s per
batch (fp32 and bf16) and the peak GPU memory, for scripts/gpu_check.sh's summary.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="work_dirs/shapes/teacher/latest.pth")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batches", default="1,4", help="batch sizes timed in fp32")
    parser.add_argument("--amp-batches", default="4", help="batch sizes also timed with --amp (bf16)")
    parser.add_argument("--json", help="write the images/s and peak GPU memory here")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    amp_batches = [int(b) for b in args.amp_batches.split(",") if b]
    device = args.device

    import torch
    from mmdet.models import build_detector

    from ikd_cli.attack.batch import attack_batch, pad_batch
    from ikd_cli.attack.methods import build_attack
    from ikd_cli.attack.storage import encode_adversarial
    from ikd_cli.attack.teacher_loss import Preprocess, TeacherClassificationLoss, prepare_teacher
    from ikd_cli.config import presets
    from ikd_cli.config.mmdet import build_config
    from ikd_cli.core.checkpoints import load_weights, read_checkpoint
    from ikd_cli.data.shapes import generate_shapes

    torch.manual_seed(0)
    root = Path("/tmp/ikd-bench-shapes")
    generate_shapes(root, seed=1, num_train=max(8, *batches, *amp_batches), num_val=1, image_size=160)
    cfg = build_config(presets.load("shapes", {"data.root": str(root)}), "teacher")
    model = build_detector(cfg.model)
    if Path(args.checkpoint).is_file():
        load_weights(model, read_checkpoint(args.checkpoint)["state_dict"], args.checkpoint)
    teacher = prepare_teacher(model).to(device)
    prep = Preprocess.from_config(cfg)

    ann = json.loads((root / "annotations" / "instances_train.json").read_text())
    import cv2

    images, boxes, labels = [], [], []
    for im in ann["images"][:max(*batches, *amp_batches)]:
        images.append(cv2.imread(str(root / "train" / im["file_name"])))
        objs = [a for a in ann["annotations"] if a["image_id"] == im["id"]]
        boxes.append(torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                    a["bbox"][1] + a["bbox"][3]] for a in objs], dtype=torch.float32))
        labels.append(torch.tensor([a["category_id"] - 1 for a in objs]))

    def loss_fn_for(n):
        return TeacherClassificationLoss(teacher, prep, [im.shape[:2] for im in images[:n]], boxes[:n], labels[:n])

    def clock():  # GPU work is asynchronous: wait for it before reading the clock
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def floor(n):  # steps x (forward + backward w.r.t. the image)
        x = pad_batch(images[:n], device)
        fn = loss_fn_for(n)
        start = clock()
        for _ in range(args.steps):
            xr = x.clone().requires_grad_(True)
            torch.autograd.grad(fn(xr), xr)
        return (clock() - start) / n

    attack = build_attack("difgsm", None, steps=args.steps)

    def attack_only(n):
        x = pad_batch(images[:n], device)
        attack.loss_fn = loss_fn_for(n)
        start = clock()
        attack(x)
        return (clock() - start) / n

    def whole(n, amp=False):  # what ikd attack does per batch (the same functions), without the file system
        start = clock()
        results = attack_batch(attack, teacher, prep, images[:n], boxes[:n], labels[:n], device=device, seed=0, amp=amp)
        for image, result in zip(images, results):
            encode_adversarial(image, result.pixels, attack.eps, "delta")  # the default storage format
        return (clock() - start) / n

    def whole_amp(n):
        return whole(n, amp=True)

    variants = {}
    for b in batches:
        variants.update({f"floor b{b}": (floor, b), f"attack b{b}": (attack_only, b), f"ikd attack b{b}": (whole, b)})
    for b in amp_batches:
        variants[f"ikd attack b{b} amp"] = (whole_amp, b)
    for fn, n in variants.values():  # warm-up
        fn(n)
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (fn, n) in variants.items():
            times[name].append(fn(n))
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{device}, torch threads {torch.get_num_threads()}, steps {args.steps}, 160 px shapes images, "
          f"median of {args.repeats}")
    for name, value in med.items():
        print(f"  {name:15s} {1000 * value:8.1f} ms/img")
    for b in batches:
        print(f"attack / floor (b{b}):         {med[f'attack b{b}'] / med[f'floor b{b}']:.3f}")
        print(f"ikd attack / floor (b{b}):     {med[f'ikd attack b{b}'] / med[f'floor b{b}']:.3f}")
    for b in batches[1:]:
        print(f"throughput batch {b} / batch {batches[0]}: "
              f"{med[f'ikd attack b{batches[0]}'] / med[f'ikd attack b{b}']:.2f}x images/s")
    for b in amp_batches:
        if f"ikd attack b{b}" in med:
            print(f"--amp (bf16) / fp32 time (b{b}): {med[f'ikd attack b{b} amp'] / med[f'ikd attack b{b}']:.2f}")
    if args.json:
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        Path(args.json).write_text(json.dumps({
            "device": device,
            "img_per_s": {str(b): 1 / med[f"ikd attack b{b}"] for b in batches},
            "img_per_s_amp": {str(b): 1 / med[f"ikd attack b{b} amp"] for b in amp_batches},
            "peak_gpu_gib": peak}, indent=1))


if __name__ == "__main__":
    main()
