"""The repository's own promises: the README layout names every module, the docs cite no file
that is not in the repository, and the Makefile's targets install and order what they say."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime/cxr_runtime", "training/cxr_training", "export/cxr_export", "sweep/cxr_sweep",
            "utility/cxr_utility")


def _layout() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return block.splitlines()


def _section(lines: list[str], prefix: str) -> str:
    """The lines of the layout about `prefix`: its own (unindented) lines and those indented under them."""
    out, inside = [], False
    for line in lines:
        if line and not line[0].isspace():
            inside = line.startswith(prefix)
        if inside:
            out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("folder", [*PACKAGES, "bench"])
def test_the_readme_layout_names_every_module(folder):
    section = _section(_layout(), folder + "/")
    modules = sorted(p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py")
    missing = [m for m in modules if not re.search(rf"(?<![\w.]){re.escape(m)}\b", section)]
    assert missing == [], f"README.md's layout does not name {missing} under {folder}/"


def test_the_docs_cite_no_file_outside_the_repository():
    """Every `NAME.md` a doc or the README names is a file of the repository."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    for doc in docs:
        for name in set(re.findall(r"(?<![\w/.-])([\w-]+(?:/[\w-]+)*\.md)\b", doc.read_text())):
            if not any((base / name).is_file() for base in (ROOT, ROOT / "docs", doc.parent)):
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert missing == [], missing


def _make(tmp_path: Path, *goals: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *goals,
                           *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "MAKEFLAGS": ""})


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


@needs_make
def test_make_train_installs_neither_ray_nor_dicom(tmp_path):
    r = _make(tmp_path, "-n", "train", VENV=str(tmp_path / "venv"))
    assert r.returncode == 0, r.stderr
    installs = [line for line in r.stdout.splitlines() if "pip install" in line]
    assert installs and not any("ray" in line or "dicom" in line for line in installs), installs


@needs_make
def test_make_j_train_export_exports_after_training(tmp_path):
    """`make -j train export` runs cxr-export once cxr-train has finished, not beside it."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # newer than pyproject.toml: setup has nothing to do
    log = tmp_path / "order"
    for name, body in (("cxr-train", "sleep 1; echo train-done"), ("cxr-export", "echo export-start")):
        script = venv / "bin" / name
        script.write_text(f"#!/bin/sh\n{body} >> {log}\n")
        script.chmod(0o755)
    r = _make(tmp_path, "-j4", "train", "export", VENV=str(venv), DATA=str(tmp_path), HELDOUT=str(tmp_path / "none"),
              RUNS=str(tmp_path / "runs"), ARTIFACT=str(tmp_path / "g.onnx"))
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == ["train-done", "export-start"]
