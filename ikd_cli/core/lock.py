"""One writer per folder: a run's work dir or an output folder is locked while a command writes
into it, so a second ``ikd train`` (``distill``, ``attack``, a ``backdoor`` step) on the same
folder stops in one line naming the holder instead of both writing the same checkpoints.

The lock is the file ``.ikd.lock`` in the folder, JSON: pid, host, the process's start time,
when the run started, the command, a random token. It is made complete under a temporary name
and hard-linked into place (``link`` fails if the name exists, atomically, NFS included), and
removed when the command ends (the CLI releases every lock it took; ``atexit`` for Python
callers). A holder is judged alive:

* on this host, by its pid: the process exists and started when the lock says (a pid reused
  after a reboot or a kill -9 does not keep a lock); a lock of a dead process is taken over;
* on another host (NFS, a slurm node) no pid can be checked, so by its heartbeat: the holder
  touches the lock file every :data:`HEARTBEAT_S` seconds (a daemon thread); a lock untouched
  for :data:`STALE_AFTER_S` seconds is stale and taken over.

Under torch.distributed only rank 0 takes the lock (the callers' business). Standard library
only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import socket
import stat
import sys
import threading
import time
from pathlib import Path

from ikd_cli.core.errors import IkdError
from ikd_cli.core.fileio import parse_json

LOCK_FILE = ".ikd.lock"
HEARTBEAT_S = 30.0  # how often a holder touches its lock file
STALE_AFTER_S = 300.0  # a foreign host's lock untouched this long is taken over (10 missed heartbeats)

_held: dict[str, "FolderLock"] = {}  # folder (resolved) -> the lock this process holds on it


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot) plus the boot id, or None
    where /proc does not say: with the pid, it names one process for the machine's lifetime."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat.rsplit(")", 1)[1].split()[19]
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}:{ticks}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, someone else's
    except (OSError, OverflowError, ValueError):
        return False
    return True


def _read(path: Path) -> dict | None:
    """The holder recorded in ``path``; None if it vanished; {} if it is unreadable or torn."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):  # judged like a torn record: by its age (holder_alive)
        return {}
    try:
        holder = parse_json(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def holder_alive(path: Path, holder: dict) -> bool:
    """Whether the lock ``path`` recording ``holder`` still belongs to a running process."""
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        if pid == os.getpid():
            # this very process: alive only if it still holds that lock (a lock an earlier
            # command of this process left behind is stale)
            return any(lock.token == holder.get("token") for lock in _held.values())
        if not _pid_alive(pid):
            return False
        recorded, now = holder.get("pid_start"), _process_start(pid)
        return recorded is None or now is None or recorded == now
    # another host, or a record without one: only its heartbeat can tell
    return _age(path) < STALE_AFTER_S


def describe(holder: dict, path: Path) -> str:
    if not holder:
        return (f"a lock file that cannot be read ({path}), taken over once untouched for "
                f"{STALE_AFTER_S / 60:g} min")
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {when}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


class FolderLock:
    """The lock this process holds on ``folder`` (see the module doc); use :func:`lock_folder`."""

    def __init__(self, folder: Path, what: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = what
        self.token = secrets.token_hex(8)
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> dict:
        return dict(pid=self.pid, host=socket.gethostname(), pid_start=_process_start(self.pid),
                    started=time.time(), command=" ".join(["ikd", *sys.argv[1:3]])[:80] if sys.argv else "",
                    what=self.what, token=self.token)

    def _create(self) -> None:
        """Write the record under a temporary name, then hard-link it to the lock's name:
        FileExistsError if a lock is there; a reader never sees a half-written record."""
        tmp = self.folder / f".{LOCK_FILE}.{self.token}.tmp"
        tmp.write_text(json.dumps(self.record()) + "\n", encoding="utf-8")
        try:
            os.link(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def _break(self, stale: dict) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile (then leave that one)."""
        moved = self.folder / f".{LOCK_FILE}.{self.token}.stale"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return  # someone else broke it first
        if (_read(moved) or {}).get("token") != stale.get("token"):
            # we moved a fresh lock that a faster process had just taken: put it back
            try:
                os.link(moved, self.path)
            except FileExistsError:
                pass
        moved.unlink(missing_ok=True)

    def _refuse_other_file(self) -> None:
        """A lock's name held by something ikd never writes there (a folder, a link, a pipe, whose
        reading would hang) is no lock to judge or take over: named, and left alone."""
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
                    else "a special file (a pipe, a device)")
            raise IkdError(f"cannot lock {self.folder}: {self.path} is {kind}, not a lock file ikd writes; "
                           "remove or rename it if nothing needs it")

    def acquire(self) -> None:
        for _ in range(5):
            try:
                self._create()
                break
            except FileExistsError:
                self._refuse_other_file()
            except OSError as err:
                raise IkdError(f"cannot lock {self.folder}: {err.strerror or err}") from None
            holder = _read(self.path)
            if holder is None:
                continue  # released meanwhile: try again
            if holder_alive(self.path, holder):
                raise IkdError(f"{self.folder} is in use by another ikd {holder.get('what') or 'run'}: "
                               f"{describe(holder, self.path)}; wait for it to end, or stop it (a lock of a dead process "
                               f"is taken over; remove {self.path} if you know it is stale)")
            self._break(holder)
        else:
            raise IkdError(f"cannot lock {self.folder}: its lock file keeps changing; try again")
        self._thread = threading.Thread(target=self._beat, name=f"ikd-lock-{self.folder.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if (_read(self.path) or {}).get("token") != self.token:
                return  # taken over (judged stale) or removed: nothing of ours to keep fresh
            try:
                os.utime(self.path)
            except OSError:
                pass  # a hiccup of the file system; the next beat tries again

    def release(self) -> None:
        self._stop.set()
        if os.getpid() != self.pid:
            return  # a forked child (a data-loading worker) does not own its parent's lock
        if (_read(self.path) or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)


def lock_folder(folder: str | os.PathLike, what: str = "run") -> FolderLock:
    """Lock ``folder`` (which must exist) for this process until :func:`release_all` or exit;
    taking a folder this process already holds returns that lock. Raises a one-line IkdError
    naming the holder when another live process has it."""
    key = str(Path(folder).resolve())
    lock = _held.get(key)
    if lock is not None and lock.pid == os.getpid():
        return lock
    lock = FolderLock(Path(folder), what)
    lock.acquire()
    _held[key] = lock
    return lock


@contextlib.contextmanager
def holding(folder: str | os.PathLike, what: str = "run"):
    """:func:`lock_folder` for a ``with`` block only: a step inside a longer command (making the
    built-in data) lets go of its folder when done, unless this process held it already."""
    key = str(Path(folder).resolve())
    held_before = key in _held
    lock = lock_folder(folder, what)
    try:
        yield lock
    finally:
        if not held_before and _held.get(key) is lock:
            del _held[key]
            lock.release()


def release_all() -> None:
    """Release every lock this process holds (the CLI calls this when a command ends)."""
    while _held:
        _, lock = _held.popitem()
        lock.release()


atexit.register(release_all)
