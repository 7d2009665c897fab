"""Numeric precision of training: float32, or Keras mixed precision where the hardware has it.

`--precision` takes `auto`, `float32`, `bfloat16` or `float16`:
- `bfloat16`: Keras' `mixed_bfloat16` policy. Layers compute in bfloat16, variables and
  optimizer state stay float32; G's tanh and D's sigmoid output layer compute in float32,
  so images, probabilities and losses are float32 (G's last convolution runs in bfloat16:
  D rounds its input to bfloat16 anyway, and it saved 7 % of a step). bfloat16
  has float32's exponent range, so no loss scaling is needed. Fast on CPUs with AVX-512
  BF16 or AMX (oneDNN), and on recent GPUs.
- `float16`: `mixed_float16` with dynamic loss scaling (Keras' LossScaleOptimizer) for both
  optimizers, same float32 output layers. Meant for NVIDIA GPUs with tensor cores; on CPUs
  it is emulated and slow.
- `auto`: bfloat16 on a CPU-only host whose CPU reports AVX-512 BF16 or AMX-BF16 (side-by-side
  runs in docs/training.md show the metrics stay within seed-to-seed noise there), float32
  everywhere else, GPUs included: float16 has not been measured against float32 for this
  model, so it is opt-in.

The resolved precision (never `auto`) is stored in the run's config, so a resumed run keeps it.
"""

from __future__ import annotations

from pathlib import Path

CHOICES = ("auto", "float32", "bfloat16", "float16")
POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is not readable)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def resolve(requested: str, gpus: int, flags: set[str]) -> tuple[str, str]:
    """(precision, reason) for a requested precision on a host with `gpus` GPUs and CPU `flags`."""
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {requested!r}")
    if requested != "auto":
        return requested, "requested"
    if gpus:
        return "float32", "auto: GPU present; float16 is opt-in (--precision float16), not yet validated for this model"
    bf16 = sorted(flags & set(CPU_BF16_FLAGS))
    if bf16:
        return "bfloat16", f"auto: CPU with {'/'.join(bf16)}"
    return "float32", "auto: CPU without bfloat16 instructions"


def resolve_here(requested: str) -> tuple[str, str]:
    """resolve() for this process's devices (TensorFlow must be importable)."""
    if requested != "auto":
        return resolve(requested, 0, set())
    from cxr_training.tfenv import import_tf

    tf, _ = import_tf()
    return resolve(requested, len(tf.config.list_physical_devices("GPU")), cpu_flags())


def policy_name(precision: str) -> str:
    return POLICY[precision]
