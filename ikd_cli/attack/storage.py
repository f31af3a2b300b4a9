"""How an adversarial copy is stored on disk: lossless PNG, or the compact ``delta`` format.

An attack changes each sub-pixel of the decoded source image (BGR uint8, as ``cv2.imread(path,
cv2.IMREAD_COLOR)`` and mmdet's ``LoadImageFromFile`` give it) by an integer in [-eps, eps]. A PNG
of the adversarial image spends most of its bytes re-encoding the photograph (about 3x the size of
the COCO JPEG it came from). The ``delta`` format stores only ``adv - clean`` and rebuilds the
adversarial image exactly from the source file plus the delta file:

* the perturbation is stored modulo 256 (``np.subtract`` on uint8), so the rebuild is one
  wrapping uint8 addition ``clean + delta``; it is exact for any eps, since every true value of
  ``adv`` lies in [0, 255];
* the bytes are laid out channel by channel (planar): each channel is one statistically
  homogeneous stream, which deflate codes a little better than interleaved BGR;
* the payload is zlib (stdlib, C speed both ways). The encoder tries Huffman-only coding (best on
  perturbations with no spatial structure) and level-6 ``Z_FILTERED`` (best when the perturbation
  has spatial structure) and keeps the smaller; both inflate with the same ``zlib.decompress``;
* the header records the sha256 of the source pixels the attack saw: a delta is only valid on
  exactly those pixels, and another JPEG decoder (libjpeg vs libjpeg-turbo vs Pillow, or a
  changed file) gives other pixels. ``decode_delta`` refuses such a source with one clear line
  rather than training on a silently wrong image. zlib's own checksum covers the payload, so a
  corrupt or truncated file is refused too.

Delta file layout (little-endian), version 1::

    b"IKDD"  u8 version  u8 codec  u8 ndim  u8 reserved  f64 eps  32 bytes sha256 of the source
    pixels (see pixel_digest)  u32 x ndim shape  zlib payload (channel-planar delta mod 256)

Only numpy, OpenCV and the standard library: this module is used by ``ikd attack``, by the
training data pipeline and by ``ikd evaluate --images``; none of them needs torch or mmcv here.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import struct
import zlib
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ikd_cli.config.layout import DELTA_SUFFIX, adversarial_name  # noqa: F401  (the names of the files read here)
from ikd_cli.config.presets import StorageFormat
from ikd_cli.core.errors import IkdError

FORMATS = tuple(f.value for f in StorageFormat)

MAGIC = b"IKDD"
VERSION = 1
_CODEC_ZLIB_PLANAR = 1
_HEADER = struct.Struct("<4sBBBBd32s")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (level, strategy) pairs the encoder tries; the smallest output is kept.
_ZLIB_TRIALS = ((9, zlib.Z_HUFFMAN_ONLY), (6, zlib.Z_FILTERED))


def pixel_digest(img: np.ndarray) -> str:
    """sha256 (hex) of an image's decoded pixels, its dtype and its shape.

    Recorded when an image is attacked, so that a later reader can tell whether it decodes the
    source to the very same pixels (a delta is only valid on those). sha256 rather than a CRC:
    about 0.5 ms for a 640x480 BGR image with SHA extensions, and no doubt about collisions.
    """
    img = np.ascontiguousarray(img)
    head = f"{img.dtype.str}{img.shape}".encode()
    return hashlib.sha256(head + memoryview(img).cast("B")).hexdigest()


def encode_delta(clean: np.ndarray, adv: np.ndarray, eps: float, *, name: str = "") -> bytes:
    """The delta file that rebuilds ``adv`` from ``clean`` (both uint8, same shape).

    Raises IkdError if the shapes or dtypes differ or if a sub-pixel of ``adv`` differs from
    ``clean`` by more than ``eps``: such an image is not the output of an attack with that
    budget, and storing it would hide the bug.
    """
    label = f"adversarial image {name}" if name else "adversarial image"
    if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps >= 0):
        raise IkdError(f"{label}: eps must be a finite number >= 0, got {eps!r}")
    clean, adv = np.asarray(clean), np.asarray(adv)
    if clean.dtype != np.uint8 or adv.dtype != np.uint8:
        raise IkdError(f"{label}: images must be uint8, got {clean.dtype} (source) and {adv.dtype}")
    if clean.shape != adv.shape:
        raise IkdError(f"{label} is {_shape_text(adv.shape)} but its source is {_shape_text(clean.shape)}")
    if clean.ndim not in (2, 3) or clean.size == 0:
        raise IkdError(f"{label}: expected an H x W or H x W x C image, got shape {clean.shape}")
    linf = int(np.abs(adv.astype(np.int16) - clean.astype(np.int16)).max())
    if linf > eps:
        raise IkdError(f"{label} differs from its source by {linf} > eps {eps:g}")
    wrapped = np.subtract(adv, clean)  # uint8, modulo 256: the int8 two's complement of the delta
    planar = np.ascontiguousarray(np.moveaxis(wrapped, -1, 0) if wrapped.ndim == 3 else wrapped)
    payload = min((_deflate(planar, level, strategy) for level, strategy in _ZLIB_TRIALS), key=len)
    header = _HEADER.pack(MAGIC, VERSION, _CODEC_ZLIB_PLANAR, clean.ndim, 0, float(eps),
                          bytes.fromhex(pixel_digest(clean)))
    return header + struct.pack(f"<{clean.ndim}I", *clean.shape) + payload


def decode_delta(data: bytes, clean: np.ndarray, *, name: str = "") -> np.ndarray:
    """The adversarial image (uint8, the shape of ``clean``), bit-for-bit as it was encoded.

    ``clean`` is the decoded source image. Raises IkdError, in one line naming ``name``, if
    ``data`` is not a delta file, was written by a newer format, is corrupt or truncated, or
    belongs to other source pixels than ``clean`` (shape or sha256 differ).
    """
    label = f"adversarial image {name}" if name else "adversarial image"
    fail = f"{label} cannot be rebuilt"
    data = memoryview(data).cast("B")
    if len(data) < _HEADER.size or bytes(data[:4]) != MAGIC:
        raise IkdError(f"{fail}: not an ikd delta file (bad header)")
    magic, version, codec, ndim, _, eps, digest = _HEADER.unpack_from(data)
    if version != VERSION or codec != _CODEC_ZLIB_PLANAR:
        raise IkdError(f"{fail}: delta format version {version}/codec {codec} is not known to this ikd "
                       f"(it reads version {VERSION}); upgrade ikd")
    dims_end = _HEADER.size + 4 * ndim
    if ndim not in (2, 3) or len(data) < dims_end:
        raise IkdError(f"{fail}: the delta file is corrupt or truncated (header)")
    shape = struct.unpack_from(f"<{ndim}I", data, _HEADER.size)
    clean = np.asarray(clean)
    if clean.dtype != np.uint8:
        raise IkdError(f"{fail}: its source image must be decoded as uint8, got {clean.dtype} "
                       "(load images without to_float32)")
    if tuple(clean.shape) != shape:
        raise IkdError(f"{fail}: it was made from a {_shape_text(shape)} image, but its source is now "
                       f"{_shape_text(clean.shape)} (another decoder flag or a changed file?)")
    if bytes.fromhex(pixel_digest(clean)) != digest:
        raise IkdError(f"{fail}: its source pixels differ from those attacked "
                       "(another JPEG decoder or a changed file?)")
    inflate = zlib.decompressobj()
    try:
        # Never more than the image's own size: a small file that inflates to gigabytes (a
        # "zip bomb") stops after clean.size bytes, with its stream unfinished.
        raw = inflate.decompress(data[dims_end:], clean.size)
    except zlib.error:  # bad deflate data or checksum
        raw = None
    if raw is not None and len(raw) == clean.size and inflate.unconsumed_tail:
        raise IkdError(f"{fail}: the delta file holds more than its {_shape_text(shape)} image "
                       "(corrupt, or made to exhaust memory)")
    if raw is None or not inflate.eof or inflate.unused_data or len(raw) != clean.size:
        raise IkdError(f"{fail}: the delta file is corrupt or truncated")
    if ndim == 3:
        planes = np.frombuffer(raw, np.uint8).reshape(shape[2], shape[0], shape[1])
        # cv2.merge interleaves the planes about 20x faster than a strided numpy transpose.
        delta = cv2.merge(list(planes)).reshape(shape) if shape[2] > 1 else planes.reshape(shape)
    else:
        delta = np.frombuffer(raw, np.uint8).reshape(shape)
    return np.add(clean, delta)  # uint8 + uint8 wraps modulo 256: exact, see the module docstring


def encode_adversarial(clean: np.ndarray, adv: np.ndarray, eps: float, fmt: str, *, name: str = "") -> bytes:
    """The file content of one adversarial image in format ``fmt``."""
    _check_format(fmt)
    return encode_delta(clean, adv, eps, name=name) if fmt == "delta" else encode_png(adv)


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG at compression level 1, as ``ikd attack`` has always written it (fast to encode)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(pixels), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise IkdError("PNG encoding failed")
    return buf.tobytes()


def read_adversarial(path: Path, clean: Optional[np.ndarray], *, fmt: str, eps: Optional[float] = None) -> np.ndarray:
    """Read one adversarial image of either format, checked against its source: the one check
    every reader goes through (the training pipeline, ``ikd evaluate --images``, the export).

    ``delta`` needs ``clean``, the decoded source image (in the training pipeline: the
    ``results['img']`` that ``LoadImageFromFile`` made). A ``png`` must be a PNG whose declared
    size (read before decoding) is its source's, where ``clean`` is given. ``eps``: the set's
    budget, which no pixel may exceed. Every problem is an IkdError naming ``path``.
    """
    _check_format(fmt)
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IkdError(f"adversarial image missing: {path}; run `ikd attack` for this dataset first") from None
    except OSError as err:
        raise IkdError(f"cannot read adversarial image {path}: {err.strerror or err}") from None
    if fmt == "delta":
        if clean is None:
            raise IkdError(f"adversarial image {path} is a delta file: it needs its decoded source image")
        adv = decode_delta(data, clean, name=str(path))
    else:
        adv = _decode_png(path, data, clean)
    if eps is not None and clean is not None:
        linf = int(np.abs(adv.astype(np.int16) - np.asarray(clean).astype(np.int16)).max(initial=0))
        if linf > eps:
            raise IkdError(f"adversarial image {path} differs from its source by {linf} > eps {eps:g}, the set's budget")
    return adv


def _decode_png(path: Path, data: bytes, clean: Optional[np.ndarray]) -> np.ndarray:
    # Only a PNG is decoded, and only at its source's size as its header declares it: another
    # format under a .png name (a WebP of 10 KB) or a tiny file declaring 60000 x 60000 pixels
    # would otherwise be decoded into gigabytes before any check.
    if len(data) < 24 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise IkdError(f"adversarial image {path} is not a readable image: not a PNG file (its first bytes say otherwise)")
    width, height = struct.unpack(">II", data[16:24])
    if clean is not None and (height, width) != tuple(np.shape(clean)[:2]):
        raise IkdError(f"adversarial image {path} is {height} x {width} but its source is "
                       f"{_shape_text(np.shape(clean)[:2])}")
    flag = cv2.IMREAD_UNCHANGED if clean is not None and np.ndim(clean) == 2 else cv2.IMREAD_COLOR
    adv = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if adv is None:
        raise IkdError(f"adversarial image {path} is not a readable image")
    if clean is not None and adv.shape != np.shape(clean):
        raise IkdError(f"adversarial image {path} is {_shape_text(adv.shape)} but its source is "
                       f"{_shape_text(np.shape(clean))}")
    return adv


def find_adversarial(adv_dir: Path, relative: str | Path) -> tuple[Path, str]:
    """The adversarial copy of ``relative`` in ``adv_dir`` and its format (delta first), or a
    one-line error saying which command makes it."""
    for fmt in FORMATS:
        path = Path(adv_dir) / adversarial_name(relative, fmt)
        if path.is_file():
            return path, fmt
    raise IkdError(f"adversarial image missing: {Path(adv_dir) / adversarial_name(relative)}; "
                   "run `ikd attack` for this dataset first")


def _deflate(planar: np.ndarray, level: int, strategy: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    return comp.compress(memoryview(planar).cast("B")) + comp.flush()


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise IkdError(f"unknown adversarial image format '{fmt}'; choose one of {', '.join(FORMATS)}")


def _shape_text(shape) -> str:
    return " x ".join(str(int(s)) for s in shape)
