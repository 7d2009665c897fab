"""The runtime library leaves its host process alone: no umask change, no global logging
levels, no stderr redirection it did not open; quiet_stderr is safe across threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np

from cxr_runtime import io as cio
from cxr_runtime.quiet import quiet_stderr


def test_import_and_use_leave_umask_and_global_settings_alone(tmp_path):
    """Importing and using the library (sessions, image reading, atomic writes) changes
    neither the umask nor onnxruntime's or OpenCV's process-wide log levels."""
    script = f"""
import os, sys
os.umask(0o027)
import cv2
cv_before = cv2.utils.logging.getLogLevel()
calls = []
real_umask = os.umask
os.umask = lambda m: (calls.append(m), real_umask(m))[1]
import onnxruntime as ort
ort_calls = []
real_severity = ort.set_default_logger_severity
ort.set_default_logger_severity = lambda level: (ort_calls.append(level), real_severity(level))[1]
sys.path[:0] = {sys.path!r}
from cxr_runtime import images, io, session, Generator
from tests.runtime.onnx_models import tiny_generator
g = Generator(tiny_generator({str(tmp_path / 'g.onnx')!r}), device="cpu")
g.sample(2)
io.atomic_write_bytes({str(tmp_path / 'f.bin')!r}, b"x")
assert calls == [], calls
assert cv2.utils.logging.getLogLevel() == cv_before, "OpenCV log level changed"
assert ort_calls == [], ort_calls
print("ok", oct(real_umask(0o027)))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok 0o27"


def test_atomic_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        cio.atomic_write_bytes(tmp_path / "a.bin", b"data")
        folder = cio.make_temp_dir(tmp_path, ".tmp-x-")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    assert folder.stat().st_mode & 0o777 == 0o750 and folder.name.startswith(".tmp-x-")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".a.bin")] == []  # no temporary left


def test_quiet_stderr_is_restored_when_threads_overlap():
    """Blocks opened and closed in different orders by several threads always end with fd 2
    pointing where it pointed before (the first block saves it, the last restores it)."""
    before = os.fstat(2)
    start = threading.Barrier(8)
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.02, (8, 20))

    def worker(k):
        start.wait()
        for d in delays[k]:
            with quiet_stderr():
                threading.Event().wait(d)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    devnull = os.stat(os.devnull)
    assert (after.st_dev, after.st_ino) != (devnull.st_dev, devnull.st_ino) or \
        (before.st_dev, before.st_ino) == (devnull.st_dev, devnull.st_ino)


def test_cxr_verbose_is_the_one_switch(monkeypatch):
    """CXR_VERBOSE=1 keeps native chatter; CXR_TF_VERBOSE, a name of the first day that no
    document gave, is not read."""
    from cxr_runtime.quiet import verbose

    monkeypatch.delenv("CXR_VERBOSE", raising=False)
    monkeypatch.setenv("CXR_TF_VERBOSE", "1")
    assert not verbose()
    monkeypatch.setenv("CXR_VERBOSE", "1")
    assert verbose()
