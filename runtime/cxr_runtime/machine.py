"""The machine a number was measured on, named one way everywhere (sweep rows, bench tables)."""

from __future__ import annotations

import os
import subprocess


def cpu_name() -> str:
    """lscpu's model name, with family/model and the widest vector ISA (machines with one name
    differ: 'AMD EPYC' is Zen 3 with AVX2 or Zen 5 with AVX-512 BF16)."""
    fields = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=20,
                             env={**os.environ, "LC_ALL": "C"}).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    name = fields.get("Model name") or "unknown CPU"
    flags = set(fields.get("Flags", "").split())
    isa = ("amx" if "amx_bf16" in flags else "avx512-bf16" if "avx512_bf16" in flags else
           "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "")
    detail = ", ".join(x for x in (f"family {fields['CPU family']} model {fields['Model']}"
                                   if "CPU family" in fields and "Model" in fields else "", isa) if x)
    return f"{name} ({detail})" if detail else name
