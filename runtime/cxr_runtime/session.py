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


def engine_conflict() -> str | None:
    """A warning when both onnxruntime and onnxruntime-gpu are installed (they overwrite
    each other's files, and which one answers is an accident), else None."""
    from importlib import metadata

    installed = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    if len(installed) < 2:
        return None
    return (f"warning: both {' and '.join(installed)} are installed and break each other; keep one: "
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu (or onnxruntime)")


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share a core's vector units, so they do not help
    dense convolutions); falls back to the logical count."""
    try:
        pairs = set()
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key and phys is not None and core is not None:
                    pairs.add((phys, core))
                    phys = core = None
        if phys is not None and core is not None:
            pairs.add((phys, core))
        if pairs:
            return len(pairs)
    except OSError:
        pass
    return os.cpu_count() or 1


def session_options(threads: int | None = None, arena: bool = False) -> ort.SessionOptions:
    """Session settings: all graph optimisations, one intra-op thread per physical core,
    sequential execution. The CPU memory arena is off unless asked for: with tf2onnx's plain
    graph at batch 64 it raised peak memory from 1.4 GB to 3.45 GB. The Generator asks for it
    (at its small default batches it costs nothing; docs/runtime.md)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = arena
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or physical_cores()
    return so


def _create(model: str | bytes, providers: list[str], threads: int | None, arena: bool = False) -> ort.InferenceSession:
    try:
        with quiet_stderr():
            return ort.InferenceSession(model, sess_options=session_options(threads, arena), providers=providers)
    except Exception as e:  # onnxruntime raises several private exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "escapes model directory" in first:  # onnxruntime's own external-data path check
            raise ModelError("refused: the model's external data points outside its folder") from None
        raise ModelError(f"not a usable ONNX model ({first[:300]})") from None


def open_session(model: str | os.PathLike | bytes, device: str = "auto", notice=None,
                 threads: int | None = None, arena: bool = False) -> tuple[ort.InferenceSession, str]:
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
    conflict = engine_conflict()
    if conflict and notice:
        notice(conflict)
    available = available_providers()
    if device in ("auto", "cuda") and CUDA in available:
        session = _create(model, [CUDA, CPU], threads, arena)
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
                          "replace onnxruntime with onnxruntime-gpu (docs/runtime.md) or use --device cpu")
    session = _create(model, [CPU], threads, arena)  # a broken model fails here, before any notice
    if device == "auto" and notice:
        notice("note: no CUDA provider in this onnxruntime; running on CPU")
    return session, CPU
