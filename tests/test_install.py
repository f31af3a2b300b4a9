"""scripts/install.sh's choice between CPU and CUDA ops (scripts/cuda_plan.sh), without compiling.

Fake `nvidia-smi`, `nvcc` and venv python executables on a temporary PATH stand in for the machine
(a GPU of some compute capability, a CUDA toolkit of some version, torch built for some CUDA);
the plan script itself is the real one install.sh runs."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

PLAN = Path(__file__).resolve().parents[1] / "scripts" / "cuda_plan.sh"
PYPI_13 = ("nvidia-cuda-nvcc==13.0.* nvidia-cuda-crt==13.0.* nvidia-nvvm==13.0.* "
           "nvidia-cuda-cccl==13.0.*")


def _exe(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """machine(gpus=[...compute caps], nvcc="13.0"|None, torch_cuda="13.0"|"", env={...}) runs the
    plan and returns (returncode, {KEY: value}, stderr, whether torch was asked)."""

    def run(gpus=(), nvcc=None, torch_cuda="13.0", env=None):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        for name in ("nvidia-smi", "nvcc"):
            (bin_dir / name).unlink(missing_ok=True)
        if gpus:
            caps = "\\n".join(gpus)
            _exe(bin_dir / "nvidia-smi",
                 f'case "$*" in *compute_cap*) printf "{caps}\\n";; *) echo "GPU 0: fake";; esac')
        if nvcc:
            _exe(bin_dir / "nvcc", f'echo "Cuda compilation tools, release {nvcc}, V{nvcc}.1"')
        asked = tmp_path / "torch-asked"
        asked.unlink(missing_ok=True)
        python = tmp_path / "python"
        _exe(python, f'touch {asked}; echo "{torch_cuda}"')
        # /usr/bin and /bin for bash and coreutils; nothing else, so the machine's own nvcc is out.
        full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **(env or {})}
        proc = subprocess.run(["bash", str(PLAN), str(python)], env=full_env,
                              capture_output=True, text=True, timeout=30)
        plan = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            plan[key] = " ".join(shlex.split(value)) if value else ""
        return proc.returncode, plan, proc.stderr, asked.exists()

    return run


def test_no_gpu_builds_cpu_ops_without_importing_torch(machine):
    rc, plan, err, asked = machine()
    assert rc == 0 and plan["WITH_CUDA"] == "0" and plan["FLAVOUR"] == "cpu"
    assert plan["NVCC_PKGS"] == "" and err == ""
    assert not asked  # the CPU path (CI's) stays as fast as before: no torch import


def test_gpu_without_nvcc_takes_the_pypi_compiler_matching_torch(machine):
    rc, plan, _, _ = machine(gpus=["9.0"])
    assert rc == 0 and plan["WITH_CUDA"] == "1"
    assert plan["ARCH_LIST"] == "9.0" and plan["FLAVOUR"] == "cu130-sm90" and plan["TORCH_CUDA"] == "13.0"
    assert plan["NVCC_PKGS"] == PYPI_13


def test_nvcc_on_path_of_torchs_version_is_used(machine):
    rc, plan, err, _ = machine(gpus=["9.0"], nvcc="13.0")
    assert rc == 0 and plan["WITH_CUDA"] == "1" and plan["NVCC_PKGS"] == "" and err == ""


def test_nvcc_on_path_of_another_version_is_passed_over_for_pypi(machine):
    rc, plan, err, _ = machine(gpus=["9.0"], nvcc="12.4")
    assert rc == 0 and plan["NVCC_PKGS"] == PYPI_13
    assert "nvcc on PATH is CUDA 12.4" in err and "13.0 from PyPI" in err


def test_arch_list_has_each_gpu_model_once_and_the_user_overrides_it(machine):
    _, plan, _, _ = machine(gpus=["9.0", "8.0", "9.0"])
    assert plan["ARCH_LIST"] == "8.0;9.0" and plan["FLAVOUR"] == "cu130-sm80_90"
    _, plan, _, _ = machine(gpus=["9.0"], env={"TORCH_CUDA_ARCH_LIST": "8.6;9.0+PTX"})
    assert plan["ARCH_LIST"] == "8.6;9.0+PTX" and plan["FLAVOUR"] == "cu130-sm86_90ptx"


def test_ikd_cuda_1_builds_for_a_gpu_this_machine_lacks(machine):
    rc, plan, _, _ = machine(env={"IKD_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "9.0"})
    assert rc == 0 and plan["WITH_CUDA"] == "1" and plan["FLAVOUR"] == "cu130-sm90"
    assert plan["NVCC_PKGS"] == PYPI_13


@pytest.mark.parametrize("case, expected", [
    (dict(env={"IKD_CUDA": "1"}), "set TORCH_CUDA_ARCH_LIST"),  # no GPU to ask
    (dict(env={"IKD_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "sm_90"}), "'sm_90' is not like 9.0"),
    (dict(env={"IKD_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "9.0"}, torch_cuda=""), "CPU-only build"),
    (dict(env={"IKD_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "9.0"}, torch_cuda="12.8"), "install CUDA toolkit 12.8"),
    (dict(env={"IKD_CUDA": "yes"}), "IKD_CUDA must be 0 or 1"),
])
def test_ikd_cuda_1_that_cannot_be_built_fails_in_one_line(machine, case, expected):
    rc, plan, err, _ = machine(**case)
    assert rc == 1 and plan == {}
    assert len(err.strip().splitlines()) == 1 and err.startswith("[install] error: ") and expected in err


def test_a_detected_gpu_that_cannot_be_built_for_falls_back_to_cpu_ops(machine):
    rc, plan, err, _ = machine(gpus=["9.0"], torch_cuda="")
    assert rc == 0 and plan["WITH_CUDA"] == "0" and plan["FLAVOUR"] == "cpu"
    assert "CPU-only build" in err and "CPU ops only" in err


def test_ikd_cuda_0_keeps_cpu_ops_on_a_gpu_machine(machine):
    rc, plan, err, asked = machine(gpus=["9.0"], nvcc="13.0", env={"IKD_CUDA": "0"})
    assert rc == 0 and plan["WITH_CUDA"] == "0" and plan["FLAVOUR"] == "cpu" and not asked and err == ""


def test_gpu_check_without_a_gpu_fails_in_one_line(tmp_path):
    script = PLAN.parent / "gpu_check.sh"
    proc = subprocess.run(["bash", str(script)], env={"PATH": "/usr/bin:/bin", "IKD_GPU_CHECK_OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == "gpu_check: no GPU on this machine (nvidia-smi finds none); run it where one is"
