"""Child processes that do not outlive their parent. A DataLoader worker whose parent is killed
with SIGKILL is reparented to PID 1 and can sit there, holding hundreds of MB, for minutes; on
Linux the kernel can send it SIGKILL the moment its parent dies instead (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


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
