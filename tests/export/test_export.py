"""Export: tiny-config round trip, parity at several batch sizes, metadata, dynamic batch,
and a gate that refuses a wrong model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from cxr_export import export as ex
from cxr_export import optimize
from cxr_export.cli import main
from cxr_training.config import preset
from cxr_training.models import build_generator
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder holding a tiny generator and its generator.json, as training writes them."""
    cfg = preset("smoke")
    keras.utils.set_random_seed(3)
    g = build_generator(cfg)
    run = tmp_path_factory.mktemp("runs") / "00007-smoke"
    run.mkdir()
    g.save(run / "generator.keras")
    (run / "generator.json").write_text(json.dumps({
        "run_id": run.name, "epoch": 2, "step": 6, "config_hash": cfg.hash(),
        "data_sha256": "ab" * 32, "data_count": 8,
    }))
    return run, g


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("flag, graph", [("--no-optimize", "tf2onnx"), ("--optimize", "subpixel-nchw")])
def test_round_trip_parity_metadata_and_dynamic_batch(tiny_run, tmp_path, flag, graph):
    run, g = tiny_run
    out = tmp_path / "art" / "generator.onnx"
    r = _invoke(str(run), "--out", str(out), flag)
    assert r.exit_code == 0, r.output
    assert "parity passed" in r.output

    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    # the optimised graph's optional `chunk` input has a default (an initializer): callers feed z only
    defaults = {t.name for t in model.graph.initializer}
    assert [i.name for i in model.graph.input if i.name not in defaults] == ["z"]
    assert [o.name for o in model.graph.output] == ["image"]
    for value in (model.graph.input[0], model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["latent_dim"] == "16" and metadata["image_size"] == "32" and metadata["channels"] == "1"
    assert metadata["layout"] == "NCHW" and metadata["value_range"] == "-1,1" and metadata["synthetic"] == "true"
    assert metadata["run_id"] == "00007-smoke" and metadata["epoch"] == "2" and metadata["step"] == "6"
    assert metadata["data_sha256"] == "ab" * 32 and "rscbjbr9sj" in metadata["data_citation"]
    assert metadata["data_license"] == "CC BY 4.0" and "tensorflow" in json.loads(metadata["versions"])
    assert metadata["graph"] == graph and metadata["precision"] == "float32"

    report = json.loads(ex.parity_path(out).read_text())
    assert report["passed"] and [b["batch"] for b in report["batches"]] == [1, 7, 64]
    assert report["max_abs_err"] <= ex.PARITY_ATOL and report["graph"] == graph

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for b in (1, 3, 130):  # any batch size
        z = np.random.default_rng(b).standard_normal((b, 16)).astype(np.float32)
        got = sess.run(["image"], {"z": z})[0]
        want = np.transpose(g(z, training=False).numpy(), (0, 3, 1, 2))
        assert got.shape == (b, 1, 32, 32)
        np.testing.assert_allclose(got, want, atol=ex.PARITY_ATOL)
        assert np.abs(got).max() <= 1.0


@pytest.mark.parametrize("flag, module, builder", [
    ("--no-optimize", ex, "convert"), ("--optimize", optimize, "build_optimized")])
def test_gate_refuses_a_perturbed_model(tiny_run, tmp_path, monkeypatch, flag, module, builder):
    run, _ = tiny_run
    out = tmp_path / "generator.onnx"
    out.write_bytes(b"an earlier export")
    real_builder = getattr(module, builder)

    def perturbed(generator, opset=ex.OPSET, **kw):
        model = real_builder(generator, opset, **kw)
        init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))  # the Dense kernel
        arr = onnx.numpy_helper.to_array(init).copy()
        arr.flat[::97] += 1e-2
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
        return model

    monkeypatch.setattr(module, builder, perturbed)
    r = _invoke(str(run), "--out", str(out), flag)
    assert r.exit_code == 1
    assert "parity gate failed" in r.output and "Traceback" not in r.output
    assert not out.exists()  # neither the new model nor the stale one
    assert not list(tmp_path.glob(".generator.onnx*"))  # no temporary left
    report = json.loads(ex.parity_path(out).read_text())
    assert report["passed"] is False and report["max_abs_err"] > ex.PARITY_ATOL


def test_tolerance_is_enforced(tiny_run, tmp_path):
    """The same healthy model fails an impossible tolerance: the gate compares, not rubber-stamps."""
    run, _ = tiny_run
    r = _invoke(str(run), "--out", str(tmp_path / "g.onnx"), "--atol", "1e-30", "--no-optimize")
    report = json.loads((tmp_path / "g.parity.json").read_text())
    if report["max_abs_err"] == 0.0:
        pytest.skip("conversion was bit-exact; no tolerance can fail it")
    assert r.exit_code == 1 and not (tmp_path / "g.onnx").exists()


def test_bad_sources_exit_2(tmp_path):
    r = _invoke(str(tmp_path / "missing"), "--out", str(tmp_path / "g.onnx"))
    assert r.exit_code == 2 and "not found" in r.output
    (tmp_path / "runs" / "00001-quick").mkdir(parents=True)
    r = _invoke("--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "g.onnx"))
    assert r.exit_code == 2 and "has not finished" in r.output
    r = _invoke(str(tmp_path / "runs" / "00001-quick"), "--out", str(tmp_path / "g.onnx"))
    assert r.exit_code == 2 and "no generator.keras" in r.output
    r = _invoke("--opset", "9")
    assert r.exit_code == 2


def test_latent_scale_fixed_auto_and_refused(tiny_run, tmp_path, few_real, few_heldout):
    """A fixed scale is written as given; auto calibrates on the training images (--data, as the
    run's config.json would name them) after the parity gate and writes the choice and the grid;
    auto without training images, or a bad value, is one line, exit 2, nothing written."""
    from cxr_runtime import Generator

    run, _ = tiny_run
    r = _invoke(str(run), "--out", str(tmp_path / "fixed.onnx"), "--latent-scale", "1.2")
    assert r.exit_code == 0, r.output
    assert Generator(tmp_path / "fixed.onnx", device="cpu").latent_scale == 1.2
    r = _invoke(str(run), "--out", str(tmp_path / "plain.onnx"))
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "plain.onnx").metadata_props}
    assert r.exit_code == 0 and "latent_scale" not in metadata  # the default writes nothing: scale 1
    r = _invoke(str(run), "--out", str(tmp_path / "auto.onnx"), "--latent-scale", "auto", "--data", str(few_heldout))
    assert r.exit_code == 0, r.output
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "auto.onnx").metadata_props}
    cal = json.loads(metadata["latent_scale_calibration"])
    assert float(metadata["latent_scale"]) == cal["scale"] == cal["grid"][int(np.argmin(cal["kid"]))]
    assert cal["real"] == 10 and "calibrating the latent scale on 10 training images" in r.output
    # (the tiny run trained on 8 images, too few to calibrate on: the 10 given are other images, and
    # the export says so)
    assert "is not the run's training data" in r.output and "the run trained on 8 images" in r.output
    r = _invoke(str(run), "--out", str(tmp_path / "div.onnx"), "--latent-scale", "diversity", "--data",
                str(few_heldout))
    assert r.exit_code == 0, r.output
    cal = json.loads({p.key: p.value for p in onnx.load(tmp_path / "div.onnx").metadata_props}[
        "latent_scale_calibration"])
    assert cal["criterion"] == "diversity" and len(cal["diversity"]) == len(cal["grid"]) and "diversity" in r.output
    for args, message in ((["--latent-scale", "auto"], "--latent-scale auto needs the training images"),
                          (["--latent-scale", "auto", "--data", str(few_real)], "at least 10 training images"),
                          (["--latent-scale", "0"], "must be in (0, 10]"),
                          (["--latent-scale", "wide"], "not auto, diversity or a number")):
        r = _invoke(str(run), "--out", str(tmp_path / "bad.onnx"), *args)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
        assert not (tmp_path / "bad.onnx").exists()


def test_newest_finished_run_is_default(tiny_run, tmp_path):
    run, _ = tiny_run
    assert ex.resolve_generator(None, run.parent) == run / "generator.keras"


def test_export_reads_the_ema_generator(few_real, tmp_path):
    """A run that keeps an EMA publishes the EMA weights as generator.keras; export converts
    exactly those (the ONNX model reproduces the checkpoint's EMA weights, not G's)."""
    from cxr_training import checkpoint
    from cxr_training.train import train

    cfg = preset("smoke").replace(epochs=1, ema_halflife=50.0, ema_rampup=0.0)
    run = train(cfg, few_real, out_root=tmp_path / "runs", log=lambda m: None)
    assert json.loads((run / "generator.json").read_text())["weights"] == "ema"
    out = tmp_path / "generator.onnx"
    r = _invoke(str(run), "--out", str(out))
    assert r.exit_code == 0, r.output

    ckpt, meta = checkpoint.latest_valid(run)
    with np.load(ckpt / "state.npz") as data:
        weights = {g: [data[v["key"]] for v in meta["variables"] if v["key"].startswith(g + "/")]
                   for g in ("ema", "generator")}
    z = np.random.default_rng(0).standard_normal((5, cfg.latent_dim)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["image"], {"z": z})[0][:, 0]
    g = build_generator(cfg)
    g.set_weights(weights["ema"])
    np.testing.assert_allclose(got, g(z).numpy()[..., 0], atol=1e-4)
    g.set_weights(weights["generator"])
    assert np.abs(got - g(z).numpy()[..., 0]).max() > 1e-3


@pytest.mark.parametrize("flag", ["--optimize", "--no-optimize"])
def test_a_lighter_resize_convolution_generator_exports_from_a_fresh_process(tmp_path, flag):
    """cxr-export loads a saved generator with the project's custom layers (ResizeConv2x) in a
    process that has not built one (a fresh cxr-export), converts it and passes the parity gate."""
    import subprocess
    import sys

    cfg = preset("smoke").replace(g_channels=(8, 4, 2), image_size=64, g_dense_channels=16, g_upsample="resize")
    keras.utils.set_random_seed(4)
    g = build_generator(cfg)
    for v in g.weights:  # trained-like scale: biases away from zero too
        v.assign(np.random.default_rng(v.shape[0] if v.shape else 1).normal(0, 0.05, v.shape).astype(np.float32))
    g.save(tmp_path / "generator.keras")
    out = tmp_path / "g.onnx"
    r = subprocess.run([sys.executable, "-m", "cxr_export.cli", str(tmp_path / "generator.keras"), "--out", str(out),
                        flag], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "g.parity.json").read_text())
    assert report["passed"]
    z = np.random.default_rng(0).standard_normal((3, cfg.latent_dim)).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["image"], {"z": z})[0], np.transpose(g(z).numpy(), (0, 3, 1, 2)), atol=1e-4)
