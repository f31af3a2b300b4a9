"""Child processes that do not outlive their parent. A DataLoader worker whose parent is killed
with SIGKILL is reparented to PID 1 and can sit there, holding hundreds of MB, for minutes; on
Linux the kernel can send it SIGKILL the moment its parent dies instead (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux; a no-op
    elsewhere). ``parent``: the pid the parent had (a child started through fork + exec knows
    it), so that a parent gone before the request took effect is noticed too."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))
    except OSError:
        return
    if os.getppid() == 1 or (parent is not None and os.getppid() != parent):
        os._exit(1)  # the parent died before the request took effect


class DieWithParent:
    """A ``preexec_fn`` for subprocess.Popen: the child gets ``sig`` when this process dies, also
    by SIGKILL (a class, to carry the parent's pid into the forked child)."""

    def __init__(self, sig: int = signal.SIGTERM):
        self.sig = sig
        self.parent = os.getpid()

    def __call__(self) -> None:
        die_with_parent(self.sig, self.parent)


class WorkerInit:
    """A DataLoader ``worker_init_fn``: die with the parent, then run ``then`` (mmdet's seeding).
    A class, not a closure, so it pickles for spawned workers."""

    def __init__(self, then=None):
        self.then = then

    def __call__(self, worker_id: int) -> None:
        die_with_parent()
        if self.then is not None:
            self.then(worker_id)


def bind_workers(loader):
    """Make ``loader``'s worker processes die with this process; returns the loader."""
    if getattr(loader, "num_workers", 0) > 0 and not isinstance(loader.worker_init_fn, WorkerInit):
        loader.worker_init_fn = WorkerInit(loader.worker_init_fn)
    return loader
