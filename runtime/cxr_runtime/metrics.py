"""The study's metrics as pure numpy functions (definitions: docs/metrics.md).

Images are float arrays in [-1, 1], shaped (H, W), (N, H, W) or (N, H, W, 1).

- `ssim`: Wang et al. 2004, "Image quality assessment: from error visibility to
  structural similarity", with the constants of `tf.image.ssim`: 11x11 Gaussian window,
  sigma 1.5, K1 0.01, K2 0.03, valid padding (no border), mean over the window positions.
  The data range is 2 because images span [-1, 1] (`tf.image.ssim(max_val=2.0)`).
- `mse`: mean squared difference per pair, on the [-1, 1] scale.
- `paired_ssim_mse`: the study's protocol, each generated image against one real image
  chosen by a fixed-seed permutation; `real_reference` applies it to real vs real.
- `discriminator_scores`: accuracy, precision and recall of a discriminator, "real" being
  the positive class and D(x) > 0.5 meaning "predicted real".
"""

from __future__ import annotations

import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 2.0  # images in [-1, 1]
PAIRING_SEED = 20180222  # the fixed seed of the generated-to-real pairing


def _as_batch(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 4:
        if x.shape[-1] != 1:
            raise ValueError(f"expected one channel, got shape {x.shape}")
        x = x[..., 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected (H, W), (N, H, W) or (N, H, W, 1), got shape {x.shape}")
    return x


def gaussian_kernel_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is tf.image.ssim's 2-D window."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation of (N, H, W) with outer(g, g), valid region only."""
    k = g.shape[0]
    x = np.lib.stride_tricks.sliding_window_view(x, k, axis=2) @ g
    x = np.lib.stride_tricks.sliding_window_view(x, k, axis=1) @ g
    return x


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float = DATA_RANGE,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> np.ndarray:
    """SSIM of each pair (a[i], b[i]); returns shape (N,) (a float for 2-D inputs)."""
    single = np.asarray(a).ndim == 2
    x, y = _as_batch(a), _as_batch(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    if x.shape[1] < window or x.shape[2] < window:
        raise ValueError(f"images must be at least {window}x{window}, got {x.shape[1:]}")
    g = gaussian_kernel_1d(window, sigma)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    mu_xy = mu_x * mu_y
    mu_sq = mu_x**2 + mu_y**2
    luminance = (2.0 * mu_xy + c1) / (mu_sq + c1)
    cov2 = 2.0 * (_filter_valid(x * y, g) - mu_xy)
    var_sum = _filter_valid(x * x + y * y, g) - mu_sq
    contrast_structure = (cov2 + c2) / (var_sum + c2)
    out = (luminance * contrast_structure).mean(axis=(1, 2))
    return float(out[0]) if single else out


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error of each pair; shape (N,) (a float for 2-D inputs)."""
    single = np.asarray(a).ndim == 2
    x, y = _as_batch(a), _as_batch(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    out = ((x - y) ** 2).mean(axis=(1, 2))
    return float(out[0]) if single else out


def pairing(n_fake: int, n_real: int, seed: int = PAIRING_SEED) -> np.ndarray:
    """Index of the real image paired with each generated image.

    A fixed-seed permutation of the real set, repeated (each repetition freshly permuted)
    when there are more generated than real images.
    """
    if n_real < 1:
        raise ValueError("need at least one real image")
    rng = np.random.default_rng(seed)
    reps = -(-n_fake // n_real)
    return np.concatenate([rng.permutation(n_real) for _ in range(reps)])[:n_fake]


def derangement(n: int, seed: int = PAIRING_SEED) -> np.ndarray:
    """A fixed-seed permutation with no fixed point (no image paired with itself)."""
    if n < 2:
        raise ValueError("a real-vs-real reference needs at least two images")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def paired_ssim_mse(fake: np.ndarray, real: np.ndarray, seed: int = PAIRING_SEED) -> tuple[float, float]:
    """The study's SSIM and MSE: mean over generated images, each against its paired real one."""
    fake, real = _as_batch(fake), _as_batch(real)
    idx = pairing(len(fake), len(real), seed)
    return float(ssim(fake, real[idx]).mean()), float(mse(fake, real[idx]).mean())


def real_reference(real: np.ndarray, seed: int = PAIRING_SEED) -> tuple[float, float]:
    """SSIM and MSE of real images against other real images (a derangement), same protocol.

    This is the scale for `paired_ssim_mse`: a generator as varied as the real data
    scores about this; a generator that outputs an average image scores "better".
    """
    real = _as_batch(real)
    idx = derangement(len(real), seed)
    return float(ssim(real, real[idx]).mean()), float(mse(real, real[idx]).mean())


def discriminator_scores(p_real: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision and recall of a discriminator; "real" is the positive class. Named
    d_precision and d_recall: the discriminator's, not the generated set's precision and recall
    (cxr_runtime.quality).

    real_acc    = share of real images with D(x) > threshold   (= d_recall)
    fake_acc    = share of generated images with D(G(z)) <= threshold
    d_precision = TP / (TP + FP): of the images D calls real, the share that are real;
                  0.0 when D calls nothing real (the 0/0 case).
    d_recall    = TP / (TP + FN)
    """
    p_real = np.asarray(p_real, np.float64).ravel()
    p_fake = np.asarray(p_fake, np.float64).ravel()
    if p_real.size == 0 or p_fake.size == 0:
        raise ValueError("need at least one real and one generated prediction")
    tp = int(np.sum(p_real > threshold))
    fn = p_real.size - tp
    fp = int(np.sum(p_fake > threshold))
    tn = p_fake.size - fp
    return {
        "real_acc": tp / p_real.size,
        "fake_acc": tn / p_fake.size,
        "d_precision": tp / (tp + fp) if tp + fp else 0.0,
        "d_recall": tp / (tp + fn),
    }
