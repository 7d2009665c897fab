"""Every kind of bad input: data folders, model files, CLI values. Each is used correctly,
skipped with its reason, or refused with one clear line and exit code 2, with nothing
partial left behind."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from cxr_runtime.cli import main as runtime_main
from cxr_training.cli import main as train_main

from ..runtime.onnx_models import tiny_generator


def _png(array) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def _bomb_png(width=30000, height=30000) -> bytes:
    """A PNG whose header claims 30000 x 30000 pixels (900 M): decoding it would need 900 MB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def catalogue(tmp_path, train_normal):
    """A data folder with one of every bad (and odd but usable) input."""
    d = tmp_path / "data"
    d.mkdir()
    reals = sorted(train_normal.iterdir())
    for p in reals[:4]:
        (d / p.name).write_bytes(p.read_bytes())
    real = reals[0].read_bytes()
    (d / "zero.jpg").write_bytes(b"")
    (d / "truncated.jpeg").write_bytes(real[: len(real) // 3])
    (d / "text.jpg").write_text("not an image at all\n")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 4), np.uint8), "CMYK").save(buf, "JPEG")
    (d / "cmyk.jpg").write_bytes(buf.getvalue())
    (d / "rgba.png").write_bytes(_png(np.dstack([np.full((48, 48), 90, np.uint8)] * 3 + [np.full((48, 48), 200, np.uint8)])))
    (d / "deep16.png").write_bytes(_png(np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)))
    (d / "one_pixel.png").write_bytes(_png(np.zeros((1, 1), np.uint8)))
    (d / "bomb.png").write_bytes(_bomb_png())
    os.symlink("loop_b.jpg", d / "loop_a.jpg")
    os.symlink("loop_a.jpg", d / "loop_b.jpg")
    os.symlink(d / "gone.jpg", d / "dangling.jpg")  # unreadable (as root, chmod cannot make one)
    os.mkfifo(d / "fifo.png")  # reading it would block forever
    (d / "sub").mkdir()
    (d / "sub" / "loop").symlink_to(d, target_is_directory=True)  # a folder loop: not followed
    name = b"caf\xe9-latin1.jpeg"  # not UTF-8
    with open(os.path.join(os.fsencode(d), name), "wb") as f:
        f.write(reals[4].read_bytes())
    (d / "copy-of-first.jpeg").write_bytes(reals[0].read_bytes())
    return d


EXPECTED_SKIPS = {
    "zero.jpg": "empty file",
    "truncated.jpeg": "truncated JPEG",
    "text.jpg": "not an image",
    "one_pixel.png": "too small",
    "bomb.png": "too many pixels",
    "loop_a.jpg": "unreadable",
    "loop_b.jpg": "unreadable",
    "dangling.jpg": "unreadable",
    "fifo.png": "not a regular file",
    "copy-of-first.jpeg": "duplicate of",
}
EXPECTED_USED = {"cmyk.jpg", "rgba.png", "deep16.png", "caf\\xe9-latin1.jpeg"}


def test_training_on_the_catalogue(catalogue, tmp_path):
    out = tmp_path / "runs"
    r = CliRunner().invoke(train_main, ["--preset", "smoke", "--epochs", "1", "--data", str(catalogue),
                                        "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 1  # one warning, naming every file and why
    cfg = json.loads((out / "00001-smoke" / "config.json").read_text())
    skipped = {s["path"]: s["reason"] for s in cfg["data"]["skipped"]}  # the skipped list is in the run folder
    for path, reason in EXPECTED_SKIPS.items():
        assert path in skipped and reason in skipped[path], (path, skipped.get(path))
        assert path in warnings[0]
    used = {f["path"] for f in cfg["data"]["files"]}
    assert EXPECTED_USED <= used and len(used) == 4 + len(EXPECTED_USED)
    assert not set(EXPECTED_SKIPS) & used
    assert (out / "00001-smoke" / "generator.keras").is_file()  # the run went on


def test_cmyk_rgba_and_16bit_are_read_correctly(catalogue):
    from cxr_runtime.images import load_image

    rgba = load_image(catalogue / "rgba.png", size=16)
    np.testing.assert_allclose(rgba, 90 / 255 * 2 - 1, atol=1e-5)  # alpha dropped, gray kept
    deep = load_image(catalogue / "deep16.png", size=48)
    assert deep.min() == pytest.approx(-1.0, abs=1e-4) and deep.max() == pytest.approx(1.0, abs=1e-4)
    cmyk = load_image(catalogue / "cmyk.jpg", size=32)
    assert cmyk.shape == (32, 32) and np.isfinite(cmyk).all() and cmyk.std() > 0


def test_bomb_is_refused_before_decoding(monkeypatch):
    from cxr_runtime import images

    def no_decode(*a, **k):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(images.cv2, "imdecode", no_decode)
    with pytest.raises(images.ImageDecodeError, match="too many pixels"):
        images.decode_image(_bomb_png())


def _runtime(*args):
    return CliRunner().invoke(runtime_main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def models(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    good = tiny_generator(d / "good.onnx", size=16)
    (d / "empty.onnx").write_bytes(b"")
    (d / "random.onnx").write_bytes(np.random.default_rng(3).bytes(10_000))
    data = good.read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    tiny_generator(d / "wrong_signature.onnx", channels=3)
    m = onnx.load(good)
    del m.metadata_props[:]
    onnx.save(m, d / "no_metadata.onnx")
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 4096)
    m = onnx.load(good)
    w = next(t for t in m.graph.initializer if t.name == "W")
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", str(8 * 256 * 4))):
        e = w.external_data.add()
        e.key, e.value = k, v
    onnx.save(m, d / "escaping.onnx")
    return d


@pytest.mark.parametrize("name, message", [
    ("missing.onnx", "model not found"),
    ("empty.onnx", "model file is empty"),
    ("random.onnx", "not a usable ONNX model"),
    ("truncated.onnx", "not a usable ONNX model"),
    ("wrong_signature.onnx", "expected float32 [batch, 1, size, size]"),
    ("no_metadata.onnx", "metadata latent_dim, image_size, synthetic missing"),
    ("escaping.onnx", "external data points outside its folder"),
])
def test_bad_models_one_line_exit_2(models, tmp_path, name, message):
    out = tmp_path / "samples"
    r = _runtime("sample", "--n", 3, "--model", models / name, "--out", out)
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output
    assert not out.exists()  # nothing partial
    r = _runtime("info", models / name)
    assert r.exit_code == 2 and message in r.output


@pytest.mark.parametrize("args, message", [
    (["--n", "-1"], "Invalid value for '--n'"),
    (["--n", "0"], "Invalid value for '--n'"),
    (["--n", "99999999999"], "Invalid value for '--n'"),
])
def test_bad_counts(models, tmp_path, args, message):
    r = _runtime("sample", "--model", models / "good.onnx", "--out", tmp_path / "s", *args)
    assert r.exit_code == 2 and message in r.output and not (tmp_path / "s").exists()


def test_bad_out(models, tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    r = _runtime("sample", "--n", 2, "--model", models / "good.onnx", "--out", a_file)
    assert r.exit_code == 2 and "is a file" in r.output and a_file.read_text() == "x"
    r = _runtime("sample", "--n", 2, "--model", models / "good.onnx", "--out", a_file / "below")
    assert r.exit_code == 2 and "cannot write" in r.output
    r = _runtime("sample", "--n", 2, "--model", models / "good.onnx", "--out", "/proc/cxr-cannot-write-here")
    assert r.exit_code == 2 and "cannot write" in r.output
