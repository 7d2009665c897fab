"""--input stream: the training set read from a memory-mapped file trains exactly as in memory."""

from __future__ import annotations

import os

import numpy as np

from cxr_training import checkpoint
from cxr_training.config import preset
from cxr_training.data import load_images_or_fail
from cxr_training.train import train


def _state(run):
    ckpt, _ = checkpoint.latest_valid(run)
    with np.load(ckpt / "state.npz") as data:
        return {k: data[k] for k in data.files}


def test_stream_and_memory_runs_are_identical(few_real, tmp_path, monkeypatch):
    cfg = preset("smoke").replace(epochs=2, steps_per_epoch=3,
                                  progressive_schedule=((0.0, 4), (0.3, 2), (0.6, 1)))
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache" / "images"))
    logs = []
    a = train(cfg, few_real, out_root=tmp_path / "memory", log=lambda m: None, input_mode="memory")
    b = train(cfg, few_real, out_root=tmp_path / "stream", log=logs.append, input_mode="stream")
    assert any("streaming the training set from" in m for m in logs)
    assert any("(stream)" in m for m in logs)
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    # the stream file lived next to the image cache and is gone after the run
    assert (tmp_path / "cache" / "stream").is_dir() and not list((tmp_path / "cache" / "stream").iterdir())


def test_stream_mode_maps_the_file(few_real, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache" / "images"))
    images, mode, store = load_images_or_fail(few_real, preset("smoke"), log=lambda m: None, input_mode="stream")
    try:
        assert mode == "stream" and isinstance(images.images, np.memmap)
        assert store.stat().st_size == images.images.nbytes == 8 * 32 * 32 * 4
        assert not images.images.flags.writeable
    finally:
        store.unlink()
    images, mode, store = load_images_or_fail(few_real, preset("smoke"), log=lambda m: None)
    assert mode == "memory" and store is None and not isinstance(images.images, np.memmap)


def test_a_killed_runs_stream_file_is_removed(few_real, tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache" / "images"))
    stores = tmp_path / "cache" / "stream"
    stores.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = stores / f"cxr-stream-{dead.pid}-abc.f32"
    orphan.write_bytes(b"\0" * 64)
    alive = stores / f"cxr-stream-{os.getpid()}-def.f32"  # this process: still running
    alive.write_bytes(b"\0" * 64)
    logs = []
    images, mode, store = load_images_or_fail(few_real, preset("smoke"), log=logs.append, input_mode="stream")
    store.unlink()
    assert not orphan.exists() and alive.exists()
    assert any("left by a run that was killed" in m for m in logs)
