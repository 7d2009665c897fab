"""The data-efficient recipe's levers each do what they say (training/cxr_training/gan.py,
augment.py, models.py): augmentation, R1, label smoothing, minibatch stddev, ADA, EMA."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_training import augment
from cxr_training.config import PRESETS, Config, preset
from cxr_training.data import load_images_or_fail, split_validation
from cxr_training.errors import TrainingError
from cxr_training.gan import GAN, make_optimizers
from cxr_training.models import LOGIT_LAYER, MinibatchStdDev, build_discriminator, build_generator, logit_model
from cxr_training.tfenv import import_tf
from cxr_training.train import train

tf, keras = import_tf()
POLICY = ("color", "translation", "cutout")


def _images(n=6, size=32, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 1)).astype(np.float32))


def _gan(cfg, discriminator=None):
    keras.utils.set_random_seed(cfg.seed)
    gan = GAN(build_generator(cfg), discriminator or build_discriminator(cfg), cfg)
    gan.compile(*make_optimizers(cfg))
    gan.build_optimizers()
    return gan


def _step_input(cfg, step=0):
    real = np.random.default_rng(step).uniform(-1, 1, (cfg.batch_size, cfg.image_size, cfg.image_size, 1))
    return tf.constant(step, tf.int64), tf.constant(real.astype(np.float32))


# --- augmentation ---------------------------------------------------------------------


def _grad(x, policy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = augment.augment(x, augment.key(0, 5, augment.SLOT_D_REAL), 1.0, policy, 6)
        total = tf.reduce_sum(y * y)
    return tape.gradient(total, x)


def test_augmentation_is_differentiable():
    x = _images()
    grad = _grad(x, POLICY)
    assert grad is not None and np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).max() > 0
    # geometry alone: pixels that survive the shift and the cutout carry gradient 2x, removed ones none
    g = _grad(x, ("translation", "cutout")).numpy()
    kept = g != 0
    assert 0 < kept.sum() < g.size
    np.testing.assert_allclose(g[kept], 2 * x.numpy()[kept], rtol=1e-6)


def test_augmentation_probability_zero_is_identity_and_one_changes_every_image():
    x = _images()
    k = augment.key(3, 7, augment.SLOT_D_FAKE)
    np.testing.assert_array_equal(augment.augment(x, k, 0.0, POLICY, 6).numpy(), x.numpy())
    y = augment.augment(x, k, 1.0, POLICY, 6).numpy()
    assert all(not np.array_equal(y[i], x.numpy()[i]) for i in range(6))


def test_augmentation_is_a_function_of_seed_step_and_slot():
    x = _images()
    a = augment.augment(x, augment.key(0, 1, augment.SLOT_D_REAL), 1.0, POLICY, 6).numpy()
    b = augment.augment(x, augment.key(0, 1, augment.SLOT_D_REAL), 1.0, POLICY, 6).numpy()
    np.testing.assert_array_equal(a, b)
    for other in (augment.key(0, 1, augment.SLOT_D_FAKE), augment.key(0, 2, augment.SLOT_D_REAL),
                  augment.key(1, 1, augment.SLOT_D_REAL)):
        assert not np.array_equal(a, augment.augment(x, other, 1.0, POLICY, 6).numpy())


def test_augmentation_rows_of_a_replica_match_the_global_batch():
    """Replica r's rows get the transforms the same rows get in a single-device batch."""
    x = _images(8)
    k = augment.key(0, 4, augment.SLOT_D_REAL)
    whole = augment.augment(x, k, 0.5, POLICY, 8).numpy()
    half = augment.augment(x[4:], k, 0.5, POLICY, 8, start=4).numpy()
    np.testing.assert_array_equal(whole[4:], half)


def test_translation_moves_pixels_and_fills_with_zero():
    x = np.zeros((2, 8, 8, 1), np.float32)
    x[:, 3, 5, 0] = 1.0
    y = augment._shift_rows(tf.constant(x), tf.constant([2, -3]), 8).numpy()
    assert y[0, 5, 5, 0] == 1.0 and y[0].sum() == 1.0  # down by 2
    assert y[1, 0, 5, 0] == 1.0 and y[1].sum() == 1.0  # up by 3
    ones = augment._shift_rows(tf.ones((1, 8, 8, 1)), tf.constant([3]), 8).numpy()
    assert ones[0, :3].sum() == 0 and ones[0, 3:].min() == 1.0  # rows shifted in are 0


def test_cutout_zeroes_one_square_of_half_the_side():
    x = tf.ones((16, 32, 32, 1))
    y = augment._cutout(x, augment.key(0, 0, 0), 16, 0, 16).numpy()[..., 0]
    for img in y:
        holes = np.argwhere(img == 0)
        assert 0 < len(holes) <= 16 * 16
        (r0, c0), (r1, c1) = holes.min(0), holes.max(0)
        assert len(holes) == (r1 - r0 + 1) * (c1 - c0 + 1)  # one axis-aligned rectangle
        assert r1 - r0 + 1 <= 16 and c1 - c0 + 1 <= 16


def test_color_stays_within_its_ranges():
    x = _images(64, 16)
    y = augment._color(x, augment.key(0, 0, 0), 64, 0, 64).numpy()
    shift = y.mean(axis=(1, 2, 3)) - x.numpy().mean(axis=(1, 2, 3))  # contrast keeps the mean
    assert np.all(np.abs(shift) <= 0.5 + 1e-5) and np.ptp(shift) > 0.5
    ratio = y.std(axis=(1, 2, 3)) / x.numpy().std(axis=(1, 2, 3))
    assert np.all((ratio >= 0.5 - 1e-4) & (ratio <= 1.5 + 1e-4))


def test_step_augments_real_and_generated_images_in_both_phases(monkeypatch):
    calls = []
    real_augment = augment.augment

    def spy(x, k, p, policy, batch, start=0):
        calls.append(int(k.numpy()[1]) % 4)
        return real_augment(x, k, p, policy, batch, start)

    monkeypatch.setattr(augment, "augment", spy)
    cfg = preset("smoke").replace(augment="fixed")
    _gan(cfg).train_step(_step_input(cfg))
    assert sorted(calls) == [augment.SLOT_D_REAL, augment.SLOT_D_FAKE, augment.SLOT_G_FAKE]

    calls.clear()
    _gan(preset("smoke")).train_step(_step_input(cfg))  # the paper's recipe augments nothing
    assert calls == []


# --- R1, label smoothing, minibatch stddev ------------------------------------------------


@keras.saving.register_keras_serializable(package="cxr_test")
class Square(keras.layers.Layer):
    def call(self, x):
        return x * x


def _toy_discriminator(cfg):
    """logit = sum_j w_j x_j^2 + b: d logit / dx = 2 w x, so R1 = gamma/2 mean_i sum_j 4 w_j^2 x_ij^2."""
    image = keras.Input((cfg.image_size, cfg.image_size, 1), name="image")
    x = keras.layers.Flatten()(Square()(image))
    logit = keras.layers.Dense(1, name="d_out", kernel_initializer=keras.initializers.RandomNormal(seed=1))(x)
    return keras.Model(image, keras.layers.Activation("sigmoid")(logit))


def test_r1_penalty_and_its_gradient_match_a_hand_computation():
    gamma = 0.7
    cfg = preset("smoke").replace(r1_gamma=gamma, batch_size=3)
    gan = _gan(cfg, _toy_discriminator(cfg))
    dense = gan.discriminator.get_layer("d_out")
    real, fake = _images(3, cfg.image_size, 1), _images(3, cfg.image_size, 2)
    with tf.GradientTape() as tape:
        _, r1, _, _ = gan.d_phase_loss(tf.constant(0, tf.int64), real, fake, 0, 3)
    grad = tape.gradient(r1, dense.kernel).numpy()[:, 0]
    w = dense.kernel.numpy()[:, 0].astype(np.float64)
    x2 = real.numpy().reshape(3, -1).astype(np.float64) ** 2
    want = gamma / 2 * np.mean((4 * w**2 * x2).sum(axis=1))
    np.testing.assert_allclose(float(r1), want, rtol=1e-5)
    np.testing.assert_allclose(grad, 4 * gamma * w * x2.mean(axis=0), rtol=1e-4, atol=1e-9)


def test_r1_is_taken_through_the_augmentation():
    """With augmentation on, R1 is the gradient at the real images *before* the augmentation,
    through it. Cutout with p = 1 multiplies each image by a mask m (0 inside its square), so for
    the toy D: d logit / dx = 2 w x m and R1 = gamma/2 mean_i sum_j 4 w_j^2 x_ij^2 m_ij; the mask
    is read off the same draw applied to an image of ones."""
    gamma = 0.7
    cfg = preset("smoke").replace(r1_gamma=gamma, batch_size=3, augment="fixed", augment_p=1.0,
                                  augment_policy=("cutout",))
    gan = _gan(cfg, _toy_discriminator(cfg))
    w = gan.discriminator.get_layer("d_out").kernel.numpy()[:, 0].astype(np.float64)
    real, fake = _images(3, cfg.image_size, 1), _images(3, cfg.image_size, 2)
    step = tf.constant(4, tf.int64)
    _, r1, _, _ = gan.d_phase_loss(step, real, fake, 0, 3)
    mask = augment.augment(tf.ones_like(real), augment.key(cfg.seed, step, augment.SLOT_D_REAL), 1.0, ("cutout",),
                           3).numpy().reshape(3, -1).astype(np.float64)
    assert 0 < mask.mean() < 1  # the cutout removed part of every image
    x2 = real.numpy().reshape(3, -1).astype(np.float64) ** 2
    want = gamma / 2 * np.mean((4 * w**2 * x2 * mask).sum(axis=1))
    np.testing.assert_allclose(float(r1), want, rtol=1e-5)
    assert float(r1) < gamma / 2 * np.mean((4 * w**2 * x2).sum(axis=1))  # not the gradient without the cutout


def test_r1_off_is_zero_and_label_smoothing_sets_the_real_target():
    cfg = preset("smoke").replace(batch_size=3, label_smoothing=0.1)
    gan = _gan(cfg, _toy_discriminator(cfg))
    real, fake = _images(3, cfg.image_size, 1), _images(3, cfg.image_size, 2)
    d_loss, r1, real_logit, _ = gan.d_phase_loss(tf.constant(0, tf.int64), real, fake, 0, 3)
    assert float(r1) == 0.0
    fake_logit = gan.d_logit(fake).numpy().ravel().astype(np.float64)
    rl = real_logit.numpy().ravel().astype(np.float64)

    def bce(t, z):
        p = 1 / (1 + np.exp(-z))
        return -(t * np.log(p) + (1 - t) * np.log(1 - p))

    want = np.mean(np.concatenate([bce(0.9, rl), bce(0.0, fake_logit)]))
    np.testing.assert_allclose(float(d_loss), want, rtol=1e-5)


# --- LeCam ------------------------------------------------------------------------------------


def test_lecam_penalty_matches_a_hand_computation():
    """lecam * (mean relu(real - mean_fake)^2 + mean relu(mean_real - fake)^2), the means being the
    moving sums over 1 - decay**step; only the logits carry gradient."""
    cfg = preset("smoke").replace(lecam=0.3, lecam_decay=0.9, batch_size=4)
    gan = _gan(cfg)
    gan.lecam_sums[0].assign(0.5)
    gan.lecam_sums[1].assign(-0.2)
    step = tf.constant(3, tf.int64)
    real = tf.constant([[1.5], [-0.4], [0.2], [3.0]])
    fake = tf.constant([[-2.0], [0.9], [-0.1], [0.4]])
    with tf.GradientTape() as tape:
        tape.watch([real, fake])
        penalty = gan.lecam_penalty(step, real, fake)
    g_real, g_fake = tape.gradient(penalty, [real, fake])
    mean_real, mean_fake = 0.5 / (1 - 0.9**3), -0.2 / (1 - 0.9**3)
    r, f = real.numpy().ravel(), fake.numpy().ravel()
    want = 0.3 * (np.mean(np.maximum(r - mean_fake, 0) ** 2) + np.mean(np.maximum(mean_real - f, 0) ** 2))
    np.testing.assert_allclose(float(penalty), want, rtol=1e-5)
    assert 0 < float(penalty)
    np.testing.assert_allclose(g_real.numpy().ravel(), 0.3 * 2 * np.maximum(r - mean_fake, 0) / 4, rtol=1e-5)
    np.testing.assert_allclose(g_fake.numpy().ravel(), -0.3 * 2 * np.maximum(mean_real - f, 0) / 4, rtol=1e-5)
    assert float(gan.lecam_penalty(tf.constant(0, tf.int64), real, fake)) == 0.0  # no history at step 0
    off = _gan(preset("smoke"))
    assert off.lecam_sums == [] and float(off.lecam_penalty(step, real, fake)) == 0.0


def test_lecam_averages_follow_d_and_the_penalty_moves_d_from_the_second_step():
    """After step 0 the moving sums are (1 - decay) times D's mean logits of that step (bias-corrected:
    the means themselves); the penalty is 0 at step 0 (D's step is the step without LeCam) and
    changes D's step from step 1 on."""
    from cxr_training.pipeline import step_latents

    base = preset("smoke").replace(d_dropout=0.0, batch_size=4)
    cfg = base.replace(lecam=0.5)
    gan, twin, plain = _gan(cfg), _gan(cfg), _gan(base)
    for other in (twin, plain):
        other.generator.set_weights(gan.generator.get_weights())
        other.discriminator.set_weights(gan.discriminator.get_weights())
    step, real = _step_input(cfg, 0)
    z = step_latents(cfg.seed, step, 1, cfg.batch_size, cfg.latent_dim)
    _, _, real_logit, fake_logit = twin.d_phase_loss(step, real, twin.generator(z, training=True), 0,
                                                      cfg.batch_size)
    logs = gan.train_step((step, real))
    plain_logs = plain.train_step((step, real))
    d = cfg.lecam_decay
    np.testing.assert_allclose([v.numpy() for v in gan.lecam_sums],
                               [(1 - d) * real_logit.numpy().mean(), (1 - d) * fake_logit.numpy().mean()], rtol=1e-5)
    np.testing.assert_allclose([m.numpy() for m in gan.lecam_means(tf.constant(1, tf.int64))],
                               [real_logit.numpy().mean(), fake_logit.numpy().mean()], rtol=1e-5)
    assert float(logs["lecam"]) == 0.0 and "lecam" not in plain_logs
    for a, b in zip(gan.discriminator.get_weights(), plain.discriminator.get_weights()):
        np.testing.assert_array_equal(a, b)
    step, real = _step_input(cfg, 1)
    logs = gan.train_step((step, real))
    plain.train_step((step, real))
    assert float(logs["lecam"]) > 0
    assert any(not np.array_equal(a, b) for a, b in zip(gan.discriminator.get_weights(),
                                                        plain.discriminator.get_weights()))
    assert set(gan.recipe_state()) == {"lecam"}


def test_minibatch_stddev_appends_the_mean_feature_spread():
    x = np.random.default_rng(0).normal(size=(5, 4, 4, 3)).astype(np.float32)
    y = MinibatchStdDev()(tf.constant(x)).numpy()
    assert y.shape == (5, 4, 4, 4)
    np.testing.assert_array_equal(y[..., :3], x)
    np.testing.assert_allclose(y[..., 3], np.sqrt(x.var(axis=0) + 1e-8).mean(), rtol=1e-5)
    same = MinibatchStdDev()(tf.constant(np.repeat(x[:1], 5, axis=0))).numpy()
    assert np.allclose(same[..., 3], 1e-4)  # identical images: no spread (sqrt of the epsilon)


def test_discriminator_logit_is_the_probability_before_its_sigmoid():
    cfg = preset("smoke").replace(d_mbstd=True)
    d = build_discriminator(cfg)
    x = _images(4, cfg.image_size)
    np.testing.assert_allclose(tf.sigmoid(logit_model(d)(x)).numpy(), d(x).numpy(), rtol=1e-6)


# --- ADA ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign, moved", [(1.0, +1), (-1.0, -1)])
def test_ada_moves_p_toward_the_target_every_interval(sign, moved):
    cfg = preset("smoke").replace(augment="adaptive", ada_start=0.5, ada_interval=2, ada_speed=10.0, ada_target=0.6)
    gan = _gan(cfg)
    ctx = tf.distribute.get_replica_context()
    logits = tf.fill((4, 1), sign)  # r_t = +1 (D sure of every real: overfitting) or -1
    gan._adapt(ctx, tf.constant(0, tf.int64), logits)
    assert float(gan.augment_p) == 0.5  # not yet: every 2 steps
    gan._adapt(ctx, tf.constant(1, tf.int64), logits)
    np.testing.assert_allclose(float(gan.augment_p), 0.5 + moved * 2 / 10.0, rtol=1e-6)
    assert float(gan.ada_sums[0]) == 0.0 and float(gan.ada_sums[1]) == 0.0  # sums restart
    for step in range(2, 40):
        gan._adapt(ctx, tf.constant(step, tf.int64), logits)
    assert float(gan.augment_p) == (1.0 if moved > 0 else 0.0)  # clipped to [0, 1]


def test_ada_starts_at_zero_and_train_step_drives_it():
    """ADA starts with no augmentation (Karras et al.), and train_step feeds D's real logits to
    the controller: with D certain of every real image p rises by interval / speed per interval."""
    cfg = preset("smoke").replace(augment="adaptive", ada_interval=1, ada_speed=20.0, ada_target=0.6, batch_size=4)
    assert cfg.ada_start == 0.0
    gan = _gan(cfg)
    assert float(gan.augment_p) == 0.0
    seen = []
    original = gan._adapt
    gan._adapt = lambda ctx, step, real_logit: (seen.append(real_logit.numpy().copy()), original(ctx, step, real_logit))
    expected = 0.0
    for step in range(3):
        gan.train_step(_step_input(cfg, step))
        r_t = np.mean(np.sign(seen[-1]))
        expected = float(np.clip(expected + np.sign(r_t - 0.6) / 20.0, 0.0, 1.0))
        np.testing.assert_allclose(float(gan.augment_p), expected, atol=1e-6)
    assert len(seen) == 3 and seen[0].shape == (4, 1)


def test_configs_from_before_ada_start_keep_their_starting_probability():
    legacy = {k: v for k, v in preset("smoke").replace(augment="adaptive", augment_p=0.7).to_dict().items()
              if k != "ada_start"}
    assert Config.from_dict(legacy).ada_start == 0.7
    assert Config.from_dict({**legacy, "ada_start": 0.0}).ada_start == 0.0


# --- ADA's validation signal ------------------------------------------------------------------


def _brightness_d(cfg):
    """A D that calls bright images real: logit = 50 x mean pixel, in the layer logit_model reads."""
    inp = keras.Input((cfg.image_size, cfg.image_size, 1))
    logit = keras.layers.Lambda(lambda x: 50.0 * tf.reduce_mean(x, axis=(1, 2, 3))[:, None], name=LOGIT_LAYER)(inp)
    return keras.Model(inp, keras.layers.Activation("sigmoid")(logit))


VALIDATION = preset("smoke").replace(progressive=False, augment="adaptive", ada_signal="validation", ada_validation=3,
                                     ada_interval=2, ada_speed=10.0, ada_gap=0.2)


def test_validation_shares_are_d_verdicts_on_the_probe_and_the_withheld_images():
    cfg = VALIDATION
    gan = _gan(cfg, _brightness_d(cfg))
    size = cfg.image_size
    bright, dark = np.full((3, size, size), 0.5, np.float32), np.full((3, size, size), -0.5, np.float32)
    gan.set_validation(bright, dark)  # D "memorised" the probe: all real; the withheld: none
    assert [float(v) for v in gan.validation_shares(tf.constant(0, tf.int64))] == [1.0, 0.0]
    mixed = np.concatenate([bright[:1], dark[:2]])
    gan.set_validation(mixed, mixed[::-1])
    np.testing.assert_allclose([float(v) for v in gan.validation_shares(tf.constant(0, tf.int64))], [1 / 3, 1 / 3])
    # augmented alike: at p = 1 every transform applies, with the same draws on both sets, so
    # equal images get equal verdicts whatever the transforms do to brightness
    gan.augment_p.assign(1.0)
    images = np.random.default_rng(1).uniform(-0.2, 0.2, (3, size, size)).astype(np.float32)
    gan.set_validation(images, images.copy())
    for step in range(5):
        a, b = gan.validation_shares(tf.constant(step, tf.int64))
        assert float(a) == float(b)


@pytest.mark.parametrize("probe, withheld, moved", [(0.5, -0.5, +1), (0.5, 0.5, -1)])
def test_ada_validation_moves_p_by_the_gap_every_interval(probe, withheld, moved):
    """p rises while D calls the images it trains on real more often than the withheld ones by
    more than ada_gap (gap 1 > 0.2), falls otherwise (gap 0), on adjustment steps only; the
    shares measured there are kept for the epoch rows."""
    cfg = VALIDATION.replace(ada_start=0.5)
    gan = _gan(cfg, _brightness_d(cfg))
    size = cfg.image_size
    gan.set_validation(np.full((3, size, size), probe, np.float32), np.full((3, size, size), withheld, np.float32))
    ctx = tf.distribute.get_replica_context()
    unused = tf.fill((4, 1), 1.0)  # D's real logits: not this signal's input
    gan._adapt(ctx, tf.constant(0, tf.int64), unused)
    assert float(gan.augment_p) == 0.5 and [float(v) for v in gan.ada_sums] == [0.0, 0.0]
    gan._adapt(ctx, tf.constant(1, tf.int64), unused)
    np.testing.assert_allclose(float(gan.augment_p), 0.5 + moved * 2 / 10.0, rtol=1e-6)
    assert [float(v) for v in gan.ada_sums] == [1.0, 1.0 if withheld > 0 else 0.0]
    gan._adapt(ctx, tf.constant(2, tf.int64), unused)  # not an adjustment step: the shares stay
    assert [float(v) for v in gan.ada_sums] == [1.0, 1.0 if withheld > 0 else 0.0]


def test_ada_validation_needs_its_images_and_adaptive_augmentation():
    gan = _gan(VALIDATION)
    with pytest.raises(ValueError, match="set_validation"):
        gan._adapt(tf.distribute.get_replica_context(), tf.constant(1, tf.int64), tf.fill((4, 1), 1.0))
    size = VALIDATION.image_size
    with pytest.raises(ValueError, match="as many"):
        gan.set_validation(np.zeros((3, size, size), np.float32), np.zeros((2, size, size), np.float32))
    with pytest.raises(ValueError, match="set_validation is for"):
        _gan(preset("smoke").replace(augment="adaptive")).set_validation(np.zeros((1, size, size), np.float32),
                                                                          np.zeros((1, size, size), np.float32))
    for bad, match in ((dict(augment="fixed"), "needs augment adaptive"), (dict(progressive=True), "progressive off"),
                       (dict(classes=("A", "B")), "unlabelled runs")):
        with pytest.raises(ValueError, match=match):
            VALIDATION.replace(**bad).validate()


def test_split_validation_is_drawn_from_the_seed_and_leaves_enough(few_real):
    images, _, _ = load_images_or_fail(few_real, VALIDATION, log=lambda m: None)
    cfg = VALIDATION.replace(ada_validation=2)
    trained, withheld, probe = split_validation(images, cfg, "memory")
    again = split_validation(images, cfg, "memory")
    assert withheld.files == again[1].files and np.array_equal(probe, again[2])  # a resumed run withholds the same
    assert len(withheld.files) == 2 and len(trained.files) == 6 == len(trained.images)
    assert set(withheld.files).isdisjoint(trained.files) and set(withheld.files) | set(trained.files) == set(images.files)
    for f, img in zip(withheld.files, withheld.images):
        np.testing.assert_array_equal(img, images.images[images.files.index(f)])
    assert len(probe) == 2 and all(any(np.array_equal(p, t) for t in trained.images) for p in probe)
    assert split_validation(images, cfg.replace(seed=1), "memory")[1].files != withheld.files or \
        split_validation(images, cfg.replace(seed=2), "memory")[1].files != withheld.files
    with pytest.raises(TrainingError, match="leave 5 to train on"):
        split_validation(images, cfg.replace(ada_validation=3), "memory")
    with pytest.raises(TrainingError, match="in memory"):
        split_validation(images, cfg, "stream")


def test_a_run_with_the_validation_signal_withholds_its_images(few_real, tmp_path):
    cfg = VALIDATION.replace(ada_validation=2, ada_interval=1, ada_start=0.5, epochs=2, steps_per_epoch=3)
    logs = []
    run = train(cfg, few_real, out_root=tmp_path, log=logs.append)
    named = next(m for m in logs if m.startswith("ADA's validation signal"))
    withheld = named.split(": ", 2)[2].split(", ")
    assert len(withheld) == 2 and all((few_real / f).exists() for f in withheld)
    assert any("| 6 images from" in m for m in logs)  # D trains on the other 6
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"ada_probe_real", "ada_withheld_real", "augment_p"} <= r.keys() for r in rows)
    assert rows[-1]["augment_p"] != 0.5  # the controller moved p (6 adjustments of 1/10)
    with pytest.raises(TrainingError, match="in memory"):
        train(cfg, few_real, out_root=tmp_path / "stream", log=lambda m: None, input_mode="stream")


def test_validation_hashes_only_when_set():
    """The new fields leave the hash of every run started before them unchanged."""
    ada = preset("long").replace(augment="adaptive")
    assert ada.replace(ada_validation=12, ada_gap=0.2, ada_signal="train").hash() == ada.hash()
    assert ada.replace(ada_signal="validation").hash() != ada.hash()


# --- EMA ------------------------------------------------------------------------------------


def test_ema_weights_follow_the_stated_rule():
    cfg = preset("smoke").replace(ema_halflife=4.0, ema_rampup=0.5)
    gan = _gan(cfg)
    ema0 = [v.numpy().copy() for v in gan.ema_weights]
    for a, b in zip(ema0, gan.generator.weights):
        np.testing.assert_array_equal(a, b.numpy())  # starts as G's initial weights
    for step in range(3):
        before = [v.numpy().astype(np.float64) for v in gan.ema_weights]
        gan.train_step(_step_input(cfg, step))
        halflife = min(4.0, 0.5 * (step + 1))  # the ramp-up: 0.5, 1.0, 1.5 steps
        beta = 0.5 ** (1.0 / halflife)
        for e, prev, w in zip(gan.ema_weights, before, gan.generator.weights):
            want = w.numpy() + beta * (prev - w.numpy())
            np.testing.assert_allclose(e.numpy(), want, rtol=1e-5, atol=1e-7)
    moved = [not np.array_equal(e.numpy(), w.numpy()) for e, w in zip(gan.ema_weights, gan.generator.weights)]
    assert all(moved)  # an average, not a copy
    sampler = gan.sampler()
    assert sampler is gan.ema_generator
    for a, b in zip(sampler.weights, gan.ema_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_without_ema_the_sampler_is_g():
    gan = _gan(preset("smoke"))
    assert gan.sampler() is gan.generator and gan.recipe_state() == {}


# --- presets ----------------------------------------------------------------------------------


def test_paper_preset_is_the_studys_recipe():
    paper = PRESETS["paper"]
    assert paper == Config(preset="paper")
    assert (paper.augment, paper.r1_gamma, paper.label_smoothing, paper.ema_halflife, paper.d_mbstd, paper.lecam) == \
        ("off", 0.0, 0.0, 0.0, False, 0.0)
    assert paper.progressive and paper.lr_schedule == "decay" and paper.g_lr == paper.d_lr == 2e-4


def test_recipe_presets_are_the_recipe_on_the_cheaper_step():
    """quick and long differ from the study only in the recipe's levers (adaptive augmentation, G's
    refinement convolution) and the cheaper step's networks, and from each other only in length: every field is checked,
    G's and D's alike."""
    from cxr_training.config import CHOSEN, LIGHT, RECIPE

    assert CHOSEN == {"augment": "adaptive", "g_refine": 32} and RECIPE["augment"] == "fixed"
    assert (PRESETS["quick"].ada_signal, PRESETS["quick"].ada_start) == ("train", 0.0)  # ADA's r_t, from p = 0
    length = {"preset", "epochs", "steps_per_epoch", "keep_checkpoints"}
    for name in ("quick", "long"):
        cfg = PRESETS[name]
        cfg.validate()
        expected = PRESETS["paper"].replace(**RECIPE, **LIGHT).replace(**CHOSEN)
        for field in Config.__dataclass_fields__:
            if field not in length:
                assert getattr(cfg, field) == getattr(expected, field), (name, field)
    assert (PRESETS["quick"].total_steps, PRESETS["long"].total_steps) == (1000, 6000)
    assert (LIGHT["g_channels"], LIGHT["d_channels"], LIGHT["g_upsample"]) == ((128, 64, 32), (32, 64, 128, 256),
                                                                             "resize")


def test_the_presets_of_before_ada_train_again_with_augment_off():
    """Runs of `quick` and `long` recorded before the presets took ADA (2026-12-07) keep their config
    hash: --augment off (and --epochs 30 for `long`) trains them again. The hashes are those the
    presets of 1b74cd9 computed."""
    assert preset("quick").replace(augment="off").hash() == "6beab5f1946740ea"
    assert preset("long").replace(augment="off", epochs=30).hash() == "8b3e157f656c3563"
    assert preset("quick").hash() != "6beab5f1946740ea"


def test_recipe_fields_are_validated():
    for bad in ({"augment": "sometimes"}, {"augment_p": 1.5}, {"augment_policy": ("rotate",)}, {"r1_gamma": -1.0},
                {"label_smoothing": 0.5}, {"ema_halflife": -1.0}, {"quality_images": 3},
                {"snapshot_steps": (4,)}, {"ada_interval": 0}, {"lecam": -0.1}, {"lecam_decay": 1.0},
                {"lecam_decay": 0.0}):
        with pytest.raises(ValueError):
            preset("smoke").replace(**bad).validate()



# --- one generator pass per step ------------------------------------------------------------


@pytest.mark.parametrize("augment_mode", ["off", "fixed"])
def test_shared_fake_is_one_generator_pass_with_g_trained_through_the_updated_d(augment_mode, monkeypatch):
    """shared_fake: G runs forward once per step; D steps on (real, G(z)); G then steps on
    -log D'(G(z)) for the same z through D' = D after its update. Checked against the same
    computation written out by hand on a twin model."""
    from cxr_training.pipeline import step_latents

    cfg = preset("smoke").replace(shared_fake=True, augment=augment_mode, augment_p=0.5)
    gan, twin = _gan(cfg), _gan(cfg)
    twin.generator.set_weights(gan.generator.get_weights())
    twin.discriminator.set_weights(gan.discriminator.get_weights())
    step, real = _step_input(cfg)

    calls = []
    original = type(gan.generator).__call__
    monkeypatch.setattr(type(gan.generator), "__call__",
                        lambda self, *a, **k: (calls.append(self.name), original(self, *a, **k))[1])
    gan.train_step((step, real))
    assert calls.count("generator") == 1
    monkeypatch.undo()

    z = step_latents(cfg.seed, step, 1, cfg.batch_size, cfg.latent_dim)
    with tf.GradientTape() as tape:
        d_loss, r1, _, _ = twin.d_phase_loss(step, real, twin.generator(z, training=True), 0, cfg.batch_size)
        d_total = d_loss + r1
    d_vars = twin.discriminator.trainable_variables
    twin.d_optimizer.apply_gradients(zip(tape.gradient(d_total, d_vars), d_vars))
    with tf.GradientTape() as tape:
        fake = twin._augmented(twin.generator(z, training=True), step, augment.SLOT_G_FAKE, 0)
        g_loss = twin.bce(tf.ones((cfg.batch_size, 1)), twin.d_logit(fake, training=True))
    g_vars = twin.generator.trainable_variables
    twin.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
    for a, b in zip(gan.discriminator.get_weights() + gan.generator.get_weights(),
                    twin.discriminator.get_weights() + twin.generator.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_step_cost_bench_times_the_presets_step_and_each_ablation_lever_alone():
    """bench/step_cost.py's variants are what docs/benchmarks.md says: "today" is quick's step (its
    own assert, run by variants()), and each ablation variant changes exactly its one lever."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "step_cost.py"
    spec = importlib.util.spec_from_file_location("step_cost_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    variants = bench.variants()
    today = variants["today (quick, long)"]
    levers = {"today + R1": {"r1_gamma"}, "today + minibatch stddev": {"d_mbstd"},
              "today + the study's G": {"g_channels", "g_upsample"}, "today in bfloat16": {"precision"},
              "today in float32": {"precision"}, "today + pixel noise": {"g_noise"},
              "today + D high-pass head 32": {"d_highpass"}, "today + D patch head 32": {"d_patch"},
              "today without G's refinement conv (the presets before 2026-12-06)": {"g_refine"}, "today + G supersampling 16": {"g_supersample"},
              "today + spectrum loss": {"g_spectral"}, "today + fine-detail term": {"g_detail"},
              "today + D spectrum head 32": {"d_spectrum"},
              "today + D spectrum head 32 on 32x32 tiles": {"d_spectrum", "d_spectrum_tile"},
              "today with bilinear resize-convolutions": {"g_upsample"},
              "today with bilinear resize-convolutions but the last": {"g_upsample", "g_upsample_last"},
              "today without augmentation (the presets before 2026-12-07)": {"augment"},
              "today with ADA on withheld images": {"ada_signal"},
              "today, labelled (2 classes, projection D)": {"classes"},
              "today, labelled, class channels in D": {"classes", "d_condition"}}
    for name, lever in levers.items():
        changed = {k for k in set(variants[name]) | set(today) if variants[name].get(k) != today.get(k)}
        assert changed == lever, name
    assert today["augment"] == preset("quick").augment == preset("long").augment == "adaptive"


def test_step_cost_refuses_a_variant_name_it_does_not_know():
    """Variants are renamed when the presets change (today's step took the refinement layer): an old
    name on --only must stop with the list, not time nothing."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "step_cost.py"
    proc = subprocess.run([sys.executable, str(script), "--only", "today (quick, long);today + G refinement conv 32"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "unknown variant(s) ['today + G refinement conv 32']" in proc.stderr and "today (quick, long)" in proc.stderr
