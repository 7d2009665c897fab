"""cxr_runtime must import without TensorFlow, Keras or the heavier packages."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
for name in ("tensorflow", "keras", "tf2onnx", "cxr_training", "cxr_export"):
    sys.modules[name] = None  # any import of these now raises ImportError
import cxr_runtime, cxr_runtime.images, cxr_runtime.metrics, cxr_runtime.io
import pkgutil, importlib
for mod in pkgutil.walk_packages(cxr_runtime.__path__, "cxr_runtime."):
    importlib.import_module(mod.name)
print("ok")
"""


def test_runtime_imports_without_tensorflow():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_runtime_sources_never_name_heavy_packages():
    import pathlib
    import re

    import cxr_runtime

    banned = re.compile(r"^\s*(import|from)\s+(tensorflow|keras|tf2onnx|cxr_training|cxr_export)\b", re.M)
    root = pathlib.Path(cxr_runtime.__file__).parent
    for path in root.rglob("*.py"):
        hit = banned.search(path.read_text())
        assert hit is None, f"{path.name}: {hit.group(0).strip()}"
