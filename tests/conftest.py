"""Shared fixtures: a tiny shapes dataset and a tiny trained teacher, made once per session with
the real stack (mmdet, mmcv, torch) so that every test exercises real parts."""

from __future__ import annotations

import os

# The shapes preset caps torch's CPU kernels at AVX2 (train.cpu_kernels), which a process can
# only do before its first kernel runs: tests train in this process, so it is capped from the
# start (subprocesses inherit it).
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import DEVICE, run_cli  # noqa: E402

# One torch thread per pytest-xdist worker (one worker per core; set here, not inherited: the
# controller process reads this file too), two in a single process.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    if DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():
            pytest.exit("IKD_TEST_DEVICE=cuda, but torch sees no CUDA device", returncode=2)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (restored after): tiny models gain nothing from a second, and
    on shared, busy cores OpenMP threads that wait for each other cost several times the run.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def own_teacher(trained_teacher, tmp_path) -> Path:
    """A copy of the session's teacher in this test's folder: what ``ikd evaluate`` writes beside
    it (eval JSON, detections) stays with the test instead of the shared teacher's folder."""
    import shutil

    copy = tmp_path / "teacher" / "latest.pth"
    copy.parent.mkdir()
    shutil.copyfile(trained_teacher, copy)
    return copy


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
            "train.log_interval=1", "train.lr=0.01", "attack.batch_size=4",
            # the preset's own teacher schedule and sparse validation are for the 400-image set
            "teacher.epochs=null", "teacher.lr_steps=null", "train.eval_interval=1",
            # and its backdoor victim fine-tunes the main job's teacher for 24 epochs: here the
            # victim trains from scratch on train.epochs
            "backdoor.victim_init=", "backdoor.victim_epochs=null", "backdoor.victim_lr_steps=null",
            # a teacher of a few iterations may score near 0 AP: the check runs, and refuses none
            # (tests/test_before_training.py sets its own minimum)
            "distill.teacher_check_min_ap=0"]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory, tiny_sets) -> Path:
    work = tmp_path_factory.mktemp("work")
    run_cli("train", "--preset", "shapes", "--model", "teacher", "--work-dir", work, "--device", DEVICE,
            *tiny_sets, "--set", "train.epochs=8", "--set", "train.lr=0.02")
    ckpt = work / "teacher" / "latest.pth"
    assert ckpt.exists()
    return ckpt


@pytest.fixture(scope="session")
def tiny_adv_set(trained_teacher, tiny_sets, tmp_path_factory) -> Path:
    """The whole tiny training split attacked against the session teacher (1 step: the pixels
    only need to exist; distill checks the set's settings, so runs pass attack.steps=1)."""
    out = tmp_path_factory.mktemp("adv")
    run_cli("attack", "--preset", "shapes", "--checkpoint", trained_teacher, "--out", out, "--device", DEVICE,
            "--workers", "0", "--steps", "1", *tiny_sets)
    return out
