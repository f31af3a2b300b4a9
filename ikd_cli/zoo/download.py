"""Download model-zoo checkpoints, resumably, and verify them before they get their final name.

The OpenMMLab zoo names every checkpoint ``<config>_<date>-<8 hex>.pth``, where the 8 hex digits
are the start of the file's sha256. We check that prefix after every download and before reusing
a file already on disk, so a truncated or corrupted checkpoint never reaches training.

A transfer is written to ``<filename>.part`` and renamed into place only once it verifies; an
interrupted transfer keeps the ``.part`` and the next run asks the server for the rest with an
HTTP ``Range`` header. Only the standard library (urllib) is used. Nothing here prints: callers
pass ``progress(done_bytes, total_bytes_or_None)`` to drive a progress bar.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Optional

from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import ensure_writable_dir, sha256_of

ProgressFn = Callable[[int, Optional[int]], None]

_ZOO = "https://download.openmmlab.com/mmdetection/v2.0"
_PREFIX_RE = re.compile(r"-([0-9a-f]{8})\.pth$")
_MB = 1024 * 1024


@dataclass(frozen=True)
class Checkpoint:
    name: str
    url: str
    filename: str
    sha256_prefix: Optional[str]  # None: the file name carries no hash, so nothing is verified
    description: str = ""

    @property
    def verifiable(self) -> bool:
        return self.sha256_prefix is not None


def sha256_prefix_from_name(filename: str) -> Optional[str]:
    """The 8-hex sha256 prefix in an OpenMMLab checkpoint name (``..._20200130-366f5af1.pth``)."""
    match = _PREFIX_RE.search(filename)
    return match.group(1) if match else None


def plain_file_name(name: str, url: str) -> str:
    """``name`` if it is a plain base name, else an error. The name comes from the server's URL
    and is joined to the download folder: a segment that decodes to ``../x.pth``, an absolute
    path, a backslash or a NUL would write (unverified, for a name without a hash) outside it."""
    plain = (name not in ("", ".", "..") and "/" not in name and "\\" not in name
             and all(ch.isprintable() for ch in name))
    if not plain:
        raise IkdError(f"{url} names the file {name!r}, which is not a plain file name; "
                       "download it by hand and pass its path")
    return name


def _filename_from_url(url: str) -> str:
    # The zoo percent-encodes '+' in some names (gn-neck%2Bhead); store the decoded name on disk.
    return urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])


def _from_url(url: str, name: Optional[str] = None, description: str = "") -> Checkpoint:
    filename = _filename_from_url(url)
    return Checkpoint(
        name=name or filename.rsplit(".", 1)[0],
        url=url,
        filename=filename,
        sha256_prefix=sha256_prefix_from_name(filename),
        description=description,
    )


# URLs copied from mmdet 2.28's own metafiles (configs/<family>/metafile.yml, `Weights:`).
_ENTRIES = [
    ("retinanet_x101_64x4d_fpn_1x_coco",
     f"{_ZOO}/retinanet/retinanet_x101_64x4d_fpn_1x_coco/"
     "retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth",
     "teacher: RetinaNet X-101-64x4d FPN 1x (box AP 41.0)"),
    ("reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck+head_2x_coco",
     f"{_ZOO}/reppoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco/"
     "reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco_20200329-f87da1ea.pth",
     "teacher: RepPoints (moment) X-101 DCN GN 2x (box AP 44.2)"),
    ("cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco",
     f"{_ZOO}/dcn/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco/"
     "cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth",
     "teacher: Cascade Mask R-CNN X-101-32x4d DCN 1x (box AP 47.3, mask AP 41.1)"),
    ("retinanet_r50_fpn_2x_coco",
     f"{_ZOO}/retinanet/retinanet_r50_fpn_2x_coco/"
     "retinanet_r50_fpn_2x_coco_20200131-fdb43119.pth",
     "student baseline: RetinaNet R-50 FPN 2x (box AP 37.4)"),
    ("reppoints_moment_r50_fpn_gn-neck+head_2x_coco",
     f"{_ZOO}/reppoints/reppoints_moment_r50_fpn_gn-neck%2Bhead_2x_coco/"
     "reppoints_moment_r50_fpn_gn-neck%2Bhead_2x_coco_20200329-91babaa2.pth",
     "student baseline: RepPoints (moment) R-50 GN 2x (box AP 38.6)"),
    ("mask_rcnn_r50_fpn_2x_coco",
     f"{_ZOO}/mask_rcnn/mask_rcnn_r50_fpn_2x_coco/"
     "mask_rcnn_r50_fpn_2x_coco_bbox_mAP-0.392__segm_mAP-0.354_20200505_003907-3e542a40.pth",
     "student baseline: Mask R-CNN R-50 FPN 2x (box AP 39.2, mask AP 35.4)"),
]

CHECKPOINTS: dict[str, Checkpoint] = {
    name: _from_url(url, name, desc) for name, url, desc in _ENTRIES
}


def resolve(name_or_url: str) -> Checkpoint:
    """A registry name, or an http(s) URL (verified only if its file name carries a hash)."""
    if name_or_url in CHECKPOINTS:
        return CHECKPOINTS[name_or_url]
    scheme = urllib.parse.urlparse(name_or_url).scheme.lower()
    if scheme in ("http", "https"):
        ckpt = _from_url(name_or_url, description="from URL")
        if not ckpt.filename:
            raise IkdError(f"cannot tell the file name from URL {name_or_url}; it must end in /<file>.pth")
        plain_file_name(ckpt.filename, name_or_url)
        return ckpt
    close = difflib.get_close_matches(name_or_url, list(CHECKPOINTS), n=3, cutoff=0.4)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    raise IkdError(
        f"unknown checkpoint {name_or_url!r}; {hint}"
        "run `ikd download --list` for the known names, or pass an http(s) URL"
    )


def _reason(err: BaseException) -> str:
    """A short human reason for a network or disk failure ('connection refused', 'timed out')."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        if not isinstance(err.reason, BaseException):
            return str(err.reason)
        err = err.reason  # the socket error underneath
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


def _parse_total(resp, start: int) -> tuple[int, Optional[int]]:
    """For a 200/206 answer: (offset the body starts at, total file size or None)."""
    length = resp.headers.get("Content-Length")
    if resp.status == 206:
        # Content-Range: bytes <first>-<last>/<total or *>
        m = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if m:
            total = None if m.group(3) == "*" else int(m.group(3))
            return int(m.group(1)), total
        return start, (start + int(length)) if length and length.isdigit() else None
    return 0, int(length) if length and length.isdigit() else None


def _verify_and_place(ckpt: Checkpoint, part: Path, final: Path) -> Path:
    if ckpt.sha256_prefix is not None:
        got = sha256_of(part)
        if not got.startswith(ckpt.sha256_prefix):
            part.unlink(missing_ok=True)
            raise IkdError(
                f"checksum mismatch for {ckpt.filename}: expected prefix {ckpt.sha256_prefix}, "
                f"got {got[:8]}; the partial file was removed, run again"
            )
    os.replace(part, final)
    return final


def download(
    ckpt: Checkpoint,
    dest_dir: str | os.PathLike,
    *,
    force: bool = False,
    progress: Optional[ProgressFn] = None,
    timeout: float = 30.0,
    chunk: int = 1 << 16,
) -> Path:
    """Fetch ``ckpt`` into ``dest_dir`` (resuming a ``.part`` if present) and return its path.

    An existing file that verifies is returned without touching the network. One that does not
    verify is an error unless ``force``; with ``force`` it is kept until a fresh, verified
    download replaces it, so the user never ends up with no file at all.
    """
    plain_file_name(ckpt.filename, ckpt.url)  # also for a Checkpoint not made by resolve()
    dest = ensure_writable_dir(dest_dir, "checkpoint folder")
    final = dest / ckpt.filename
    part = dest / (ckpt.filename + ".part")

    if final.exists() and not force:
        if ckpt.sha256_prefix is None:
            return final  # nothing to check it against; trust what the user put there
        got = sha256_of(final)
        if got.startswith(ckpt.sha256_prefix):
            return final
        raise IkdError(
            f"{final} exists but its sha256 starts with {got[:8]}, not {ckpt.sha256_prefix}; "
            "remove it, or re-download with --force"
        )

    host = urllib.parse.urlparse(ckpt.url).hostname or ckpt.url
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(ckpt.url, headers={"User-Agent": "ikd-download"})
    if start:
        request.add_header("Range", f"bytes={start}-")

    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and start:
            # Nothing left to send: the .part is already whole (or longer than the file).
            # Verification decides; a bad .part is removed and the next run starts over.
            return _verify_and_place(ckpt, part, final)
        raise IkdError(f"download failed: HTTP {err.code} {err.reason} for {ckpt.url}") from None
    except (urllib.error.URLError, OSError, HTTPException) as err:
        raise IkdError(
            f"cannot reach {host} ({_reason(err)}); download {ckpt.url} by hand "
            f"and put it at {final}, then run again"
        ) from None

    with resp:
        offset, total = _parse_total(resp, start)
        if resp.status == 206 and offset != start:
            # Never splice bytes at the wrong place; drop the .part and let the next run restart.
            part.unlink(missing_ok=True)
            raise IkdError(
                f"server sent bytes from {offset} instead of {start} for {ckpt.url}; "
                "the partial file was removed, run again"
            )
        if resp.status != 206:
            start = 0  # the server ignored Range and sends the whole file: overwrite the .part
        done = start
        try:
            out = open(part, "ab" if start else "wb")
        except OSError as err:
            raise IkdError(f"cannot write {part}: {_reason(err)}") from None
        try:
            with out:
                if progress:
                    progress(done, total)
                while True:
                    try:
                        block = resp.read(chunk)
                    except (OSError, HTTPException) as err:  # reset, timeout, bad chunking
                        raise IkdError(_interrupted(done, ckpt, _reason(err))) from None
                    if not block:
                        break
                    try:
                        out.write(block)
                    except OSError as err:  # disk full, quota: resuming later still works
                        raise IkdError(f"cannot write {part}: {_reason(err)}") from None
                    done += len(block)
                    if progress:
                        progress(done, total)
        except KeyboardInterrupt:
            # The bytes written so far stay in the .part (the file is closed and flushed above).
            raise IkdError(_interrupted(done, ckpt, "stopped by Ctrl-C"), exit_code=130) from None

    # urllib returns b"" rather than raising when the connection closes early: check the size.
    if total is not None and done < total:
        raise IkdError(_interrupted(done, ckpt, f"connection closed at {done} of {total} bytes"))
    return _verify_and_place(ckpt, part, final)


def _interrupted(done: int, ckpt: Checkpoint, why: str) -> str:
    return (
        f"download of {ckpt.filename} was interrupted after {done / _MB:.1f} MB ({why}); "
        "run the same command again to resume"
    )
