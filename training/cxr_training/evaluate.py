"""Epoch-end evaluation: the study's metric suite, computed outside the training step.

Generated images come from fixed evaluation latents; D is run with dropout off
(training=False). The arithmetic is cxr_runtime.metrics, shared with the runtime.
"""

from __future__ import annotations

import numpy as np

from cxr_runtime import metrics
from cxr_training.tfenv import import_tf

tf, keras = import_tf()

EVAL_SEED_OFFSET = 7919  # eval latents come from (seed + offset), apart from training's streams
EVAL_BATCH = 64


def eval_latents(n: int, latent_dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + EVAL_SEED_OFFSET)
    return rng.standard_normal((n, latent_dim)).astype(np.float32)


class Evaluator:
    """Holds the fixed evaluation inputs and computes the eight per-epoch metrics."""

    def __init__(self, generator, discriminator, real: np.ndarray, latent_dim: int, seed: int, max_images: int,
                 grid_images: int = 16):
        n = min(len(real), max_images)
        # the first n images in file order: a fixed, documented subset when there are more
        self.real = np.asarray(real[:n], np.float32)
        # one fixed latent set: the first n score the metrics, the first grid_images draw the grid
        self.z = eval_latents(max(n, grid_images), latent_dim, seed)
        self.n = n
        self.generator = generator
        self.discriminator = discriminator
        self._gen = tf.function(lambda z: generator(z, training=False))
        self._disc = tf.function(lambda x: discriminator(x, training=False))

    def generate(self, z: np.ndarray) -> np.ndarray:
        out = [self._gen(tf.constant(z[i : i + EVAL_BATCH])).numpy() for i in range(0, len(z), EVAL_BATCH)]
        return np.concatenate(out)[..., 0]

    def discriminate(self, x: np.ndarray) -> np.ndarray:
        x = x[..., None]
        out = [self._disc(tf.constant(x[i : i + EVAL_BATCH])).numpy() for i in range(0, len(x), EVAL_BATCH)]
        return np.concatenate(out).ravel()

    def reference(self) -> dict[str, float]:
        ref_ssim, ref_mse = metrics.real_reference(self.real)
        return {"ref_ssim": ref_ssim, "ref_mse": ref_mse}

    def run(self) -> tuple[dict[str, float], np.ndarray]:
        """Return (metrics, images generated from all fixed latents) for the current weights."""
        fake_all = self.generate(self.z)
        fake = fake_all[: self.n]
        scores = metrics.discriminator_scores(self.discriminate(self.real), self.discriminate(fake))
        ssim, mse = metrics.paired_ssim_mse(fake, self.real)
        return {**scores, "ssim": ssim, "mse": mse}, fake_all
