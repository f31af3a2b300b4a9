"""The command line as a user meets it: fast help, one-line errors, no tracebacks."""

import subprocess
import sys
import time

import pytest

from helpers import IKD_EXE, REPO, run_cli


def test_help_does_not_import_torch_or_mmdet():
    code = ("import sys, time; t=time.time(); from ikd_cli.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('torch','mmcv','mmdet') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for command in ("download", "attack", "distill", "resume", "evaluate", "train", "presets"):
        assert command in out


def test_console_script_help_runs(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run([IKD_EXE, "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and "distill" in proc.stdout
    print(f"ikd --help took {elapsed:.2f} s")  # reported, never asserted (machines are noisy)


def test_unknown_preset_is_one_line_error():
    result = run_cli("presets", "show", "retinanett", expect=1)
    assert "unknown preset 'retinanett'" in result.output and "retinanet" in result.output
    assert "Traceback" not in result.output


def test_bad_override_names_nearest_key():
    result = run_cli("presets", "show", "shapes", "--set", "distill.alpha_ad=1", expect=1)
    assert "did you mean distill.alpha_adv" in result.output
    result = run_cli("presets", "show", "shapes", "--set", "attack.steps=many", expect=1)
    assert "attack.steps must be an integer" in result.output


def test_real_process_error_has_no_traceback(tmp_path):
    proc = subprocess.run([IKD_EXE, "evaluate", str(tmp_path / "missing.pth")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "checkpoint not found" in proc.stdout + proc.stderr


def test_device_cuda_without_a_gpu_is_one_line_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    proc = subprocess.run([IKD_EXE, "train", "--preset", "shapes", "--model", "teacher", "--work-dir",
                           str(tmp_path), "--device", "cuda"], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines == [lines[0]] and "no GPU is visible" in lines[0] and "--device cpu" in lines[0]
