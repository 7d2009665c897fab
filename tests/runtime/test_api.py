"""The public API an integrator builds on: one error base, sampling into a folder, logging."""

from __future__ import annotations

import json
import logging

import pytest

import cxr_runtime
from cxr_runtime import Generator, errors, sampling
from cxr_runtime.images import ImageDecodeError, NoImagesError, load_folder
from cxr_runtime.session import DeviceError, ModelError

from .onnx_models import tiny_generator


def test_every_error_derives_from_cxr_error():
    assert cxr_runtime.CxrError is errors.CxrError
    for cls in (ModelError, DeviceError, ImageDecodeError, NoImagesError, errors.TooFewImagesError,
                errors.SampleSetError, errors.DicomError, errors.DicomUnavailable):
        assert issubclass(cls, cxr_runtime.CxrError), cls
    assert issubclass(ModelError, ValueError) and issubclass(DeviceError, RuntimeError)  # earlier callers


def test_one_except_catches_what_the_runtime_raises(tmp_path):
    caught = []
    for call in (lambda: Generator(tmp_path / "missing.onnx"),
                 lambda: Generator(tiny_generator(tmp_path / "g.onnx"), device="tpu"),
                 lambda: load_folder(tmp_path / "nowhere")):
        try:
            call()
        except cxr_runtime.CxrError as e:
            caught.append(type(e).__name__)
    assert caught == ["ModelError", "DeviceError", "NoImagesError"]


def test_sample_to_folder_writes_a_complete_resumable_set(tmp_path):
    gen = Generator(tiny_generator(tmp_path / "g.onnx", size=16), device="cpu")
    seen = []
    result = sampling.sample_to_folder(gen, tmp_path / "s", 10, seed=3, batch_size=4,
                                       progress=lambda done, n: seen.append(done))
    assert (result.count, result.written, result.resumed_from) == (10, 10, 0) and seen == [4, 8, 10]
    names = sorted(p.name for p in (tmp_path / "s").glob("sample-*.png"))
    assert names == [sampling.file_name(i, 10, "png") for i in range(10)]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["model_sha256"] == gen.sha256 and manifest["synthetic"] is True
    again = sampling.sample_to_folder(gen, tmp_path / "s", 10, seed=3)
    assert again.written == 0  # complete: left as it is
    with pytest.raises(errors.SampleSetError, match="another sample set"):
        sampling.sample_to_folder(gen, tmp_path / "s", 10, seed=4)
    (tmp_path / "f").write_text("x")
    with pytest.raises(errors.SampleSetError, match="not a folder"):
        sampling.sample_to_folder(gen, tmp_path / "f", 2)


def test_notices_go_to_the_cxr_runtime_logger(tmp_path, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    caplog.set_level(logging.INFO, logger="cxr_runtime")
    Generator(tiny_generator(tmp_path / "g.onnx"), device="auto")
    assert [(r.name, r.levelno) for r in caplog.records] == [("cxr_runtime", logging.INFO)]
    caplog.clear()
    Generator(tiny_generator(tmp_path / "h.onnx"), device="cpu")
    assert caplog.records == []


def test_a_set_records_its_latent_scale_and_another_scale_is_another_set(tmp_path):
    model = tiny_generator(tmp_path / "g.onnx", size=16)
    plain, wide = Generator(model, device="cpu"), Generator(model, device="cpu", latent_scale=1.25)
    sampling.sample_to_folder(plain, tmp_path / "plain", 4, seed=1)
    manifest = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert manifest["latent_scale"] == 1.0 and "latent_scale" in manifest["latents"]
    with pytest.raises(errors.SampleSetError, match="latent scale"):
        sampling.sample_to_folder(wide, tmp_path / "plain", 4, seed=1)
    sampling.sample_to_folder(wide, tmp_path / "wide", 4, seed=1)
    assert json.loads((tmp_path / "wide" / "manifest.json").read_text())["latent_scale"] == 1.25
    with pytest.raises(errors.SampleSetError, match="latent scale"):
        sampling.sample_to_folder(plain, tmp_path / "wide", 4, seed=1)
    # a set written before the scale was recorded is a scale-1 set: still complete for scale 1
    for name in ("manifest.json",):
        m = json.loads((tmp_path / "plain" / name).read_text())
        del m["latent_scale"]
        (tmp_path / "plain" / name).write_text(json.dumps(m))
    assert sampling.sample_to_folder(plain, tmp_path / "plain", 4, seed=1).written == 0
    with pytest.raises(errors.SampleSetError):
        sampling.sample_to_folder(wide, tmp_path / "plain", 4, seed=1)
