"""One adversarial step, the batch stream, the schedules, and the metric wiring."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_runtime import metrics
from cxr_runtime.images import load_folder
from cxr_training import pipeline
from cxr_training.config import preset
from cxr_training.data import downscaled
from cxr_training.gan import GAN, LinearDecay, make_optimizers
from cxr_training.models import build_discriminator, build_generator
from cxr_training.pipeline import resolution_boundaries, stage_factor
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


def _reals(cfg, n=8):
    return np.random.default_rng(0).uniform(-1, 1, (n, cfg.image_size, cfg.image_size)).astype(np.float32)


def _gan(cfg):
    keras.utils.set_random_seed(cfg.seed)
    gan = GAN(build_generator(cfg), build_discriminator(cfg), cfg)
    gan.compile(*make_optimizers(cfg))
    return gan


def _elements(cfg, start=0, end=None, source=None, **kw):
    source = source or pipeline.MemorySource(_reals(cfg), cfg)
    ds = pipeline.dataset(source, cfg, start, cfg.total_steps if end is None else end, **kw)
    return [(int(s), r.numpy()) for s, r in ds]


def _weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def test_one_step_finite_and_updates_both():
    cfg = preset("smoke")
    gan = _gan(cfg)
    g0, d0 = _weights(gan.generator), _weights(gan.discriminator)
    step, real = _elements(cfg, 0, 1)[0]
    logs = gan.train_step((tf.constant(step, tf.int64), tf.constant(real)))
    assert np.isfinite(float(logs["g_loss"])) and np.isfinite(float(logs["d_loss"]))
    assert all(not np.array_equal(a, b) for a, b in zip(g0, _weights(gan.generator)))
    assert all(not np.array_equal(a, b) for a, b in zip(d0, _weights(gan.discriminator)))
    assert int(gan.d_optimizer.iterations.numpy()) == int(gan.g_optimizer.iterations.numpy()) == gan.step == 1


def test_step_refuses_an_element_of_another_step():
    """The pipeline's step must be the model's global step: a skipped or repeated element fails loudly."""
    cfg = preset("smoke")
    gan = _gan(cfg)
    step, real = _elements(cfg, 1, 2)[0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of step"):
        gan.train_step((tf.constant(step, tf.int64), tf.constant(real)))


def test_generator_step_leaves_discriminator_alone():
    """Both losses start near log 2 for an untrained pair; G's update must not touch D."""
    cfg = preset("smoke")
    gan = _gan(cfg)
    step, real = _elements(cfg, 0, 1)[0]
    gan.train_step((tf.constant(step, tf.int64), tf.constant(real)))
    d_after_step = _weights(gan.discriminator)
    # replay only the G half by hand, as train_step does
    z = tf.random.normal((cfg.batch_size, cfg.latent_dim))
    with tf.GradientTape() as tape:
        loss = gan.bce(tf.ones((cfg.batch_size, 1)), gan.d_logit(gan.generator(z, training=True), training=True))
    grads = tape.gradient(loss, gan.generator.trainable_variables)
    gan.g_optimizer.apply_gradients(zip(grads, gan.generator.trainable_variables))
    for a, b in zip(d_after_step, _weights(gan.discriminator)):
        np.testing.assert_array_equal(a, b)


def test_batches_depend_only_on_seed_and_step():
    cfg = preset("smoke")
    first, again = _elements(cfg, 0, 8), _elements(cfg, 5, 8)
    assert [s for s, _ in first] == list(range(8)) and [s for s, _ in again] == [5, 6, 7]
    for (_, a), (_, b) in zip(first[5:], again):
        np.testing.assert_array_equal(a, b)  # a pipeline started at step 5 gives step 5's batch
    assert not np.array_equal(first[5][1], first[6][1])
    zd1, zd2, zd3 = (pipeline.step_latents(cfg.seed, s, 1, 4, 16).numpy() for s in (5, 5, 6))
    np.testing.assert_array_equal(zd1, zd2)
    assert not np.array_equal(zd1, zd3) and not np.array_equal(zd1, pipeline.step_latents(cfg.seed, 5, 2, 4, 16).numpy())
    # a batch holds distinct images
    flat = first[0][1].reshape(cfg.batch_size, -1)
    assert len({row.tobytes() for row in flat}) == cfg.batch_size


def test_replicas_split_the_global_batch():
    """Two replicas' elements, concatenated, are the single-device batch of the same step."""
    cfg = preset("smoke")
    single = _elements(cfg, 3, 6)
    split = _elements(cfg, 3, 6, local_replicas=2, first_replica=0, replicas=2)
    assert [s for s, _ in split] == [3, 3, 4, 4, 5, 5]
    for i, (_, whole) in enumerate(single):
        np.testing.assert_array_equal(np.concatenate([split[2 * i][1], split[2 * i + 1][1]]), whole)
    # a second worker's pipeline feeds replica 1 only
    other = _elements(cfg, 3, 6, local_replicas=1, first_replica=1, replicas=2)
    for i, (_, rows) in enumerate(other):
        np.testing.assert_array_equal(rows, split[2 * i + 1][1])
    with pytest.raises(ValueError, match="divisible"):
        _elements(cfg, 0, 1, local_replicas=3, replicas=3)


def test_stream_source_gives_the_memory_batches(tmp_path):
    cfg = preset("smoke").replace(epochs=10, steps_per_epoch=10)
    reals = _reals(cfg, 12)
    store = tmp_path / "set.f32"
    reals.tofile(store)
    mapped = np.memmap(store, dtype=np.float32, mode="r", shape=reals.shape)
    memory = _elements(cfg, 0, 100, source=pipeline.MemorySource(reals, cfg))
    stream = _elements(cfg, 0, 100, source=pipeline.DiskSource(mapped, cfg))
    for (s1, a), (s2, b) in zip(memory, stream, strict=True):
        assert s1 == s2
        np.testing.assert_array_equal(a, b)


def test_input_mode_choice():
    cfg = preset("paper")
    assert pipeline.choose_mode("auto", 138, cfg) == "memory"
    assert pipeline.choose_mode("auto", 100_000, cfg) == "stream"
    assert pipeline.choose_mode("stream", 138, cfg) == "stream"
    with pytest.raises(ValueError):
        pipeline.choose_mode("disk", 1, cfg)


def test_progressive_stages():
    cfg = preset("smoke").replace(epochs=10, steps_per_epoch=10)
    assert resolution_boundaries(cfg) == [0, 15, 30]
    assert [stage_factor(cfg, s) for s in (0, 14, 15, 29, 30, 99)] == [4, 4, 2, 2, 1, 1]
    assert stage_factor(cfg.replace(progressive=False), 0) == 1
    img = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32)).astype(np.float32)
    low = downscaled(img, 4)
    assert low.shape == img.shape and low.std() < img.std()
    np.testing.assert_array_equal(downscaled(img, 1), img)
    elements = _elements(cfg)
    assert float(np.std(elements[0][1])) < float(np.std(elements[50][1]))


def test_linear_decay():
    s = LinearDecay(2e-4, total_steps=100, start_fraction=0.5, final_fraction=0.1)
    vals = [float(s(step)) for step in (0, 50, 75, 100, 500)]
    assert vals == pytest.approx([2e-4, 2e-4, 1.1e-4, 2e-5, 2e-5])


def test_numpy_ssim_equals_tf_image_ssim(train_normal):
    real = load_folder(train_normal, size=128).images[:24]
    a, b = real[:12], real[12:]
    ours = metrics.ssim(a, b)
    theirs = tf.image.ssim(tf.constant(a[..., None]), tf.constant(b[..., None]), max_val=2.0).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    # and it is not trivially equal: different pairs give different values
    assert np.ptp(ours) > 0.05
