"""Multi-process runs through torch.distributed, the engine MMDetection already uses.

``--gpus N`` relaunches the same command under torchrun with ``--launcher pytorch``;
``--launcher slurm`` reads the rank layout from SLURM's variables (srun starts the processes).
Without CUDA the gloo backend is used, which is how the distributed path is tested on CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .errors import IkdError

LAUNCHERS = ("none", "pytorch", "slurm")


def maybe_relaunch(gpus: int, launcher: str) -> None:
    """Re-run this command under torchrun with N processes; returns only when no relaunch is needed."""
    if launcher not in LAUNCHERS:
        raise IkdError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got '{launcher}'")
    if gpus < 1:
        raise IkdError(f"--gpus must be at least 1, got {gpus}")
    if gpus == 1 or launcher != "none":
        return
    argv = _strip_option(sys.argv[1:], "--gpus")
    argv = _strip_option(argv, "--launcher") + ["--launcher", "pytorch"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus),
           "--master_port", os.environ.get("MASTER_PORT", str(_free_port())), "-m", "ikd_cli.cli", *argv]
    raise SystemExit(subprocess.call(cmd))


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


def _free_port() -> int:
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
    if launcher == "none":
        return False, 0, 1
    import torch
    import torch.distributed as dist

    if launcher == "slurm":
        _slurm_environment()
    elif "RANK" not in os.environ:
        raise IkdError("--launcher pytorch expects to run under torchrun (use --gpus N instead)")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return True, dist.get_rank(), dist.get_world_size()


def pick_device(requested: str | None) -> str:
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in ("cpu", "cuda"):
        raise IkdError(f"--device must be cpu or cuda, got '{requested}'")
    if requested == "cuda" and not torch.cuda.is_available():
        raise IkdError("--device cuda asked for, but torch sees no CUDA device")
    return requested
