"""The rewritten (sub-pixel, NCHW) graph computes the Keras generator; int8 has its int8 gate."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from cxr_export import export as ex
from cxr_export import optimize
from cxr_export import quantize as q
from cxr_export.cli import main
from cxr_training.config import preset
from cxr_training.models import build_generator
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


def _keras_nchw(g, z):
    return np.transpose(g(z, training=False).numpy(), (0, 3, 1, 2))


def _random_weights(g, seed):
    """Weights of a trained-like scale everywhere (default init leaves biases at zero)."""
    rng = np.random.default_rng(seed)
    for v in g.weights:
        v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32))


@pytest.mark.parametrize("cfg", [
    preset("smoke"),
    preset("smoke").replace(g_channels=(8, 8, 8), image_size=64, g_dense_channels=8),  # three upsamplings
    # the lighter generator's shape (halving widths) with resize-convolution upsampling
    preset("smoke").replace(g_channels=(8, 4, 2), image_size=64, g_dense_channels=16, g_upsample="resize"),
    # bilinear resize-convolutions (3x3 phase convolutions over an edge-padded input)
    preset("smoke").replace(g_channels=(8, 4, 2), image_size=64, g_dense_channels=16, g_upsample="bilinear"),
    # bilinear coarse doublings, the last one nearest (the two kinds in one graph)
    preset("smoke").replace(g_channels=(8, 4, 2), image_size=64, g_dense_channels=16, g_upsample="bilinear",
                            g_upsample_last="resize"),
])
def test_optimized_graph_equals_keras(cfg):
    keras.utils.set_random_seed(1)
    g = build_generator(cfg)
    _random_weights(g, 2)
    model = optimize.build_optimized(g, chunk=0)
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops
    # the interleave between upsampling layers moves whole pixels (channels-last), and the
    # output convolutions have 16 outputs (4 phases x 2 x 2 positions), not 4
    perms = [tuple(n.attribute[0].ints) for n in model.graph.node if n.op_type == "Transpose"]
    assert set(perms) == {(0, 2, 3, 1), (0, 1, 3, 2, 4, 5), (0, 3, 1, 2)}
    assert len(perms) == 3 * (len(cfg.g_channels) - 1)
    out_w = [i for i in model.graph.initializer if i.name.startswith("out_w")]
    assert len(out_w) == 4 and all(list(i.dims) == [16, cfg.g_channels[-1], 4, 4] for i in out_w)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for b in (1, 5):
        z = np.random.default_rng(b).standard_normal((b, cfg.latent_dim)).astype(np.float32)
        got = sess.run(["image"], {"z": z})[0]
        np.testing.assert_allclose(got, _keras_nchw(g, z), atol=1e-5, rtol=0)


def _body(model):
    loop = [n for n in model.graph.node if n.op_type == "Loop"]
    assert len(loop) == 1
    return loop[0].attribute[0].g


@pytest.mark.parametrize("chunk", [1, 3, optimize.CHUNK])
def test_chunked_graph_equals_the_flat_one(chunk):
    """The Loop runs the convolutions `chunk` images at a time: same images for any batch (padding
    dropped), for the built-in chunk size and for any value fed to the optional `chunk` input."""
    cfg = preset("smoke")
    keras.utils.set_random_seed(7)
    g = build_generator(cfg)
    _random_weights(g, 8)
    flat = optimize.build_optimized(g, chunk=0)
    looped = optimize.build_optimized(g, chunk=chunk)
    onnx.checker.check_model(looped)
    assert "Loop" not in {n.op_type for n in flat.graph.node}
    body_ops = [n.op_type for n in _body(looped).node]
    assert "Gemm" not in body_ops and body_ops.count("Conv") == len([n for n in flat.graph.node if n.op_type == "Conv"])
    a = ort.InferenceSession(flat.SerializeToString(), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(looped.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in b.get_inputs()] == ["z"]
    assert [i.name for i in b.get_overridable_initializers()] == [optimize.CHUNK_INPUT]
    for n in (0, 1, 2, 5, 8):
        z = np.random.default_rng(n).standard_normal((n, cfg.latent_dim)).astype(np.float32)
        want = a.run(["image"], {"z": z})[0]
        got = b.run(["image"], {"z": z})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        for override in (1, n, 7, -2):  # 0 or less counts as 1
            again = b.run(["image"], {"z": z, optimize.CHUNK_INPUT: np.array([override], np.int64)})[0]
            np.testing.assert_allclose(again, want, atol=1e-6, rtol=0)


def test_runtime_runs_the_chunked_graph(tmp_path):
    """cxr_runtime.Generator on a chunked export: its default batch, a chunk override, the same
    images as the flat graph; a chunk override on a flat graph is refused."""
    from cxr_runtime import DEFAULT_BATCH, DEFAULT_BATCH_CHUNKED, Generator
    from cxr_runtime.session import ModelError

    cfg = preset("smoke")
    keras.utils.set_random_seed(9)
    g = build_generator(cfg)
    _random_weights(g, 10)
    metadata = {"latent_dim": str(cfg.latent_dim), "image_size": str(cfg.image_size), "synthetic": "true"}
    paths = {}
    for chunk in (0, 4):
        model = optimize.build_optimized(g, chunk=chunk)
        ex.add_metadata(model, metadata)
        paths[chunk] = tmp_path / f"g{chunk}.onnx"
        onnx.save(model, paths[chunk])
    flat, looped = Generator(paths[0], device="cpu"), Generator(paths[4], device="cpu")
    assert (flat.chunked, looped.chunked) == (False, True)
    assert (flat.default_batch, looped.default_batch) == (DEFAULT_BATCH, DEFAULT_BATCH_CHUNKED)
    want = flat.sample(37, seed=3)
    np.testing.assert_array_equal(looped.sample(37, seed=3), want)
    with pytest.raises(ModelError, match="no chunk loop"):
        Generator(paths[0], device="cpu", chunk=4)

    from cxr_runtime import session as smod

    feeds = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def run(self, outputs, feed):
            feeds.append({k: np.array(v) for k, v in feed.items()})
            return self.inner.run(outputs, feed)

    five = Generator(paths[4], device="cpu", chunk=5)
    five.session = Spy(five.session)
    np.testing.assert_array_equal(five.sample(37, seed=3), want)
    assert feeds and all(int(f[optimize.CHUNK_INPUT][0]) == 5 for f in feeds)  # the override is fed
    feeds.clear()

    # on CUDA the whole batch goes through as one pass: the rule, exercised on a CPU session
    looped.session, looped.provider = Spy(looped.session), smod.CUDA
    np.testing.assert_array_equal(looped.sample(37, seed=3, batch_size=16), want)
    assert [int(f[optimize.CHUNK_INPUT][0]) for f in feeds] == [16, 16, 5]
    feeds.clear()
    looped.provider = smod.CPU
    looped.sample(8, seed=3)
    assert feeds and all(optimize.CHUNK_INPUT not in f for f in feeds)  # the model's own chunk on CPU


def test_optimized_paper_architecture():
    keras.utils.set_random_seed(4)
    g = build_generator(preset("paper"))
    model = optimize.build_optimized(g)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    got = sess.run(["image"], {"z": z})[0]
    assert got.shape == (2, 1, 128, 128)
    np.testing.assert_allclose(got, _keras_nchw(g, z), atol=ex.PARITY_ATOL_OPTIMIZED, rtol=0)


def test_unsupported_topology_is_refused():
    cfg = preset("smoke").replace(g_kernel=3)
    g = build_generator(cfg)
    with pytest.raises(optimize.UnsupportedGenerator, match="4x4"):
        optimize.build_optimized(g)
    g = build_generator(preset("smoke").replace(image_size=10, g_channels=(8,)))  # 5x5 phases: no 2x2 blocks
    with pytest.raises(optimize.UnsupportedGenerator, match="multiple of 4"):
        optimize.build_optimized(g)


@pytest.fixture(scope="module", params=["transpose", "resize", "resize+refine+noise", "resize+supersample+noise",
                                        "bilinear+refine+noise"])
def tiny_run(tmp_path_factory, request):
    """A run folder with a smoke-sized G: the study's transposed convolutions, the presets'
    resize convolutions, or those with the texture levers' extra layers (--g-refine, --g-noise);
    every int8 and chunk test runs on each."""
    upsample, *levers = request.param.split("+")
    cfg = preset("smoke").replace(g_upsample=upsample)
    if levers:
        cfg = cfg.replace(g_refine=6 if "refine" in levers else 0, g_noise="noise" in levers,
                          g_supersample=4 if "supersample" in levers else 0)
    keras.utils.set_random_seed(5)
    g = build_generator(cfg)
    _random_weights(g, 6)
    run = tmp_path_factory.mktemp("runs") / "00003-smoke"
    run.mkdir()
    g.save(run / "generator.keras")
    (run / "generator.json").write_text(json.dumps({"run_id": run.name, "epoch": 1, "step": 3}))
    return run


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_int8_export_passes_the_int8_gate(tiny_run, few_real, tmp_path):
    from cxr_runtime.images import load_folder

    out = tmp_path / "generator.onnx"
    info = tiny_run / "generator.json"
    saved = info.read_text()
    info.write_text(json.dumps({**json.loads(saved), "data_sha256": load_folder(few_real).fingerprint()["sha256"],
                                "data_count": 8}))
    try:
        r = _invoke(tiny_run, "--out", out, "--quantize", "int8", "--data", few_real)
    finally:
        info.write_text(saved)
    assert r.exit_code == 0, r.output
    assert "not the run's training data" not in r.output  # the run's own images (fingerprint): no notice
    report = json.loads(ex.int8_report_path(out).read_text())
    assert report["passed"] and report["ssim_fp32_vs_int8_mean"] >= q.INT8_MIN_SSIM
    assert report["ssim_shift"] <= q.INT8_MAX_SHIFT and report["mse_shift"] <= q.INT8_MAX_SHIFT
    model = onnx.load(ex.int8_path(out))
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["precision"] == "int8" and metadata["graph"] == "subpixel-nchw" and "QDQ" in metadata["quantization"]
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert not any(n.op_type == "Loop" for n in model.graph.node)  # quantised from the flat graph
    fp32 = onnx.load(out)
    fp32_metadata = {p.key: p.value for p in fp32.metadata_props}
    assert fp32_metadata["precision"] == "float32" and fp32_metadata["batch_chunk"] == str(optimize.CHUNK)
    assert any(n.op_type == "Loop" for n in fp32.graph.node)


def test_chunk_zero_exports_the_flat_graph(tiny_run, tmp_path):
    out = tmp_path / "generator.onnx"
    r = _invoke(tiny_run, "--out", out, "--chunk", 0)
    assert r.exit_code == 0, r.output
    model = onnx.load(out)
    assert not any(n.op_type == "Loop" for n in model.graph.node)
    assert "batch_chunk" not in {p.key for p in model.metadata_props}
    r = _invoke(tiny_run, "--out", tmp_path / "plain.onnx", "--chunk", 2, "--no-optimize")
    assert r.exit_code == 2 and "--chunk applies to the optimised graph" in r.output


def test_sample_cli_defaults_to_the_chunked_batch(tiny_run, tmp_path):
    from cxr_runtime import DEFAULT_BATCH, DEFAULT_BATCH_CHUNKED
    from cxr_runtime.cli import main as runtime_main

    for chunk, want in ((None, DEFAULT_BATCH_CHUNKED), (0, DEFAULT_BATCH)):
        out = tmp_path / f"g{chunk}.onnx"
        args = ["--out", out] + ([] if chunk is None else ["--chunk", chunk])
        assert _invoke(tiny_run, *args).exit_code == 0
        samples = tmp_path / f"s{chunk}"
        r = CliRunner().invoke(runtime_main, ["sample", "--n", "40", "--model", str(out), "--out", str(samples),
                                              "--device", "cpu"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert json.loads((samples / "manifest.json").read_text())["batch_size"] == want
    import cv2

    for i in range(40):  # the same images from both graphs (sums may differ in the last float bit)
        name = f"sample-{i:06d}.png"
        a, b = (cv2.imread(str(tmp_path / d / name), cv2.IMREAD_UNCHANGED).astype(int) for d in ("sNone", "s0"))
        assert np.abs(a - b).max() <= 1


def test_int8_gate_refuses_a_degraded_model(tiny_run, few_real, tmp_path, monkeypatch):
    out = tmp_path / "generator.onnx"
    ex.int8_path(out).write_bytes(b"an earlier int8 export")
    real_quantize = q.quantize_int8

    def degraded(fp32, latent_dim, **kw):
        model = real_quantize(fp32, latent_dim, **kw)
        for init in model.graph.initializer:  # flip the sign of the output convolutions' weights
            if init.name.startswith("out_w") and init.data_type == onnx.TensorProto.FLOAT:
                arr = onnx.numpy_helper.to_array(init)
                init.CopyFrom(onnx.numpy_helper.from_array(-arr, init.name))
        return model

    monkeypatch.setattr(q, "quantize_int8", degraded)
    r = _invoke(tiny_run, "--out", out, "--quantize", "int8", "--data", few_real)
    assert r.exit_code == 1 and "int8 gate failed" in r.output
    assert out.exists()  # the fp32 model passed its own gate
    assert not ex.int8_path(out).exists()
    assert json.loads(ex.int8_report_path(out).read_text())["passed"] is False


def test_int8_falls_back_to_float32_at_the_drawn_resolution(tiny_run, few_real, tmp_path, monkeypatch):
    """When every layer in int8 fails the gate, the layers at the drawn resolution stay float32
    and that model, judged on the same latents, is published; the report lists both attempts."""
    out = tmp_path / "generator.onnx"
    real_quantize = q.quantize_int8
    seen = []

    def all_int8_degraded(fp32, latent_dim, float_nodes=(), **kw):
        seen.append(tuple(float_nodes))
        model = real_quantize(fp32, latent_dim, float_nodes=float_nodes, **kw)
        if not float_nodes:  # the output convolution's int8 weights, negated: this attempt must fail
            for init in model.graph.initializer:
                if init.name.startswith("out_w") and init.data_type == onnx.TensorProto.INT8:
                    arr = onnx.numpy_helper.to_array(init)
                    init.CopyFrom(onnx.numpy_helper.from_array((-arr.astype(np.int16)).clip(-127, 127).astype(np.int8),
                                                               init.name))
        return model

    monkeypatch.setattr(q, "quantize_int8", all_int8_degraded)
    r = _invoke(tiny_run, "--out", out, "--quantize", "int8", "--data", few_real)
    assert r.exit_code == 0, r.output
    assert "float32: the drawn resolution's layers" in r.output
    report = json.loads(ex.int8_report_path(out).read_text())
    assert report["passed"] and report["float32_layers"] == "the drawn resolution's layers"
    first, second = report["attempts"]
    assert not first["passed"] and first["float32_nodes"] == 0 and second["passed"] and second["float32_nodes"] > 0
    assert seen[0] == () and "out_conv0" in seen[1] and not any(n.startswith(("dense", "up1_")) for n in seen[1])
    model = onnx.load(ex.int8_path(out))
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert weights["out_w0"] == onnx.TensorProto.FLOAT  # the output convolution stayed float32
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # the rest is int8
    assert "float32: the drawn resolution's layers" in {p.key: p.value for p in model.metadata_props}["quantization"]


def test_drawn_resolution_nodes():
    for levers, last in ((dict(), 2), (dict(g_refine=6, g_noise=True), 2), (dict(g_supersample=4, g_refine=3), 3)):
        g = build_generator(preset("smoke").replace(**_SMALL, **levers))
        nodes = optimize.drawn_resolution_nodes(optimize.build_optimized(g, chunk=0))
        assert "out_conv0" in nodes and f"up{last}_p11_conv" in nodes
        assert not any(n.startswith(("dense", "up1_", "noise1_")) for n in nodes)
        assert ("refine_conv" in nodes) == bool(levers.get("g_refine"))
        assert (f"noise{last}_p00_proj" in nodes) == bool(levers.get("g_noise"))
        assert (f"up{last - 1}_p00_conv" in nodes) is False
    with pytest.raises(ValueError, match="flat graph"):
        optimize.drawn_resolution_nodes(optimize.build_optimized(g, chunk=2))


def test_int8_needs_the_optimized_graph_and_data(tiny_run, tmp_path):
    r = _invoke(tiny_run, "--out", tmp_path / "g.onnx", "--quantize", "int8", "--no-optimize")
    assert r.exit_code == 2 and "needs the optimised graph" in r.output
    r = _invoke(tiny_run, "--out", tmp_path / "g.onnx", "--quantize", "int8")
    assert r.exit_code == 2 and "--data" in r.output


@pytest.mark.parametrize("chunk", [0, 3])
def test_noise_inputs_export_and_stay_a_function_of_z(chunk):
    """--g-noise: the noise is computed from z in both graphs, so the optimised graph (flat or
    chunked) and the plain conversion equal Keras, and an image does not depend on the batch it
    is drawn in."""
    cfg = preset("smoke").replace(g_channels=(8, 4, 2), image_size=64, g_dense_channels=16, g_upsample="resize",
                                  g_noise=True)
    keras.utils.set_random_seed(3)
    g = build_generator(cfg)
    _random_weights(g, 4)  # the noise strengths too: the noise must matter
    z = np.random.default_rng(5).standard_normal((5, cfg.latent_dim)).astype(np.float32)
    want = _keras_nchw(g, z)
    silent = build_generator(cfg)
    silent.set_weights([np.zeros_like(w) if "strength" in v.path else w for v, w in zip(g.weights, g.get_weights())])
    assert np.abs(_keras_nchw(silent, z) - want).max() > 1e-3
    model = optimize.build_optimized(g, chunk=chunk)
    onnx.checker.check_model(model)
    assert "Sin" in {n.op_type for n in model.graph.node}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["image"], {"z": z})[0], want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(sess.run(["image"], {"z": z[2:3]})[0], want[2:3], atol=1e-4, rtol=0)
    plain = ort.InferenceSession(ex.convert(g, ex.OPSET).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(plain.run(None, {plain.get_inputs()[0].name: z})[0].reshape(want.shape), want,
                               atol=1e-4, rtol=0)


def _graphs_equal_keras(g, chunk: int, ops: set[str], seed: int) -> np.ndarray:
    """The optimised graph (flat or chunked) and tf2onnx's both compute Keras' images of 5 latents
    (random weights); the optimised graph holds `ops`. Returns the optimised graph's images."""
    _random_weights(g, seed)
    z = np.random.default_rng(seed + 1).standard_normal((5, int(g.input_shape[-1]))).astype(np.float32)
    want = _keras_nchw(g, z)
    model = optimize.build_optimized(g, chunk=chunk)
    onnx.checker.check_model(model)
    nodes = model.graph.node if not chunk else _body(model).node
    assert ops <= {n.op_type for n in nodes}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["image"], {"z": z})[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    plain = ort.InferenceSession(ex.convert(g, ex.OPSET).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(plain.run(None, {plain.get_inputs()[0].name: z})[0].reshape(want.shape), want,
                               atol=1e-5, rtol=0)
    return got


_SMALL = dict(g_channels=(8, 4), image_size=32, g_dense_channels=16, g_upsample="resize")


@pytest.mark.parametrize("chunk", [0, 3])
@pytest.mark.parametrize("noise", [False, True])
def test_refinement_convolution_exports(chunk, noise):
    """--g-refine: the full-size 3x3 convolution runs on the interleaved tensor, whose 2x2 blocks
    feed the rewritten output convolution; both graphs equal Keras, with and without noise."""
    keras.utils.set_random_seed(6)
    g = build_generator(preset("smoke").replace(**_SMALL, g_refine=6, g_noise=noise))
    assert g.get_layer("g_refine").filters == 6
    _graphs_equal_keras(g, chunk, {"SpaceToDepth", "Conv"}, seed=7)


@pytest.mark.parametrize("chunk", [0, 3])
@pytest.mark.parametrize("refine, noise", [(0, False), (6, True)])
def test_supersampled_generator_exports(chunk, refine, noise):
    """--g-supersample: one more upsampling layer, the output convolution at twice the size and
    one AveragePool; both graphs equal Keras (with the refinement convolution and noise too)."""
    keras.utils.set_random_seed(9)
    g = build_generator(preset("smoke").replace(**_SMALL, g_supersample=5, g_refine=refine, g_noise=noise))
    assert g.output_shape[1:] == (32, 32, 1) and g.get_layer("g_up3").filters == 5
    assert _graphs_equal_keras(g, chunk, {"AveragePool"}, seed=10).shape == (5, 1, 32, 32)
