"""One place that opens onnxruntime sessions and decides where they run.

Device rules (`auto|cuda|cpu`):
- `cpu`: CPUExecutionProvider.
- `cuda`: CUDA or nothing. onnxruntime-gpu silently falls back to CPU when the CUDA
  libraries cannot be loaded, so the session's *actual* providers are checked after it is
  created; if CUDA is not among them this is a DeviceError (one line, exit code 2).
- `auto`: CUDA when a CUDA session really initialises, otherwise CPU with one short notice.
onnxruntime's own error output while probing CUDA is not shown (CXR_VERBOSE=1 shows it).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from cxr_runtime.quiet import quiet_stderr

DEVICES = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

ort.set_default_logger_severity(3)  # errors only; we report problems ourselves


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


class ModelError(ValueError):
    """The model file is missing, unreadable or not a usable ONNX model."""


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def session_options(threads: int | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return so


def _create(model: str | bytes, providers: list[str], threads: int | None) -> ort.InferenceSession:
    try:
        with quiet_stderr():
            return ort.InferenceSession(model, sess_options=session_options(threads), providers=providers)
    except Exception as e:  # onnxruntime raises several private exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"not a usable ONNX model ({first[:300]})") from None


def open_session(model: str | os.PathLike | bytes, device: str = "auto", notice=None,
                 threads: int | None = None) -> tuple[ort.InferenceSession, str]:
    """Return (session, provider actually used). `notice(msg)` gets the CPU-fallback note."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    if not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model not found: {path}")
        if path.stat().st_size == 0:
            raise ModelError(f"model file is empty: {path}")
        model = str(path)
    available = available_providers()
    if device in ("auto", "cuda") and CUDA in available:
        session = _create(model, [CUDA, CPU], threads)
        if session.get_providers()[0] == CUDA:
            return session, CUDA
        if device == "cuda":
            raise DeviceError("CUDA is installed in onnxruntime but did not initialise (driver, CUDA 13 or cuDNN 9 "
                              f"libraries missing?); available providers: {', '.join(available)}; use --device cpu")
        if notice:
            notice("note: CUDA did not initialise; running on CPU")
        return session, CPU
    if device == "cuda":
        raise DeviceError(f"CUDA is not available in this onnxruntime (providers: {', '.join(available)}); "
                          "install the 'gpu' extra (onnxruntime-gpu) or use --device cpu")
    if device == "auto" and notice:
        notice("note: no CUDA provider in this onnxruntime; running on CPU")
    return _create(model, [CPU], threads), CPU
