"""The real presets' files from the internet (the teacher checkpoint, the student's ImageNet
backbone init), fetched by `ikd download --preset` and named in one line when a run is offline.
Served by a real HTTP server on 127.0.0.1; torch's hub cache points into a temporary folder."""

from __future__ import annotations

import hashlib
import io
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from helpers import DEVICE, REPO, local_http_server, run_cli


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
    with local_http_server(_Files, files={}, requests=[]) as srv:
        yield srv


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


# --------------------------------------------------------------------------- a few broken images
def test_a_few_broken_images_are_counted_listed_and_skipped(trained_teacher, tiny_sets, shapes_root, tmp_path):
    """A set with three broken images (missing, cut at 60 %, empty). Before: the attack refused
    naming only the first, and there was no way on. Now: one line with the count, the first
    names and where all of them are; `ikd data check` lists every one; --skip-bad attacks the
    others and records the three as skipped; distill trains without them, and says so."""
    import json
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    names = sorted(p.name for p in (root / "train").iterdir())[:3]
    (root / "train" / names[0]).unlink()
    whole = (root / "train" / names[1]).read_bytes()
    (root / "train" / names[1]).write_bytes(whole[: len(whole) * 6 // 10])
    (root / "train" / names[2]).write_bytes(b"")
    out = tmp_path / "adv"
    common = (*tiny_sets, "--set", f"data.root={root}", "--set", f"teacher.checkpoint={trained_teacher}",
              "--set", f"attack.out={out}", "--set", "attack.steps=1")
    attack = ("attack", "--preset", "shapes", "--device", DEVICE, "--workers", "0", *common)

    result = run_cli(*attack, expect=1)
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "3 of 24 images cannot be read" in error[0], result.output
    assert "missing images: 1, unreadable or truncated images: 2" in error[0]
    assert all(n in error[0] for n in names) and "ikd data check --preset shapes" in error[0] and "--skip-bad" in error[0]
    listed = run_cli("data", "check", "--preset", "shapes", "--set", f"data.root={root}", "--set", "data.shapes=null",
                     expect=None).output
    assert "3 bad images in train" in listed and all(f"  {n}  (" in listed for n in names)

    result = run_cli(*attack, "--skip-bad")
    assert "skipping 3 unreadable images" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["attacked"], summary["skipped"], summary["skipped_images"]) == (21, 3, names)
    records = [json.loads(line) for f in out.glob("records-*.jsonl") for line in f.read_text().splitlines()]
    assert {r["image"]: r["skipped"] for r in records if "skipped" in r} == {
        names[0]: "missing", names[1]: "unreadable or truncated", names[2]: "unreadable or truncated"}
    assert "nothing to do" in run_cli(*attack, "--skip-bad").output  # a re-run skips, records nothing twice
    assert sum("skipped" in line for f in out.glob("records-*.jsonl") for line in f.read_text().splitlines()) == 3

    # The missing image comes back: stage 1 trains it without an adversarial copy; the two that
    # still cannot be read are left out (MMDetection draws other images in their place).
    (root / "train" / names[0]).write_bytes((shapes_root / "train" / names[0]).read_bytes())
    result = run_cli("distill", "--preset", "shapes", "--device", DEVICE, "--work-dir", tmp_path / "w", *common,
                     "--dfa-until", "1")
    assert "3 training images have no adversarial copy" in result.output
    log = (tmp_path / "w" / "distill" / "train.log").read_text()
    assert "3 training images have no adversarial copy" in log and "loss_adv_neck_fpn_convs_0_conv" in log
