"""Fetch a :class:`~ikd_cli.zoo.registry.Checkpoint` over HTTP, resumably, and verify it before it
gets its final name.

A transfer is written to ``<filename>.part`` and renamed into place only once its sha256 starts
with the prefix its name carries; an interrupted transfer keeps the ``.part`` and the next run
asks the server for the rest with an HTTP ``Range`` header. Only the standard library (urllib)
is used. Nothing here prints: callers pass ``progress(done_bytes, total_bytes_or_None)`` to drive
a progress bar.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Optional

from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import ensure_writable_dir, sha256_of
from ikd_cli.zoo.registry import Checkpoint, plain_file_name

ProgressFn = Callable[[int, Optional[int]], None]

_MB = 1024 * 1024


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
        return _existing(ckpt, final)
    if part.is_symlink():  # no transfer of ikd's leaves a link: one planted there is dropped, never written through
        part.unlink()
    start = part.stat().st_size if part.exists() else 0
    resp = _request(ckpt, start, timeout, final)
    if resp is None:
        # Nothing left to send: the .part is already whole (or longer than the file).
        # Verification decides; a bad .part is removed and the next run starts over.
        return _verify_and_place(ckpt, part, final)
    with resp:
        start, total = _body_start(resp, ckpt, start, part)
        done = _receive(resp, part, start, total, ckpt, progress, chunk)
    # urllib returns b"" rather than raising when the connection closes early: check the size.
    if total is not None and done < total:
        raise IkdError(_interrupted(done, ckpt, f"connection closed at {done} of {total} bytes"))
    return _verify_and_place(ckpt, part, final)


def _existing(ckpt: Checkpoint, final: Path) -> Path:
    """A file already at the final name: returned if it verifies (or has nothing to verify)."""
    if ckpt.sha256_prefix is None:
        return final  # nothing to check it against; trust what the user put there
    got = sha256_of(final)
    if got.startswith(ckpt.sha256_prefix):
        return final
    raise IkdError(
        f"{final} exists but its sha256 starts with {got[:8]}, not {ckpt.sha256_prefix}; "
        "remove it, or re-download with --force"
    )


def _request(ckpt: Checkpoint, start: int, timeout: float, final: Path):
    """The server's answer for the bytes from ``start`` on; None when it says there are none
    left (HTTP 416 to a Range request); one line for any other failure."""
    host = urllib.parse.urlparse(ckpt.url).hostname or ckpt.url
    request = urllib.request.Request(ckpt.url, headers={"User-Agent": "ikd-download"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and start:
            return None
        raise IkdError(f"download failed: HTTP {err.code} {err.reason} for {ckpt.url}") from None
    except (urllib.error.URLError, OSError, HTTPException) as err:
        raise IkdError(
            f"cannot reach {host} ({_reason(err)}); download {ckpt.url} by hand "
            f"and put it at {final}, then run again"
        ) from None


def _body_start(resp, ckpt: Checkpoint, start: int, part: Path) -> tuple[int, Optional[int]]:
    """(where in the file the body starts, the file's total size or None): ``start`` for a
    resumed transfer, 0 when the server ignored the Range and sends the whole file."""
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
    return start, total


def _receive(resp, part: Path, start: int, total: Optional[int], ckpt: Checkpoint,
             progress: Optional[ProgressFn], chunk: int) -> int:
    """Write the body into the ``.part`` after its first ``start`` bytes; the bytes it then holds."""
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
    return done


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


def _interrupted(done: int, ckpt: Checkpoint, why: str) -> str:
    return (
        f"download of {ckpt.filename} was interrupted after {done / _MB:.1f} MB ({why}); "
        "run the same command again to resume"
    )
