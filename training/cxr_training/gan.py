"""The adversarial training step, as a `keras.Model` subclass.

One step (Goodfellow et al. 2014, with the non-saturating generator loss):
1. D sees a batch of real images (label 1) and as many generated ones (label 0) and
   takes one Adam step on the binary cross-entropy;
2. G takes one Adam step on -log D(G(z)) (BCE against label 1), only G's weights updated.

Where the batch comes from: the real images (at every progressive-resizing resolution)
sit in memory as one constant; the batch indices and both latent batches are drawn with
stateless random ops seeded by (seed, global step). The global step is D's optimizer
iteration count, which checkpoints restore, so a resumed run draws exactly the batches
an uninterrupted one would, and no input pipeline can starve the step.
"""

from __future__ import annotations

import numpy as np

from cxr_training.config import Config
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


@keras.saving.register_keras_serializable(package="cxr")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The adaptive learning rate: constant, then linear decay to a fraction.

    The signal is training progress (the optimizer's step): the rate stays at `initial`
    until `start_fraction` of `total_steps`, then falls linearly to
    `initial * final_fraction` at the last step. Once D wins (the study's D reaches 100 %
    accuracy), smaller steps for both players damp the oscillation instead of letting D
    run away.
    """

    def __init__(self, initial, total_steps, start_fraction=0.5, final_fraction=0.1):
        self.initial = float(initial)
        self.total_steps = int(total_steps)
        self.start_fraction = float(start_fraction)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        start = self.start_fraction * self.total_steps
        span = max(self.total_steps - start, 1.0)
        progress = keras.ops.clip((step - start) / span, 0.0, 1.0)
        return self.initial * (1.0 - (1.0 - self.final_fraction) * progress)

    def get_config(self):
        return {
            "initial": self.initial,
            "total_steps": self.total_steps,
            "start_fraction": self.start_fraction,
            "final_fraction": self.final_fraction,
        }


def learning_rate(cfg: Config, initial: float):
    if cfg.lr_schedule == "constant":
        return initial
    return LinearDecay(initial, cfg.total_steps, cfg.lr_decay_start, cfg.lr_decay_final)


def make_optimizers(cfg: Config):
    """(d_optimizer, g_optimizer): Adam as DCGAN, with the configured rate schedule."""
    d_opt = keras.optimizers.Adam(learning_rate(cfg, cfg.d_lr), beta_1=cfg.beta_1, beta_2=cfg.beta_2, name="d_adam")
    g_opt = keras.optimizers.Adam(learning_rate(cfg, cfg.g_lr), beta_1=cfg.beta_1, beta_2=cfg.beta_2, name="g_adam")
    return d_opt, g_opt


def resolution_boundaries(cfg: Config) -> list[int]:
    """First global step of each progressive-resizing stage (one stage if disabled)."""
    if not cfg.progressive:
        return [0]
    return [int(round(frac * cfg.total_steps)) for frac, _ in cfg.progressive_schedule]


def stage_factor(cfg: Config, step: int) -> int:
    """Downscale factor of the real images at a global step (1 = full resolution)."""
    if not cfg.progressive:
        return 1
    bounds = resolution_boundaries(cfg)
    stage = max(i for i, b in enumerate(bounds) if step >= b)
    return cfg.progressive_schedule[stage][1]


class GAN(keras.Model):
    """Owns G, D, their optimizers and the alternating train_step."""

    def __init__(self, generator, discriminator, real_stages: np.ndarray, cfg: Config, **kwargs):
        """`real_stages`: float32 (stages, N, H, W, 1), one copy of the real set per
        progressive-resizing stage, full resolution last."""
        super().__init__(name="gan", **kwargs)
        n = real_stages.shape[1]
        if cfg.batch_size > n:
            raise ValueError(f"batch size {cfg.batch_size} is larger than the {n} usable images")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = cfg.latent_dim
        self.batch_size = cfg.batch_size
        self.seed = cfg.seed
        self._real_stages = tf.constant(real_stages, dtype=tf.float32)
        self._bounds = tf.constant(resolution_boundaries(cfg), dtype=tf.int64)
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.bce = keras.losses.BinaryCrossentropy()

    @property
    def metrics(self):
        return [self.g_loss_tracker, self.d_loss_tracker]

    def build_optimizers(self):
        """Create the optimizers' slot variables now (needed before restoring them)."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    def draw_batch(self, step):
        """Real batch and two latent batches for a global step, from (seed, step) only."""
        step = tf.cast(step, tf.int64)
        seed = tf.constant(self.seed, tf.int64)

        def key(stream):
            return tf.stack([seed, step * 3 + stream])

        n = tf.shape(self._real_stages)[1]
        # batch_size distinct images, uniformly chosen: top-k of i.i.d. uniform keys
        idx = tf.math.top_k(tf.random.stateless_uniform([n], seed=key(0)), k=self.batch_size).indices
        stage = tf.reduce_sum(tf.cast(step >= self._bounds, tf.int32)) - 1
        real = tf.gather(self._real_stages[stage], idx)
        z_d = tf.random.stateless_normal([self.batch_size, self.latent_dim], seed=key(1))
        z_g = tf.random.stateless_normal([self.batch_size, self.latent_dim], seed=key(2))
        return real, z_d, z_g

    def train_step(self, data):
        del data  # batches are drawn from the step counter, see draw_batch
        real, z_d, z_g = self.draw_batch(self.d_optimizer.iterations)
        b = self.batch_size

        with tf.GradientTape() as tape:
            fake = self.generator(z_d, training=True)
            p = self.discriminator(tf.concat([real, fake], axis=0), training=True)
            labels = tf.concat([tf.ones((b, 1)), tf.zeros((b, 1))], axis=0)
            d_loss = self.bce(labels, p)
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))

        with tf.GradientTape() as tape:
            p_fake = self.discriminator(self.generator(z_g, training=True), training=True)
            g_loss = self.bce(tf.ones((b, 1)), p_fake)
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"g_loss": self.g_loss_tracker.result(), "d_loss": self.d_loss_tracker.result()}
