"""The texture levers (docs/training.md, "Texture levers"): D's high-pass, patch and spectrum
heads, the spectrum term and the fine-detail term in G's loss, and G's per-pixel noise. Off in every preset; each one does what it says when on."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_training.config import PRESETS, preset
from cxr_training.gan import log_spectrum
from cxr_training.models import HighPass, build_discriminator, logit_model
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_off_in_every_preset(name):
    """Every texture lever is off in every preset but the refinement convolution, which the two
    recipe presets took from the measurements; the study's preset stays the study's."""
    assert preset(name).d_highpass == 0 and preset(name).g_spectral == 0.0 and not preset(name).g_noise
    assert preset(name).d_patch == 0 and preset(name).g_supersample == 0 and preset(name).g_detail == 0.0
    assert preset(name).d_spectrum == 0 and preset(name).d_spectrum_tile == 0 and preset(name).g_upsample_last == ""
    assert preset(name).g_refine == (32 if name in ("quick", "long") else 0)


def test_high_pass_keeps_fine_detail_only():
    smooth = np.tile(np.linspace(-1, 1, 32, dtype=np.float32), (32, 1))[None, :, :, None]
    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 0.2 - 0.1).astype(np.float32)[None, :, :, None]
    hp = HighPass()
    assert float(np.abs(hp(smooth)[:, 4:-4, 4:-4]).max()) < 1e-3  # a linear ramp has no fine detail
    assert float(np.abs(hp(checker)).mean()) > 0.08  # a checkerboard is almost all fine detail


def test_the_texture_head_adds_to_the_logit():
    cfg = preset("smoke").replace(d_highpass=8)
    d = build_discriminator(cfg)
    names = [layer.name for layer in d.layers]
    assert {"d_main", "d_hp_input", "d_hp_conv1", "d_hp_patch", "d_out"} <= set(names)
    plain = build_discriminator(preset("smoke"))
    assert not any(n.startswith("d_hp") for n in (layer.name for layer in plain.layers))
    # the logit is the global head's plus the mean patch logit of the fine detail
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    logit = logit_model(d)(x, training=False).numpy()
    main = keras.Model(d.inputs, d.get_layer("d_main").output)(x, training=False).numpy()
    patch = keras.Model(d.inputs, d.get_layer("d_hp_mean").output)(x, training=False).numpy()
    np.testing.assert_allclose(logit, main + patch, rtol=1e-5, atol=1e-6)


def test_the_patch_head_sees_the_image_itself():
    cfg = preset("smoke").replace(d_patch=8)
    d = build_discriminator(cfg)
    names = {layer.name for layer in d.layers}
    assert {"d_main", "d_patch_conv1", "d_patch_conv3", "d_patch_logits", "d_patch_mean", "d_out"} <= names
    assert not any(n.startswith("d_hp") for n in names)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    logit = logit_model(d)(x, training=False).numpy()
    main = keras.Model(d.inputs, d.get_layer("d_main").output)(x, training=False).numpy()
    head = keras.Model(d.inputs, d.get_layer("d_patch_mean").output)
    np.testing.assert_allclose(logit, main + head(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    # unlike the high-pass head, it sees a constant shift of the image (no filter in front)
    assert np.abs(head(x + 0.5, training=False).numpy() - head(x, training=False).numpy()).max() > 1e-4
    both = build_discriminator(cfg.replace(d_highpass=8))
    assert {"d_hp_mean", "d_patch_mean"} <= {layer.name for layer in both.layers}


def test_the_spectrum_head_sees_each_image_spectrum_and_adds_to_the_logit():
    from cxr_training.models import LogSpectrum, radial_power

    cfg = preset("smoke").replace(d_spectrum=8)
    d = build_discriminator(cfg)
    names = {layer.name for layer in d.layers}
    assert {"d_main", "d_spec_input", "d_spec_dense", "d_spec_logit", "d_out"} <= names
    assert not any(n.startswith("d_spec") for n in (layer.name for layer in build_discriminator(preset("smoke")).layers))
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    head_model = keras.Model(d.inputs, d.get_layer("d_spec_logit").output)
    assert np.all(head_model(x, training=False).numpy() == 0.0)  # silent at first: its output kernel is 0
    out = d.get_layer("d_spec_logit")
    out.kernel.assign(rng.normal(0, 0.1, out.kernel.shape).astype(np.float32))
    logit = logit_model(d)(x, training=False).numpy()
    main = keras.Model(d.inputs, d.get_layer("d_main").output)(x, training=False).numpy()
    head = head_model(x, training=False).numpy()
    assert np.abs(head).max() > 1e-3
    np.testing.assert_allclose(logit, main + head, rtol=1e-5, atol=1e-5)
    # per image: an image's spectrum does not depend on the batch it is in; the batch's mean power
    # is what --g-spectral's log_spectrum takes the log of
    spec = LogSpectrum()(x).numpy()
    assert spec.shape == (3, 32)
    np.testing.assert_allclose(LogSpectrum()(x[1:2]).numpy(), spec[1:2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_spectrum(x).numpy(), np.log10(radial_power(x).numpy().mean(axis=0) + 1e-8),
                               rtol=1e-5, atol=1e-5)
    # a blurred image loses its high bands, keeps its low ones
    blurred = tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], "REFLECT"), 3, 1, "VALID").numpy()
    low, high = LogSpectrum()(blurred).numpy() - spec, slice(-8, None)
    assert np.all(low[:, high].mean(axis=1) < -0.5) and np.all(np.abs(low[:, 1]) < 0.3)


def test_the_tiled_spectrum_head_judges_each_tile_alone():
    from cxr_training.models import LogSpectrum, image_tiles, radial_power

    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    tiles = image_tiles(tf.constant(x), 8).numpy()
    assert tiles.shape == (32, 8, 8, 1)
    np.testing.assert_array_equal(tiles[0], x[0, :8, :8])  # image 0, first row of tiles
    np.testing.assert_array_equal(tiles[5], x[0, 8:16, 8:16])  # image 0, second row, second tile
    np.testing.assert_array_equal(tiles[16 + 3], x[1, :8, 24:32])  # image 1, first row, last tile
    spec = LogSpectrum(tile=8)(x).numpy()
    assert spec.shape == (2, 16, 4)
    # tile k's spectrum is that tile's alone, as if it were the whole image (its own mean and window)
    np.testing.assert_allclose(spec[0, 5], np.log10(radial_power(x[:1, 8:16, 8:16], 4).numpy()[0] + 1e-8),
                               rtol=1e-5, atol=1e-5)
    assert LogSpectrum.from_config(LogSpectrum(tile=8).get_config()).tile == 8

    cfg = preset("smoke").replace(d_spectrum=8, d_spectrum_tile=8)
    d = build_discriminator(cfg)
    names = {layer.name for layer in d.layers}
    assert {"d_main", "d_spec_input", "d_spec_dense", "d_spec_logit", "d_spec_mean", "d_out"} <= names
    out = d.get_layer("d_spec_logit")
    out.kernel.assign(rng.normal(0, 0.1, out.kernel.shape).astype(np.float32))
    per_tile = keras.Model(d.inputs, out.output)(x, training=False).numpy()
    assert per_tile.shape == (2, 16, 1) and np.abs(per_tile).max() > 1e-3
    main = keras.Model(d.inputs, d.get_layer("d_main").output)(x, training=False).numpy()
    logit = logit_model(d)(x, training=False).numpy()
    np.testing.assert_allclose(logit, main + per_tile.mean(axis=1), rtol=1e-5, atol=1e-5)
    # the same head on every tile: a tile's logit depends on that tile only, wherever it sits
    swapped = x.copy()
    swapped[:, :8, :8], swapped[:, 24:, 24:] = x[:, 24:, 24:], x[:, :8, :8]
    moved = keras.Model(d.inputs, out.output)(swapped, training=False).numpy()
    np.testing.assert_allclose(moved[:, 0], per_tile[:, 15], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moved[:, 1:15], per_tile[:, 1:15], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [dict(d_spectrum_tile=8), dict(d_spectrum=8, d_spectrum_tile=12),
                                 dict(d_spectrum=8, d_spectrum_tile=2)])
def test_a_tiled_spectrum_needs_the_head_and_tiles_that_fit(bad):
    with pytest.raises(ValueError, match="d_spectrum_tile"):
        preset("smoke").replace(**bad).validate()


def test_a_new_lever_off_keeps_the_hash_of_runs_recorded_before_it():
    import dataclasses
    import hashlib
    import json

    from cxr_training.config import UNHASHED, UNLABELLED_NO_EFFECT

    cfg = preset("quick").replace(g_refine=0, augment="off")  # the quick preset before it took the refinement layer
    skip = UNHASHED | UNLABELLED_NO_EFFECT | {"d_patch", "g_refine", "g_supersample", "g_detail", "g_detail_patch",
                                                  "d_spectrum", "d_spectrum_tile", "g_upsample_last", "ada_signal",
                                                  "ada_validation", "ada_gap", "lecam", "lecam_decay"}
    old = {k: v for k, v in cfg.to_dict().items() if k not in skip}  # the record of a run from before it
    assert cfg.hash() == hashlib.sha256(json.dumps(old, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    assert cfg.replace(d_patch=32).hash() != cfg.hash() != cfg.replace(g_refine=32).hash()
    assert cfg.replace(g_supersample=16).hash() not in (cfg.hash(), cfg.replace(g_refine=16).hash())
    on = cfg.replace(g_detail=10.0)
    spec = cfg.replace(d_spectrum=32)
    assert len({cfg.hash(), on.hash(), on.replace(g_detail_patch=3).hash(), spec.hash(),
                spec.replace(d_spectrum_tile=32).hash(), cfg.replace(lecam=0.1).hash(),
                cfg.replace(lecam=0.1, lecam_decay=0.9).hash()}) == 7
    assert {"d_patch", "g_refine"} <= {f.name for f in dataclasses.fields(cfg)}


def test_log_spectrum_sees_blur_and_is_differentiable():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(0, 0.3, (4, 32, 32, 1)).astype(np.float32))
    blurred = tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], "REFLECT"), 3, 1, "VALID")
    a, b = log_spectrum(x).numpy(), log_spectrum(blurred).numpy()
    assert a.shape == (32,) and np.all(np.isfinite(a))
    assert a[-8:].mean() - b[-8:].mean() > 0.5  # the high bands lose at least a factor 3 of power
    assert abs(a[1] - b[1]) < 0.1  # the low bands barely move
    with tf.GradientTape() as tape:
        tape.watch(blurred)
        loss = tf.reduce_mean(tf.square(log_spectrum(blurred) - a))
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, blurred)))) > 0


def _radiograph_like(rng, n, size=48):
    """Smooth shading with a few sharp edges (a rib-like stripe, a bright block) and faint grain:
    sparse fine detail, as in a radiograph."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-0.5, 0.5, 3)
        img = 0.4 * np.sin(3 * a + 2 * xx) * np.cos(2 * b + 3 * yy)
        row, col = rng.integers(8, size - 16, 2)
        img[row : row + 3, :] += 0.5
        img[row : row + 10, col : col + 10] -= 0.4 + 0.1 * c
        out.append(img + rng.normal(0, 0.005, img.shape))
    return np.clip(np.stack(out), -1, 1)[..., None].astype(np.float32)


def test_fine_detail_is_the_sigma_1_residual():
    from cxr_training.gan import fine_detail

    ramp = np.tile(np.linspace(-1, 1, 32, dtype=np.float32), (32, 1))[None, :, :, None]
    assert fine_detail(ramp).shape == (1, 26, 26, 1)
    assert float(np.abs(fine_detail(ramp)).max()) < 1e-5  # a linear ramp has no fine detail
    spike = np.zeros((1, 15, 15, 1), np.float32)
    spike[0, 7, 7, 0] = 1.0
    d = fine_detail(spike).numpy()[0, :, :, 0]  # the residual of a spike: 1 - g(0)^2 at its centre
    g0 = 1 / np.exp(-0.5 * np.arange(-3, 4) ** 2).sum()
    np.testing.assert_allclose(d[4, 4], 1 - g0 * g0, rtol=1e-5)
    np.testing.assert_allclose(d.sum(), 0.0, atol=1e-5)  # the kernel sums to 1: the residual to 0


def test_the_detail_term_sees_the_shape_of_fine_detail_not_its_amount():
    from cxr_training.gan import detail_swd

    rng = np.random.default_rng(3)
    real, other = _radiograph_like(rng, 16), _radiograph_like(rng, 16)
    key = tf.constant([5, 9], tf.int64)

    def swd(x, patch=5):
        return float(detail_swd(tf.constant(x), tf.constant(real), key, patch))

    same = swd(other)
    blurred = tf.nn.avg_pool2d(tf.pad(other, [[0, 0], [1, 1], [1, 1], [0, 0]], "REFLECT"), 3, 1, "VALID").numpy()
    grain = (other + rng.normal(0, 0.05, other.shape)).astype(np.float32)
    assert same < 0.1
    assert swd(blurred) > 5 * same and swd(grain) > 5 * same
    assert swd(other) == same  # the same key draws the same directions and positions
    # each image's detail over its RMS: half the contrast (half the detail) reads the same
    np.testing.assert_allclose(swd(0.5 * other), same, rtol=1e-3, atol=1e-6)
    # the same fine-detail values in another arrangement: the images turned by 90 degrees (their
    # rib-like stripes now vertical) have the same single values (patch 1 barely tells), not the
    # same patches (a patch of 5 does)
    turned = np.ascontiguousarray(np.transpose(other, (0, 2, 1, 3)))
    assert swd(turned, patch=1) < 2 * swd(other, patch=1)
    assert swd(turned, patch=5) > 3 * swd(turned, patch=1)


def test_the_detail_term_pulls_generated_detail_toward_the_real():
    """Its gradient moves a too-smooth batch toward the real batch: a few steps of gradient descent
    on the term alone lower it."""
    from cxr_training.gan import detail_swd

    rng = np.random.default_rng(4)
    real = tf.constant(_radiograph_like(rng, 8))
    x = tf.Variable(tf.nn.avg_pool2d(_radiograph_like(rng, 8), 3, 1, "SAME"))
    key = tf.constant([1, 2], tf.int64)
    opt = keras.optimizers.Adam(0.01)
    first = None
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = detail_swd(x, real, key, 3)
        first = float(loss) if first is None else first
        opt.apply_gradients([(tape.gradient(loss, x), x)])
    assert float(detail_swd(x, real, key, 3)) < 0.5 * first


def test_pixel_noise_is_a_function_of_z_learned_from_zero():
    from cxr_training.models import build_generator

    g = build_generator(preset("smoke").replace(g_noise=True))
    noise = [layer for layer in g.layers if layer.name.endswith("_noise")]
    assert len(noise) == 2 and all(float(np.abs(n.strength.numpy()).max()) == 0.0 for n in noise)  # off at first
    for n in noise:
        n.strength.assign(np.ones(n.strength.shape, np.float32))
    z = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    a = g(z).numpy()
    np.testing.assert_array_equal(a, g(z).numpy())  # no random state
    # nor a dependence on the batch (up to float32 rounding, which depends on the batch size in oneDNN's
    # kernels: 1.1e-6 seen on an AVX2-only EPYC; noise drawn per batch would move pixels by ~0.1)
    np.testing.assert_allclose(g(z[1:2]).numpy(), a[1:2], atol=1e-5)
    assert np.abs(a[0] - a[1]).mean() > 0.01


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_supersampling_draws_twice_the_size_and_averages(precision):
    from cxr_training.models import build_generator

    cfg = preset("smoke").replace(g_supersample=4, g_noise=True)
    g = build_generator(cfg, precision=precision)
    assert g.output_shape[1:] == (cfg.image_size, cfg.image_size, 1)
    assert g.get_layer("g_up3").filters == 4 and g.get_layer("g_up3_noise").index == 3
    drawn = keras.Model(g.inputs, g.get_layer(g.layers[-2].name).output)
    assert drawn.output_shape[1:] == (2 * cfg.image_size, 2 * cfg.image_size, 1)
    z = np.random.default_rng(2).normal(size=(2, cfg.latent_dim)).astype(np.float32)
    big = drawn(z).numpy()
    want = big.reshape(2, cfg.image_size, 2, cfg.image_size, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(g(z).numpy(), want, atol=1e-6)
    # the drawn image's finest detail survives as power at the pooled image's highest frequencies,
    # which a nearest-neighbour doubling before a convolution cannot put there (its response is 0)
    assert np.abs(big[:, ::2, ::2] - big[:, 1::2, ::2]).max() > 0


def test_a_run_trains_with_every_lever(tmp_path, few_real):
    from cxr_training.train import train

    cfg = preset("smoke").replace(d_highpass=8, d_patch=8, g_spectral=1.0, g_noise=True, g_refine=4, g_supersample=4,
                                  g_detail=1.0, g_detail_patch=3, d_spectrum=8, d_spectrum_tile=8)
    run = train(cfg, few_real, out_root=tmp_path, log=lambda m: None)
    assert (run / "generator.keras").is_file()
