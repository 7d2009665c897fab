"""Builders: the paper's shapes and parameter counts, named layers, LeakyReLU 0.2."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_training.config import Config, preset
from cxr_training.models import build_discriminator, build_generator
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


def test_paper_generator():
    g = build_generator(preset("paper"))
    assert g.count_params() == 27_265_281
    assert g.input_shape == (None, 100) and g.inputs[0].name.startswith("z")
    assert g.output_shape == (None, 128, 128, 1)
    assert [layer.name for layer in g.layers] == [
        "z", "g_dense", "g_dense_lrelu", "g_reshape", "g_up1", "g_up1_lrelu", "g_up2", "g_up2_lrelu", "g_out"]
    assert g.get_layer("g_reshape").output.shape[1:] == (32, 32, 256)
    assert g.get_layer("g_up1").output.shape[1:] == (64, 64, 128)
    assert g.get_layer("g_out").activation.__name__ == "tanh"


def test_paper_discriminator():
    d = build_discriminator(preset("paper"))
    assert d.count_params() == 582_785
    assert d.input_shape == (None, 128, 128, 1) and d.output_shape == (None, 1)
    assert [d.get_layer(f"d_conv{i}").strides for i in range(1, 5)] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert d.get_layer("d_dropout").rate == 0.4
    # the logit layer, then the sigmoid as its own (weightless) layer: the probability the study's D outputs
    assert d.get_layer("d_out").activation.__name__ == "linear"
    assert d.get_layer("d_prob").activation.__name__ == "sigmoid" and d.layers[-1].name == "d_prob"


@pytest.mark.parametrize("build", [build_generator, build_discriminator])
def test_leaky_slope_is_explicit(build):
    model = build(preset("paper"))
    slopes = [layer.negative_slope for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)]
    assert slopes and all(s == pytest.approx(0.2) for s in slopes)


def test_tiny_config_builds_and_runs():
    cfg = preset("smoke")
    g, d = build_generator(cfg), build_discriminator(cfg)
    x = g(np.zeros((3, cfg.latent_dim), np.float32))
    assert x.shape == (3, 32, 32, 1) and np.all(np.abs(x) <= 1)
    assert d(x).shape == (3, 1)


def test_the_labelled_default_is_the_projection_d_and_leaves_unlabelled_hashes_alone():
    """Measured better (docs/results.md), projection is the labelled default; an unlabelled config's
    hash ignores the field, and a labelled config written before it existed stays class channels."""
    quick = preset("quick")
    assert quick.d_condition == "projection"
    assert quick.hash() == quick.replace(d_condition="channels").hash()  # no effect unlabelled
    labelled = quick.replace(classes=("NORMAL", "PNEUMONIA"))
    assert labelled.hash() != labelled.replace(d_condition="channels").hash()
    old = {k: v for k, v in labelled.to_dict().items() if k != "d_condition"}
    assert Config.from_dict(old).d_condition == "channels"
    assert Config.from_dict({k: v for k, v in quick.to_dict().items() if k != "d_condition"}) == quick


def test_config_validation_and_roundtrip():
    cfg = preset("quick")
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert cfg.hash() == Config.from_dict(cfg.to_dict()).hash() != preset("paper").hash()
    for bad in ({"image_size": 30}, {"d_dropout": 1.0}, {"lr_schedule": "cosine"},
                {"progressive_schedule": ((0.0, 4), (0.5, 2))}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            cfg.replace(**bad).validate()
    with pytest.raises(ValueError, match="unknown config fields"):
        Config.from_dict({**cfg.to_dict(), "bogus": 1})


def test_config_written_before_precision_existed_reads_as_float32():
    """Runs made before --precision trained in float32; resuming one must rebuild float32 nets."""
    legacy = {k: v for k, v in preset("quick").to_dict().items() if k != "precision"}
    assert Config.from_dict(legacy).precision == "float32"
    assert Config.from_dict({**legacy, "precision": "bfloat16"}).precision == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        preset("quick").replace(precision="fp8").validate()


def test_resize_convolution_equals_upsampling_then_3x3_convolution():
    """ResizeConv2x is computed as a 4x4 stride-2 transposed convolution; it must equal nearest
    2x upsampling followed by a 3x3 'same' convolution with its kernel."""
    from cxr_training.models import ResizeConv2x

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 3)).astype("float32")
    layer = ResizeConv2x(4)
    y = layer(x).numpy()
    layer.bias.assign(rng.standard_normal(4).astype("float32"))
    y = layer(x).numpy()
    up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    conv = keras.layers.Conv2D(4, 3, padding="same")
    conv.build(up.shape)
    conv.set_weights([layer.kernel.numpy(), layer.bias.numpy()])
    np.testing.assert_allclose(y, conv(up).numpy(), atol=1e-5)
    # a flat input gives a flat output: no checkerboard can come from the upsampling itself
    flat = layer(np.ones((1, 4, 4, 3), np.float32)).numpy()[0, 1:-1, 1:-1]
    np.testing.assert_allclose(flat, np.broadcast_to(flat[:1, :1], flat.shape), atol=1e-5)


def test_bilinear_resize_convolution_is_bilinear_upsampling_then_3x3_convolution(tmp_path):
    """BilinearConv2x is computed on the coarse grid (one 3x3 convolution per output phase of the
    edge-padded input); it must equal tf.image.resize's bilinear doubling followed by a 3x3
    convolution with its kernel: inside, exactly; at the border, the convolution reads the
    upsampling of the edge-clamped input where a 'same' convolution reads zeros."""
    from cxr_training.models import BilinearConv2x, load_generator

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 3)).astype("float32")
    layer = BilinearConv2x(4)
    layer(x)
    layer.bias.assign(rng.standard_normal(4).astype("float32"))
    y = layer(x).numpy()
    assert y.shape == (2, 10, 12, 4)
    up = tf.image.resize(x, (10, 12), method="bilinear").numpy()
    conv = keras.layers.Conv2D(4, 3, padding="same")
    conv.build(up.shape)
    conv.set_weights([layer.kernel.numpy(), layer.bias.numpy()])
    np.testing.assert_allclose(y[:, 1:-1, 1:-1], conv(up).numpy()[:, 1:-1, 1:-1], atol=1e-5)
    assert np.abs(y - conv(up).numpy()).max() > 1e-3  # the border is not the zero-padded convolution's
    edge = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    up_edge = tf.image.resize(edge, (14, 16), method="bilinear").numpy()[:, 1:-1, 1:-1]
    want = tf.nn.conv2d(up_edge, layer.kernel.numpy(), 1, "VALID").numpy() + layer.bias.numpy()
    np.testing.assert_allclose(y, want, atol=1e-5)
    # the identity kernel gives the bilinear doubling itself, everywhere
    ident = BilinearConv2x(3)
    ident(x)
    ident.kernel.assign(np.eye(3, dtype=np.float32)[None, None] * np.pad(np.ones((1, 1)), 1)[:, :, None, None])
    np.testing.assert_allclose(ident(x).numpy(), up, atol=1e-5)
    # a generator with it saves and loads
    g = build_generator(preset("smoke").replace(g_upsample="bilinear"))
    assert g.get_layer("g_up1").__class__.__name__ == "BilinearConv2x"
    # --g-upsample-last: the last doubling of another kind, the others as --g-upsample
    mixed = build_generator(preset("smoke").replace(g_upsample="bilinear", g_upsample_last="resize"))
    assert [type(mixed.get_layer(f"g_up{i}")).__name__ for i in (1, 2)] == ["BilinearConv2x", "ResizeConv2x"]
    cfg = preset("smoke").replace(g_upsample="resize")
    assert cfg.replace(g_upsample_last="bilinear").hash() != cfg.hash() == cfg.replace(g_upsample_last="").hash()
    g.save(tmp_path / "g.keras")
    z = rng.standard_normal((2, preset("smoke").latent_dim)).astype("float32")
    np.testing.assert_allclose(load_generator(tmp_path / "g.keras")(z).numpy(), g(z).numpy(), atol=1e-6)


def test_lighter_generator_shapes_and_saving(tmp_path):
    """The lighter generator (16x16x256 -> 128 -> 64 -> 32) with resize convolutions: 7.3 M
    parameters instead of 27.3 M, and it saves and loads as any Keras model."""
    cfg = preset("paper").replace(g_channels=(128, 64, 32), g_upsample="resize")
    g = build_generator(cfg)
    assert g.get_layer("g_reshape").output.shape[1:] == (16, 16, 256)
    assert g.output_shape == (None, 128, 128, 1)
    dense = 100 * 16 * 16 * 256 + 16 * 16 * 256
    convs = (9 * 256 * 128 + 128) + (9 * 128 * 64 + 64) + (9 * 64 * 32 + 32) + (16 * 32 + 1)
    assert g.count_params() == dense + convs
    z = np.random.default_rng(1).standard_normal((2, 100)).astype("float32")
    g.save(tmp_path / "g.keras")
    again = keras.models.load_model(tmp_path / "g.keras", compile=False)
    np.testing.assert_allclose(again(z).numpy(), g(z).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="g_upsample"):
        cfg.replace(g_upsample="nearest").validate()


def _broken_values(f):
    spec = f.metadata
    if spec.get("choices") is not None:
        yield "no-such-choice"
    lo, hi = spec.get("lo"), spec.get("hi")
    step = 1 if f.type in ("int", int) or isinstance(f.default, int) else 1e-3
    if lo is not None:
        yield lo if spec.get("lo_open") else lo - step
    if hi is not None:
        yield hi if spec.get("hi_open") else hi + step


def test_every_bound_of_a_flag_holds_for_the_api_too():
    """Config's bounds are written once (the metadata that builds the flags): a Config built in
    Python or read back on resume with any bound broken is refused, naming the field."""
    import dataclasses

    from cxr_training.config import Config

    checked = 0
    for f in dataclasses.fields(Config):
        for value in _broken_values(f):
            with pytest.raises(ValueError, match=f.name):
                preset("smoke").replace(**{f.name: value}).validate()
            checked += 1
    assert checked >= 50
    for bad in ({"seed": -1}, {"g_kernel": 0}, {"batch_size": 4097}, {"d_kernel": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            preset("smoke").replace(**bad).validate()
    preset("smoke").validate()  # and a good one passes
