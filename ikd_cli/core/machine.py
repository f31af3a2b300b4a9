"""What a run's numbers depend on beyond its settings: the CPU's intra-op thread count and the
processor's vector instructions. The same 36-epoch shapes teacher scores 19.0 AP trained with one
thread on a CPU with AVX-512, 19.3 with two threads there, and 17.6 with one thread on a CPU
without AVX-512 (docs/concepts.md, "Reproducibility"): float sums are reordered by both. Every
run records these (``run.json``) so a figure can say what it is repeatable at. ``train.cpu_kernels: avx2`` caps the kernels at
AVX2, so that the instruction set no longer decides the numbers between x86 machines."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ikd_cli.core.errors import IkdError

# The instruction-set flags that change which kernels torch runs on a CPU.
_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in _ISA_FLAGS if f in present]
    except OSError:
        pass
    return []


def kernels() -> str:
    """The instruction sets torch's CPU kernels use: ATen's vector code (as torch reports it)
    and oneDNN's cap (``native`` unless ``ONEDNN_MAX_CPU_ISA`` sets one): ``aten AVX2, onednn AVX2``."""
    import torch

    return f"aten {torch.backends.cpu.get_cpu_capability()}, onednn {os.environ.get('ONEDNN_MAX_CPU_ISA') or 'native'}"


def compute_fingerprint() -> dict:
    """``{"threads": 1, "cpu": "AMD EPYC", "isa": ["avx2"], "kernels": "aten AVX2, onednn native",
    "torch": "2.14.1+cu130"}``."""
    import torch

    return {"threads": torch.get_num_threads(), "cpu": cpu_model(), "isa": cpu_flags(), "kernels": kernels(),
            "torch": torch.__version__}


def fingerprint_change(started: dict, now: dict) -> str:
    """'' when a continued run computes as it started, else what changed ('threads 1 -> 2')."""
    keys = [k for k in ("threads", "cpu", "isa", "kernels", "torch") if k in started and started[k] != now.get(k)]
    return ", ".join(f"{k} {started[k]} -> {now.get(k)}" for k in keys)


def pin_compute(preset: dict) -> None:
    """Apply ``train.threads`` (null: leave torch's count as it is) and ``train.cpu_kernels``,
    before any model is built."""
    import torch

    train = preset.get("train") or {}
    if train.get("threads"):
        torch.set_num_threads(int(train["threads"]))
    if str(train.get("cpu_kernels") or "native") == "avx2":
        # Both are read once, when the first kernel of their kind runs: setting them in this
        # process works until then, which the capability torch reports afterwards proves.
        os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
        if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "DEFAULT"):
            raise IkdError("train.cpu_kernels=avx2 came after torch had chosen its kernels in this process; "
                           "set ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 in the environment instead")
