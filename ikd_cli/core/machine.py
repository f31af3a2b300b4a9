"""What a run's numbers depend on beyond its settings: the CPU's intra-op thread count and the
processor's vector instructions. The same 36-epoch shapes teacher scores 19.0 AP trained with one
thread on a CPU with AVX-512, 19.3 with two threads there, and 17.6 with one thread on a CPU
without AVX-512 (README): float sums are reordered by both. Every run records these (``run.json``)
so a figure can say what it is repeatable at."""

from __future__ import annotations

import platform
from pathlib import Path

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


def compute_fingerprint() -> dict:
    """``{"threads": 1, "cpu": "AMD EPYC", "isa": ["avx2"], "torch": "2.14.1+cu130"}``."""
    import torch

    return {"threads": torch.get_num_threads(), "cpu": cpu_model(), "isa": cpu_flags(), "torch": torch.__version__}


def fingerprint_change(started: dict, now: dict) -> str:
    """'' when a continued run computes as it started, else what changed ('threads 1 -> 2')."""
    keys = [k for k in ("threads", "cpu", "isa", "torch") if k in started and started[k] != now.get(k)]
    return ", ".join(f"{k} {started[k]} -> {now.get(k)}" for k in keys)


def pin_threads(preset: dict) -> None:
    """Apply ``train.threads`` (null: leave torch's count as it is), before any model is built."""
    threads = (preset.get("train") or {}).get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
