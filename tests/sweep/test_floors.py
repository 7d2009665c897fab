"""The floors: runtime <- training, utility <- export <- sweep <- bench. No package imports one
above it (the runtime's own test also runs it without TensorFlow: tests/runtime/test_layering.py)."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

ABOVE = {
    "cxr_training": ("cxr_export", "cxr_sweep", "cxr_utility"),
    "cxr_utility": ("cxr_training", "cxr_export", "cxr_sweep"),
    "cxr_export": ("cxr_sweep", "cxr_utility"),
    "cxr_sweep": ("cxr_utility",),
}


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_package_imports_a_floor_above_it(package):
    banned = re.compile(r"^\s*(import|from)\s+(" + "|".join(ABOVE[package]) + r")\b", re.M)
    root = pathlib.Path(importlib.import_module(package).__file__).parent
    files = list(root.rglob("*.py"))
    assert files
    for path in files:
        hit = banned.search(path.read_text())
        assert hit is None, f"{path}: {hit.group(0).strip()}"


def test_the_check_would_see_an_import():
    banned = re.compile(r"^\s*(import|from)\s+(cxr_sweep)\b", re.M)
    assert banned.search("x = 1\n    from cxr_sweep.plan import load_plan\n")


def test_the_onnx_contract_is_written_once():
    """Names, opset and metadata keys of the ONNX interface live in cxr_runtime.contract; the
    export's modules take them from there (no import circle between export.py and optimize.py)."""
    from cxr_export import export, optimize, quantize
    from cxr_runtime import contract, generator

    assert export.INPUT_NAME is contract.INPUT_NAME and optimize.OUTPUT_NAME is contract.OUTPUT_NAME
    assert optimize.CHUNK_INPUT is contract.CHUNK_INPUT is generator.CHUNK_INPUT
    assert export.OPSET == contract.OPSET and generator.LATENT_SCALE_KEY is export.LATENT_SCALE_KEY
    assert quantize.INPUT_NAME is contract.INPUT_NAME
    for module in (optimize, quantize):
        assert "from cxr_export.export import" not in pathlib.Path(module.__file__).read_text()
