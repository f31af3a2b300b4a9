"""Checkpoint downloader against a real HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from helpers import local_http_server
from ikd_cli.core.distributed import free_port
from ikd_cli.zoo import registry, transfer
from ikd_cli.core.errors import IkdError

# Fixed bytes (not os.urandom): the parametrised test ids below carry their hash, and pytest-xdist's
# workers must collect the same ids.
DATA = bytes(random.Random(0).getrandbits(8) for _ in range(300 * 1024))
PREFIX = hashlib.sha256(DATA).hexdigest()[:8]
FILENAME = f"toy_model_20200101-{PREFIX}.pth"


class _Handler(BaseHTTPRequestHandler):
    """Serves DATA at /FILENAME, /plain.pth (and ``server.files``) with `Range: bytes=N-` support, configurable misbehaviour."""

    def do_GET(self):
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path not in srv.files:
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(DATA):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(DATA)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = DATA[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_first_after is not None and len(srv.requests) == 1:
            # Promise the whole body, send part of it, then drop the connection.
            self.wfile.write(body[: srv.cut_first_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    with local_http_server(_Handler, requests=[], files={f"/{FILENAME}", "/plain.pth"}, ignore_range=False,
                           cut_first_after=None) as srv:  # files: the raw request paths served (DATA each)
        yield srv


def _toy(srv, filename=FILENAME) -> registry.Checkpoint:
    return registry.resolve(f"{srv.base}/{filename}")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_clean_download_verifies_and_lands(server, tmp_path):
    seen = []
    path = transfer.download(_toy(server), tmp_path / "ckpts", progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / "ckpts" / FILENAME
    assert path.read_bytes() == DATA
    assert not (tmp_path / "ckpts" / (FILENAME + ".part")).exists()
    assert seen[0] == (0, len(DATA)) and seen[-1] == (len(DATA), len(DATA))
    assert server.requests[0]["range"] is None


def test_existing_verified_file_makes_no_request(server, tmp_path):
    (tmp_path / FILENAME).write_bytes(DATA)
    assert transfer.download(_toy(server), tmp_path) == tmp_path / FILENAME
    assert server.requests == []


def test_existing_bad_file_is_kept_unless_force(server, tmp_path):
    target = tmp_path / FILENAME
    target.write_bytes(b"not a checkpoint")
    with pytest.raises(IkdError, match="--force"):
        transfer.download(_toy(server), tmp_path)
    assert target.read_bytes() == b"not a checkpoint" and server.requests == []
    assert transfer.download(_toy(server), tmp_path, force=True).read_bytes() == DATA


def test_interrupted_download_keeps_part_and_resumes(server, tmp_path):
    server.cut_first_after = 100_000
    with pytest.raises(IkdError, match=r"interrupted after 0\.1 MB.*again to resume"):
        transfer.download(_toy(server), tmp_path)
    part = tmp_path / (FILENAME + ".part")
    assert part.stat().st_size == 100_000 and not (tmp_path / FILENAME).exists()

    path = transfer.download(_toy(server), tmp_path)
    assert server.requests[1]["range"] == "bytes=100000-"
    assert _sha(path) == hashlib.sha256(DATA).hexdigest()
    assert not part.exists()


def test_a_planted_part_link_is_never_written_through(server, tmp_path):
    """A ``.part`` that is a symlink (to a file of the user's) is dropped, not appended to."""
    outside = tmp_path / "important.txt"
    outside.write_bytes(DATA[:1000])  # looks like the start of the transfer: a resume would append
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / (FILENAME + ".part")).symlink_to(outside)
    path = transfer.download(_toy(server), folder)
    assert path.read_bytes() == DATA and not path.is_symlink()
    assert outside.read_bytes() == DATA[:1000]
    assert server.requests[0]["range"] is None


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    (tmp_path / (FILENAME + ".part")).write_bytes(b"x" * 5000)  # stale bytes must be overwritten
    path = transfer.download(_toy(server), tmp_path)
    assert server.requests[0]["range"] == "bytes=5000-"
    assert path.read_bytes() == DATA


def test_complete_part_gets_416_and_is_placed(server, tmp_path):
    (tmp_path / (FILENAME + ".part")).write_bytes(DATA)
    assert transfer.download(_toy(server), tmp_path).read_bytes() == DATA


def test_ctrl_c_keeps_part(server, tmp_path):
    def stop(done, total):
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(IkdError, match="Ctrl-C") as info:
        transfer.download(_toy(server), tmp_path, progress=stop)
    assert info.value.exit_code == 130
    assert (tmp_path / (FILENAME + ".part")).stat().st_size > 0


def test_wrong_hash_removes_part_and_final(server, tmp_path):
    ckpt = _toy(server)
    wrong = "00000000" if PREFIX != "00000000" else "ffffffff"
    bad = registry.Checkpoint(ckpt.name, ckpt.url, ckpt.filename, wrong)
    with pytest.raises(IkdError, match=f"checksum mismatch.*expected prefix {wrong}, got {PREFIX}"):
        transfer.download(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_404(server, tmp_path):
    with pytest.raises(IkdError, match=r"HTTP 404.*missing_20200101-12345678\.pth"):
        transfer.download(_toy(server, "missing_20200101-12345678.pth"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_says_what_to_do(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/{FILENAME}"
    with pytest.raises(IkdError) as info:
        transfer.download(registry.resolve(url), tmp_path)
    msg = str(info.value)
    assert "cannot reach 127.0.0.1" in msg and "refused" in msg
    assert url in msg and str(tmp_path / FILENAME) in msg


def test_silent_server_times_out(tmp_path):
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/{FILENAME}"
        with pytest.raises(IkdError, match=r"cannot reach 127\.0\.0\.1 \(timed out\)"):
            transfer.download(registry.resolve(url), tmp_path, timeout=0.5)


def test_url_without_hash_is_not_verified(server, tmp_path):
    ckpt = registry.resolve(f"{server.base}/plain.pth")
    assert ckpt.sha256_prefix is None and not ckpt.verifiable and ckpt.filename == "plain.pth"
    assert transfer.download(ckpt, tmp_path).read_bytes() == DATA
    assert transfer.download(ckpt, tmp_path) == tmp_path / "plain.pth"  # exists: trusted, no request
    assert len(server.requests) == 1


@pytest.mark.parametrize("segment", [
    f"..%2F..%2Fx_20200101-{PREFIX}.pth",           # climbs out of --dir
    f"%2F{{outside}}%2Fx_20200101-{PREFIX}.pth",    # an absolute path
    f"..%5Cx_20200101-{PREFIX}.pth",                # a Windows separator
    "..",
    f"x_20200101-{PREFIX}.pth%00.txt",              # a NUL byte
])
def test_url_name_that_is_not_a_plain_file_name_is_refused(server, tmp_path, segment):
    """The file name comes from the server's URL: whatever it decodes to, nothing is written
    outside --dir, and anything but a plain base name is refused in one line."""
    from helpers import run_cli

    outside, dest = tmp_path / "outside", tmp_path / "a" / "b" / "ckpts"
    outside.mkdir()
    segment = segment.format(outside=str(outside).strip("/").replace("/", "%2F"))
    server.files.add(f"/{segment}")
    url = f"{server.base}/{segment}"
    with pytest.raises(IkdError, match="not a plain file name"):
        transfer.download(registry.resolve(url), dest)
    result = run_cli("download", url, "--dir", dest, expect=1)
    assert "not a plain file name" in result.output and len(result.output.strip().splitlines()) == 1
    assert server.requests == []
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], written


def test_checkpoint_with_a_path_for_a_name_is_refused(server, tmp_path):
    """download() checks the name itself too (a Checkpoint made by hand, not by resolve)."""
    ckpt = registry.Checkpoint("x", f"{server.base}/{FILENAME}", f"../{FILENAME}", PREFIX)
    with pytest.raises(IkdError, match="not a plain file name"):
        transfer.download(ckpt, tmp_path / "ckpts")
    assert not (tmp_path / FILENAME).exists() and server.requests == []


def test_sha256_prefix_from_name():
    assert registry.sha256_prefix_from_name("a_20200130-366f5af1.pth") == "366f5af1"
    assert registry.sha256_prefix_from_name("x-e75f90c8.pth") == "e75f90c8"
    assert registry.sha256_prefix_from_name("model.pth") is None
    assert registry.sha256_prefix_from_name("a-366F5AF1.pth") is None  # the zoo uses lower case


def test_registry_entries_look_right():
    expected = {
        "retinanet_x101_64x4d_fpn_1x_coco": "366f5af1",
        "reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck+head_2x_coco": "f87da1ea",
        "cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco": "e75f90c8",
        "retinanet_r50_fpn_2x_coco": None,
        "reppoints_moment_r50_fpn_gn-neck+head_2x_coco": None,
        "mask_rcnn_r50_fpn_2x_coco": None,
        # the anchors' pairs (tests/test_anchor_presets.py checks them against the metafiles)
        "fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco": "511424d6",
        "gfl_r101_fpn_mstrain_2x_coco": "dd12f847",
        "fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco": "ede514a8",
        "faster_rcnn_r50_fpn_2x_coco": None,
        "fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco": None,
        "gfl_r50_fpn_1x_coco": None,
        "retinanet_r50_fpn_1x_coco": None,
    }
    assert set(registry.CHECKPOINTS) == set(expected)
    for name, prefix in expected.items():
        ckpt = registry.resolve(name)
        assert ckpt.name == name
        assert ckpt.url.startswith("https://download.openmmlab.com/mmdetection/v2.0/")
        assert ckpt.filename.startswith(name) and ckpt.filename.endswith(".pth")
        assert "%" not in ckpt.filename  # '+' is stored decoded on disk
        assert re.fullmatch(r"[0-9a-f]{8}", ckpt.sha256_prefix)
        assert ckpt.filename.endswith(f"-{ckpt.sha256_prefix}.pth")
        if prefix:
            assert ckpt.sha256_prefix == prefix
    assert registry.resolve("retinanet_x101_64x4d_fpn_1x_coco").url == (
        "https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_x101_64x4d_fpn_1x_coco/"
        "retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth"
    )


def test_registry_matches_installed_mmdet_metafiles():
    """The URLs must be exactly the `Weights:` of mmdet's own metafiles (skipped without mmdet)."""
    import importlib.util

    yaml = pytest.importorskip("yaml")
    spec = importlib.util.find_spec("mmdet")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("mmdet is not installed")
    configs = Path(list(spec.submodule_search_locations)[0]) / ".mim" / "configs"
    weights = {}
    for family in ("retinanet", "reppoints", "dcn", "mask_rcnn", "faster_rcnn", "fcos", "gfl"):
        meta = yaml.safe_load((configs / family / "metafile.yml").read_text())
        weights.update({m["Name"]: m.get("Weights") for m in meta["Models"]})
    for name, ckpt in registry.CHECKPOINTS.items():
        assert ckpt.url == weights[name], name


def test_unknown_name_suggests_close_matches():
    with pytest.raises(IkdError) as info:
        registry.resolve("retinanet_r50_fpn_3x_coco")
    msg = str(info.value)
    assert "retinanet_r50_fpn_2x_coco" in msg and "ikd download --list" in msg


def test_cli_download_url_list_and_preset_without_teacher(server, tmp_path):
    from helpers import run_cli

    result = run_cli("download", f"{server.base}/{FILENAME}", "--dir", tmp_path)
    assert "verified" in result.output and (tmp_path / FILENAME).is_file()
    assert _sha(tmp_path / FILENAME).startswith(FILENAME.rsplit("-", 1)[1][:8])
    assert "retinanet_x101_64x4d_fpn_1x_coco" in run_cli("download", "--list").output
    result = run_cli("download", "teacher", "--preset", "shapes", expect=1)
    assert "has no teacher to download" in result.output
    result = run_cli("download", f"http://127.0.0.1:{free_port()}/{FILENAME}", "--dir", tmp_path / "x", expect=1)
    assert "cannot reach 127.0.0.1" in result.output
