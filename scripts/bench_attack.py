"""Benchmark of `ikd attack`, as ratios against baselines measured in the same run (machines are
noisy, so only ratios are meaningful; every variant is timed interleaved, the median kept).

  1. attack overhead: DI-FGSM's attack call per image vs `steps x (forward + backward)` of the
     teacher's loss on the same batch (the floor of any iterative attack); and the whole per-batch
     work of `ikd attack` (plus loss before/after, uint8, delta encoding) vs that floor.
  2. batching: images/s at batch 4 vs batch 1.
  3. --amp: the whole per-batch work with bf16 autocast of the teacher's passes vs fp32 (on CPU
     bf16 is only faster where the CPU has native bf16 units; the GPU figure needs a GPU).
  4. the command vs its per-batch work: `ikd attack`'s batch loop (`attack_images`: the loader's
     workers reading and decoding, the attack, encoding, atomic writes and records into a fresh
     folder) over --command-images images, per image, against the per-batch work alone (attack
     + encoding, no loading, no file system) on the same images, batches and seeds. What is left
     of the command (imports, data check, teacher load, summary, preview) is a fixed cost per
     command, not per image, and not timed here.

Usage: .venv/bin/python scripts/bench_attack.py [--checkpoint CKPT]  (default: the shapes preset's teacher)
       [--repeats 5] [--device cuda] [--batches 1,4,8] [--amp-batches 1,4,8] [--json OUT.json]
       [--command-images 16] [--workers 2].
       .venv/bin/python scripts/bench_attack.py --coco [--device cuda] [--json OUT.json]: instead of the
       above, the per-image cost of the reference experiment's attack (the retinanet preset: X101-64x4d
       teacher, 1333 x 800, DI-FGSM 5 steps, batch 1, random weights: the same cost) on the vendored
       COCO photos, and the hours it makes for train2017 (118,287 images) on 1 and on 8 devices.
Without a checkpoint the teacher is randomly initialised (same cost). --json writes images/s per
batch (fp32 and bf16) and the peak GPU memory, for scripts/gpu_check.sh's summary.
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None, help="default: the shapes preset's teacher, if trained")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batches", default="1,4", help="batch sizes timed in fp32")
    parser.add_argument("--amp-batches", default="4", help="batch sizes also timed with --amp (bf16)")
    parser.add_argument("--json", help="write the images/s and peak GPU memory here")
    parser.add_argument("--command-images", type=int, default=16,
                        help="images of the command's loop per timing (0: skip part 4)")
    from ikd_cli.attack.run import WORKERS

    parser.add_argument("--workers", type=int, default=WORKERS, help="the command's loader workers (ikd attack's default)")
    parser.add_argument("--coco", action="store_true", help="only the COCO-scale projection (see above)")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.coco:
        return coco_projection(args)
    batches = [int(b) for b in args.batches.split(",")]
    amp_batches = [int(b) for b in args.amp_batches.split(",") if b]
    bench = make_bench(args, batches, amp_batches)
    variants = batch_variants(bench, batches, amp_batches)
    if args.command_images:
        variants.update(command_variants(args, bench.root, bench.teacher, bench.prep, batches, bench.device,
                                         bench.clock))
    med = time_variants(variants, args.repeats)
    print_results(args, batches, amp_batches, med)
    if args.json:
        write_json(args, batches, amp_batches, med)


@dataclass
class Bench:
    """What parts 1-3 time on: the shapes preset's teacher and the first images of a generated set."""
    device: str
    steps: int
    root: Path
    teacher: object
    prep: object
    images: list
    boxes: list
    labels: list

    def clock(self) -> float:  # GPU work is asynchronous: wait for it before reading the clock
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def loss_fn(self, n: int):
        from ikd_cli.attack.teacher_loss import TeacherClassificationLoss

        return TeacherClassificationLoss(self.teacher, self.prep, [im.shape[:2] for im in self.images[:n]],
                                         self.boxes[:n], self.labels[:n])


def make_bench(args, batches: list, amp_batches: list) -> Bench:
    import torch

    from ikd_cli.attack.teacher_loss import Preprocess
    from ikd_cli.config import presets
    from ikd_cli.config.mmdet import build_config
    from ikd_cli.data.shapes import generate_shapes

    torch.manual_seed(0)
    num_train = max(8, *batches, *amp_batches, 2 * args.command_images)
    root = Path(f"/tmp/ikd-bench-shapes-{num_train}")  # one folder per size: the generator refuses another
    layout = generate_shapes(root, seed=1, num_train=num_train, num_val=1, image_size=160)
    cfg = build_config(presets.load("shapes", {"data.root": str(root)}), "teacher")
    teacher = shapes_teacher(args, cfg)
    prep = Preprocess.from_config(cfg)
    # max() of a list: with one batch size alone, max(*[1]) would be max(1), an error
    images, boxes, labels = read_images(layout, max([*batches, *amp_batches]))
    return Bench(args.device, args.steps, root, teacher, prep, images, boxes, labels)


def shapes_teacher(args, cfg):
    """The teacher of ``--checkpoint`` (default: the shapes preset's, if trained; else random weights)."""
    from mmdet.models import build_detector

    from ikd_cli.attack.teacher_loss import prepare_teacher
    from ikd_cli.core.checkpoints import load_weights, read_checkpoint

    model = build_detector(cfg.model)
    if args.checkpoint is None:
        from ikd_cli.config.layout import final_checkpoint
        from ikd_cli.config.presets import load

        args.checkpoint = str(final_checkpoint(load("shapes"), "teacher"))
    if Path(args.checkpoint).is_file():
        load_weights(model, read_checkpoint(args.checkpoint)["state_dict"], args.checkpoint)
    return prepare_teacher(model).to(args.device)


def read_images(layout, n: int) -> tuple[list, list, list]:
    """The first ``n`` training images of the shapes set at ``layout`` (BGR), their gt boxes
    (x1, y1, x2, y2) and labels."""
    import cv2
    import torch

    ann = json.loads(layout.train_ann.read_text())
    images, boxes, labels = [], [], []
    for im in ann["images"][:n]:
        images.append(cv2.imread(str(layout.train_images / im["file_name"])))
        objs = [a for a in ann["annotations"] if a["image_id"] == im["id"]]
        boxes.append(torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                    a["bbox"][1] + a["bbox"][3]] for a in objs], dtype=torch.float32))
        labels.append(torch.tensor([a["category_id"] - 1 for a in objs]))
    return images, boxes, labels


def batch_variants(bench: Bench, batches: list, amp_batches: list) -> dict:
    """Parts 1-3: for each batch size, ``floor bN``, ``attack bN`` and ``ikd attack bN`` (and
    ``ikd attack bN amp``): name -> (function of the batch size, batch size), seconds per image."""
    import torch

    from ikd_cli.attack.batch import attack_batch, pad_batch
    from ikd_cli.attack.methods import build_attack
    from ikd_cli.attack.run import RECORD_LOSS
    from ikd_cli.attack.storage import encode_adversarial

    clock, images = bench.clock, bench.images

    def floor(n):  # steps x (forward + backward w.r.t. the image)
        x = pad_batch(images[:n], bench.device)
        fn = bench.loss_fn(n)
        start = clock()
        for _ in range(bench.steps):
            xr = x.clone().requires_grad_(True)
            torch.autograd.grad(fn(xr), xr)
        return (clock() - start) / n

    attack = build_attack("difgsm", None, steps=bench.steps)

    def attack_only(n):
        x = pad_batch(images[:n], bench.device)
        attack.loss_fn = bench.loss_fn(n)
        start = clock()
        attack(x)
        return (clock() - start) / n

    def whole(n, amp=False):  # what ikd attack does per batch (the same functions), without the file system
        start = clock()
        results = attack_batch(attack, bench.teacher, bench.prep, images[:n], bench.boxes[:n], bench.labels[:n],
                               device=bench.device, seed=0, record_loss=RECORD_LOSS, amp=amp)
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
    return variants


def time_variants(variants: dict, repeats: int) -> dict:
    """One warm-up call each, then ``repeats`` rounds of every variant in turn: the medians."""
    for fn, n in variants.values():  # warm-up
        fn(n)
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (fn, n) in variants.items():
            times[name].append(fn(n))
    return {name: statistics.median(v) for name, v in times.items()}


def print_results(args, batches: list, amp_batches: list, med: dict) -> None:
    import torch

    print(f"{args.device}, torch threads {torch.get_num_threads()}, steps {args.steps}, 160 px shapes images, "
          f"median of {args.repeats}")
    for name, value in med.items():
        print(f"  {name:15s} {1000 * value:8.1f} ms/img")
    for b in batches:
        print(f"attack / floor (b{b}):         {med[f'attack b{b}'] / med[f'floor b{b}']:.3f}")
        print(f"ikd attack / floor (b{b}):     {med[f'ikd attack b{b}'] / med[f'floor b{b}']:.3f}")
    for b in batches[1:]:
        print(f"throughput batch {b} / batch {batches[0]}: "
              f"{med[f'ikd attack b{batches[0]}'] / med[f'ikd attack b{b}']:.2f}x images/s")
    for b in batches if args.command_images else ():
        print(f"command / per-batch work (b{b}): {med[f'command b{b}'] / med[f'work b{b}']:.3f}  "
              f"({args.command_images} images, {args.workers} loader workers)")
    for b in amp_batches:
        if f"ikd attack b{b}" in med:
            print(f"--amp (bf16) / fp32 time (b{b}): {med[f'ikd attack b{b} amp'] / med[f'ikd attack b{b}']:.2f}")


def write_json(args, batches: list, amp_batches: list, med: dict) -> None:
    """--json: images/s per batch (fp32, bf16, the command's) and the peak GPU memory."""
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
    Path(args.json).write_text(json.dumps({
        "device": args.device,
        "img_per_s": {str(b): 1 / med[f"ikd attack b{b}"] for b in batches},
        "img_per_s_amp": {str(b): 1 / med[f"ikd attack b{b} amp"] for b in amp_batches},
        "command_img_per_s": {str(b): 1 / med[f"command b{b}"] for b in batches if args.command_images},
        "peak_gpu_gib": peak}, indent=1))


def command_variants(args, root, teacher, prep, batches, device, clock) -> dict:
    """Part 4: for each batch size, ``command bN`` (the command's batch loop, files and all) and
    ``work bN`` (its per-batch work on the same images, batches and seeds), seconds per image."""
    import shutil
    import tempfile

    from ikd_cli.attack.batch import attack_batch
    from ikd_cli.attack.run import AttackData, AttackRun, attack_dataset, attack_images, batch_seed, preset_attack
    from ikd_cli.attack.storage import encode_adversarial
    from ikd_cli.config import presets
    from ikd_cli.config.mmdet import build_config
    from ikd_cli.core.ui import console

    runs = {}
    for b in batches:
        preset = presets.load("shapes", {"data.root": str(root), "attack.batch_size": b, "attack.steps": args.steps})
        dataset = attack_dataset(build_config(preset, "teacher"), "train")
        runs[b] = AttackRun(preset, preset_attack(preset), teacher, prep, dataset, Path(), device,
                            workers=args.workers)
    indices = list(range(args.command_images))
    items = [AttackData(runs[batches[0]].dataset, indices)[i] for i in indices]
    scratch = Path(tempfile.mkdtemp(prefix="ikd-bench-command-"))

    def command(b):
        run = runs[b]
        run.out_dir = Path(tempfile.mkdtemp(dir=scratch))
        console.quiet = True  # no progress bar in the bench's output
        try:
            start = clock()
            attack_images(run, indices)
            seconds = clock() - start
        finally:
            console.quiet = False
        shutil.rmtree(run.out_dir)
        return seconds / len(indices)

    def work(b):
        run, fmt = runs[b], runs[b].preset["attack"]["format"]
        start = clock()
        for k in range(0, len(items), b):
            batch = items[k:k + b]
            results = attack_batch(run.attack, teacher, prep, [i["img"] for i in batch], [i["bboxes"] for i in batch],
                                   [i["labels"] for i in batch], device=device,
                                   seed=batch_seed(run.preset, batch[0]["index"]), record_loss=run.record_loss,
                                   amp=run.preset["attack"]["amp"])
            for item, result in zip(batch, results):
                encode_adversarial(item["img"], result.pixels, run.attack.eps, fmt)
        return (clock() - start) / len(items)

    variants = {}
    for b in batches:
        variants.update({f"work b{b}": (work, b), f"command b{b}": (command, b)})
    return variants


COCO_TRAIN_IMAGES = 118_287  # train2017


def coco_projection(args) -> None:
    """--coco: seconds per image of the command's per-batch work (attack, loss before/after,
    delta encoding) with the retinanet preset's teacher on the vendored COCO photos (the
    teacher resizes them to 1333 x 800 as in training), and train2017's hours from it. On a CPU
    one run of the first photo (minutes), on a GPU a warm-up and three rounds of all of them."""
    import torch
    from mmdet.models import build_detector

    from ikd_cli.attack.batch import attack_batch
    from ikd_cli.attack.run import RECORD_LOSS, AttackData, attack_dataset, batch_seed, preset_attack
    from ikd_cli.attack.storage import encode_adversarial
    from ikd_cli.attack.teacher_loss import Preprocess, prepare_teacher
    from ikd_cli.config import presets
    from ikd_cli.config.mmdet import build_config

    root = Path(__file__).resolve().parent.parent / "tests" / "data" / "coco"
    preset = presets.load("retinanet", {"data.root": str(root), "attack.steps": args.steps})
    cfg = build_config(preset, "teacher")
    teacher = prepare_teacher(build_detector(cfg.model)).to(args.device)
    prep, attack = Preprocess.from_config(cfg), preset_attack(preset)
    dataset = attack_dataset(cfg, "train")
    items = [AttackData(dataset, [i])[0] for i in range(len(dataset))]
    times = []
    items = items[:1] if args.device == "cpu" else items
    for item in items if args.device == "cpu" else [items[0]] + items * 3:
        start = time.perf_counter()
        result = attack_batch(attack, teacher, prep, [item["img"]], [item["bboxes"]], [item["labels"]],
                              device=args.device, seed=batch_seed(preset, item["index"]),
                              record_loss=RECORD_LOSS)[0]
        encode_adversarial(item["img"], result.pixels, attack.eps, "delta")
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times = times if args.device == "cpu" else times[1:]  # the GPU's first call pays for its warm-up
    per_image = statistics.median(times)
    hours = {n: COCO_TRAIN_IMAGES * per_image / n / 3600 for n in (1, 8)}
    sizes = ", ".join(f"{i['img'].shape[1]}x{i['img'].shape[0]}" for i in items)
    print(f"{args.device}, torch threads {torch.get_num_threads()}: retinanet preset teacher (X101-64x4d), "
          f"{args.steps} steps, batch 1, COCO photo(s) of {sizes}, median of {len(times)}")
    print(f"  per-batch work {per_image:.2f} s/img = {1 / per_image:.3f} img/s; train2017 ({COCO_TRAIN_IMAGES} "
          f"images): {hours[1]:.1f} h on 1 device, {hours[8]:.1f} h on 8")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "coco_s_per_img": per_image,
                                               "coco_img_per_s": 1 / per_image, "train2017_hours_1": hours[1],
                                               "train2017_hours_8": hours[8]}, indent=1))


if __name__ == "__main__":
    main()
