"""All file writing goes through here: every output is written to a temporary name beside its
final path and renamed into place, so a crash, Ctrl-C or a full disk never leaves a
half-written file under the real name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from ikd_cli.core.errors import IkdError


def _explain_os_error(path: Path, err: OSError) -> IkdError:
    if err.errno == errno.ENOSPC:
        return IkdError(f"no space left on device while writing {path}; free some space and run again")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return IkdError(f"cannot write {path}: {err.strerror.lower()}")
    return IkdError(f"cannot write {path}: {err.strerror or err}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it to ``path``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path``
    keeps its previous content, if any.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _explain_os_error(path, err) from err
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise _explain_os_error(path, err) from err
    except BaseException:
        _remove_quietly(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(path: str | os.PathLike) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def parse_json(text: str):
    """``json.loads``, where values nested deeper than Python's parser can follow are malformed
    JSON like any other (a JSONDecodeError), not a RecursionError from a file made elsewhere."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("values nested too deeply to read", text, 0) from None


def read_json(path: str | os.PathLike, what: str = "file"):
    """Read a JSON file, turning a missing or corrupt file into a one-line IkdError."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_json(fh.read())
    except FileNotFoundError:
        raise IkdError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise IkdError(f"cannot read {what} {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise IkdError(f"{what} {path} is not valid JSON (line {err.lineno}: {err.msg})") from None


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove it is writable, or raise a one-line IkdError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ikd-write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise IkdError(f"{what} {path} is not writable: {err.strerror or err}") from None
    return path


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy one file with its times (readers pick the newest of several files by mtime), through
    a temporary name, so an interrupted copy leaves the old file or the whole new one."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
    except OSError as err:
        _remove_quietly(tmp)
        raise IkdError(f"cannot copy {source} to {target.parent}: {err.strerror or err}") from None


def refuse_inside(dest: str | os.PathLike, roots, what: str) -> None:
    """Refuse a ``--keep`` folder inside (or equal to) one of the folders it copies from: a second
    copy would copy the first one again."""
    dest = Path(dest).resolve()
    for root in (Path(r).resolve() for r in roots):
        if dest == root or root in dest.parents:
            raise IkdError(f"--keep {dest} lies inside the {what} it would copy ({root}); choose a folder beside it")


def atomic_symlink(folder: str | os.PathLike, target: str, name: str) -> None:
    """Atomically make ``folder/name`` a symlink to ``target`` (a file in the same folder): a
    reader sees the old link or the new one, never none (``latest.pth`` during a save)."""
    folder = Path(folder)
    tmp = folder / f".{name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, folder / name)


def inside(base: str | os.PathLike, rel: str | os.PathLike, what: str = "file name") -> Path:
    """``base / rel``, refused in one line if ``rel`` (a name read from a data file: an
    annotation's ``file_name``, a record's ``out``) would leave ``base``: an absolute path, a
    ``..`` that climbs above it, a backslash (a Windows separator on another machine), a NUL or
    an empty name. Every output path derived from data goes through here, so a crafted name
    cannot overwrite a file outside its output folder (the clean image an adversarial copy was
    made from, say). Lexical: ``a/../b`` is ``b``; links inside ``base`` are the writer's own."""
    text = os.fspath(rel)
    norm = os.path.normpath(text) if text else ""
    if (not text or "\x00" in text or "\\" in text or os.path.isabs(text)
            or norm in (".", "..") or norm.startswith(".." + os.sep)):
        raise IkdError(f"{what} {text!r} leaves its folder {base} (absolute, '..', backslash or empty); "
                       "names in data files must be relative paths inside the folder")
    return Path(base) / norm


def unlinked(base: str | os.PathLike, rel: str | os.PathLike, what: str = "file name") -> Path:
    """:func:`inside`, and refused where a folder between ``base`` and the file is a symbolic
    link: every path ikd writes or deletes in a folder of its own (an adversarial set, an export,
    a run) by a name read from a file goes through here, so a received folder with a planted
    ``link -> /home/you`` cannot turn the record ``link/notes.txt`` into a file elsewhere. The
    file itself may be a link: writes replace it (atomic rename) and deletes remove it, never
    what it points to. ``base`` itself may be a link (a work dir on another disk)."""
    path = inside(base, rel, what)
    folder = Path(base)
    for part in path.relative_to(base).parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            raise IkdError(f"{what} {os.fspath(rel)!r} lies behind the symbolic link {folder}; ikd never writes or "
                           "deletes through a link in its folders (remove the link)")
    return path


def open_append(path: str | os.PathLike):
    """``path`` opened to append text (a log, an adversarial set's records), never through a
    symbolic link: a received folder's ``records-0.jsonl -> ~/.bashrc`` would otherwise have
    ikd append to the file behind it. Line-buffered, so each record reaches the file whole."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise IkdError(f"{path} is a symbolic link; ikd never writes through a link in its folders "
                           "(remove it)") from None
        raise _explain_os_error(Path(path), err) from None
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def files_below(folder: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Every file (or link) below ``folder`` whose name ends in ``suffix``, without entering a
    linked folder (``Path.rglob`` enters them before Python 3.13)."""
    for top, _, names in os.walk(folder):  # followlinks=False
        yield from (Path(top) / n for n in names if n.endswith(suffix))


def distinct_outputs(names, rename, reserved=(), what: str = "images") -> dict[str, Path]:
    """``name -> rename(name)`` for every name, refused in one line where two names give one
    output (``a.jpg`` and ``a.png`` both as ``a.png``) or an output takes a name its folder keeps
    for its own files (``reserved``: the attack's ``preview.png``, say): one file would silently
    replace the other, and its record would name the wrong image."""
    reserved = {Path(r) for r in reserved}
    taken: dict[Path, str] = {}
    for name in names:
        out = Path(rename(name))
        if out in reserved:
            raise IkdError(f"{what}: {name} would be written as {out}, a name the folder keeps for its own file; "
                           "rename the image")
        if out in taken:
            raise IkdError(f"{what}: {taken[out]} and {name} would both be written as {out}; rename one of them")
        taken[out] = name
    return {name: out for out, name in taken.items()}


def is_inside(rel: str | os.PathLike) -> bool:
    """Whether :func:`inside` accepts ``rel`` (for checks that collect problems, not raise them)."""
    try:
        inside(".", rel)
    except IkdError:
        return False
    return True
