"""Shared fixtures: a tiny shapes dataset and a tiny trained teacher, made once per session with
the real stack (mmdet, mmcv, torch) so that every test exercises real parts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IKD_EXE = str(REPO / ".venv" / "bin" / "ikd")  # the installed console script, for tests that need a real process
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "2")


def run_cli(*args: str, expect: int | None = 0):
    """Invoke ``ikd`` in-process (Typer's CliRunner); asserts the exit code when ``expect`` is set."""
    from typer.testing import CliRunner

    from ikd_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if expect is not None and result.exit_code != expect:
        raise AssertionError(f"ikd {' '.join(map(str, args))} exited {result.exit_code}, expected {expect}:\n"
                             f"{result.output}\n{result.exception!r}")
    return result


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    from ikd_cli.data.shapes import generate_shapes

    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, seed=0, num_train=24, num_val=8, image_size=96)
    return root


@pytest.fixture(scope="session")
def tiny_sets(shapes_root) -> list[str]:
    """--set overrides that shrink the shapes preset to seconds on 2 CPU cores."""
    sets = [f"data.root={shapes_root}", "data.shapes=null", "data.img_scale=[96, 96]",
            "data.samples_per_gpu=4", "data.workers_per_gpu=0", "train.epochs=1", "train.warmup_iters=2",
            "train.log_interval=1", "train.lr=0.01", "attack.batch_size=4"]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory, tiny_sets) -> Path:
    work = tmp_path_factory.mktemp("work")
    run_cli("train", "--preset", "shapes", "--model", "teacher", "--work-dir", work, "--device", "cpu",
            *tiny_sets, "--set", "train.epochs=8", "--set", "train.lr=0.02")
    ckpt = work / "teacher" / "latest.pth"
    assert ckpt.exists()
    return ckpt
