"""The data check: what is wrong with a preset's annotation files and images, found in seconds
before hours of compute (``ikd data check``, and before every long command).

It reads the annotation JSON and each image's HEADER only (size, EXIF orientation; no decoding),
so it stays fast on COCO. Problems are grouped, counted and shown with their first examples:

* errors, which would stop or silently empty a run: a missing or unparsable annotation file,
  missing or unreadable images, image file names that leave the image folder (``../val/x.png``,
  an absolute path: a copy made of such an image would be written outside its output folder),
  a box that is not four numbers or has no numeric area (MMDetection unpacks every box of an
  image, whatever its class, and stops with a traceback), no class of the preset among the
  file's categories, a split without any usable box;
* warnings, for what MMDetection drops without a word: boxes with no area, boxes wholly outside
  their image, unknown category ids, image sizes in the JSON that differ from the file, classes
  without any box.

A clean result is cached (keyed by the annotation file's path, size and time, the image folder
and the classes), so the check before a re-run costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import atomic_write_json, is_inside, parse_json

EXAMPLES = 3  # examples shown per problem
# The errors of single image files: a run can go on without those images (``--skip-bad``), and
# ``ikd data check`` lists every one of them.
BAD_IMAGES = ("missing images", "unreadable or truncated images")
CHECK_VERSION = 6  # bump when the checks change: cached results of older checks are ignored
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass
class Problem:
    severity: str  # "error" or "warning"
    what: str
    count: int = 0
    examples: list = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


@dataclass
class SplitReport:
    split: str
    ann_file: str
    images: int = 0
    boxes: int = 0
    classes: int = 0
    problems: list = field(default_factory=list)
    bad_images: dict = field(default_factory=dict)  # file name -> problem (BAD_IMAGES), every one

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error" and p.count]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning" and p.count]


class _Problems:
    """Problems by kind, created on first use, in a fixed order for the report."""

    def __init__(self):
        self.by_what: dict[str, Problem] = {}

    def __call__(self, severity: str, what: str) -> Problem:
        if what not in self.by_what:
            self.by_what[what] = Problem(severity, what)
        return self.by_what[what]

    def all(self) -> list[Problem]:
        return sorted(self.by_what.values(), key=lambda p: (p.severity != "error", p.what))


_ENDS = {"JPEG": (b"\xff\xd9", 1024), "PNG": (b"IEND", 16)}  # end marker, and how far from the end to look


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than Pillow decodes (a decompression bomb, or
    a real but huge scan): refused for its size, which is not the same as unreadable."""

    def __init__(self, width: int, height: int, limit: int):
        super().__init__(f"{width}x{height} px, over the {limit:,}-pixel limit")


def _open_image(path: Path):
    """``Image.open`` (header only); a size over Pillow's bomb limit raises ImageTooLarge with
    the declared size, read from the header again with the limit lifted (nothing is decoded)."""
    from PIL import Image

    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as im:
                width, height = im.size
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        raise ImageTooLarge(width, height, 2 * limit) from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as the image will be seen after EXIF rotation, from its header alone; a
    JPEG or PNG cut short (no end marker near its end) is refused like an unreadable one."""
    with _open_image(path) as im:
        marker = _ENDS.get(im.format)
        if marker is not None:
            with open(path, "rb") as fh:
                fh.seek(max(0, path.stat().st_size - marker[1]))
                if marker[0] not in fh.read():
                    raise ValueError(f"{im.format} file cut short")
        width, height = im.size
        # JPEG keeps EXIF in a header segment; other formats (PNG's eXIf chunk) would make Pillow
        # decode the whole image to look, and cameras write JPEG.
        orientation = im.getexif().get(0x0112, 1) if im.format == "JPEG" else 1
    return (height, width) if orientation in _ROTATED else (width, height)


def _load(ann_file: Path) -> dict:
    try:
        with open(ann_file, encoding="utf-8") as fh:
            data = parse_json(fh.read())
    except FileNotFoundError:
        raise IkdError(f"annotation file not found: {ann_file}") from None
    except json.JSONDecodeError as err:
        raise IkdError(f"annotation file {ann_file} is not valid JSON (line {err.lineno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise IkdError(f"cannot read annotation file {ann_file}: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise IkdError(f"annotation file {ann_file} is not COCO format "
                       "(needs lists 'images', 'annotations' and 'categories')")
    return data


def _objects(data: dict, key: str, problems: _Problems) -> list[dict]:
    """The entries of ``data[key]`` that are JSON objects; each other one is an error."""
    kept = []
    for i, entry in enumerate(data[key]):
        if isinstance(entry, dict):
            kept.append(entry)
        else:
            problems("error", f"entries of '{key}' that are not objects").add(f"{key}[{i}]: {_short(entry)}")
    return kept


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_split(split: str, ann_file: Path, image_dir: Path | None, classes) -> SplitReport:
    """Check one split. ``classes`` is the preset's class list (None: every category of the
    file is used). ``image_dir`` None skips the image files (annotations only)."""
    problems = _Problems()
    data = _load(ann_file)
    cats, used = _categories(data, ann_file, classes, problems)
    images, bad = _check_images(data, image_dir, problems)
    per_class = _usable_boxes(data, cats, used, images, problems)
    for cid, count in per_class.items():
        if count == 0:
            problems("warning", "classes without any box").add(str(cats[cid]))
    usable = sum(per_class.values())
    if usable == 0:
        problems("error", "no usable box in the split").add(str(ann_file))
    return SplitReport(split, str(ann_file), len(images), usable, len(used), problems.all(), bad)


def _categories(data: dict, ann_file: Path, classes, problems: _Problems) -> tuple[dict, set]:
    """(category id -> name, the ids of the preset's classes); a file with none of the preset's
    classes is an error, each class missing from it a warning."""
    cats = {c.get("id"): c.get("name") for c in data["categories"] if isinstance(c, dict)}
    names = list(cats.values())
    if classes is not None:
        unknown = [c for c in classes if c not in names]
        if len(unknown) == len(classes):
            raise IkdError(f"none of the preset's classes ({', '.join(map(str, classes[:6]))}) is a category of "
                           f"{ann_file} (its categories: {', '.join(map(str, names[:6]))}"
                           f"{', ...' if len(names) > 6 else ''}); set data.classes (or data.classes=auto)")
        for name in unknown:
            problems("warning", "preset classes that are no category of the file").add(name)
    return cats, {cid for cid, name in cats.items() if classes is None or name in classes}


def _check_images(data: dict, image_dir: Path | None, problems: _Problems) -> tuple[dict, dict]:
    """(image id -> entry, bad image file name -> its problem): ids used twice and file names that
    leave the image folder are errors; the files themselves are checked unless ``image_dir`` is None."""
    images, bad = {}, {}
    for info in _objects(data, "images", problems):
        if info.get("id") in images:  # COCO's index keeps the last entry of an id: one image lost
            problems("error", "image ids used by more than one image").add(
                f"image {info.get('id')}: {images[info.get('id')].get('file_name')!r} and {info.get('file_name')!r}")
            continue
        images[info.get("id")] = info
        name = str(info.get("file_name", ""))
        if name and not is_inside(name):
            # read from elsewhere, and every copy of it (adversarial, poisoned) written elsewhere
            problems("error", "image file names that leave the image folder").add(
                f"image {info.get('id')}: {info.get('file_name')!r}")
            continue
        if image_dir is not None:
            _check_image_file(info, Path(image_dir), problems, bad)
    return images, bad


def _check_image_file(info: dict, image_dir: Path, problems: _Problems, bad: dict) -> None:
    """One image's file: there, readable, not too large to decode, of the size its entry says."""
    path = image_dir / str(info.get("file_name", ""))
    if not path.is_file():
        problems("error", "missing images").add(str(info.get("file_name")))
        bad[str(info.get("file_name"))] = "missing"
        return
    try:
        size = image_size(path)
    except ImageTooLarge as err:
        problems("error", "images too large to decode").add(f"{info.get('file_name')}: {err}")
        return
    except Exception:  # PIL raises several types for a file that is no image
        problems("error", "unreadable or truncated images").add(str(info.get("file_name")))
        bad[str(info.get("file_name"))] = "unreadable or truncated"
        return
    if (info.get("width"), info.get("height")) != size:
        problems("warning", "image sizes in the JSON that differ from the file").add(
            f"{info.get('file_name')}: JSON {info.get('width')}x{info.get('height')}, file {size[0]}x{size[1]}")


def _usable_boxes(data: dict, cats: dict, used: set, images: dict, problems: _Problems) -> dict:
    """The usable boxes per category id of ``used``; each box MMDetection drops is a warning."""
    per_class = {cid: 0 for cid in used}
    for ann in _objects(data, "annotations", problems):
        if ann.get("ignore"):
            continue  # MMDetection passes over these before reading anything else
        malformed = _malformed(ann)
        if malformed is not None:
            problems("error", malformed[0]).add(malformed[1])
            continue
        cid = ann.get("category_id")
        if cid in cats and (cid not in used or ann.get("iscrowd", 0)):
            continue  # a class the preset leaves out, or a crowd region: no box to train on
        dropped = _why_dropped(ann, cats, images)
        if dropped is not None:
            problems("warning", dropped[0]).add(dropped[1])
        else:
            per_class[cid] += 1
    return per_class


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _malformed(ann: dict) -> tuple[str, str] | None:
    """(problem, example) for an annotation MMDetection cannot read: its ``bbox`` is unpacked
    into four numbers and its ``area`` compared with 0 for every box of an image, whatever the
    class ("1,2,3,4" or [1, 2] stops training with "too many values to unpack"); None if readable."""
    where = f"annotation {ann.get('id')} of image {ann.get('image_id')}"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return "boxes that are not [x, y, w, h] (four numbers)", f"{where}: {_short(bbox)}"
    if not _is_number(ann.get("area")):
        return "boxes without a numeric 'area'", f"{where}: area {_short(ann.get('area'))}"
    return None


def _why_dropped(ann: dict, cats: dict, images: dict) -> tuple[str, str] | None:
    """(problem, example) for a box MMDetection would drop without a word; None for a usable one."""
    where = f"annotation {ann.get('id')} of image {ann.get('image_id')}"
    cid = ann.get("category_id")
    if cid not in cats:
        return "boxes of unknown category ids (dropped)", f"{where}: category {cid}"
    x, y, w, h = (float(v) for v in ann["bbox"])  # four numbers: _malformed came first
    if not all(math.isfinite(v) for v in (x, y, w, h)):  # NaN passes every < and >= test below
        return "boxes with a NaN or infinite number (dropped)", f"{where}: {ann['bbox']}"
    info = images.get(ann.get("image_id"))
    if info is None:
        return "boxes of images not in the file (dropped)", where
    if w < 1 or h < 1:
        return "boxes with no area (width or height < 1 px, dropped)", f"{where}: {w:g}x{h:g}"
    width, height = info.get("width") or 0, info.get("height") or 0
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "boxes wholly outside their image (dropped)", f"{where}: {[x, y, w, h]}"
    return None


def _cache_file(ann_file: Path, image_dir, classes) -> Path:
    stat = ann_file.stat()
    # The image folder's time changes when a file is added, removed or renamed in it.
    images = [str(Path(image_dir).resolve()), Path(image_dir).stat().st_mtime_ns] if image_dir else None
    key = json.dumps([CHECK_VERSION, str(ann_file.resolve()), stat.st_size, stat.st_mtime_ns, images, classes])
    cache = Path(os.environ.get("IKD_CACHE", Path.home() / ".cache" / "ikd")) / "datacheck"
    return cache / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")


def check_split_cached(split: str, ann_file: Path, image_dir: Path | None, classes) -> SplitReport:
    """:func:`check_split`, skipped when the same files passed before with no error."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise IkdError(f"{split} annotation file not found: {ann_file}")
    cached = _cache_file(ann_file, image_dir, classes)
    if cached.is_file():
        try:
            raw = parse_json(cached.read_text())
            return SplitReport(**{**raw, "problems": [Problem(**p) for p in raw["problems"]]})
        except (ValueError, TypeError, KeyError):
            pass  # a stale or torn cache file: check again
    report = check_split(split, ann_file, image_dir, classes)
    if not report.errors:
        try:
            atomic_write_json(cached, asdict(report))
        except IkdError:
            pass  # a read-only home is no reason to stop
    return report


def check_preset(preset: dict, splits=("train", "val"), *, images: bool = True) -> list[SplitReport]:
    from ikd_cli.config.presets import data_path, preset_classes

    classes = preset_classes(preset)
    return [check_split_cached(split, data_path(preset, f"{split}_ann"),
                               data_path(preset, f"{split}_images") if images else None, classes)
            for split in splits]


def require_usable(reports: list[SplitReport], preset_name: str = "", *, skip_bad=False,
                   skip_hint: str = "") -> list[SplitReport]:
    """Stop with one line on the first error; return the reports (warnings are the caller's).
    Bad image files (:data:`BAD_IMAGES`) are counted together and named where all of them are
    listed; ``skip_bad`` (True, or a set of file names) lets those images through."""
    hint = f"; see `ikd data check {preset_name}`" if preset_name else ""
    for report in reports:
        for problem in report.errors:
            if problem.what in BAD_IMAGES:
                continue
            more = f" (+{problem.count - 1} more)" if problem.count > 1 else ""
            raise IkdError(f"data check: {report.split}: {problem.what}: {problem.examples[0]}{more}{hint}")
    for report in reports:
        bad = report.bad_images
        kinds = ", ".join(f"{p.what}: {p.count}" for p in report.errors if p.what in BAD_IMAGES)
        if bad and skip_bad and len(bad) >= report.images:
            # skipping them all would leave an attack of nothing (exit 0) and a training loop
            # over an empty split that never ends its first epoch
            raise IkdError(f"data check: {report.split}: none of its {report.images} images can be read ({kinds}): "
                           f"nothing is left to go on with, --skip-bad or not{hint}")
        if not bad or skip_bad is True or (skip_bad and set(bad) <= set(skip_bad)):
            continue
        shown = ", ".join(list(bad)[:EXAMPLES]) + (", ..." if len(bad) > EXAMPLES else "")
        where = (f"; all of them: `ikd data check {preset_name}`" if preset_name else "")
        raise IkdError(f"data check: {report.split}: {len(bad)} of {report.images} images cannot be read "
                       f"({kinds}): {shown}{where}{skip_hint}")
    return reports


def run_data_check(preset: dict, splits=("train", "val"), *, images: bool = True, skip_bad=False,
                   skip_hint: str = "") -> list[SplitReport]:
    """The check before a long command: stop on errors (one line), one line for warnings."""
    from rich.markup import escape

    from ikd_cli.core.ui import console

    from ikd_cli.core.invocation import preset_args

    reports = require_usable(check_preset(preset, splits, images=images), preset_args(preset), skip_bad=skip_bad,
                             skip_hint=skip_hint)
    for report in reports:
        if report.warnings:
            shown = escape("; ".join(f"{p.what}: {p.count}" for p in report.warnings[:3]))
            console.print(f"[yellow]data check[/] ({report.split}): {shown}; details: "
                          f"`{escape(f'ikd data check {preset_args(preset)}')}`", soft_wrap=True)
    return reports


def print_reports(reports: list[SplitReport]) -> None:
    """The full report of ``ikd data check``: counts, then every problem with its first examples."""
    from rich.markup import escape
    from rich.table import Table

    from ikd_cli.core.ui import console

    # names and problems are text, not markup: "[x, y, w, h]" or a file "a[1].png" stays as written
    counts = Table("split", "annotation file", "images", "usable boxes", "classes", title="data check")
    for r in reports:
        counts.add_row(escape(r.split), escape(r.ann_file), str(r.images), str(r.boxes), str(r.classes))
    console.print(counts)
    problems = Table("split", "", "problem", "count", "first examples")
    for r in reports:
        for p in r.errors + r.warnings:
            mark = "[bold red]error[/]" if p.severity == "error" else "[yellow]warning[/]"
            problems.add_row(escape(r.split), mark, escape(p.what), str(p.count), escape("\n".join(p.examples)))
    problems.columns[-1].overflow = "fold"  # a file name is worth more than a tidy table
    if problems.row_count:
        console.print(problems)
    for r in reports:  # every bad image, one per line (the table shows the first few)
        if r.bad_images:
            console.print(f"{len(r.bad_images)} bad images in {r.split} (`ikd attack --skip-bad` goes on without them):")
            for name, what in r.bad_images.items():
                console.print(f"  {escape(name)}  ({what})", soft_wrap=True, highlight=False)
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    verdict = ("[bold red]not usable[/]: fix the errors above" if errors else
               "[green]usable[/]" + (f", with {warnings} kind(s) of warning (MMDetection drops those boxes "
                                     "or images without a word)" if warnings else ", no problems found"))
    console.print(f"verdict: {verdict}")
