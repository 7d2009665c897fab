"""No pickle, no eval on anything a user passes; the runtime never unpickles."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cxr_runtime.cli import main as runtime_main

from ..runtime.onnx_models import tiny_generator

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("runtime", "training", "export", "bench") for p in (ROOT / d).rglob("*.py")]


def test_sources_never_unpickle_or_eval():
    banned = re.compile(r"allow_pickle\s*=\s*True|\bpickle\.loads?\(|\beval\(|\bexec\(|import pickle|"
                        r"safe_mode\s*=\s*False|from_pickle")
    assert SOURCES
    for path in SOURCES:
        hit = banned.search(path.read_text())
        assert hit is None, f"{path.relative_to(ROOT)}: {hit.group(0)}"


def test_runtime_never_unpickles(tmp_path, monkeypatch, train_normal):
    calls = []

    def trap(*a, **k):
        calls.append(a)
        raise AssertionError("unpickling attempted")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, trap)
    real_np_load = np.load

    def checked_np_load(*a, **k):
        assert k.get("allow_pickle") is False, "np.load without allow_pickle=False"
        return real_np_load(*a, **k)

    monkeypatch.setattr(np, "load", checked_np_load)
    model = tiny_generator(tmp_path / "g.onnx", size=32)
    run = CliRunner().invoke
    assert run(runtime_main, ["sample", "--n", "4", "--model", str(model), "--out", str(tmp_path / "s")]).exit_code == 0
    assert run(runtime_main, ["sample", "--n", "2", "--model", str(model), "--out", str(tmp_path / "n"),
                              "--format", "npy"]).exit_code == 0
    assert run(runtime_main, ["evaluate", "--fake", str(tmp_path / "s"), "--real", str(train_normal)]).exit_code == 0
    assert run(runtime_main, ["info", str(model)]).exit_code == 0
    from cxr_runtime.images import load_folder

    load_folder(train_normal, size=32, cache_dir=tmp_path / "cache")  # writes the .npy cache
    load_folder(train_normal, size=32, cache_dir=tmp_path / "cache")  # and reads it back
    assert not calls


def test_outputs_stay_under_out(tmp_path):
    model = tiny_generator(tmp_path / "g.onnx", size=16)
    before = set(tmp_path.iterdir())
    out = tmp_path / "s"
    assert CliRunner().invoke(runtime_main, ["sample", "--n", "3", "--model", str(model),
                                             "--out", str(out)]).exit_code == 0
    assert set(tmp_path.iterdir()) - before == {out}
