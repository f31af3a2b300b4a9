"""`train.wandb`: mmcv's own W&B logger hook on a real tiny run, in W&B's offline mode (its files
are written under WANDB_DIR, nothing goes over the network), and the one line a run gets when
the key is on and wandb is not installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from helpers import DEVICE, IKD_EXE, run_cli

WANDB = importlib.util.find_spec("wandb") is not None


@pytest.mark.skipif(not WANDB, reason="wandb is not installed (IKD_WITH_WANDB=1 bash scripts/install.sh)")
def test_wandb_offline_run_writes_its_files(tmp_path, tiny_sets):
    wandb_dir = tmp_path / "wandb_home"
    wandb_dir.mkdir()
    # offline: W&B writes its run files locally and opens no connection; every W&B folder in tmp
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(wandb_dir), WANDB_CACHE_DIR=str(tmp_path / "c"),
               WANDB_CONFIG_DIR=str(tmp_path / "cfg"), WANDB_DATA_DIR=str(tmp_path / "d"), WANDB_SILENT="true")
    # a real process, as a user runs it: W&B's service writes the run file asynchronously and has
    # closed it only once the process that owns the run has exited (in-process, the file can still
    # hold only its header when the run returns -- seen once in CI under load)
    done = subprocess.run([IKD_EXE, "train", "--preset", "shapes", "--model", "student",
                           "--work-dir", str(tmp_path / "work"), "--device", DEVICE, *map(str, tiny_sets),
                           "--set", "train.wandb=true"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = (wandb_dir / "wandb").glob("offline-run-*")
    (history,) = run.glob("run-*.wandb")  # the run's records: metrics, config, summary
    assert history.stat().st_size > 0
    data = history.read_bytes()
    assert b"loss_cls" in data and b"ikd-shapes" in data  # the logged losses, the project's name
    assert not (tmp_path / "work" / "student" / "wandb").exists()  # WANDB_DIR decides where, not ikd


def test_wandb_missing_is_one_line(tmp_path, tiny_sets, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without wandb sees
    result = run_cli("train", "--preset", "shapes", "--model", "student", "--work-dir", tmp_path,
                     "--device", DEVICE, *tiny_sets, "--set", "train.wandb=true", expect=1)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: train.wandb needs the wandb package: IKD_WITH_WANDB=1")
    assert "Traceback" not in result.output
