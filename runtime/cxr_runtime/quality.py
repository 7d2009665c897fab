"""Distribution and diversity metrics for synthetic X-rays (definitions: docs/metrics.md).

SSIM/MSE against random real images cannot tell a good generator from a collapsed one. These
compare *sets* of images in a feature space:

- features: a fixed bank of radiomics-style descriptors computed with scikit-image on a
  32x32 area average of the image (anatomy and coarse texture, not pixel noise), nothing to
  download or train: intensity statistics, the 8x8 intensity layout, grey-level
  co-occurrence texture (GLCM) at three distances, a local binary pattern histogram, and a
  histogram of oriented gradients on a 4x4 grid. Each dimension is standardised with
  the real set's mean and spread, so no group of features dominates by its units.
- precision, recall, density, coverage: Naeem et al. 2020, "Reliable Fidelity and Diversity
  Metrics for Generative Models", k-nearest-neighbour balls around real (and generated)
  feature vectors, k = 5.
- KID: Binkowski et al. 2018, "Demystifying MMD GANs": unbiased MMD^2 with the cubic
  polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets, with its
  standard error.
- diversity: mean SSIM between distinct generated images, beside the same among real
  images (a generator whose images resemble each other more than real X-rays do is
  collapsing).
"""

from __future__ import annotations

import numpy as np

from cxr_runtime.errors import TooFewImagesError

K_NEIGHBOURS = 5
KID_SUBSETS = 50
KID_SUBSET_SIZE = 100


FEATURE_SIZE = 32  # features see a 32x32 area average: anatomy and texture, not pixel noise


def _image_features(img01: np.ndarray) -> np.ndarray:
    import cv2
    from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern

    small = cv2.resize(img01.astype(np.float32), (FEATURE_SIZE, FEATURE_SIZE), interpolation=cv2.INTER_AREA)
    x = small.astype(np.float64)
    q = np.percentile(x, [5, 25, 50, 75, 95])
    mean, std = x.mean(), x.std() + 1e-12
    z = (x - mean) / std
    stats = [mean, std, (z**3).mean(), (z**4).mean(), *q]
    layout = cv2.resize(small, (8, 8), interpolation=cv2.INTER_AREA).ravel()
    levels = np.clip((x * 16).astype(np.uint8), 0, 15)
    glcm = graycomatrix(levels, distances=[1, 2, 4], angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                        levels=16, symmetric=True, normed=True)
    texture = [graycoprops(glcm, p).mean(axis=1) for p in ("contrast", "homogeneity", "energy", "correlation")]
    codes = local_binary_pattern((x * 255).astype(np.uint8), 8, 1, method="uniform")
    lbp = np.bincount(codes.astype(np.int64).ravel(), minlength=10)[:10] / codes.size
    grad = hog(small, orientations=6, pixels_per_cell=(8, 8), cells_per_block=(1, 1), feature_vector=True)
    return np.concatenate([stats, layout, *texture, lbp, grad]).astype(np.float64)


def features(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images in [-1, 1] -> (N, D) raw feature vectors."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    return np.stack([_image_features(np.clip((im + 1.0) / 2.0, 0.0, 1.0)) for im in images])


def standardise(real_f: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """z-score every set with the real set's per-dimension mean and standard deviation."""
    mu = real_f.mean(axis=0)
    sd = real_f.std(axis=0)
    sd[sd < 1e-12] = 1.0
    return [(f - mu) / sd for f in (real_f, *others)]


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = _pairwise(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def prdc(real_f: np.ndarray, fake_f: np.ndarray, k: int = K_NEIGHBOURS) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of standardised features."""
    if len(real_f) <= k or len(fake_f) <= k:
        raise TooFewImagesError(f"recall and coverage need more than {k} real and {k} generated images "
                                f"(got {len(real_f)} and {len(fake_f)})")
    real_r = _knn_radii(real_f, k)
    fake_r = _knn_radii(fake_f, k)
    d = _pairwise(real_f, fake_f)  # [real, fake]
    inside = d <= real_r[:, None]
    return {
        "precision": float(inside.any(axis=0).mean()),
        "recall": float((d <= fake_r[None, :]).any(axis=1).mean()),
        "density": float(inside.sum() / (k * len(fake_f))),
        "coverage": float((d.min(axis=1) <= real_r).mean()),
    }


def kid(real_f: np.ndarray, fake_f: np.ndarray, subsets: int = KID_SUBSETS, size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception-style distance on our features: mean and standard error of the unbiased
    MMD^2 with kernel (x.y/d + 1)^3 over random subsets of `size` (capped by the set sizes)."""
    m = min(size, len(real_f), len(fake_f))
    if m < 2:
        raise TooFewImagesError("KID needs at least two real and two generated images")
    d = real_f.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real_f[rng.choice(len(real_f), m, replace=False)]
        y = fake_f[rng.choice(len(fake_f), m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        off = ~np.eye(m, dtype=bool)
        values.append(kxx[off].mean() + kyy[off].mean() - 2.0 * kxy.mean())
    values = np.asarray(values)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(subsets)) if subsets > 1 else 0.0


def diversity(images: np.ndarray, scorer=None, max_images: int = 200, seed: int = 0) -> float:
    """Mean SSIM between distinct images of a set (lower = more varied)."""
    images = np.asarray(images)
    if len(images) < 2:
        raise TooFewImagesError("diversity needs at least two images")
    if len(images) > max_images:
        images = images[np.random.default_rng(seed).choice(len(images), max_images, replace=False)]
    if scorer is None:
        from cxr_runtime.onnx_metrics import OnnxScorer

        scorer = OnnxScorer(device="cpu")
    s, _ = scorer.cross(images, images)
    off = ~np.eye(len(images), dtype=bool)
    return float(s[off].mean())


# Reported: the metrics that rank the degradation ladder (tests/runtime/test_quality.py).
# Precision and density rank a collapsed set (one real image repeated) first, as fidelity
# measures must; they fail the ladder, so prdc() computes them but they are not reported.


class Reference:
    """The real side of the reported metrics, computed once and reused for any number of
    generated sets (training scores one per epoch): the real features' mean and spread, the
    standardised real features, and the real set's diversity."""

    def __init__(self, real: np.ndarray, scorer=None, diversity_images: int = 200):
        raw = features(real)
        self.mean = raw.mean(axis=0)
        self.spread = raw.std(axis=0)
        self.spread[self.spread < 1e-12] = 1.0
        self.real_f = (raw - self.mean) / self.spread
        self.count = len(real)
        self.diversity_images = diversity_images
        self.diversity = diversity(real, scorer, diversity_images)

    def score(self, fake: np.ndarray, scorer=None) -> dict[str, float]:
        """The reported metrics of `fake` against this real set (standardised as in standardise())."""
        fake_f = (features(fake) - self.mean) / self.spread
        kid_mean, kid_se = kid(self.real_f, fake_f)
        pr = prdc(self.real_f, fake_f)
        return {
            "recall": pr["recall"],
            "coverage": pr["coverage"],
            "kid": kid_mean,
            "kid_se": kid_se,
            "diversity_ssim": diversity(fake, scorer, self.diversity_images),
            "diversity_ssim_real": self.diversity,
        }


def quality_report(fake: np.ndarray, real: np.ndarray, scorer=None) -> dict[str, float]:
    """The reported distribution metrics of `fake` against `real`, plus both sets' diversity."""
    return Reference(real, scorer).score(fake, scorer)
