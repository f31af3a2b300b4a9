"""What several test files share: the in-process CLI runner, the installed console script, and
slow reference implementations that the fast code in ``ikd_cli`` is checked against. Test-only
code lives here, not in the package."""

from __future__ import annotations

import contextlib

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The device every test that runs a model passes as --device: cpu unless IKD_TEST_DEVICE=cuda
# (scripts/gpu_check.sh runs the suite so on a GPU machine; conftest.py checks a GPU is there).
DEVICE = os.environ.get("IKD_TEST_DEVICE", "cpu")
if DEVICE not in ("cpu", "cuda"):
    raise ValueError(f"IKD_TEST_DEVICE must be cpu or cuda, not {DEVICE!r}")
IKD_EXE = str(REPO / ".venv" / "bin" / "ikd")  # the installed console script, for tests that need a real process
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def two_ranks_or_skip() -> None:
    """For the --gpus 2 tests: two CPU processes (gloo) anywhere; under IKD_TEST_DEVICE=cuda the
    ranks take one GPU each (NCCL), so they need two."""
    if DEVICE == "cuda":
        import pytest
        import torch

        if torch.cuda.device_count() < 2:
            pytest.skip("IKD_TEST_DEVICE=cuda with fewer than 2 GPUs: no NCCL pair")


def run_cli(*args, expect: int | None = 0):
    """Invoke ``ikd`` in-process (Typer's CliRunner); asserts the exit code when ``expect`` is set."""
    from typer.testing import CliRunner

    from ikd_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if expect is not None and result.exit_code != expect:
        raise AssertionError(f"ikd {' '.join(map(str, args))} exited {result.exit_code}, expected {expect}:\n"
                             f"{result.output}\n{result.exception!r}")
    return result


def kill_after(cmd, marker: Path, timeout: float = 240) -> None:
    """Run ``cmd`` and SIGKILL it (as hard as a crash or a pre-empted job) once ``marker`` exists."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + timeout
    while not Path(marker).exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, f"{marker} did not appear within {timeout} s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def foreground_mask_loop(gt_bboxes, img_metas, H: int, W: int, device=None):
    """The FGD reference's way to build the foreground mask, one slice assignment per box: what
    the vectorised ``ikd_cli.distill.losses.masks.foreground_mask`` is tested against (slow)."""
    import torch

    from ikd_cli.distill.losses.masks import box_cell_bounds, img_hw

    n = len(gt_bboxes)
    if device is None:
        device = gt_bboxes[0].device if n else "cpu"
    mask = torch.zeros(n, H, W, dtype=torch.float32, device=device)
    for i, (boxes, meta) in enumerate(zip(gt_bboxes, img_metas)):
        if boxes.numel() == 0:
            continue
        img_h, img_w = img_hw(meta)
        hmin, hmax, wmin, wmax, values, valid = box_cell_bounds(boxes.to(device), img_h, img_w, H, W)
        for j in range(boxes.shape[0]):
            if not bool(valid[j]):
                continue
            h0, h1, w0, w1 = int(hmin[j]), int(hmax[j]) + 1, int(wmin[j]), int(wmax[j]) + 1
            mask[i, h0:h1, w0:w1] = torch.clamp(mask[i, h0:h1, w0:w1], min=float(values[j]))
    return mask


def adversarial_files(folder: Path) -> list[Path]:
    """The adversarial images of a set, whatever their format (sorted)."""
    from ikd_cli.config.layout import ATTACK_PREVIEW_FILE, DELTA_SUFFIX

    return sorted(p for p in Path(folder).rglob("*")
                  if p.suffix in (".png", DELTA_SUFFIX) and p.name != ATTACK_PREVIEW_FILE)


def read_adversarial_image(out_dir: Path, image_dir: Path, name: str):
    """The adversarial copy of ``name`` as pixels (a delta rebuilt on the source as decoded)."""
    import cv2

    from ikd_cli.attack.storage import find_adversarial, read_adversarial

    path, fmt = find_adversarial(out_dir, name)
    return read_adversarial(path, cv2.imread(str(image_dir / name), cv2.IMREAD_COLOR), fmt=fmt)


def verify_adversarial_set(out_dir: Path, image_dir: Path, names, eps: float) -> list[str]:
    """Problems with an adversarial set, checked from the files alone: missing or unreadable
    files, wrong sizes, pixels over the budget."""
    import cv2
    import numpy as np

    from ikd_cli.core.errors import IkdError

    problems = []
    for name in names:
        try:
            adv = read_adversarial_image(out_dir, image_dir, name)
        except IkdError as err:
            problems.append(str(err))
            continue
        src = cv2.imread(str(image_dir / name), cv2.IMREAD_COLOR)
        if adv.shape != src.shape:
            problems.append(f"wrong size: {name}")
        elif np.abs(adv.astype(np.int16) - src.astype(np.int16)).max() > eps:
            problems.append(f"over budget: {name}")
    return problems


@contextlib.contextmanager
def local_http_server(handler, **attributes):
    """A real HTTP server on a free local port serving ``handler``, in a thread; ``attributes``
    are set on the server (the handler reads them as ``self.server.x``), ``base`` is its URL."""
    import threading
    from http.server import ThreadingHTTPServer

    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    for name, value in attributes.items():
        setattr(srv, name, value)
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
