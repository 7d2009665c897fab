"""Epoch-end evaluation, computed outside the training step.

- `Evaluator`: the study's metric suite (SSIM, MSE, D's accuracies) on G's raw weights, the
  ones D is trained against. Generated images come from fixed evaluation latents; D is run
  with dropout off (training=False). The arithmetic is cxr_runtime.metrics.
- `QualityMonitor`: recall, coverage, KID and diversity of the sampling generator (the EMA
  copy when the recipe keeps one) against a held-out folder of real images, and how many of
  those images the memorisation audit would flag against the training set. The arithmetic
  is cxr_runtime.quality and cxr_runtime.audit, what `cxr-runtime evaluate --quality` and
  `cxr-runtime audit` use.
"""

from __future__ import annotations

import numpy as np

from cxr_runtime import metrics
from cxr_training.tfenv import import_tf

tf, keras = import_tf()

# The fixed latents of the epoch-end work are keyed by (seed, purpose), apart from training's
# streams and from each other for every seed. Runs created before 2026-12-03 used seed + 7919
# and seed + 7920 (so seed s+1's evaluation latents were seed s's monitor latents); their
# config.json has no "latents" entry and they keep that rule when resumed.
LATENTS_KEYED = "seed-purpose"
LATENTS_LEGACY = "seed-offset"
PURPOSE_EVAL, PURPOSE_QUALITY = 1, 2
_LEGACY_OFFSETS = {PURPOSE_EVAL: 7919, PURPOSE_QUALITY: 7920}
EVAL_BATCH = 64
QUALITY_DIVERSITY_IMAGES = 100  # diversity at epoch end: mean SSIM over the 4,950 pairs of 100 images


def fixed_latents(n: int, latent_dim: int, seed: int, purpose: int, rule: str = LATENTS_KEYED) -> np.ndarray:
    """n fixed latents of the epoch-end work for (seed, purpose)."""
    key = [seed, purpose] if rule == LATENTS_KEYED else seed + _LEGACY_OFFSETS[purpose]
    return np.random.default_rng(key).standard_normal((n, latent_dim)).astype(np.float32)


class Evaluator:
    """Holds the fixed evaluation inputs and computes the eight per-epoch metrics."""

    def __init__(self, generator, discriminator, real: np.ndarray, latent_dim: int, seed: int, max_images: int,
                 grid_images: int = 16, latents: str = LATENTS_KEYED):
        n = min(len(real), max_images)
        # the first n images in file order: a fixed, documented subset when there are more
        self.real = np.asarray(real[:n], np.float32)
        # one fixed latent set: the first n score the metrics, the first grid_images draw the grid
        self.z = fixed_latents(max(n, grid_images), latent_dim, seed, PURPOSE_EVAL, latents)
        self.n = n
        self.generator = generator
        self.discriminator = discriminator
        self._gens: dict[int, object] = {}
        self._disc = tf.function(lambda x: discriminator(x, training=False))

    def generate(self, z: np.ndarray, model=None) -> np.ndarray:
        """(N, S, S) images of `model` (default: G) for latents z, in batches of EVAL_BATCH."""
        model = self.generator if model is None else model
        fn = self._gens.get(id(model))
        if fn is None:
            fn = self._gens[id(model)] = tf.function(lambda z: model(z, training=False))
        out = [fn(tf.constant(z[i : i + EVAL_BATCH])).numpy() for i in range(0, len(z), EVAL_BATCH)]
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



class QualityMonitor:
    """The distribution metrics of generated images against held-out real ones, per epoch.

    `n` images from fixed latents (seed, PURPOSE_QUALITY), scored against the held-out
    set (features standardised on it, as `evaluate --quality --real HELDOUT`), and each
    checked by the memorisation audit against the training images. With n smaller than the
    500 images docs/results.md scores, recall and coverage are not comparable with those
    numbers one to one (fewer generated images cover fewer real neighbourhoods): compare
    epochs of a run, or runs with the same n. The audit needs square images of at least
    64x64 (audit.MIN_SIZE); smaller configurations (tests) log the distribution metrics only.
    """

    def __init__(self, heldout: np.ndarray, train: np.ndarray, n: int, latent_dim: int, seed: int,
                 latents: str = LATENTS_KEYED):
        from cxr_runtime import quality
        from cxr_runtime.onnx_metrics import OnnxScorer

        self.scorer = OnnxScorer(device="cpu")
        self.reference = quality.RealSet(np.asarray(heldout, np.float32), self.scorer, QUALITY_DIVERSITY_IMAGES)
        self.train = np.asarray(train, np.float32)
        self._bank = None  # the audit's candidate bank of the training images, built on first use
        self.z = fixed_latents(n, latent_dim, seed, PURPOSE_QUALITY, latents)

    def baseline(self) -> dict[str, float]:
        """The training images scored the same way: what a generator that reproduced its
        training set would reach (and, being training images, all flagged by the audit)."""
        return self._score(self.train)

    def run(self, generate) -> dict[str, float]:
        """Scores of `generate(latents) -> (N, S, S) images in [-1, 1]`."""
        return self._score(generate(self.z))

    def _score(self, images: np.ndarray) -> dict[str, float]:
        from cxr_runtime import audit, quality

        q = self.reference.score(images, self.scorer)
        scores = {m.column(k): q[k] for m in quality.QUALITY_METRICS for k in m.keys() if k in q}
        if images.shape[-1] >= audit.MIN_SIZE and images.shape[-1] == images.shape[-2]:
            if self._bank is None:
                self._bank = audit.training_bank(self.train)
            nn = audit.nearest(images, self.train, bank=self._bank)
            scores["audit_flagged"] = int(audit.flagged(nn).sum())
            scores["audit_nn_max"] = float(nn["ncc"].max())
            scores["audit_nn_detail_max"] = float(nn["detail"].max())
        return scores
