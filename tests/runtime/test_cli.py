"""cxr-runtime's command line: sample, evaluate, info, and bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cxr_runtime import DEFAULT_BATCH, DEFAULT_BATCH_INT8, metrics
from cxr_runtime.cli import main
from cxr_runtime.images import load_folder

from .onnx_models import tiny_generator


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def model(tmp_path):
    return tiny_generator(tmp_path / "g.onnx", size=32)


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and "cxr-runtime" in r.output
    r = run("sample", "--help")
    assert r.exit_code == 0 and "--device" in r.output and "byte-identical" in r.output


def test_sample_png_and_manifest(model, tmp_path):
    out = tmp_path / "s"
    r = run("sample", "--n", 30, "--model", model, "--out", out, "--seed", 4, "--device", "cpu")
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in out.glob("sample-*.png"))
    assert files == [f"sample-{i:06d}.png" for i in range(30)]
    img = cv2.imread(str(out / files[0]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (32, 32)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 30 and manifest["seed"] == 4 and manifest["provider"] == "CPUExecutionProvider"
    assert manifest["model"]["metadata"]["run_id"] == "tiny" and len(manifest["model"]["sha256"]) == 64
    assert "images/s" in r.output and "wrote 30 images" in r.output
    assert not list(out.glob(".*"))  # no temporary files left


def test_default_batch_follows_the_model_precision(tmp_path):
    fp32 = tiny_generator(tmp_path / "fp32.onnx", metadata={"precision": "float32"})
    int8 = tiny_generator(tmp_path / "int8.onnx", metadata={"precision": "int8"})
    for path, want in ((fp32, DEFAULT_BATCH), (int8, DEFAULT_BATCH_INT8)):
        out = tmp_path / path.stem
        assert run("sample", "--n", 20, "--model", path, "--out", out, "--device", "cpu").exit_code == 0
        assert json.loads((out / "manifest.json").read_text())["batch_size"] == want
    out = tmp_path / "explicit"
    assert run("sample", "--n", 5, "--model", int8, "--out", out, "--batch-size", 3, "--device", "cpu").exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["batch_size"] == 3
    assert DEFAULT_BATCH != DEFAULT_BATCH_INT8  # else this test proves nothing


def test_sample_is_byte_identical_across_batch_sizes(model, tmp_path):
    for bs in (1, 64):
        assert run("sample", "--n", 20, "--model", model, "--out", tmp_path / f"b{bs}", "--batch-size", bs,
                   "--device", "cpu").exit_code == 0
    for i in range(20):
        name = f"sample-{i:06d}.png"
        assert (tmp_path / "b1" / name).read_bytes() == (tmp_path / "b64" / name).read_bytes()


def test_sample_npy_is_raw_output(model, tmp_path):
    out = tmp_path / "n"
    assert run("sample", "--n", 3, "--model", model, "--out", out, "--format", "npy").exit_code == 0
    arr = np.load(out / "sample-000000.npy", allow_pickle=False)
    assert arr.dtype == np.float32 and arr.shape == (32, 32) and -1 <= arr.min() <= arr.max() <= 1


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "Invalid value for '--n'"),
    (["--n", "-5"], "Invalid value for '--n'"),
    (["--n", "100000000000"], "Invalid value for '--n'"),
    (["--device", "tpu"], "Invalid value for '--device'"),
    (["--device", "cuda:x"], "Invalid value for '--device'"),
    (["--latent-scale", "0"], "Invalid value for '--latent-scale'"),
    (["--latent-scale", "nan"], "Invalid value for '--latent-scale'"),
])
def test_sample_bad_values(model, tmp_path, args, message):
    r = run("sample", "--model", model, "--out", tmp_path / "x", *args)
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "x").exists()


def test_sample_latent_scale_flag(model, tmp_path):
    assert run("sample", "--n", 3, "--model", model, "--out", tmp_path / "a", "--format", "npy").exit_code == 0
    assert run("sample", "--n", 3, "--model", model, "--out", tmp_path / "b", "--format", "npy",
               "--latent-scale", 1.4).exit_code == 0
    a, b = (np.load(tmp_path / d / "sample-000001.npy") for d in "ab")
    assert not np.array_equal(a, b)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["latent_scale"] == 1.4


def test_sample_bad_model_and_out(model, tmp_path):
    r = run("sample", "--n", 2, "--model", tmp_path / "nope.onnx", "--out", tmp_path / "x")
    assert r.exit_code == 2 and r.output.strip() == f"error: model not found: {tmp_path / 'nope.onnx'}"
    assert not (tmp_path / "x").exists()
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 100)
    r = run("sample", "--n", 2, "--model", tmp_path / "junk.onnx", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "not a usable ONNX model" in r.output and not (tmp_path / "x").exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    r = run("sample", "--n", 2, "--model", model, "--out", a_file)
    assert r.exit_code == 2 and "is a file" in r.output
    r = run("sample", "--n", 2, "--model", model, "--out", a_file / "sub")
    assert r.exit_code == 2 and "cannot write" in r.output


def test_sample_cuda_unavailable_is_one_line(model, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    r = run("sample", "--n", 2, "--model", model, "--out", tmp_path / "x", "--device", "cuda")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0] and "CPUExecutionProvider" in lines[0]


def test_evaluate_matches_library(model, tmp_path, train_normal):
    out = tmp_path / "s"
    run("sample", "--n", 12, "--model", model, "--out", out)
    r = run("evaluate", "--fake", out, "--real", train_normal, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    fake = load_folder(out).images
    real = load_folder(train_normal).images
    s, e = metrics.paired_ssim_mse(fake, real)
    assert res["engine"] == "onnx" and res["provider"] == "CPUExecutionProvider"
    assert res["ssim"] == pytest.approx(s, abs=1e-5) and res["mse"] == pytest.approx(e, abs=1e-5)
    ref = json.loads(run("evaluate", "--fake", out, "--real", train_normal, "--json", "--engine", "numpy").stdout)
    assert ref["ssim"] == s and ref["mse"] == e  # the numpy engine is the reference itself
    assert res["fake"]["images"] == 12 and res["real"]["images"] == 138
    assert res["ref_ssim"] == pytest.approx(0.194, abs=0.01)
    text = run("evaluate", "--fake", out, "--real", train_normal)
    assert "real vs real" in text.output


def test_evaluate_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    r = run("evaluate", "--fake", tmp_path / "e", "--real", tmp_path / "e")
    assert r.exit_code == 2 and "no usable image" in r.output


def test_info(model):
    r = run("info", model, "--json")
    assert r.exit_code == 0
    res = json.loads(r.stdout)
    assert res["inputs"][0]["name"] == "z" and res["outputs"][0]["shape"][1:] == [1, 32, 32]
    assert res["metadata"]["synthetic"] == "true" and "CPUExecutionProvider" in res["available_providers"]
    assert "metadata  run_id = tiny" in run("info", model).output
    assert res["latent_scale"] == 1.0 and "latents drawn at scale 1 (the model records none)" in run("info", model).output
    wide = tiny_generator(model.parent / "wide.onnx", size=32, metadata={"latent_scale": "1.3"})
    assert "sampling  latents drawn at scale 1.3\n" in run("info", wide).output


def test_evaluate_quality(model, tmp_path, kermany):
    out = tmp_path / "s"
    run("sample", "--n", 12, "--model", model, "--out", out)
    r = run("evaluate", "--fake", out, "--real", kermany / "train" / "NORMAL", "--baseline",
            kermany / "heldout" / "NORMAL", "--quality", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert "precision" not in res["quality"] and "density" not in res["quality"]  # they fail the ladder
    from cxr_runtime.quality import QUALITY_METRICS, metric_keys

    for key in metric_keys():  # every metric, its standard error over both sets, the real companions
        assert np.isfinite(res["quality"][key]) and np.isfinite(res["quality_baseline"][key]), key
    for m in QUALITY_METRICS:  # and its 95 % interval, around the value
        lo, hi = res["quality_interval"][m.key]
        assert lo <= res["quality"][m.key] <= hi
        assert res["quality_baseline_interval"][m.key][1] > res["quality_baseline_interval"][m.key][0] or \
            res["quality_baseline"][m.se_key] == 0.0
    # a tiny random generator is nothing like X-rays; held-out real images are
    assert res["quality"]["kid"] > 10 * res["quality_baseline"]["kid"]
    assert res["quality_baseline"]["coverage"] > res["quality"]["coverage"]
    assert res["quality_baseline"]["images"] == 45
    # --heldout, the flag's old name, still works (not shown in --help); both at once are refused
    old = run("evaluate", "--fake", out, "--real", kermany / "train" / "NORMAL", "--heldout",
              kermany / "heldout" / "NORMAL", "--quality", "--json")
    assert old.exit_code == 0 and json.loads(old.stdout) == res
    assert "--baseline" in run("evaluate", "--help").output and "--heldout" not in run("evaluate", "--help").output
    both = run("evaluate", "--fake", out, "--real", out, "--baseline", out, "--heldout", out)
    assert both.exit_code == 2 and "--heldout is the old name of --baseline" in both.output


def test_collapsed_generated_set_is_scored_as_it_is(tmp_path, kermany):
    """59 byte-identical copies of one image are 59 generated images, not 1: diversity, recall
    and the audit see the collapse, and the copies are counted."""
    src = sorted((kermany / "heldout" / "NORMAL").iterdir())[0].read_bytes()
    fake = tmp_path / "collapsed"
    fake.mkdir()
    for i in range(59):
        (fake / f"{i:04d}.jpeg").write_bytes(src)
    r = run("evaluate", "--fake", fake, "--real", kermany / "heldout" / "NORMAL", "--quality", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["fake"]["images"] == 59 and res["fake"]["duplicates"] == 58 and res["fake"]["distinct"] == 1
    assert res["quality"]["diversity_ssim"] == pytest.approx(1.0)
    assert res["quality"]["recall"] < 0.1
    assert "58 of 59 images are byte-identical copies" in r.stderr
    text = run("evaluate", "--fake", fake, "--real", kermany / "heldout" / "NORMAL").stdout
    assert "59 images" in text and "58 byte-identical copies" in text
    # the real folders still skip exact duplicates, with the warning
    real = tmp_path / "real"
    real.mkdir()
    for i, p in enumerate(sorted((kermany / "heldout" / "NORMAL").iterdir())[:3]):
        (real / f"{i}.jpeg").write_bytes(p.read_bytes())
    (real / "copy.jpeg").write_bytes((real / "0.jpeg").read_bytes())
    res = json.loads(run("evaluate", "--fake", fake, "--real", real, "--json").stdout)
    assert res["real"]["images"] == 3 and res["real"]["skipped"] == 1


def test_sample_nan_model_is_one_line_and_leaves_nothing(tmp_path):
    nan = tiny_generator(tmp_path / "nan.onnx", nan=True)
    r = run("sample", "--n", 4, "--model", nan, "--out", tmp_path / "s", "--device", "cpu")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip().splitlines() == ["error: nan.onnx produced non-finite values"]
    assert not list((tmp_path / "s").iterdir())


def test_report_with_too_few_images_is_one_line(tmp_path, kermany):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted((kermany / "heldout" / "NORMAL").iterdir())[:4]:
        (few / p.name).symlink_to(p)
    r = run("report", "--fake", few, "--real", kermany / "heldout" / "NORMAL", "--train",
            kermany / "train" / "NORMAL", "--out", tmp_path / "r.html")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: recall and coverage need more than 5")
    assert not (tmp_path / "r.html").exists()


def test_cli_reports_the_device_fallback_on_stderr(model, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    r = run("sample", "--n", 2, "--model", model, "--out", tmp_path / "s")
    assert r.exit_code == 0 and "note: no CUDA provider in this onnxruntime; running on CPU" in r.stderr
    r = run("sample", "--n", 2, "--model", model, "--out", tmp_path / "t", "--device", "cpu")
    assert "note:" not in r.stderr
