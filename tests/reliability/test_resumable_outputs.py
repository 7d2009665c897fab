"""Sampling interrupted and re-run completes its set exactly; a failed export leaves nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cxr_runtime import cli as rcli

from ..runtime.onnx_models import tiny_generator


def _sample(*args):
    return CliRunner().invoke(rcli.main, ["sample", *[str(a) for a in args]], catch_exceptions=False)


@pytest.fixture
def model(tmp_path):
    return tiny_generator(tmp_path / "g.onnx", size=16)


def test_interrupted_sampling_completes_on_rerun(model, tmp_path, monkeypatch):
    args = ["--n", 40, "--model", model, "--seed", 5, "--batch-size", 8]
    r = _sample(*args, "--out", tmp_path / "straight")
    assert r.exit_code == 0 and "resuming" not in r.output  # a new folder is not a resume

    out = tmp_path / "interrupted"
    from cxr_runtime import sampling

    written = []
    original = sampling.write_png

    def dies_after_19(path, image):
        if len(written) == 19:
            raise KeyboardInterrupt  # Ctrl-C in the middle of batch 3
        original(path, image)
        written.append(path)

    monkeypatch.setattr(sampling, "write_png", dies_after_19)
    r = CliRunner().invoke(rcli.main, ["sample", *map(str, args), "--out", str(out)])
    assert r.exit_code == 1 and "Aborted" in r.output  # click's answer to Ctrl-C
    monkeypatch.setattr(sampling, "write_png", original)
    assert len(list(out.glob("sample-*.png"))) == 19
    assert not (out / "manifest.json").exists()  # only a complete set gets a manifest
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # no half-written file

    r = _sample(*args, "--out", out)
    assert r.exit_code == 0, r.output
    assert "resuming: 16 of 40" in r.output  # the partly written batch is redone whole
    names = sorted(p.name for p in out.glob("sample-*.png"))
    assert names == [f"sample-{i:06d}.png" for i in range(40)]  # no gaps, no duplicates
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 40 and not (out / ".sampling.json").exists()

    r = _sample(*args, "--out", out)  # a third run: nothing to do
    assert r.exit_code == 0 and "already holds this complete set" in r.output


def test_other_set_in_out_is_refused(model, tmp_path):
    out = tmp_path / "s"
    assert _sample("--n", 5, "--model", model, "--out", out).exit_code == 0
    r = _sample("--n", 5, "--model", model, "--out", out, "--seed", 9)
    assert r.exit_code == 2 and "holds another sample set" in r.output
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "sample-000000.png").write_bytes(b"whatever")
    r = _sample("--n", 5, "--model", model, "--out", stray)
    assert r.exit_code == 2 and "unknown origin" in r.output


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    from cxr_export import export as ex
    from cxr_export.cli import main as export_main
    from cxr_training.config import preset
    from cxr_training.models import build_generator

    run = tmp_path / "00001-smoke"
    run.mkdir()
    build_generator(preset("smoke")).save(run / "generator.keras")
    out = tmp_path / "art" / "generator.onnx"
    out.parent.mkdir()
    out.write_bytes(b"an earlier export")

    def broken(generator, opset=ex.OPSET):
        raise RuntimeError("converter crashed\nwith a long trace")

    monkeypatch.setattr(ex, "convert", broken)
    r = CliRunner().invoke(export_main, [str(run), "--out", str(out), "--no-optimize"], catch_exceptions=False)
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "conversion failed (RuntimeError: converter crashed)" in lines[0]
    assert not out.exists() and not list(out.parent.iterdir())


def test_resumed_dicom_set_keeps_one_study(model, tmp_path, monkeypatch):
    pydicom = pytest.importorskip("pydicom")
    from cxr_runtime import dicom

    out = tmp_path / "d"
    original = dicom.write_dicom
    calls = []

    def dies_after_5(*a, **k):
        if len(calls) == 5:
            raise KeyboardInterrupt
        original(*a, **k)
        calls.append(1)

    monkeypatch.setattr(dicom, "write_dicom", dies_after_5)
    args = ["--n", 12, "--model", model, "--batch-size", 4, "--format", "dicom", "--out", out]
    assert CliRunner().invoke(rcli.main, ["sample", *map(str, args)]).exit_code == 1
    monkeypatch.setattr(dicom, "write_dicom", original)
    assert _sample(*args).exit_code == 0
    studies = {pydicom.dcmread(p).StudyInstanceUID for p in out.glob("sample-*.dcm")}
    assert len(list(out.glob("sample-*.dcm"))) == 12 and len(studies) == 1


def test_sigkill_leftovers_are_removed_when_the_set_completes(model, tmp_path):
    """A sampler killed with SIGKILL (no Python cleanup runs) may leave a half-written temporary
    file; a Ray run that did not finish leaves its shard records. The next run of the same set
    removes both before declaring the set complete, and the files equal an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["sample", "--n", "3000", "--model", str(model), "--seed", "5", "--batch-size", "8"]
    assert _sample(*args[1:], "--out", tmp_path / "straight").exit_code == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cxr_runtime.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("sample-*.png"))) < 100:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    # what a kill inside a write and an unfinished Ray run leave behind (made certain here)
    (out / ".sample-000123.png.tmp-0123456789ab.png").write_bytes(b"half a PNG")
    (out / ".shards").mkdir(exist_ok=True)
    (out / ".shards" / "000000000000-000000000008.done").write_text("{}")
    r = _sample(*args[1:], "--out", out)
    assert r.exit_code == 0, r.output
    assert not [p for p in out.iterdir() if ".tmp-" in p.name] and not (out / ".shards").exists()
    names = sorted(p.name for p in out.glob("sample-*.png"))
    assert len(names) == 3000
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_a_file_system_error_mid_set_is_one_line(model, tmp_path, monkeypatch):
    from cxr_runtime import sampling

    calls = []
    original = sampling.write_png

    def disk_full(path, image):
        if len(calls) == 10:
            raise OSError(28, "No space left on device")
        calls.append(path)
        original(path, image)

    monkeypatch.setattr(sampling, "write_png", disk_full)
    r = CliRunner().invoke(rcli.main, ["sample", "--n", "40", "--model", str(model), "--out", str(tmp_path / "s")])
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert lines[-1].startswith("error: writing to") and "No space left on device" in lines[-1]
    assert len(list((tmp_path / "s").glob("sample-*.png"))) == 10  # kept for the resume


def test_library_errors_name_no_command_line_flag(model, tmp_path):
    from cxr_runtime import Generator, sampling
    from cxr_runtime.errors import SampleSetError

    gen = Generator(model, device="cpu")
    sampling.sample_to_folder(gen, tmp_path / "a", 4, seed=1)
    with pytest.raises(SampleSetError) as e:
        sampling.sample_to_folder(gen, tmp_path / "a", 5, seed=1)
    assert "--" not in str(e.value) and "holds another sample set" in str(e.value)
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["device"] == "cpu"
