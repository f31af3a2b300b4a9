"""The storage of adversarial images (``ikd_cli.attack.storage``), on real COCO photographs.

The delta format must rebuild the adversarial image bit for bit from the decoded source, and
refuse, in one line naming the image, every case where it cannot (other source pixels, a
corrupt or truncated file, a budget the attack did not respect).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from ikd_cli.attack import storage
from ikd_cli.attack.storage import (DELTA_SUFFIX, FORMATS, adversarial_name, decode_delta, encode_delta,
                                    encode_png, pixel_digest, read_adversarial)
from ikd_cli.core.errors import IkdError

COCO = Path(__file__).resolve().parent / "data" / "coco"
PHOTOS = sorted(COCO.glob("*2017/*.jpg"))


def load(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


def attack_like(clean: np.ndarray, eps: int, seed: int = 0) -> np.ndarray:
    """An adversarial-like copy: 3/4 of the sub-pixels at +-eps, the rest a rounded normal, all
    within [-eps, eps] and clipped to [0, 255] like a real attack's output."""
    rng = np.random.default_rng(seed)
    delta = np.clip(np.round(rng.normal(0, eps * 0.8, clean.shape)), -eps, eps)
    at_budget = rng.random(clean.shape) < 0.75
    delta[at_budget] = rng.choice([-eps, eps], size=int(at_budget.sum()))
    return np.clip(clean.astype(np.int16) + delta.astype(np.int16), 0, 255).astype(np.uint8)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_vendored_photos_are_there():
    assert len(PHOTOS) == 6, "tests/data/coco should hold 3 train2017 and 3 val2017 photographs"


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_round_trip_is_bit_exact_on_real_photos(path):
    clean = load(path)
    adv = attack_like(clean, 8)
    rebuilt = decode_delta(encode_delta(clean, adv, 8), clean, name=path.name)
    assert rebuilt.dtype == np.uint8 and rebuilt.shape == clean.shape
    assert np.array_equal(rebuilt, adv)
    rebuilt[0, 0, 0] ^= 1  # a fresh, writable array: mmdet's transforms may modify it in place


@pytest.mark.parametrize("eps", [1, 16, 2.5])
def test_round_trip_other_budgets(eps):
    clean = load(PHOTOS[0])
    rng = np.random.default_rng(int(eps * 10))
    step = int(eps)
    adv = np.clip(clean.astype(np.int16) + rng.integers(-step, step + 1, clean.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(decode_delta(encode_delta(clean, adv, eps), clean), adv)


def test_round_trip_crafted_worst_case():
    """Saturated pixels (0 and 255) pushed to the far end of a 255 budget (deltas of +-255 wrap
    modulo 256), full-entropy noise elsewhere, and a one-pixel-wide image."""
    clean = load(PHOTOS[1])
    rng = np.random.default_rng(1)
    clean[:40] = 0
    clean[40:80] = 255
    adv = rng.integers(0, 256, clean.shape, dtype=np.uint8)
    adv[:40] = 255
    adv[40:80] = 0
    assert np.array_equal(decode_delta(encode_delta(clean, adv, 255), clean), adv)
    column = np.ascontiguousarray(clean[:, :1])
    adv_column = np.ascontiguousarray(adv[:, :1])
    assert np.array_equal(decode_delta(encode_delta(column, adv_column, 255), column), adv_column)


def test_grayscale_source_read_as_color(tmp_path):
    """COCO has grayscale JPEGs; read with IMREAD_COLOR they are three equal channels."""
    gray = cv2.cvtColor(load(PHOTOS[2]), cv2.COLOR_BGR2GRAY)
    path = tmp_path / "gray.jpg"
    assert cv2.imwrite(str(path), gray)
    clean = load(path)
    assert clean.ndim == 3 and np.array_equal(clean[..., 0], clean[..., 2])
    adv = attack_like(clean, 8, seed=3)
    assert np.array_equal(decode_delta(encode_delta(clean, adv, 8), clean), adv)
    clean2d = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    adv2d = attack_like(clean2d, 8, seed=4)
    assert np.array_equal(decode_delta(encode_delta(clean2d, adv2d, 8), clean2d), adv2d)


def test_pipeline_decode_matches_attack_decode():
    """mmcv's LoadImageFromFile decodes the file's bytes (cv2.imdecode); the attack used
    cv2.imread. Both must give the pixels the digest was taken of."""
    for path in PHOTOS:
        from_bytes = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        assert pixel_digest(from_bytes) == pixel_digest(load(path))


def test_pixel_digest_covers_pixels_and_shape():
    clean = load(PHOTOS[0])
    digest = pixel_digest(clean)
    assert len(digest) == 64 and digest == pixel_digest(clean.copy())
    assert pixel_digest(clean.reshape(clean.shape[0], -1)) != digest
    changed = clean.copy()
    changed[-1, -1, -1] ^= 1
    assert pixel_digest(changed) != digest


def test_changed_source_pixel_is_refused_naming_the_image():
    clean = load(PHOTOS[3])
    data = encode_delta(clean, attack_like(clean, 8), 8)
    changed = clean.copy()
    changed[10, 20, 1] ^= 1
    with pytest.raises(IkdError) as excinfo:
        decode_delta(data, changed, name="val2017/000000037777.jpg.ikdd")
    message = one_line_error(excinfo)
    assert "val2017/000000037777.jpg.ikdd" in message and "source pixels differ" in message


def test_source_of_another_size_is_refused():
    clean = load(PHOTOS[3])
    data = encode_delta(clean, attack_like(clean, 8), 8)
    with pytest.raises(IkdError) as excinfo:
        decode_delta(data, np.ascontiguousarray(clean[:-1]), name="a.jpg")
    assert "a.jpg" in one_line_error(excinfo)
    with pytest.raises(IkdError):
        decode_delta(data, clean.astype(np.float32), name="a.jpg")


def test_truncated_corrupt_and_foreign_files_are_refused():
    clean = load(PHOTOS[4])
    data = encode_delta(clean, attack_like(clean, 8), 8)
    header = storage._HEADER.size + 12
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    newer = bytearray(data)
    newer[4] = storage.VERSION + 1
    cases = {"truncated": data[: len(data) - 100], "payload cut": data[: header + 10], "header cut": data[:20],
             "empty": b"", "flipped byte": bytes(flipped), "png": encode_png(clean),
             "garbage": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
             "newer version": bytes(newer), "no payload": data[:header]}
    for what, bad in cases.items():
        with pytest.raises(IkdError) as excinfo:
            decode_delta(bad, clean, name="x.jpg.ikdd")
        assert "x.jpg.ikdd" in one_line_error(excinfo), what
    assert "upgrade ikd" in str(pytest.raises(IkdError, decode_delta, bytes(newer), clean).value)


def test_trailing_garbage_is_refused():
    clean = load(PHOTOS[4])
    data = encode_delta(clean, attack_like(clean, 8), 8)
    with pytest.raises(IkdError):
        decode_delta(data + zlib.compress(b"more"), clean)


def test_over_budget_or_mismatched_adversarial_image_is_refused():
    clean = load(PHOTOS[0])
    adv = attack_like(clean, 8)
    over = adv.copy()
    value = int(clean[5, 5, 0])
    over[5, 5, 0] = value + 9 if value < 128 else value - 9
    with pytest.raises(IkdError, match="a.jpg differs from its source by 9 > eps 8"):
        encode_delta(clean, over, 8, name="a.jpg")
    with pytest.raises(IkdError, match=f"is {clean.shape[0] - 1} x {clean.shape[1]} x 3 but its source is"):
        encode_delta(clean, np.ascontiguousarray(adv[:-1]), 8)
    with pytest.raises(IkdError):
        encode_delta(clean, adv.astype(np.int16), 8)
    with pytest.raises(IkdError):
        encode_delta(clean, adv, float("nan"))


def test_delta_is_much_smaller_than_png_of_the_adversarial_image():
    clean_bytes = sum(p.stat().st_size for p in PHOTOS[:3])
    delta_bytes = png_bytes = 0
    for path in PHOTOS[:3]:
        clean = load(path)
        adv = attack_like(clean, 8)
        delta_bytes += len(encode_delta(clean, adv, 8))
        png_bytes += len(encode_png(adv))
    assert delta_bytes < 0.6 * png_bytes
    assert delta_bytes < 2.5 * clean_bytes


def test_adversarial_name():
    assert FORMATS == ("delta", "png")
    assert adversarial_name("train2017/000000403013.jpg", "png") == Path("train2017/000000403013.png")
    assert adversarial_name("train2017/000000403013.jpg", "delta") == Path("train2017/000000403013.jpg" + DELTA_SUFFIX)
    assert adversarial_name("a/b.png", "delta") != adversarial_name("a/b.jpg", "delta")
    with pytest.raises(IkdError, match="unknown adversarial image format"):
        adversarial_name("a.jpg", "webp")


def test_read_adversarial_both_formats(tmp_path):
    path = PHOTOS[5]
    clean = load(path)
    adv = attack_like(clean, 8)
    png = tmp_path / adversarial_name(path.name, "png")
    png.write_bytes(encode_png(adv))
    delta = tmp_path / adversarial_name(path.name, "delta")
    delta.write_bytes(encode_delta(clean, adv, 8))
    assert np.array_equal(read_adversarial(png, None, fmt="png"), adv)
    assert np.array_equal(read_adversarial(png, clean, fmt="png"), adv)
    assert np.array_equal(read_adversarial(delta, clean, fmt="delta"), adv)
    with pytest.raises(IkdError, match="needs its decoded source"):
        read_adversarial(delta, None, fmt="delta")
    with pytest.raises(IkdError, match="missing"):
        read_adversarial(tmp_path / "nope.png", clean, fmt="png")
    with pytest.raises(IkdError, match="but its source is"):
        read_adversarial(png, np.ascontiguousarray(clean[:-2]), fmt="png")
    with pytest.raises(IkdError) as excinfo:
        read_adversarial(delta, np.ascontiguousarray(clean[::-1]), fmt="delta")
    assert str(delta) in one_line_error(excinfo)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(IkdError, match="not a readable image"):
        read_adversarial(broken, None, fmt="png")
