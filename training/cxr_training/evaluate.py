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


def class_cycle(n: int, classes: int) -> np.ndarray | None:
    """The classes of n fixed latents of a labelled run: 0, 1, ..., classes - 1, 0, 1, ..."""
    return np.arange(n) % classes if classes else None


def with_classes(z: np.ndarray, classes: int) -> np.ndarray:
    """Latents joined to their one-hot class (class_cycle) for a labelled run's G; z unchanged otherwise."""
    if not classes:
        return z
    return np.concatenate([z, np.eye(classes, dtype=np.float32)[class_cycle(len(z), classes)]], axis=1)


class Evaluator:
    """Holds the fixed evaluation inputs and computes the eight per-epoch metrics."""

    def __init__(self, generator, discriminator, real: np.ndarray, latent_dim: int, seed: int, max_images: int,
                 grid_images: int = 16, latents: str = LATENTS_KEYED, classes: int = 0, labels=None):
        n = min(len(real), max_images)
        # the first n images in file order: a fixed, documented subset when there are more
        self.real = np.asarray(real[:n], np.float32)
        self.real_labels = None if labels is None else np.asarray(labels[:n])
        # one fixed latent set: the first n score the metrics, the first grid_images draw the grid
        # (a labelled run: the classes in turn)
        self.z = with_classes(fixed_latents(max(n, grid_images), latent_dim, seed, PURPOSE_EVAL, latents), classes)
        self.n = n
        self.generator = generator
        self.discriminator = discriminator
        self._gens: dict[int, object] = {}
        self.classes = classes
        self._disc = tf.function(lambda x: discriminator(x, training=False))
        self.heldout = self.heldout_labels = None

    def set_heldout(self, images: np.ndarray, labels=None) -> None:
        """Real images of other patients (the first as many as the training images scored): D's verdict on them is logged
        beside its verdict on the training images, which tells a D that memorises the training set
        from one that has learnt what real X-rays look like (heldout_acc, d_logit_*)."""
        n = min(len(images), len(self.real))
        self.heldout = np.asarray(images[:n], np.float32)
        self.heldout_labels = None if labels is None else np.asarray(labels[:n])

    def generate(self, z: np.ndarray, model=None) -> np.ndarray:
        """(N, S, S) images of `model` (default: G) for latents z, in batches of EVAL_BATCH."""
        model = self.generator if model is None else model
        fn = self._gens.get(id(model))
        if fn is None:
            fn = self._gens[id(model)] = tf.function(lambda z: model(z, training=False))
        out = [fn(tf.constant(z[i : i + EVAL_BATCH])).numpy() for i in range(0, len(z), EVAL_BATCH)]
        return np.concatenate(out)[..., 0]

    def discriminate(self, x: np.ndarray, labels=None) -> np.ndarray:
        x = x[..., None]
        if self.classes:  # a labelled D: the image, then its one-hot class as constant channels
            hot = np.eye(self.classes, dtype=np.float32)[labels][:, None, None, :]
            x = np.concatenate([x, np.broadcast_to(hot, (*x.shape[:3], self.classes))], axis=3)
        out = [self._disc(tf.constant(x[i : i + EVAL_BATCH])).numpy() for i in range(0, len(x), EVAL_BATCH)]
        return np.concatenate(out).ravel()

    def reference(self) -> dict[str, float]:
        ref_ssim, ref_mse = metrics.real_reference(self.real)
        return {"ref_ssim": ref_ssim, "ref_mse": ref_mse}

    def score(self) -> tuple[dict[str, float], np.ndarray]:
        """Return (metrics, images generated from all fixed latents) for the current weights."""
        fake_all = self.generate(self.z)
        fake = fake_all[: self.n]
        p_real = self.discriminate(self.real, self.real_labels)
        p_fake = self.discriminate(fake, class_cycle(len(fake), self.classes))
        scores = metrics.discriminator_scores(p_real, p_fake)
        if self.heldout is not None:
            scores.update(heldout_scores(p_real, self.discriminate(self.heldout, self.heldout_labels), p_fake))
        ssim, mse = metrics.paired_ssim_mse(fake, self.real)
        return {**scores, "ssim": ssim, "mse": mse}, fake_all


def heldout_scores(p_real: np.ndarray, p_heldout: np.ndarray, p_fake: np.ndarray) -> dict[str, float]:
    """D's verdicts (probabilities that an image is real) on training, held-out and generated
    images: heldout_acc, the share of held-out real images D calls real (real_acc's twin on
    images D never trained on), and the mean logit of each set (the sigmoid's inverse, clipped to
    |logit| <= 16: accuracies saturate at 1.00 while the logits keep moving). A D that memorises
    its training images calls them real and the held-out ones less so: d_logit_real climbs away
    from d_logit_heldout (the overfitting measure of Karras et al. 2020, Fig. 1)."""
    def logit(p):
        p = np.clip(np.asarray(p, np.float64), 1.0 / (1.0 + np.exp(16.0)), 1.0 / (1.0 + np.exp(-16.0)))
        return float(np.mean(np.log(p) - np.log1p(-p)))

    return {"heldout_acc": float(np.mean(np.asarray(p_heldout) > 0.5)), "d_logit_real": logit(p_real),
            "d_logit_heldout": logit(p_heldout), "d_logit_fake": logit(p_fake)}



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
                 latents: str = LATENTS_KEYED, classes: tuple[str, ...] = (), heldout_labels=None,
                 train_labels=None):
        from cxr_runtime import quality
        from cxr_runtime.onnx_metrics import OnnxScorer

        self.scorer = OnnxScorer(device="cpu")
        heldout = np.asarray(heldout, np.float32)
        self.real_set = quality.RealSet(heldout, self.scorer, QUALITY_DIVERSITY_IMAGES)
        self.train = np.asarray(train, np.float32)
        self._banks: dict = {}  # the audit's candidate banks of the training images, built on first use
        self.classes = tuple(classes)
        self.z = with_classes(fixed_latents(n, latent_dim, seed, PURPOSE_QUALITY, latents), len(self.classes))
        self.labels = class_cycle(n, len(self.classes))
        self.heldout_labels = None if heldout_labels is None else np.asarray(heldout_labels)
        self.train_labels = None if train_labels is None else np.asarray(train_labels)
        # a labelled run: each class also against its own held-out images (and its own training
        # images for the audit)
        self.per_class = {c: quality.RealSet(heldout[self.heldout_labels == i], self.scorer, QUALITY_DIVERSITY_IMAGES)
                          for i, c in enumerate(self.classes)} if self.classes else {}

    def baseline(self) -> dict[str, float]:
        """The training images scored the same way: what a generator that reproduced its
        training set would reach (and, being training images, all flagged by the audit)."""
        return self._scores(self.train, self.train_labels)

    def score(self, generate) -> dict[str, float]:
        """Scores of `generate(latents) -> (N, S, S) images in [-1, 1]`."""
        return self._scores(generate(self.z), self.labels)

    def _audit(self, images: np.ndarray, train: np.ndarray, key) -> dict:
        from cxr_runtime import audit

        if self._banks.get(key) is None:
            self._banks[key] = audit.training_bank(train)
        nn = audit.nearest(images, train, bank=self._banks[key])
        return {"audit_flagged": int(audit.flagged(nn).sum()), "audit_nn_max": float(nn["ncc"].max()),
                "audit_nn_detail_max": float(nn["detail"].max())}

    def _scores(self, images: np.ndarray, labels=None) -> dict[str, float]:
        from cxr_runtime import audit, quality

        def table(values: dict, suffix: str = "") -> dict:
            return {m.column(k) + suffix: values[k] for m in quality.QUALITY_METRICS for k in m.keys() if k in values}

        scores = table(self.real_set.score(images, self.scorer))
        auditable = images.shape[-1] >= audit.MIN_SIZE and images.shape[-1] == images.shape[-2]
        if not self.classes:
            if auditable:
                scores.update(self._audit(images, self.train, None))
            return scores
        flagged = 0
        for i, c in enumerate(self.classes):  # columns q_<metric>@<CLASS>, audit against the class's own images
            mine = images[labels == i]
            scores.update(table(self.per_class[c].score(mine, self.scorer), f"@{c}"))
            if auditable:
                a = self._audit(mine, self.train[self.train_labels == i], c)
                scores.update({f"{k}@{c}": v for k, v in a.items()})
                flagged += a["audit_flagged"]
        if auditable:
            scores["audit_flagged"] = flagged
            scores["audit_nn_max"] = max(scores[f"audit_nn_max@{c}"] for c in self.classes)
            scores["audit_nn_detail_max"] = max(scores[f"audit_nn_detail_max@{c}"] for c in self.classes)
        return scores
