"""One place that opens onnxruntime sessions and decides where they run.

Device rules (`auto|cuda|cuda:N|cpu`):
- `cpu`: CPUExecutionProvider.
- `cuda` (GPU 0) or `cuda:N` (GPU N): CUDA or nothing. onnxruntime-gpu silently falls back
  to CPU when the CUDA libraries cannot be loaded, so the session's *actual* providers are
  checked after it is created; if CUDA is not among them this is a DeviceError (one line,
  exit code 2 in the CLIs).
- `auto`: CUDA when a CUDA session really initialises, otherwise CPU, said once on the
  `cxr_runtime` logger.

Nothing here changes the host process: no global onnxruntime log level, no redirected file
descriptors. Each session logs errors only (its own SessionOptions); the command-line tools,
which own their process, also quiet onnxruntime's global logger and native stderr.
Threads: one per physical core this process may use (CPU affinity and cgroup quota), not
every core of the machine.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import onnxruntime as ort

from cxr_runtime.choices import DEVICES
from cxr_runtime.errors import DeviceError, ModelError

__all__ = ["CPU", "CUDA", "DEVICES", "DeviceError", "ModelError", "open_session", "parse_device", "session_options",
           "usable_cores"]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
log = logging.getLogger("cxr_runtime")


def parse_device(device: str) -> tuple[str, int | None]:
    """("auto" | "cuda" | "cpu", GPU index or None) of a device string; DeviceError if unknown."""
    name, _, index = str(device).partition(":")
    if name in DEVICES and not index:
        return name, (0 if name == "cuda" else None)
    if name == "cuda" and index.isdigit():
        return "cuda", int(index)
    raise DeviceError(f"unknown device {device!r}; choose from auto, cuda, cuda:N, cpu")


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


def _core_of_cpu(cpuinfo: str = "/proc/cpuinfo") -> dict[int, tuple[str, str]]:
    """Logical CPU number -> (physical package, core) from /proc/cpuinfo; empty if unknown."""
    cores, cpu, phys, core = {}, None, None, None
    try:
        with open(cpuinfo) as f:
            lines = f.read().splitlines() + [""]
    except OSError:
        return {}
    for line in lines:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            cpu = int(value) if value.isdigit() else None
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not key:
            if cpu is not None and core is not None:
                cores[cpu] = (phys or "0", core)
            cpu = phys = core = None
    return cores


def _cgroup_cpus(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time the cgroup quota allows (cgroup v2 cpu.max or v1 cfs), or None."""
    try:
        quota, period = Path(root, "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path(root, "cpu", "cpu.cfs_quota_us").read_text())
        period = int(Path(root, "cpu", "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Threads worth giving a session: the physical cores among the CPUs this process may run
    on (sched_getaffinity; hyper-threads share a core's vector units, so they do not help
    dense convolutions), capped by the cgroup's CPU quota (containers); at least 1."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    cores = _core_of_cpu()
    n = len({cores[c] for c in allowed if c in cores}) if cores else len(allowed)
    n = n or len(allowed)
    quota = _cgroup_cpus()
    if quota:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def session_options(threads: int | None = None, arena: bool = False) -> ort.SessionOptions:
    """Session settings: all graph optimisations, `threads` intra-op threads (default:
    usable_cores()), sequential execution, errors-only logging for this session. The CPU
    memory arena is off unless asked for: with tf2onnx's plain graph at batch 64 it more
    than doubled peak memory. The Generator asks for it (at its small default batches it
    costs nothing; docs/runtime.md)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = arena
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or usable_cores()
    return so


def _create(model: str | bytes, providers: list, options: ort.SessionOptions) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises several private exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "escapes model directory" in first:  # onnxruntime's own external-data path check
            raise ModelError("refused: the model's external data points outside its folder") from None
        raise ModelError(f"not a usable ONNX model ({first[:300]})") from None


def open_session(model: str | os.PathLike | bytes, device: str = "auto", threads: int | None = None,
                 arena: bool = False, session_options_: ort.SessionOptions | None = None,
                 provider_options: dict | None = None) -> tuple[ort.InferenceSession, str]:
    """Return (session, provider actually used).

    `session_options_`: onnxruntime SessionOptions to use instead of session_options(threads,
    arena); `provider_options`: extra options of the CUDA provider (its device_id comes from
    `device`). The CPU fallback of `auto` is logged (logger `cxr_runtime`, level INFO).
    """
    session, provider, note = open_session_quietly(model, device, threads, arena, session_options_, provider_options)
    if note:
        log.info(note)
    return session, provider


def open_session_quietly(model, device="auto", threads=None, arena=False, session_options_=None,
                         provider_options=None) -> tuple[ort.InferenceSession, str, str | None]:
    """open_session(), returning the fallback notice instead of logging it (the Generator logs
    it only once the model has passed its checks, so a bad model gets one error line)."""
    kind, gpu = parse_device(device)
    if not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model not found: {path}")
        if path.stat().st_size == 0:
            raise ModelError(f"model file is empty: {path}")
        model = str(path)
    conflict = engine_conflict()
    if conflict:
        log.warning(conflict)
    options = session_options_ or session_options(threads, arena)
    available = available_providers()
    if kind in ("auto", "cuda") and CUDA in available:
        cuda = (CUDA, {**(provider_options or {}), "device_id": gpu or 0})
        session = _create(model, [cuda, CPU], options)
        if session.get_providers()[0] == CUDA:
            return session, CUDA, None
        if kind == "cuda":
            raise DeviceError(f"CUDA device {gpu} is installed in onnxruntime but did not initialise (driver, CUDA 13 "
                              f"or cuDNN 9 libraries missing, or no such GPU?); available providers: "
                              f"{', '.join(available)}; use --device cpu")
        return session, CPU, "note: CUDA did not initialise; running on CPU"
    if kind == "cuda":
        raise DeviceError(f"CUDA is not available in this onnxruntime (providers: {', '.join(available)}); "
                          "replace onnxruntime with onnxruntime-gpu (docs/runtime.md) or use --device cpu")
    session = _create(model, [CPU], options)  # a broken model fails here, before any notice
    return session, CPU, ("note: no CUDA provider in this onnxruntime; running on CPU" if kind == "auto" else None)
