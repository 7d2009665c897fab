"""The embeddable Generator: determinism, signature checks, bad files, threads, devices."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from cxr_runtime import Generator
from cxr_runtime import generator as gmod
from cxr_runtime import session as smod
from cxr_runtime.images import to_uint8
from cxr_runtime.session import DeviceError, ModelError

from .onnx_models import reference_output, tiny_generator


@pytest.fixture
def model(tmp_path):
    return tiny_generator(tmp_path / "g.onnx")


def test_sample_matches_the_model_math(model):
    g = Generator(model, device="cpu")
    assert (g.latent_dim, g.image_size, g.provider) == (8, 16, "CPUExecutionProvider")
    imgs = g.sample(5, seed=3)
    z = gmod.latents(0, 5, 8, 3)
    want = to_uint8(reference_output(model, z)[:, 0])
    assert imgs.dtype == np.uint8 and imgs.shape == (5, 16, 16)
    assert np.abs(imgs.astype(int) - want).max() <= 1  # float32 vs float64 rounding at .5 edges
    assert g.metadata["run_id"] == "tiny"


def test_same_images_whatever_the_batch_size(model):
    g = Generator(model, device="cpu")
    ref = g.sample(70, seed=11, batch_size=64)
    for bs in (1, 7, 70, 1000):
        np.testing.assert_array_equal(g.sample(70, seed=11, batch_size=bs), ref)
    assert not np.array_equal(g.sample(70, seed=12), ref)


def test_latents_are_random_access():
    full = gmod.latents(0, 3000, 4, seed=5)
    np.testing.assert_array_equal(gmod.latents(1000, 1500, 4, seed=5), full[1000:2500])
    np.testing.assert_array_equal(gmod.latents(1023, 2, 4, seed=5), full[1023:1025])
    assert abs(full.mean()) < 0.05 and abs(full.std() - 1) < 0.05


def test_thread_safe(model):
    g = Generator(model, device="cpu")
    ref = g.sample(40, seed=1, batch_size=8)
    results, errors = [], []

    def work():
        try:
            results.append(g.sample(40, seed=1, batch_size=8))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    for r in results:
        np.testing.assert_array_equal(r, ref)


def test_bad_model_files(tmp_path, model):
    with pytest.raises(ModelError, match="not found"):
        Generator(tmp_path / "missing.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        Generator(tmp_path / "empty.onnx")
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        Generator(tmp_path / "random.onnx")
    data = model.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        Generator(tmp_path / "cut.onnx")


def test_wrong_signature_and_nan(tmp_path):
    with pytest.raises(ModelError, match="expected float32 \\[batch, 1, size, size\\]"):
        Generator(tiny_generator(tmp_path / "rgb.onnx", channels=3))
    g = Generator(tiny_generator(tmp_path / "nan.onnx", nan=True), device="cpu")
    with pytest.raises(ModelError, match="non-finite"):
        g.sample(2)


class _FakeSession:
    def __init__(self, providers):
        self._providers = providers

    def get_providers(self):
        return self._providers


def test_device_selection(monkeypatch, model, caplog):
    caplog.set_level(logging.INFO, logger="cxr_runtime")
    # a CUDA build whose CUDA libraries are missing: the session silently comes up on CPU
    monkeypatch.setattr(smod, "available_providers", lambda: [smod.CUDA, smod.CPU])
    monkeypatch.setattr(smod, "_create", lambda m, providers, options: _FakeSession([smod.CPU]))
    _, provider = smod.open_session(model, "auto")
    assert provider == smod.CPU and caplog.messages == ["note: CUDA did not initialise; running on CPU"]
    with pytest.raises(DeviceError, match="did not initialise"):
        smod.open_session(model, "cuda")
    # CUDA that works; cuda:N picks the GPU and provider options pass through
    seen = []

    def working(m, providers, options):
        seen.append(providers)
        return _FakeSession([p if isinstance(p, str) else p[0] for p in providers])

    monkeypatch.setattr(smod, "_create", working)
    assert smod.open_session(model, "auto")[1] == smod.CUDA
    assert smod.open_session(model, "cuda:1", provider_options={"gpu_mem_limit": 2**30})[1] == smod.CUDA
    assert seen[-1][0] == (smod.CUDA, {"gpu_mem_limit": 2**30, "device_id": 1})
    # a CPU-only build
    monkeypatch.setattr(smod, "available_providers", lambda: [smod.CPU])
    with pytest.raises(DeviceError, match="CUDA is not available"):
        smod.open_session(model, "cuda")
    caplog.clear()
    assert smod.open_session(model, "auto")[1] == smod.CPU
    assert caplog.messages == ["note: no CUDA provider in this onnxruntime; running on CPU"]
    for bad in ("tpu", "cuda:x", "cpu:1", "gpu"):
        with pytest.raises(DeviceError, match="unknown device"):
            smod.open_session(model, bad)


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"  # 4 logical CPUs: two cores with two hyper-threads each
    cpuinfo.write_text("".join(f"processor\t: {c}\nphysical id\t: 0\ncore id\t: {c // 2}\n\n" for c in range(4)))
    real, real_cgroup = smod._core_of_cpu, smod._cgroup_cpus
    monkeypatch.setattr(smod, "_core_of_cpu", lambda: real(str(cpuinfo)))
    monkeypatch.setattr(smod, "_cgroup_cpus", lambda: None)
    monkeypatch.setattr(smod.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert smod.usable_cores() == 2  # hyper-threads do not count
    monkeypatch.setattr(smod.os, "sched_getaffinity", lambda pid: {0, 1})
    assert smod.usable_cores() == 1  # pinned to one core's two threads
    monkeypatch.setattr(smod.os, "sched_getaffinity", lambda pid: {0, 2})
    assert smod.usable_cores() == 2
    monkeypatch.setattr(smod, "_cgroup_cpus", lambda: 1.5)  # a container allowed 1.5 CPUs
    assert smod.usable_cores() == 2
    monkeypatch.setattr(smod, "_cgroup_cpus", lambda: 0.5)
    assert smod.usable_cores() == 1
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cpu.max").write_text("150000 100000\n")
    assert real_cgroup(str(cg)) == 1.5
    (cg / "cpu.max").write_text("max 100000\n")
    assert real_cgroup(str(cg)) is None
    assert real_cgroup(str(tmp_path / "none")) is None


def test_generator_passes_threads_and_session_options(model):
    import onnxruntime as ort

    g = Generator(model, device="cpu", threads=1)
    assert g.session.get_session_options().intra_op_num_threads == 1
    so = ort.SessionOptions()
    so.intra_op_num_threads = 3
    so.enable_cpu_mem_arena = False
    g = Generator(model, device="cpu", session_options=so)
    got = g.session.get_session_options()
    assert got.intra_op_num_threads == 3 and not got.enable_cpu_mem_arena


def test_cuda_gives_the_cpu_images(model):
    """On a machine whose onnxruntime really has CUDA (skipped elsewhere): the same latents
    give the same images on the GPU as on the CPU, up to one 8-bit level."""
    import onnxruntime as ort

    if smod.CUDA not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    gpu = Generator(model, device="cuda")
    if gpu.provider != smod.CUDA:
        pytest.skip("CUDA provider present but did not initialise")
    cpu = Generator(model, device="cpu")
    a, b = gpu.sample(70, seed=5, batch_size=64), cpu.sample(70, seed=5, batch_size=64)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_engine_conflict_is_reported(monkeypatch):
    from importlib import metadata

    real_version = metadata.version
    assert smod.engine_conflict() is None  # this environment has one engine

    def both(name):
        return "1.0" if name in ("onnxruntime", "onnxruntime-gpu") else real_version(name)

    monkeypatch.setattr(metadata, "version", both)
    msg = smod.engine_conflict()
    assert "onnxruntime 1.0 and onnxruntime-gpu 1.0" in msg and "keep one" in msg


def test_latent_scale_widens_the_latents_from_the_metadata_or_the_caller(tmp_path, model):
    z = gmod.latents(0, 6, 8, 2)
    plain = Generator(model, device="cpu")
    assert plain.latent_scale == 1.0
    raw = np.concatenate([im for _, im in plain.batches(6, seed=2, raw=True)])
    np.testing.assert_array_equal(raw, plain.generate(z))  # scale 1: exactly the latents of the rule
    scaled_model = tiny_generator(tmp_path / "s.onnx", metadata={"latent_scale": "1.3"})
    g = Generator(scaled_model, device="cpu")
    assert g.latent_scale == 1.3
    got = np.concatenate([im for _, im in g.batches(6, seed=2, raw=True, batch_size=4)])
    np.testing.assert_array_equal(got, g.generate(z * np.float32(1.3)))
    assert not np.array_equal(got, raw)
    # the caller's value wins over the model's; 1 gives the plain images back
    np.testing.assert_array_equal(Generator(scaled_model, device="cpu", latent_scale=1.0).sample(6, seed=2),
                                  plain.sample(6, seed=2))


@pytest.mark.parametrize("value", ["0", "-1", "nan", "x", "11"])
def test_bad_latent_scales_are_refused(tmp_path, model, value):
    with pytest.raises(ModelError, match="metadata latent_scale"):
        Generator(tiny_generator(tmp_path / "bad.onnx", metadata={"latent_scale": value}), device="cpu")
    if value != "x":
        with pytest.raises(ValueError, match="latent_scale"):
            Generator(model, device="cpu", latent_scale=float(value))
