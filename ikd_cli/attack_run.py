"""``ikd attack``: adversarial copies of a split's images against the teacher.

Output folder layout (one per teacher, settings and split):
    attack.json          the settings and the teacher checkpoint's sha256 (written first)
    records-<rank>.jsonl one line per finished image (loss before/after, L-inf, seconds) or failure
    summary.json         totals, written when a run finishes
    <relative path>.png  the adversarial image, lossless, same relative path as the source image
A re-run with the same settings skips images that have a record and a file; each image file is
renamed into place before its record is appended, so Ctrl-C leaves only complete files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import IkdError
from .fileio import atomic_write_bytes, atomic_write_json, ensure_writable_dir, read_json, sha256_of
from .ui import console, progress_bar, quiet_to_log

SETTINGS_FILE = "attack.json"
# Attack options that change the pixels: a folder made with other values is another attack.
SETTING_KEYS = ("method", "eps", "alpha", "steps", "decay", "resize_rate", "diversity_prob", "random_start",
                "kernel_len", "nsig", "beta", "n")


def output_dir(preset: dict, split: str) -> Path:
    """``attack.out`` with its ``{method}``/``{eps}``/``{steps}`` fields filled; val gets ``_val``."""
    a = preset["attack"]
    try:
        out = a["out"].format(**a) if a["out"] else f"data/{preset['name']}_adv_{a['method']}_{a['eps']:g}_{a['steps']}"
    except (KeyError, ValueError) as err:
        raise IkdError(f"attack.out '{a['out']}' has an unknown field: {err}") from None
    return Path(out + ("_val" if split == "val" else ""))


def adversarial_name(relative: str | Path) -> Path:
    """Where the adversarial copy of an image lies, relative to the output folder."""
    return Path(relative).with_suffix(".png")


def read_records(out_dir: Path) -> tuple[dict, dict]:
    """(done, failed): image -> record, from every rank's records file. A torn last line (a
    process killed mid-write) is ignored: that image is simply attacked again."""
    done, failed = {}, {}
    for path in sorted(out_dir.glob("records-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            (failed if "error" in rec else done)[rec["image"]] = rec
    done = {k: v for k, v in done.items() if (out_dir / v["out"]).is_file()}
    for key in done:
        failed.pop(key, None)
    return done, failed


def check_settings(out_dir: Path, settings: dict, overwrite: bool) -> None:
    path = out_dir / SETTINGS_FILE
    if path.exists() and not overwrite:
        old = read_json(path, "attack settings")
        diff = [k for k in settings if old.get(k) != settings[k]]
        if diff:
            shown = ", ".join(f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in diff[:3])
            raise IkdError(f"{out_dir} holds an attack with other settings ({shown}); "
                           "choose another --out or pass --overwrite")
        return
    if overwrite:
        for rec in out_dir.glob("records-*.jsonl"):
            rec.unlink()
    atomic_write_json(path, settings)


class _AttackData:
    """Original images (as read, BGR uint8) and their gt boxes, one item per dataset index.
    Unreadable images come back as failures instead of stopping the run."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        import numpy as np

        index = self.indices[i]
        info = self.dataset.data_infos[index]
        try:
            results = self.dataset.prepare_train_img(index) if not self.dataset.test_mode else None
        except IkdError as err:
            return dict(index=index, name=info["filename"], error=str(err))
        if results is None:
            return dict(index=index, name=info["filename"], error="no usable annotations")
        return dict(index=index, name=info["filename"], img=np.ascontiguousarray(results["img"]),
                    bboxes=results["gt_bboxes"], labels=results["gt_labels"])


def _attack_dataset(cfg, split: str):
    """The split as a CocoDataset that only loads images and boxes (no resize: attack at the
    original resolution)."""
    from .engine import build_dataset_checked
    from .mmdet_config import base_dataset

    ds = base_dataset(cfg.data.train if split == "train" else cfg.data.val).copy()
    ds.pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True)]
    ds.test_mode = False
    ds.filter_empty_gt = True
    return build_dataset_checked(ds, f"{split}")


def load_teacher(cfg, checkpoint: Path, device: str):
    from . import compat
    from .checkpoints import build_detector_with_weights, read_checkpoint
    from .teacher_loss import prepare_teacher

    compat.apply()

    model = build_detector_with_weights(cfg, read_checkpoint(checkpoint)["state_dict"], str(checkpoint))
    return prepare_teacher(model).to(device)


def _collate(items):
    return items


def run_attack(preset: dict, *, split: str = "train", limit: int | None = None, device: str | None = None,
               launcher: str = "none", overwrite: bool = False, checkpoint: Path | None = None,
               out: Path | None = None, workers: int = 2, record_loss: bool = True,
               verbose: bool = False) -> dict:
    import numpy as np
    import torch

    from .attacks import build_attack, to_uint8
    from .checkpoints import teacher_checkpoint
    from .launch import init_distributed, pick_device
    from .mmdet_config import build_config
    from .teacher_loss import Preprocess, TeacherClassificationLoss

    opts = preset["attack"]
    if not 0 < opts["eps"] <= 255:
        raise IkdError(f"--eps must be in (0, 255] pixel units, got {opts['eps']:g}")
    if opts["steps"] < 1 or opts["alpha"] <= 0 or opts["batch_size"] < 1:
        raise IkdError("--steps, --alpha and --batch-size must be positive")
    device = pick_device(device)
    distributed, rank, world = init_distributed(launcher, device)
    cfg = build_config(preset, "teacher")
    ckpt_path = teacher_checkpoint(preset, checkpoint)
    out_dir = ensure_writable_dir(out or output_dir(preset, split), "attack output folder")
    settings = {k: opts[k] for k in SETTING_KEYS}
    settings.update(teacher_config=preset["teacher"]["config"], teacher_sha256=sha256_of(ckpt_path),
                    split=split, format="png")
    log_file = out_dir / f"attack-{rank}.log"
    with quiet_to_log(log_file, verbose=verbose):
        if rank == 0:
            check_settings(out_dir, settings, overwrite)
        if distributed:
            torch.distributed.barrier()  # settings checked (the folder cleared on --overwrite) first
        dataset = _attack_dataset(cfg, split)
        done, _ = read_records(out_dir)
        if distributed:
            # Every rank must shard the same to-do list: none may write a record before all have read.
            torch.distributed.barrier()
        names = [info["filename"] for info in dataset.data_infos]
        todo_all = list(range(len(names)))[: limit if limit else None]
        todo = [i for i in todo_all if names[i] not in done]
        mine = todo[rank::world]
        teacher = load_teacher(cfg, ckpt_path, device)
        prep = Preprocess.from_config(cfg)
        attack = build_attack(opts["method"], None, **{k: opts[k] for k in SETTING_KEYS if k != "method"})
        loader = torch.utils.data.DataLoader(_AttackData(dataset, mine), batch_size=opts["batch_size"],
                                             num_workers=workers, collate_fn=_collate)
        records = out_dir / f"records-{rank}.jsonl"
        failures = []
        show = rank == 0
        already = len(todo_all) - len(todo)
        if show and already:
            console.print(f"resuming: {already} of {len(todo_all)} images already done in {out_dir}")
        with progress_bar(disable=not show) as progress, open(records, "a", encoding="utf-8") as rec_file:
            task = progress.add_task(f"attack {opts['method']}", total=len(todo) if show else 0,
                                     completed=0, info="", unit="img")
            for batch in loader:
                for item in [b for b in batch if "error" in b]:
                    failures.append((item["name"], item["error"]))
                    rec_file.write(json.dumps({"image": item["name"], "error": item["error"]}) + "\n")
                batch = [b for b in batch if "error" not in b]
                if not batch:
                    continue
                start = time.perf_counter()
                torch.manual_seed(settings_seed(preset, batch[0]["index"]))
                x0 = _pad_batch([b["img"] for b in batch], device)
                loss_fn = TeacherClassificationLoss(
                    teacher, prep, [b["img"].shape[:2] for b in batch],
                    [torch.as_tensor(b["bboxes"]) for b in batch],
                    [torch.as_tensor(b["labels"], dtype=torch.long) for b in batch])
                attack.loss_fn = loss_fn
                # The loss before/after costs two extra forward passes (about a quarter of a
                # 5-step attack); --no-record-loss skips it on very large sets.
                before = after = None
                if record_loss:
                    with torch.no_grad():
                        before = float(loss_fn(x0))
                x_adv = to_uint8(attack(x0), x0, opts["eps"])
                if record_loss:
                    with torch.no_grad():
                        after = float(loss_fn(x_adv.float()))
                seconds = (time.perf_counter() - start) / len(batch)
                adv = x_adv.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                for i, item in enumerate(batch):
                    h, w = item["img"].shape[:2]
                    pixels = np.ascontiguousarray(adv[i, :h, :w])
                    linf = int(np.abs(pixels.astype(np.int16) - item["img"].astype(np.int16)).max())
                    rel = adversarial_name(item["name"])
                    atomic_write_bytes(out_dir / rel, _encode_png(pixels))
                    rec_file.write(json.dumps({"image": item["name"], "out": str(rel), "loss_before": before,
                                               "loss_after": after, "linf": linf,
                                               "seconds": round(seconds, 4)}) + "\n")
                rec_file.flush()
                progress.update(task, advance=len(batch) * world if show else 0,
                                info=f"loss {before:.3f} -> {after:.3f}" if record_loss else "")
        if distributed:
            torch.distributed.barrier()
    summary = {}
    if rank == 0:
        summary = _summarise(out_dir, names, todo_all, settings)
        _report(summary, out_dir)
    if distributed:
        torch.distributed.barrier()
    if summary.get("failed"):
        shown = ", ".join(summary["failed_images"][:5])
        raise IkdError(f"{summary['failed']} image(s) could not be read and were skipped: {shown}")
    return summary


def settings_seed(preset: dict, index: int) -> int:
    """Random draws (random start, input diversity) depend only on the seed and the first image
    of the batch, so the same batches give the same pixels however the work is sharded."""
    return int(preset["train"]["seed"]) * 1_000_003 + index


def _pad_batch(images, device):
    import torch

    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    x = torch.zeros(len(images), 3, h, w, device=device)
    for i, im in enumerate(images):
        x[i, :, : im.shape[0], : im.shape[1]] = torch.from_numpy(im).to(device).permute(2, 0, 1).float()
    return x


def _encode_png(pixels) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise IkdError("PNG encoding failed")
    return buf.tobytes()


def _summarise(out_dir: Path, names, todo_all, settings) -> dict:
    done, failed = read_records(out_dir)
    wanted = {names[i] for i in todo_all}
    got = [done[n] for n in wanted if n in done]
    measured = [r for r in got if r.get("loss_before") is not None]
    summary = dict(
        settings=settings, images=len(wanted), attacked=len(got), failed=len([n for n in wanted if n in failed]),
        failed_images=sorted(n for n in wanted if n in failed),
        linf_max=max((r["linf"] for r in got), default=0),
        loss_before_mean=sum(r["loss_before"] for r in measured) / len(measured) if measured else None,
        loss_after_mean=sum(r["loss_after"] for r in measured) / len(measured) if measured else None,
        seconds_per_image=sum(r["seconds"] for r in got) / max(len(got), 1),
    )
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _report(summary: dict, out_dir: Path) -> None:
    from rich.table import Table

    s = summary["settings"]
    table = Table("images", "attacked", "failed", "max L-inf", "cls loss clean", "cls loss adv", "s/img",
                  title=f"{s['method']} eps {s['eps']:g} alpha {s['alpha']:g} steps {s['steps']} -> {out_dir}")
    table.add_row(str(summary["images"]), str(summary["attacked"]), str(summary["failed"]),
                  f"{summary['linf_max']}", _fmt(summary["loss_before_mean"]), _fmt(summary["loss_after_mean"]),
                  f"{summary['seconds_per_image']:.3f}")
    console.print(table)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def verify_adversarial_set(out_dir: Path, image_dir: Path, names, eps: float) -> list[str]:
    """Problems with an adversarial set: missing files, wrong sizes, pixels over the budget."""
    import cv2
    import numpy as np

    problems = []
    for name in names:
        adv_path = out_dir / adversarial_name(name)
        if not adv_path.is_file():
            problems.append(f"missing {adv_path}")
            continue
        adv = cv2.imread(str(adv_path), cv2.IMREAD_COLOR)
        src = cv2.imread(str(image_dir / name), cv2.IMREAD_COLOR)
        if adv is None or src is None or adv.shape != src.shape:
            problems.append(f"unreadable or wrong size: {adv_path}")
        elif np.abs(adv.astype(np.int16) - src.astype(np.int16)).max() > eps:
            problems.append(f"over budget: {adv_path}")
    return problems
