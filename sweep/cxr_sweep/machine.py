"""Facts about the machine and the code a run is trained with."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cxr_runtime.machine import cpu_name

__all__ = ["code_version", "cpu_name"]


def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


