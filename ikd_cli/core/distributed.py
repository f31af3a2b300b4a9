"""Multi-process runs through torch.distributed, the engine MMDetection already uses.

``--gpus N`` relaunches the same command under torchrun with ``--launcher pytorch``;
``--launcher slurm`` reads the rank layout from SLURM's variables (srun starts the processes).
Without CUDA the gloo backend is used, which is how the distributed path is tested on CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from enum import Enum
from pathlib import Path

from ikd_cli.core.errors import IkdError
from ikd_cli.core.processes import DieWithParent


class Launcher(str, Enum):
    """How the processes of a run are started."""
    none = "none"  # one process (``--gpus N`` starts torchrun, which uses ``pytorch``)
    pytorch = "pytorch"  # under torchrun
    slurm = "slurm"  # under srun


LAUNCHERS = tuple(item.value for item in Launcher)


def check_launcher(launcher) -> str:
    """``launcher`` (a :class:`Launcher` or its name) as a name, or one line naming the valid ones."""
    launcher = getattr(launcher, "value", launcher)
    if launcher not in LAUNCHERS:
        raise IkdError(f"launcher must be one of {', '.join(LAUNCHERS)} (how the processes are started), "
                       f"got {launcher!r}")
    return launcher


# Under ``--gpus N`` the processes report their first error here instead of printing it, so the
# user sees one line once, from the command they typed, and not N lines and torchrun's traceback.
ERROR_FILE_ENV = "IKD_ERROR_FILE"


def maybe_relaunch(gpus: int, launcher: str, *, debug: bool = False) -> None:
    """Re-run this command under torchrun with N processes; returns only when no relaunch is needed.

    The first failing process's error becomes this process's error (one line, its exit status);
    torchrun's own report goes to a file that is shown only when no process said what failed
    (``debug`` lets everything through)."""
    launcher = check_launcher(launcher)
    if gpus < 1:
        raise IkdError(f"--gpus must be at least 1, got {gpus}")
    if gpus == 1 or launcher != "none":
        return
    import json
    import shutil
    import tempfile

    argv = _strip_option(sys.argv[1:], "--gpus")
    argv = _strip_option(argv, "--launcher") + ["--launcher", "pytorch"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus),
           "--master_port", os.environ.get("MASTER_PORT", str(free_port())), "-m", "ikd_cli.cli", *argv]
    folder = Path(tempfile.mkdtemp(prefix="ikd-launch-"))
    error_file, torchrun_log = folder / "error.json", folder / "torchrun.log"
    env = dict(os.environ, **{ERROR_FILE_ENV: str(error_file)})
    with open(torchrun_log, "w") as log:
        # torchrun gets SIGTERM when this process dies, however it dies (kill -9 included): it
        # then stops its ranks, which die with it in any case (init_distributed)
        proc = subprocess.Popen(cmd, env=env, stderr=None if debug else log, preexec_fn=DieWithParent(signal.SIGTERM))
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.wait()  # torchrun passes the signal on and waits for its processes
            shutil.rmtree(folder, ignore_errors=True)
            raise
    if code == 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise SystemExit(0)
    if error_file.is_file():
        error = json.loads(error_file.read_text())
        shutil.rmtree(folder, ignore_errors=True)
        if error.get("interrupted"):
            raise KeyboardInterrupt
        raise IkdError(error["message"], exit_code=int(error.get("exit_code", 1)))
    raise IkdError(f"a process of the {gpus}-process run failed (exit status {code}) without saying why; "
                   f"torchrun's report: {torchrun_log}", exit_code=code if 0 < code < 256 else 1)


def record_error(message: str, exit_code: int, *, interrupted: bool = False) -> bool:
    """Under ``--gpus N``: hand this process's error to the launching command (the first process
    to fail wins) and return True; False when not under ``--gpus N`` (print it yourself)."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path:
        return False
    import json

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return True  # another process failed first: its error is the one to show
    except OSError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"message": message, "exit_code": exit_code, "interrupted": interrupted,
                   "rank": os.environ.get("RANK")}, fh)
    return True


def _strip_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return out


def free_port() -> int:
    """A TCP port nothing listens on now (torchrun's rendezvous; the tests' local servers)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slurm_environment() -> None:
    """Translate SLURM's variables into the env:// ones torch.distributed reads."""
    try:
        os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
        os.environ.setdefault("WORLD_SIZE", os.environ["SLURM_NTASKS"])
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    except KeyError as err:
        raise IkdError(f"--launcher slurm needs {err.args[0]} (run the command under srun)") from None
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_NODELIST", "127.0.0.1")
        try:
            first = subprocess.check_output(["scontrol", "show", "hostnames", nodes], text=True).split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            first = first_slurm_host(nodes)
        os.environ["MASTER_ADDR"] = first
    os.environ.setdefault("MASTER_PORT", "29500")


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list, for when ``scontrol`` is not on PATH:
    'gpu[07-09,12],cpu1' -> 'gpu07' (zero padding kept, as SLURM names hosts)."""
    head = nodelist.split(",")[0]
    if "[" not in head:
        return head
    prefix, ranges = head.split("[", 1)
    return prefix + ranges.split("-")[0].rstrip("]")


def init_distributed(launcher: str, device: str) -> tuple[bool, int, int]:
    """Start the process group for ``launcher``; returns (distributed, rank, world_size)."""
    if check_launcher(launcher) == "none":
        return False, 0, 1
    import torch
    import torch.distributed as dist

    if launcher == "slurm":
        _slurm_environment()
    elif "RANK" not in os.environ:
        raise IkdError("--launcher pytorch expects to run under torchrun (use --gpus N instead)")
    else:
        # a rank outlives a torchrun killed with SIGKILL (its agent cannot stop it then), and
        # would go on training into the folder: it dies with its parent instead
        from ikd_cli.core.processes import die_with_parent

        die_with_parent()
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return True, dist.get_rank(), dist.get_world_size()


def barrier(distributed: bool) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if distributed:
        import torch.distributed as dist

        dist.barrier()


def pick_device(requested: str | None) -> str:
    import torch

    requested = getattr(requested, "value", requested)
    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in ("cpu", "cuda"):
        raise IkdError(f"--device must be auto, cpu or cuda, got '{requested}'")
    if requested == "cuda" and not torch.cuda.is_available():
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = f" (CUDA_VISIBLE_DEVICES={hidden!r})" if hidden is not None else ""
        raise IkdError(f"--device cuda: no GPU is visible to torch on this machine{why}; use --device cpu")
    if requested == "cuda":
        check_cuda_ops()
    return requested


def check_cuda_ops() -> None:
    """mmcv-full built without its CUDA kernels (no nvcc at install time: pip's torch wheels do
    not ship it) would fail deep inside NMS on the first detection; say so before any work."""
    from mmcv.ops import get_compiling_cuda_version

    if get_compiling_cuda_version() == "not available":
        raise IkdError("mmcv-full was built without CUDA ops, so detectors cannot run on the GPU: "
                       "`.venv/bin/pip uninstall -y mmcv-full && IKD_CUDA=1 bash scripts/install.sh` builds "
                       "them (nvcc from PyPI if none is on PATH), or use --device cpu")
