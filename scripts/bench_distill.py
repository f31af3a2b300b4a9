"""Benchmark of one training iteration (forward, backward, SGD step) on the same batch, as ratios
measured in one run (interleaved, median kept):

  student   plain student training (what `ikd train --model student` does per iteration)
  fgd       the distiller with FGD only (stage 2, or --dfa-until 0)
  ikd       the distiller in stage 1: FGD + adversarial feature loss on the adversarial image
  adv       the extra passes stage 1 adds: teacher forward (no grad) + student forward/backward
            on the adversarial image
  mgd, cwd, pkd   (--methods) the distiller with that method instead of FGD (stage 2): each
            distiller's cost against the student alone

Target: ikd <= (fgd + adv) * 1.10. Usage: .venv/bin/python scripts/bench_distill.py [--repeats 5]
[--device cuda] [--amp] [--methods mgd,cwd,pkd] [--json OUT.json]. --amp also times fgd and ikd with the forward passes
under bf16 autocast (interleaved with fp32; `ikd distill --amp` on a GPU is mmcv's fp16 with loss
scaling instead, not timed here); --json writes iterations/s and peak GPU memory for
scripts/gpu_check.sh's summary.
"""

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="also time fgd and ikd under bf16 autocast")
    parser.add_argument("--json", help="write iterations/s and peak GPU memory here")
    parser.add_argument("--methods", default="", help="also time these distillers' stage-2 iteration (mgd,cwd,pkd)")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also time a stage-1 iteration with distill.diagnostics measuring (ikd diag)")
    return parser.parse_args()


def main():
    args = parse_args()
    import torch

    torch.manual_seed(0)
    model, data = distiller_and_batch(args.batch, args.device)
    variants = iteration_variants(model, data, args.device, args.amp, args.diagnostics)
    for method in filter(None, args.methods.split(",")):
        torch.manual_seed(0)
        other, _ = distiller_and_batch(args.batch, args.device, method)
        variants[method] = stage2_variant(other, data, args.device)
    med = time_variants(variants, args.repeats)
    print_results(args, med)
    if args.json:
        write_json(args, med)


def distiller_and_batch(batch_size: int, device: str, method: str = "fgd"):
    """The shapes preset's distiller with ``method`` (random weights) in training mode on
    ``device``, and one collated batch of ``batch_size`` images with their adversarial copies
    (``adv_img``)."""
    from mmcv.parallel import collate, scatter_kwargs
    from mmdet.datasets import build_dataset
    from mmdet.models import build_detector

    import ikd_cli.distill.distiller  # noqa: F401
    import ikd_cli.distill.pipelines  # noqa: F401
    from ikd_cli.config import presets
    from ikd_cli.data.shapes import generate_shapes
    from ikd_cli.distill.config import build_distill_config

    root = Path(f"/tmp/ikd-bench-shapes-distill-{batch_size}")  # one folder per size: the generator refuses another
    layout = generate_shapes(root, seed=2, num_train=batch_size, num_val=1, image_size=160)
    adv = root / "adv"  # timing does not depend on the pixels: a copy stands in for the attack
    adv.mkdir(exist_ok=True)
    for png in layout.train_images.glob("*.png"):
        shutil.copy(png, adv / png.name)
    tree = presets.load("shapes", {"data.root": str(root), "attack.out": str(adv), "distill.corruption_prob": 0.0,
                                   "distill.method": method})
    cfg = build_distill_config(tree)
    cfg.model.teacher_checkpoint = None
    model = build_detector(cfg.model)
    model.init_weights()
    model.to(device).train()
    dataset = build_dataset(cfg.data.train_dfa)
    batch = collate([dataset[i] for i in range(batch_size)], samples_per_gpu=batch_size)
    (data,), _ = scatter_kwargs((batch,), {}, [0 if device == "cuda" else -1])
    return model, data[0] if isinstance(data, (list, tuple)) else data


def clock(device: str) -> float:
    """Seconds; GPU work is asynchronous: wait for it before reading the clock."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def stepper(model, device: str):
    """``iteration(fn, amp=False)``: one training step of ``model`` (losses from ``fn``, backward,
    SGD) and its seconds."""
    import torch

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def iteration(fn, amp=False):
        start = clock(device)
        optimizer.zero_grad()
        autocast = torch.autocast(device_type=device, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with autocast:
            losses = fn()
        loss, _ = model._parse_losses(losses)
        loss.backward()
        optimizer.step()
        return clock(device) - start
    return iteration


def stage2_variant(model, data: dict, device: str):
    """A stage-2 iteration of another distiller (its own model and optimiser, the same batch)."""
    iteration = stepper(model, device)

    def run():
        model.dfa = False
        return iteration(lambda: model.forward_train(**data))
    return run


def iteration_variants(model, data: dict, device: str, amp: bool, diagnostics: bool = False) -> dict:
    """name -> a function that runs one iteration of that kind and returns its seconds."""
    import torch

    plain = {k: v for k, v in data.items() if k != "adv_img"}
    student = model.student
    iteration = stepper(model, device)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def run_student():
        return iteration(lambda: student.forward_train(**plain))

    def run_fgd(amp=False):
        model.dfa = False
        return iteration(lambda: model.forward_train(**data), amp)

    def run_ikd(amp=False):
        model.dfa = True
        return iteration(lambda: model.forward_train(**data), amp)

    def run_adv():
        start = clock(device)
        optimizer.zero_grad()
        with torch.no_grad():
            model.teacher.extract_feat(data["adv_img"])
        feats = student.extract_feat(data["adv_img"])
        sum(f.float().pow(2).mean() for f in feats).backward()
        optimizer.step()
        return clock(device) - start

    variants = {"student": run_student, "fgd": run_fgd, "ikd": run_ikd, "adv": run_adv}
    if amp:
        variants.update({"fgd amp": lambda: run_fgd(amp=True), "ikd amp": lambda: run_ikd(amp=True)})
    if diagnostics:
        variants["ikd diag"] = lambda: diagnosed(model, run_ikd)
    return variants


def time_variants(variants: dict, repeats: int) -> dict:
    """One warm-up call each, then ``repeats`` rounds of every variant in turn: the medians."""
    for fn in variants.values():
        fn()
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


def print_results(args, med: dict) -> None:
    import torch

    print(f"{args.device}, torch threads {torch.get_num_threads()}, batch {args.batch} x 160 px, shapes preset, "
          f"median of {args.repeats}")
    for name, value in med.items():
        print(f"  {name:8s} {1000 * value:8.1f} ms/iteration")
    print(f"fgd / student:           {med['fgd'] / med['student']:.2f}")
    print(f"ikd / student:           {med['ikd'] / med['student']:.2f}")
    print(f"ikd / (fgd + adv):       {med['ikd'] / (med['fgd'] + med['adv']):.3f}   (target <= 1.10)")
    for method in filter(None, args.methods.split(",")):
        print(f"{method} / student:           {med[method] / med['student']:.2f}")
    if args.amp:
        print(f"bf16 / fp32 time:        fgd {med['fgd amp'] / med['fgd']:.2f}, ikd {med['ikd amp'] / med['ikd']:.2f}")
    if args.diagnostics:
        from ikd_cli.config import presets

        print(diagnostics_cost(med, presets.load("shapes")["train"]["log_interval"]))


def write_json(args, med: dict) -> None:
    """--json: iterations/s of each variant and the peak GPU memory."""
    import torch

    Path(args.json).write_text(json.dumps({
        "device": args.device, "batch": args.batch,
        "it_per_s": {name: 1 / value for name, value in med.items()},
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None}, indent=1))


def diagnosed(model, run_ikd):
    """One stage-1 iteration with the diagnostics measuring, as DiagnosticsHook sets it for a
    logged iteration (three autograd.grad calls through the kept graph, the teacher distance)."""
    model.diagnose = True
    try:
        return run_ikd()
    finally:
        model.diagnose = False


def diagnostics_cost(med: dict, log_interval: int) -> str:
    """What distill.diagnostics costs: per measured iteration (ikd diag / ikd), and over stage 1,
    where only every log_interval-th iteration measures: (diag + (k - 1) ikd) / (k ikd)."""
    per_step = med["ikd diag"] / med["ikd"]
    amortised = (med["ikd diag"] + (log_interval - 1) * med["ikd"]) / (log_interval * med["ikd"])
    return (f"ikd diag / ikd:          {per_step:.3f}   (a measured iteration)\n"
            f"stage 1 with diagnostics: {amortised:.3f}   (one measured iteration in train.log_interval = {log_interval})")


if __name__ == "__main__":
    main()
