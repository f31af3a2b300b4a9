"""The built-in synthetic "shapes" detection dataset, written in COCO format.

Every image shows 1-8 filled shapes (circle, square, triangle, cross) on a varied background
(solid colour, gradient, smooth noise or faint stripes). The size mix is chosen so that IKD's
small-object rules matter: most objects are under 32x32 px, some are large (up to ~70% of the
image side, so COCO's "large" bucket is not empty at 160 px), and 30% of the images contain only
small objects.

Layout written by :func:`generate_shapes`::

    out_dir/shapes.json                     manifest: generation parameters (written last)
    out_dir/annotations/instances_train.json
    out_dir/annotations/instances_val.json
    out_dir/train/000000.png ...            file_name in the json is relative to train/
    out_dir/val/000000.png ...

Guarantees:

* Deterministic: the same parameters give byte-identical files. Each image has its own random
  generator derived from (seed, split, index), so the train and val splits are independent and
  changing ``num_train`` does not change the val images.
* Tight boxes: a box is the extent of the pixels its shape actually shows in the image. A
  placement that would hide an edge of an earlier shape (or most of it) is rejected, so every
  box touches visible pixels of its own shape on all four sides.
* Safe to interrupt: images and json files are written to a temporary name and renamed, the
  manifest comes last, and a rerun with the same parameters picks up where it stopped.

This module prints nothing; callers pass ``progress`` to show progress.
"""

from __future__ import annotations

import colorsys
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from ikd_cli.config.presets import SHAPES_DEFAULTS
from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write, atomic_write_json, ensure_writable_dir, read_json
from ikd_cli.core.invocation import set_options
from ikd_cli.core.lock import holding

CLASSES: Tuple[str, ...] = ("circle", "square", "triangle", "cross")

#: COCO's "small object" rule, shared with the rest of ikd: box area below 32x32 pixels.
SMALL_AREA = 32 * 32

#: Bump when the drawing changes, so an old folder is not mistaken for a current one.
GENERATOR_VERSION = 1

MANIFEST_NAME = "shapes.json"
# Written when a generation starts and removed when it ends: tells a rerun that the images
# already in the folder were made with these parameters, so they can be kept (resume).
PARTIAL_NAME = ".shapes-partial.json"

# The split's position here is mixed into each image's seed, which keeps the splits independent.
SPLITS = ("train", "val")

MIN_SIDE, MAX_SIDE = 64, 4096
MAX_OBJECTS = 8
MAX_BOX_IOU = 0.3        # a new shape may overlap earlier ones only this much (box IoU)
MIN_VISIBLE = 0.6        # every shape keeps at least this share of its pixels visible
TRUNCATE_PROB = 0.15     # share of placements allowed to run over the image border

ImageSize = Union[int, Sequence[int]]
Progress = Callable[[int, int], None]


# ------------------------------------------------------------------------------ public helpers
@dataclass(frozen=True)
class ShapesLayout:
    """Where a generated shapes set lives (all absolute or as given by the caller)."""

    root: Path
    train_ann: Path
    train_images: Path
    val_ann: Path
    val_images: Path
    manifest: Path

    @classmethod
    def at(cls, root: Union[str, os.PathLike]) -> "ShapesLayout":
        root = Path(root)
        return cls(root=root,
                   train_ann=root / "annotations" / "instances_train.json",
                   train_images=root / "train",
                   val_ann=root / "annotations" / "instances_val.json",
                   val_images=root / "val",
                   manifest=root / MANIFEST_NAME)


def is_all_small(bboxes_xywh, thresh: float = SMALL_AREA) -> bool:
    """True when there is at least one box and every box's area (w*h) is below ``thresh``.

    ``bboxes_xywh`` is anything shaped (N, 4) in COCO ``[x, y, w, h]`` order (list, array, CPU
    tensor). An image with no boxes is not "all small": there is nothing small in it.
    """
    boxes = np.asarray(bboxes_xywh, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return False
    return bool(np.all(boxes[:, 2] * boxes[:, 3] < thresh))


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one image; depends only on (seed, split, index)."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def planned_all_small(index: int) -> bool:
    """Whether image ``index`` of a split gets only small objects: exactly 3 in every 10.

    A fixed pattern rather than a coin flip, so that even a 10-image val split has the intended
    share (training shuffles the images, so the pattern itself does not matter).
    """
    return (index + 1) * 3 // 10 != index * 3 // 10


# ------------------------------------------------------------------------------------ drawing
@dataclass
class ShapeObject:
    """One drawn shape, in COCO terms."""

    category_id: int                      # 1..len(CLASSES)
    bbox: Tuple[float, float, float, float]  # x, y, w, h: tight around the visible pixels
    polygon: List[float]                  # flat [x1, y1, x2, y2, ...], clipped to the image
    area: float                           # box area w*h (see render_image)


@dataclass
class RenderedImage:
    image: np.ndarray        # H x W x 3 uint8, what is saved
    background: np.ndarray   # the same image before any shape was drawn
    objects: List[ShapeObject]


@dataclass
class _Placed:
    """A shape accepted on the canvas (internal bookkeeping for the occlusion checks)."""

    box: Tuple[int, int, int, int]   # x0, y0, x1, y1 of its pixels, inclusive
    pixels: int                      # how many pixels it covered when drawn
    polygon: List[Tuple[float, float]]
    category: int


def _hsv_colour(rng: np.random.Generator, s: Tuple[float, float], v: Tuple[float, float]) -> np.ndarray:
    # colorsys is pure Python, so the colour is the same on every machine.
    r, g, b = colorsys.hsv_to_rgb(float(rng.random()), float(rng.uniform(*s)), float(rng.uniform(*v)))
    return np.array([r * 255.0, g * 255.0, b * 255.0])


def _stripes(xs: np.ndarray, ys: np.ndarray, period: float, angle: float) -> np.ndarray:
    """0/1 stripes of the given period (px) across the grid, at ``angle`` radians."""
    proj = xs * math.cos(angle) + ys * math.sin(angle)
    return (np.floor(proj / period).astype(np.int64) % 2).astype(bool)


def _background(rng: np.random.Generator, h: int, w: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A float H x W x 3 background: solid, gradient, smooth noise or faint stripes, plus grain."""
    kind = rng.choice(4, p=[0.25, 0.3, 0.3, 0.15])
    base = _hsv_colour(rng, (0.0, 0.6), (0.15, 0.95))
    if kind == 0:    # solid colour
        bg = np.broadcast_to(base, (h, w, 3)).astype(np.float64)
    elif kind == 1:  # linear gradient between two colours, any direction
        other = _hsv_colour(rng, (0.0, 0.7), (0.1, 1.0))
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-9)
        bg = base + (other - base) * t[..., None]
    elif kind == 2:  # smooth noise: a coarse random grid scaled up bilinearly
        cells = int(rng.integers(3, 13))
        coarse = np.clip(base + rng.normal(0.0, 45.0, (cells, cells, 3)), 0, 255).astype(np.uint8)
        bg = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.float64)
    else:            # faint stripes: texture clutter that is not an object
        other = np.clip(base + rng.normal(0.0, 30.0, 3), 0, 255)
        mask = _stripes(xs, ys, float(rng.uniform(5.0, 20.0)), float(rng.uniform(0.0, math.pi)))
        bg = np.where(mask[..., None], other, base)
    grain = float(rng.uniform(0.0, 8.0))
    return bg + rng.normal(0.0, grain, (h, w, 3))


def _unit_polygon(rng: np.random.Generator, category: int, size: float) -> List[Tuple[float, float]]:
    """The outline of one shape centred on the origin, before scaling; random aspect and turn."""
    name = CLASSES[category]
    if name == "circle":
        aspect = float(rng.uniform(0.85, 1.15))
        n = 16 if size < 16 else 24 if size < 48 else 32  # enough vertices to look round
        pts = [(math.cos(2 * math.pi * k / n), aspect * math.sin(2 * math.pi * k / n)) for k in range(n)]
        turn = float(rng.uniform(0.0, math.pi))
    elif name == "square":
        a = float(rng.uniform(0.85, 1.15))
        pts = [(-1.0, -a), (1.0, -a), (1.0, a), (-1.0, a)]
        turn = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.0, math.pi / 2))
    elif name == "triangle":
        # Roughly equilateral, with jitter so that not all triangles look alike.
        pts = []
        for k in range(3):
            ang = math.radians(90.0 + 120.0 * k + float(rng.uniform(-15.0, 15.0)))
            rad = float(rng.uniform(0.85, 1.15))
            pts.append((rad * math.cos(ang), rad * math.sin(ang)))
        turn = float(rng.uniform(0.0, 2.0 * math.pi))
    else:  # cross: a plus sign with arms of random thickness
        t = float(rng.uniform(0.22, 0.38))
        pts = [(t, 1.0), (t, t), (1.0, t), (1.0, -t), (t, -t), (t, -1.0),
               (-t, -1.0), (-t, -t), (-1.0, -t), (-1.0, t), (-t, t), (-t, 1.0)]
        turn = 0.0 if rng.random() < 0.4 else float(rng.uniform(0.0, math.pi / 2))
    c, s = math.cos(turn), math.sin(turn)
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


def _clip_polygon(pts: List[Tuple[float, float]], xmax: float, ymax: float) -> List[Tuple[float, float]]:
    """Clip a polygon to the rectangle [0, xmax] x [0, ymax] (Sutherland-Hodgman)."""

    def clip(points, inside, cross):
        out = []
        for i, cur in enumerate(points):
            prev = points[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
        return out

    def at_x(x0):
        return lambda p, q: (x0, p[1] + (q[1] - p[1]) * (x0 - p[0]) / (q[0] - p[0]))

    def at_y(y0):
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y0 - p[1]) / (q[1] - p[1]), y0)

    for inside, cross in ((lambda p: p[0] >= 0.0, at_x(0.0)), (lambda p: p[0] <= xmax, at_x(xmax)),
                          (lambda p: p[1] >= 0.0, at_y(0.0)), (lambda p: p[1] <= ymax, at_y(ymax))):
        pts = clip(pts, inside, cross)
        if not pts:
            break
    return pts


def _polygon_area(pts: Sequence[Tuple[float, float]]) -> float:
    """Shoelace formula."""
    twice = sum(pts[i - 1][0] * p[1] - p[0] * pts[i - 1][1] for i, p in enumerate(pts))
    return abs(twice) / 2.0


def _mask_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Inclusive pixel extent (x0, y0, x1, y1) of a boolean mask, or None when it is empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _box_iou(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def _box_area(box: Tuple[int, int, int, int]) -> int:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def _plan_sizes(rng: np.random.Generator, side: int, all_small: bool) -> List[Tuple[float, bool]]:
    """(size, small?) per object, largest first so that small shapes are drawn on top.

    ``size`` is the square root of the shape's box area. "small" shapes end with a box area
    under SMALL_AREA and the others at or above it (checked again on the drawn pixels).
    """
    big_top = 0.7 * side
    ranges = {"small": (6.0, 28.0),
              "medium": (36.0, max(36.0, min(64.0, big_top))),
              "large": (max(36.0, min(64.0, big_top)), max(36.0, big_top))}
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    if all_small:
        kinds = ["small"] * n
    else:
        # At least one object that is not small, or the image would be all-small by chance.
        kinds = ["medium" if rng.random() < 0.65 else "large"]
        kinds += [str(rng.choice(["small", "medium", "large"], p=[0.6, 0.28, 0.12])) for _ in range(n - 1)]
    plan = [(float(rng.uniform(*ranges[k])), k == "small") for k in kinds]
    return sorted(plan, key=lambda item: -item[0])


def _try_place(rng: np.random.Generator, size: float, small: bool, h: int, w: int,
               owner: np.ndarray, placed: List[_Placed]) -> Optional[Tuple[_Placed, np.ndarray]]:
    """One random placement of a shape of ``size``; None when it breaks a rule."""
    category = int(rng.integers(len(CLASSES)))
    pts = _unit_polygon(rng, category, size)
    xs0, ys0 = [p[0] for p in pts], [p[1] for p in pts]
    ux, uy = max(xs0) - min(xs0), max(ys0) - min(ys0)
    # Scale so that the box area is size**2, but never wider than the image.
    scale = min(size / math.sqrt(ux * uy), (min(h, w) - 2) / max(ux, uy))
    bw, bh = ux * scale, uy * scale
    if rng.random() < TRUNCATE_PROB:   # may run over the border (at most ~35% of the shape)
        left = float(rng.uniform(-0.35 * bw, w - 1 - 0.65 * bw))
        top = float(rng.uniform(-0.35 * bh, h - 1 - 0.65 * bh))
    else:
        left = float(rng.uniform(0.0, w - 1 - bw))
        top = float(rng.uniform(0.0, h - 1 - bh))
    x_off, y_off = left - min(xs0) * scale, top - min(ys0) * scale
    # Rounded to 0.01 px: short json, and tiny float differences between machines cannot
    # change which pixels are drawn.
    full = [(round(x * scale + x_off, 2), round(y * scale + y_off, 2)) for x, y in pts]
    poly = [(round(x, 2), round(y, 2)) for x, y in _clip_polygon(full, w - 1.0, h - 1.0)]
    if len(poly) < 3 or _polygon_area(poly) < MIN_VISIBLE * _polygon_area(full):
        return None

    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(poly, fill=1)
    mask = np.asarray(canvas, dtype=bool)
    box = _mask_box(mask)
    if box is None or (_box_area(box) < SMALL_AREA) != small:
        return None
    if any(_box_iou(box, p.box) > MAX_BOX_IOU for p in placed):
        return None
    # The new shape is drawn on top: each earlier shape it touches must keep its full box
    # (so its annotation stays tight) and most of its pixels.
    for idx, other in enumerate(placed, start=1):
        if _box_iou(box, other.box) == 0.0:
            continue
        visible = (owner == idx) & ~mask
        if _mask_box(visible) != other.box or visible.sum() < MIN_VISIBLE * other.pixels:
            return None
    return _Placed(box=box, pixels=int(mask.sum()), polygon=poly, category=category), mask


def _pick_colour(rng: np.random.Generator, avoid: Sequence[np.ndarray], tries: int = 8) -> np.ndarray:
    """A saturated colour far from every colour in ``avoid`` (best of a few random tries)."""
    best, best_dist = None, -1.0
    for _ in range(tries):
        colour = _hsv_colour(rng, (0.35, 1.0), (0.3, 1.0))
        dist = min(float(np.linalg.norm(colour - a)) for a in avoid)
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def render_image(rng: np.random.Generator, height: int, width: int, all_small: bool) -> RenderedImage:
    """Draw one image and its annotations from ``rng`` alone (same rng state, same result)."""
    h, w = height, width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    bg = np.clip(np.rint(_background(rng, h, w, xs, ys)), 0, 255).astype(np.uint8)
    img = bg.copy()
    owner = np.zeros((h, w), dtype=np.int16)   # which shape (1-based) shows at each pixel
    placed: List[_Placed] = []

    for size, small in _plan_sizes(rng, min(h, w), all_small):
        # The first shape goes on an empty canvas, so it always fits after a few tries; later
        # ones are simply skipped when the image is too crowded.
        attempts = 200 if not placed else 40
        for _ in range(attempts):
            got = _try_place(rng, size, small, h, w, owner, placed)
            if got is not None:
                break
        else:
            if not placed:
                raise RuntimeError("shapes: could not place the first object")  # a bug, not user error
            continue
        obj, mask = got
        placed.append(obj)
        owner[mask] = len(placed)

        # Colour far from the background under the shape; sometimes a two-colour texture.
        x0, y0, x1, y1 = obj.box
        local = bg[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3).mean(axis=0)
        colour = _pick_colour(rng, [local])
        texture = rng.random()
        if texture < 0.7:
            fill = colour
        else:
            second = _pick_colour(rng, [local, colour])
            period = float(rng.uniform(2.0, 7.0))
            if texture < 0.9:
                pattern = _stripes(xs, ys, period, float(rng.uniform(0.0, math.pi)))
            else:  # checkerboard
                pattern = ((np.floor(xs / period) + np.floor(ys / period)) % 2).astype(bool)
            fill = np.where(pattern[mask][:, None], second, colour)
        img[mask] = np.clip(np.rint(fill), 0, 255).astype(np.uint8)

    objects = []
    for idx, obj in enumerate(placed, start=1):
        # Boxes come from the pixels finally visible; the occlusion checks make them equal to
        # the drawn boxes, but measuring again keeps the annotation honest by construction.
        x0, y0, x1, y1 = _mask_box(owner == idx)
        objects.append(ShapeObject(
            category_id=obj.category + 1,
            bbox=(float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)),
            polygon=[c for pt in obj.polygon for c in pt],
            # COCO would use the polygon's area; the box area keeps the COCO small/medium/large
            # buckets of the evaluation identical to the box rule of is_all_small.
            area=float((x1 - x0 + 1) * (y1 - y0 + 1))))
    return RenderedImage(image=img, background=bg, objects=objects)


# ---------------------------------------------------------------------------------- generation
def _image_hw(image_size: ImageSize) -> Tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        hw = (int(image_size), int(image_size))
    elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size)):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise IkdError(f"shapes image_size must be an integer or a (height, width) pair, not {image_size!r}")
    if not all(MIN_SIDE <= v <= MAX_SIDE for v in hw):
        raise IkdError(f"shapes image_size must be between {MIN_SIDE} and {MAX_SIDE} pixels, not {image_size!r}")
    return hw


def _manifest(seed: int, num_train: int, num_val: int, hw: Tuple[int, int]) -> Dict:
    return {"generator": "ikd-shapes", "version": GENERATOR_VERSION, "seed": seed,
            "num_train": num_train, "num_val": num_val, "image_size": [hw[0], hw[1]],
            "classes": list(CLASSES)}


def _describe_difference(old: Dict, new: Dict) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} {old.get(k)!r} (asked {new[k]!r})" for k in keys) or "unknown format"


def _matching_sets(old: Dict, new: Dict) -> str:
    """The ``--set data.shapes.<key>=<value>`` options that ask for the set ``old`` describes."""
    keys = [k for k in new if old.get(k) != new[k]]
    sets = {f"data.shapes.{k}": old[k][0] if k == "image_size" else old[k] for k in keys
            if k in ("seed", "num_train", "num_val", "image_size") and k in old}
    return f"`{set_options(sets)}`" if len(sets) == len(keys) else "no --set makes it (another generator version)"


def _coco_skeleton(split: str, seed: int) -> Dict:
    return {
        "info": {"description": f"ikd synthetic shapes, {split} split", "version": str(GENERATOR_VERSION),
                 "seed": seed},
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)],
    }


def _write_png(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as fh:
        # zlib level 3: a third faster than the default 6 for ~10% bigger files (the grain
        # noise barely compresses anyway).
        Image.fromarray(array).save(fh, format="PNG", compress_level=3)


_OWN_FILE = re.compile(r"^(\d{6,})\.png$")
_OWN_TMP = re.compile(r"^\.\d{6,}\.png\..*\.tmp$")


def _remove_stale(folder: Path, count: int) -> None:
    """Delete numbered images beyond ``count`` and temp files a killed run left behind."""
    for name in os.listdir(folder):
        own = _OWN_FILE.match(name)
        if (own and int(own.group(1)) >= count) or _OWN_TMP.match(name):
            try:
                os.unlink(folder / name)
            except OSError:
                pass


def _generate_split(split: str, folder: Path, count: int, seed: int, hw: Tuple[int, int],
                    keep_existing: bool, tick: Callable[[], None]) -> Dict:
    """Draw and save one split's images; return its COCO dict."""
    ensure_writable_dir(folder, "shapes image folder")
    coco = _coco_skeleton(split, seed)
    ann_id = 0
    for index in range(count):
        file_name = f"{index:06d}.png"
        rendered = render_image(image_rng(seed, split, index), hw[0], hw[1], planned_all_small(index))
        path = folder / file_name
        # Resuming: an image already there came from the same parameters (the partial marker
        # says so) and was renamed into place whole, so it is identical to what we would write.
        if not (keep_existing and path.is_file()):
            _write_png(path, rendered.image)
        image_id = index + 1
        coco["images"].append({"id": image_id, "file_name": file_name, "height": hw[0], "width": hw[1]})
        for obj in rendered.objects:
            ann_id += 1
            coco["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": obj.category_id,
                "bbox": list(obj.bbox), "area": obj.area, "iscrowd": 0,
                "segmentation": [obj.polygon]})
        tick()
    _remove_stale(folder, count)
    return coco


def _read_if_present(path: Path, what: str) -> Optional[Dict]:
    if not path.is_file():
        return None
    data = read_json(path, what)
    return data if isinstance(data, dict) else {}


def _checked_counts(seed, num_train, num_val) -> tuple[int, int, int]:
    """The seed (>= 0) and the two split sizes (>= 1) as ints; anything else, bools too, is an error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise IkdError(f"shapes seed must be a non-negative integer, not {seed!r}")
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise IkdError(f"shapes {name} must be a positive integer, not {value!r}")
    return int(seed), int(num_train), int(num_val)


def _keep_existing(layout: ShapesLayout, wanted: dict) -> Optional[bool]:
    """What the folder holds decides: None when it is the complete set already (nothing to do),
    True when its images can be kept, False to draw every image; an error for anything that
    is not a set of these parameters made by ikd."""
    existing = _read_if_present(layout.manifest, "shapes manifest")
    if existing is not None:
        if existing != wanted:
            raise IkdError(
                f"{layout.root} already holds a shapes dataset made with other settings "
                f"({_describe_difference(existing, wanted)}); to use it: {_matching_sets(existing, wanted)}; "
                "or use another --out, or delete that folder")
        if layout.train_ann.is_file() and layout.val_ann.is_file():
            return None
        return True  # our own set with an annotation file gone: redo, keeping images
    partial = _read_if_present(layout.root / PARTIAL_NAME, "shapes progress marker")
    if partial is None and (layout.train_ann.exists() or layout.val_ann.exists()):
        raise IkdError(f"{layout.root} already holds annotations that ikd did not generate; "
                       "use another --out or delete that folder")
    # Images from an interrupted run can be kept only if it used the same parameters.
    return partial == wanted


def generate_shapes(out_dir: Union[str, os.PathLike], *, seed: int = SHAPES_DEFAULTS["seed"],
                    num_train: int = SHAPES_DEFAULTS["num_train"], num_val: int = SHAPES_DEFAULTS["num_val"],
                    image_size: ImageSize = SHAPES_DEFAULTS["image_size"],
                    progress: Optional[Progress] = None) -> ShapesLayout:
    """Write the shapes dataset into ``out_dir`` and return where its parts are.

    Returns at once when ``out_dir`` already holds a complete set made with the same
    parameters. Raises :class:`IkdError` when it holds one made with other parameters, holds
    annotations that ikd did not make, or cannot be written. ``progress(done, total)`` is
    called after each image.
    """
    seed, num_train, num_val = _checked_counts(seed, num_train, num_val)
    hw = _image_hw(image_size)
    wanted = _manifest(seed, num_train, num_val, hw)

    layout = ShapesLayout.at(ensure_writable_dir(out_dir, "shapes output folder"))
    # one writer per folder, as for every other: two seeds at once would interleave their images
    with holding(layout.root, "shapes data"):
        keep_existing = _keep_existing(layout, wanted)
        if keep_existing is not None:
            _write_set(layout, wanted, keep_existing, progress)
    return layout


def _write_set(layout: ShapesLayout, wanted: dict, keep_existing: bool, progress: Optional[Progress]) -> None:
    """The images, then the annotations, then the manifest (a folder with one is complete)."""
    seed, num_train, num_val = wanted["seed"], wanted["num_train"], wanted["num_val"]
    hw = tuple(wanted["image_size"])
    partial_path = layout.root / PARTIAL_NAME
    atomic_write_json(partial_path, wanted)
    total, done = num_train + num_val, 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    train = _generate_split("train", layout.train_images, num_train, seed, hw, keep_existing, tick)
    val = _generate_split("val", layout.val_images, num_val, seed, hw, keep_existing, tick)
    # Annotations, then the manifest: a folder with a manifest is always complete.
    atomic_write_json(layout.train_ann, train)
    atomic_write_json(layout.val_ann, val)
    atomic_write_json(layout.manifest, wanted)
    try:
        os.unlink(partial_path)
    except OSError:
        pass
