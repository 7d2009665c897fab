"""The shared image reader: formats, bit depths, channels, resizing, bad files, cache."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_runtime import images as im


def _write(path, array, ext=".png"):
    ok, buf = cv2.imencode(ext, array)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_gray_8bit_scaled_to_minus1_1(tmp_path):
    a = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    out = im.load_image(_write(tmp_path / "g.png", a), size=64)
    assert out.dtype == np.float32 and out.shape == (64, 64)
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)


def test_16bit_uses_full_range(tmp_path):
    a = np.full((32, 32), 65535, np.uint16)
    a[:16] = 0
    out = im.load_image(_write(tmp_path / "g16.png", a), size=32)
    assert out[:16].max() == pytest.approx(-1.0) and out[16:].min() == pytest.approx(1.0)


def test_rgb_and_rgba_become_gray(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, (40, 40), np.uint8)
    rgb = np.dstack([gray] * 3)
    rgba = np.dstack([gray] * 3 + [np.full_like(gray, 7)])  # alpha is dropped, not composited
    ref = im.load_image(_write(tmp_path / "g.png", gray), size=40)
    np.testing.assert_allclose(im.load_image(_write(tmp_path / "c.png", rgb), size=40), ref, atol=1e-6)
    np.testing.assert_allclose(im.load_image(_write(tmp_path / "a.png", rgba), size=40), ref, atol=1e-6)


def test_stretch_vs_crop(tmp_path):
    a = np.zeros((60, 120), np.uint8)
    a[:, 30:90] = 255  # the central square is white
    p = _write(tmp_path / "wide.png", a)
    crop = im.load_image(p, size=30, resize="crop")
    stretch = im.load_image(p, size=30, resize="stretch")
    assert crop.min() == pytest.approx(1.0)
    assert stretch[:, 0].max() == pytest.approx(-1.0) and stretch[:, 15] == pytest.approx(1.0)


def test_area_interpolation_averages(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    a[::2, ::2] = 255  # each 2x2 block holds one white pixel
    out = im.load_image(_write(tmp_path / "c.png", a), size=16)
    np.testing.assert_allclose(out, np.full((16, 16), 0.25 * 2 - 1), atol=1e-6)


@pytest.fixture
def messy_folder(tmp_path, train_normal):
    d = tmp_path / "messy"
    (d / "sub").mkdir(parents=True)
    real = sorted(train_normal.iterdir())[0].read_bytes()
    (d / "good.jpeg").write_bytes(real)
    (d / "sub" / "nested.jpeg").write_bytes(real)
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpeg").write_bytes(real[: len(real) // 2])
    (d / "notes.jpg").write_text("this is not an image\n")
    (d / "README.txt").write_text("ignored: not an image extension\n")
    rgba = np.dstack([np.full((50, 50), 100, np.uint8)] * 3 + [np.full((50, 50), 255, np.uint8)])
    _write(d / "rgba.png", rgba)
    _write(d / "deep16.png", np.full((50, 50), 30000, np.uint16))
    png = (d / "rgba.png").read_bytes()
    (d / "cut.png").write_bytes(png[: len(png) - 20])
    return d


def test_folder_with_bad_files(messy_folder):
    s = im.load_folder(messy_folder, size=32)
    assert s.files == ["deep16.png", "good.jpeg", "rgba.png"]
    reasons = dict(s.skipped)
    assert set(reasons) == {"cut.png", "empty.jpg", "notes.jpg", "truncated.jpeg", "sub/nested.jpeg"}
    assert reasons["sub/nested.jpeg"] == "duplicate of good.jpeg"
    assert reasons["empty.jpg"] == "empty file"
    assert "truncated" in reasons["truncated.jpeg"]
    assert "truncated" in reasons["cut.png"]
    assert "not an image" in reasons["notes.jpg"]
    assert s.images.shape == (3, 32, 32)
    np.testing.assert_allclose(s.images[0], 30000 / 65535 * 2 - 1, atol=1e-5)
    warning = s.skipped_warning()
    assert warning.count("\n") == 0 and "skipped 5 of 8" in warning and "truncated.jpeg" in warning


def test_folder_streamed_into_a_file(messy_folder, tmp_path):
    """`into`: same images and skips as in memory, held in a read-only memory map; progress
    is reported once per candidate file, ending at the total."""
    calls = []
    s = im.load_folder(messy_folder, size=32, into=tmp_path / "set.f32", progress=lambda d, t: calls.append((d, t)))
    mem = im.load_folder(messy_folder, size=32)
    assert isinstance(s.images, np.memmap) and not s.images.flags.writeable
    np.testing.assert_array_equal(s.images, mem.images)
    assert s.files == mem.files and s.skipped == mem.skipped
    assert (tmp_path / "set.f32").stat().st_size == 3 * 32 * 32 * 4
    assert calls == [(i, 8) for i in range(1, 9)]


def test_no_usable_image(tmp_path):
    (tmp_path / "a.jpg").write_text("nope")
    with pytest.raises(im.NoImagesError, match="no usable image"):
        im.load_folder(tmp_path)
    with pytest.raises(im.NoImagesError, match="not found"):
        im.load_folder(tmp_path / "missing")


def test_fingerprint_tracks_content(tmp_path):
    _write(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    f1 = im.load_folder(tmp_path, size=16).fingerprint()
    _write(tmp_path / "a.png", np.ones((16, 16), np.uint8))
    f2 = im.load_folder(tmp_path, size=16).fingerprint()
    assert f1["count"] == f2["count"] == 1 and f1["sha256"] != f2["sha256"]


def test_cache_is_keyed_by_content(tmp_path):
    cache = tmp_path / "cache"
    data = tmp_path / "data"
    data.mkdir()
    p = _write(data / "a.png", np.zeros((16, 16), np.uint8))
    first = im.load_folder(data, size=16, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    hit = im.load_folder(data, size=16, cache_dir=cache)
    np.testing.assert_array_equal(first.images, hit.images)
    # same name, new content: must not be served from the old entry
    _write(p, np.full((16, 16), 255, np.uint8))
    fresh = im.load_folder(data, size=16, cache_dir=cache)
    assert fresh.images.min() == pytest.approx(1.0)
    # a damaged entry is recomputed, not trusted
    for entry in cache.iterdir():
        entry.write_bytes(b"garbage")
    again = im.load_folder(data, size=16, cache_dir=cache)
    assert again.images.min() == pytest.approx(1.0)


def test_real_images_read(train_normal):
    s = im.load_folder(train_normal, size=128)
    assert s.images.shape == (138, 128, 128) and not s.skipped
    assert -1.0 <= s.images.min() < -0.9 and 0.9 < s.images.max() <= 1.0


def test_grid_and_uint8():
    x = np.stack([np.full((4, 4), -1.0), np.full((4, 4), 1.0), np.zeros((4, 4))])
    np.testing.assert_array_equal(im.to_uint8(x)[:, 0, 0], [0, 255, 128])
    g = im.make_grid(x, ncols=2, pad=1)
    assert g.shape == (2 * 5 + 1, 2 * 5 + 1)
    assert g[1, 1] == 0 and g[1, 6] == 255 and g[6, 1] == 128 and g[6, 6] == 0


def test_folder_keeps_duplicates_when_asked(messy_folder, tmp_path):
    kept = im.load_folder(messy_folder, size=32, duplicates="keep")
    assert kept.duplicates == [("sub/nested.jpeg", "good.jpeg")]
    assert "sub/nested.jpeg" in kept.files and "sub/nested.jpeg" not in dict(kept.skipped)
    i, j = kept.files.index("sub/nested.jpeg"), kept.files.index("good.jpeg")
    np.testing.assert_array_equal(kept.images[i], kept.images[j])
    streamed = im.load_folder(messy_folder, size=32, duplicates="keep", into=tmp_path / "rows.f32")
    np.testing.assert_array_equal(np.asarray(streamed.images), kept.images)
    with pytest.raises(ValueError, match="duplicates"):
        im.load_folder(messy_folder, duplicates="drop")
