"""The real presets' files from the internet (the teacher checkpoint, the student's ImageNet
backbone init), fetched by `ikd download --preset` and named in one line when a run is offline.
Served by a real HTTP server on 127.0.0.1; torch's hub cache points into a temporary folder."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import DEVICE, REPO, run_cli


class _Files(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    srv.daemon_threads, srv.files, srv.requests = True, {}, []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """torch's hub cache (where mmcv's torchvision:// loader looks) inside tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _hashed(stem: str, body: bytes) -> str:
    return f"{stem}-{hashlib.sha256(body).hexdigest()[:8]}.pth"


def _backbone_file() -> bytes:
    """A real torch file with one weight of the shapes student's ResNet-18 backbone."""
    import torch

    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.full((32, 3, 7, 7), 0.01)}, buf)
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _preset(tmp_path: Path, init_url: str, teacher_url: str = "") -> Path:
    """The shapes preset with a student whose backbone starts from ``init_url`` (as the zoo's
    configs start theirs from torchvision://resnet50) and, optionally, a downloaded teacher."""
    student = tmp_path / "student.py"
    student.write_text(f"_base_ = {str(REPO / 'configs/models/shapes_retinanet_r18.py')!r}\n"
                       f"model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', checkpoint={init_url!r})))\n")
    text = (REPO / "configs" / "shapes.yaml").read_text().replace(
        "  config: ikd::models/shapes_retinanet_r18.py", f"  config: {student}")
    if teacher_url:
        text = text.replace("  checkpoint: work_dirs/shapes/teacher/latest.pth",
                            f"  checkpoint: {tmp_path / 'ckpts' / 'teacher.pth'}\n  download: {teacher_url}")
    path = tmp_path / "offline.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["retinanet", "reppoints", "mask-rcnn"])
def test_real_presets_name_teacher_and_student_init(name, hub):
    """Each reference preset needs its zoo teacher and the student's torchvision://resnet50, which
    mmcv's own table resolves to torchvision's URL and torch caches in the hub folder."""
    from ikd_cli.config.mmdet import build_config, pretrained_sources
    from ikd_cli.config.presets import load
    from ikd_cli.train.downloads import preset_files

    preset = load(name)
    teacher, init = preset_files(preset)
    assert teacher.path == Path(preset["teacher"]["checkpoint"])
    assert teacher.ckpt.sha256_prefix and teacher.ckpt.url.startswith("https://download.openmmlab.com/")
    assert init.what == "student backbone init torchvision://resnet50"
    assert init.ckpt.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert init.path == hub / "resnet50-0676ba61.pth" and init.ckpt.sha256_prefix == "0676ba61"

    off = load(name, {"student.pretrained": False})
    assert [n.what for n in preset_files(off)] == ["teacher checkpoint"]
    assert pretrained_sources(build_config(off, "student").model) == []


def test_mmcv_loads_the_init_from_where_it_is_put(hub):
    """Offline (no internet here), mmcv's torchvision:// loader reads the file at the path we name."""
    import torch
    from mmcv.runner.checkpoint import _load_checkpoint

    from ikd_cli.zoo.pretrained import init_checkpoint

    ckpt, folder = init_checkpoint("torchvision://resnet18")
    assert folder == hub
    folder.mkdir(parents=True)
    torch.save({"marker": torch.tensor([7.0])}, folder / ckpt.filename)
    assert _load_checkpoint("torchvision://resnet18")["marker"].item() == 7.0


def test_download_preset_fetches_and_verifies_every_file(server, hub, tmp_path):
    backbone, teacher = _backbone_file(), b"teacher weights"
    init_name, teacher_name = _hashed("resnet18", backbone), _hashed("toy_teacher_20200101", teacher)
    server.files = {f"/{init_name}": backbone, f"/{teacher_name}": teacher}
    preset = _preset(tmp_path, f"{server.base}/{init_name}", f"{server.base}/{teacher_name}")

    out = run_cli("download", "--preset", preset).output
    assert (hub / init_name).read_bytes() == backbone
    assert (tmp_path / "ckpts" / "teacher.pth").read_bytes() == teacher  # where teacher.checkpoint says
    assert out.count("verified") == 2 and "student backbone init" in out
    run_cli("download", "--preset", preset)
    assert len(server.requests) == 2  # both on disk and verified: nothing fetched again

    (hub / init_name).write_bytes(b"tampered")
    out = run_cli("download", "--preset", preset, expect=1).output
    assert "sha256 starts with" in out and "1 of 2 files" in out


def test_offline_training_names_the_init_file_url_and_path(server, hub, tmp_path, tiny_sets):
    """Before: mmcv's own download died inside the run (`<urlopen error ...>`). Now the run stops
    before training in one line that names the file, its URL and where to put it; online, the file
    is fetched, verified, and mmcv loads it from there; student.pretrained=false needs no file."""
    backbone = _backbone_file()
    name = _hashed("resnet18", backbone)
    offline = f"http://127.0.0.1:{_free_port()}/{name}"
    args = ("train", "--preset", _preset(tmp_path, offline), "--model", "student", "--device", DEVICE, *tiny_sets)
    result = run_cli(*args, "--work-dir", tmp_path / "w1", expect=1)
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert f"put it at {hub / name}" in error[0] and offline in error[0] and "student.pretrained=false" in error[0]
    assert not list((tmp_path / "w1").rglob("*.pth"))

    run_cli(*args, "--work-dir", tmp_path / "w2", "--set", "student.pretrained=false")
    assert not hub.exists() or not list(hub.iterdir())

    server.files = {f"/{name}": backbone}
    args = ("train", "--preset", _preset(tmp_path, f"{server.base}/{name}"), "--model", "student",
            "--device", DEVICE, *tiny_sets)
    run_cli(*args, "--work-dir", tmp_path / "w3")
    assert (hub / name).read_bytes() == backbone and server.requests == [f"/{name}"]
    assert f"load model from: {server.base}/{name}" in (tmp_path / "w3" / "student" / "train.log").read_text()
