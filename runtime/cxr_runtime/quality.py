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
- classifier AUC: Lopez-Paz and Oquab 2017, a classifier two-sample test: how well a
  logistic regression on these features tells generated images from real ones (0.5: not at
  all).
- texture AUC: the same classifier test on texture features of the full-size image (its
  power spectrum, fine-detail statistics at three scales, gradients, local binary patterns,
  co-occurrence of the fine detail: `texture_stats`), which see what the 32x32 bank averages
  away: a +-0.05 checkerboard, a sigma-1 blur, added noise (tests/runtime/test_texture.py).
- HF power ratio: the generated images' mean power at the highest spatial frequencies (the top
  quarter of radial frequencies and the spectrum's corners, HF_BAND) over the real images' (1:
  as much fine-detail energy as real images).
- detail kurtosis: the median kurtosis of the fine detail (image minus its sigma-1 blur): real
  radiographs have sparse sharp edges (about 20), smooth or noisy texture is near-Gaussian (3).

Every metric comes with a 95 % interval that resamples both the real and the generated images
(a grouped two-sample jackknife: `<key>_se`, printed as +- 1.96 se), and is read beside the
same metric of the real training images against the same real set (the baseline).

QUALITY_METRICS (at the end) is the table every output iterates over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from cxr_runtime.errors import TooFewImagesError

K_NEIGHBOURS = 5
KID_SUBSETS = 50
KID_SUBSET_SIZE = 100
C2ST_FOLDS = 5
C2ST_L2 = 1.0  # ridge on standardised features: the classifier test stays near 0.5 for real vs real


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


# --------------------------------------------------------------------------- texture
#
# The bank above sees a 32x32 average: pose, framing, intensity and coarse texture. These see
# the full-size image: its power spectrum, its fine detail at three scales, gradients, local
# binary patterns and the co-occurrence of fine detail (docs/metrics.md, "Texture").

SPECTRUM_BINS = 16  # radial bins of the power spectrum within the Nyquist circle, plus one for the corners
HF_BAND = 0.375  # "high frequencies": radial frequency >= this (cycles per pixel): the top quarter up to
# Nyquist (0.5) and the corners of the spectrum beyond it
DETAIL_SIGMA = 1.0  # fine detail: the image minus its Gaussian blur of this sigma (px at 128x128)


def _radial_bins(size: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.fft.fftfreq(size)
    r = np.hypot(f[:, None], f[None, :])
    bins = np.minimum((r / 0.5 * SPECTRUM_BINS).astype(np.int64), SPECTRUM_BINS)  # >= Nyquist: the corner bin
    bins[0, 0] = -1  # DC: not a texture
    hf = r >= HF_BAND
    return bins, hf


def _kurtosis(x: np.ndarray) -> float:
    x = x.astype(np.float64).ravel()
    x = x - x.mean()
    v = (x * x).mean()
    return float((x**4).mean() / (v * v)) if v > 1e-20 else 3.0


def texture_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, S, S) images in [-1, 1] at full size -> (texture features (N, D), high-frequency power
    (N,), fine-detail kurtosis (N,)).

    Features of each image: the log power in SPECTRUM_BINS + 1 radial bands (Hann-windowed FFT);
    for the fine detail (image minus sigma-1 blur) and the two coarser bands of a Gaussian
    pyramid (sigma 1-2, 2-4): log standard deviation, kurtosis, the 90th and 99th percentiles of
    |detail| over its standard deviation; Sobel gradients: log mean magnitude, kurtosis of each
    axis, the ratio of horizontal to vertical energy; the uniform LBP histogram (8 neighbours,
    radius 1) of the full image; grey-level co-occurrence of the fine detail quantised to 8
    levels (contrast, homogeneity, correlation at distance 1). High-frequency power: the mean
    power per frequency at or above HF_BAND. Detail kurtosis: of the fine detail (Gaussian: 3)."""
    import cv2
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    images = np.asarray(images, np.float32)
    if images.ndim == 4:
        images = images[..., 0]
    n, size = len(images), images.shape[1]
    bins, hf = _radial_bins(size)
    window = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
    norm = float((window**2).sum())
    counts = np.maximum(np.bincount(bins[bins >= 0], minlength=SPECTRUM_BINS + 1), 1)  # small images: empty bins
    feats, hf_power, kurt = [], np.empty(n), np.empty(n)
    for i, im in enumerate(images):
        x = im.astype(np.float32)
        power = np.abs(np.fft.fft2((x - x.mean()) * window)) ** 2 / norm
        spectrum = np.bincount(bins[bins >= 0], weights=power[bins >= 0], minlength=SPECTRUM_BINS + 1) / counts
        hf_power[i] = float(power[hf].mean())
        b1 = cv2.GaussianBlur(x, (0, 0), DETAIL_SIGMA)
        b2 = cv2.GaussianBlur(x, (0, 0), 2 * DETAIL_SIGMA)
        b4 = cv2.GaussianBlur(x, (0, 0), 4 * DETAIL_SIGMA)
        row = list(np.log10(spectrum + 1e-12))
        for band in (x - b1, b1 - b2, b2 - b4):
            sd = float(band.std()) + 1e-9
            a = np.abs(band) / sd
            row += [np.log10(sd), np.log10(_kurtosis(band)), *np.percentile(a, [90, 99])]
        kurt[i] = _kurtosis(x - b1)
        gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
        ex, ey = float((gx * gx).mean()) + 1e-12, float((gy * gy).mean()) + 1e-12
        row += [np.log10(np.sqrt(gx * gx + gy * gy).mean() + 1e-9), np.log10(_kurtosis(gx)),
                np.log10(_kurtosis(gy)), np.log10(ex / ey)]
        u8 = np.clip((x + 1.0) * 127.5, 0, 255).astype(np.uint8)
        codes = local_binary_pattern(u8, 8, 1, method="uniform")
        row += list(np.bincount(codes.astype(np.int64).ravel(), minlength=10)[:10] / codes.size)
        d = x - b1
        edges = np.quantile(d, [0.125 * k for k in range(1, 8)])
        levels = np.searchsorted(edges, d).astype(np.uint8)
        glcm = graycomatrix(levels, distances=[1], angles=[0, np.pi / 2], levels=8, symmetric=True, normed=True)
        row += [float(graycoprops(glcm, p).mean()) for p in ("contrast", "homogeneity", "correlation")]
        feats.append(row)
    return np.asarray(feats, np.float64), hf_power, kurt


def texture_feature_names() -> list[str]:
    """The name of each column of texture_stats' features, in order (bench/texture_features.py
    reports which of them tell generated images from real ones)."""
    names = [f"spectrum band {i}" for i in range(SPECTRUM_BINS)] + ["spectrum corners"]
    for band in ("detail", "band 1-2", "band 2-4"):
        names += [f"{band} log sd", f"{band} log kurtosis", f"{band} |x|/sd p90", f"{band} |x|/sd p99"]
    names += ["gradient log magnitude", "gradient x log kurtosis", "gradient y log kurtosis", "gradient log x/y energy"]
    names += [f"LBP code {i}" for i in range(10)]
    names += ["GLCM contrast", "GLCM homogeneity", "GLCM correlation"]
    return names


def _standardised(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z-scored features, per-dimension mean, spread); constant dimensions keep spread 1."""
    mu = raw.mean(axis=0)
    sd = raw.std(axis=0)
    sd[sd < 1e-12] = 1.0
    return (raw - mu) / sd, mu, sd


def standardise(real_f: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """z-score every set with the real set's per-dimension mean and standard deviation."""
    z, mu, sd = _standardised(real_f)
    return [z, *((f - mu) / sd for f in others)]


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


def diversity_matrix(images: np.ndarray, scorer=None, max_images: int = 200,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indices of at most `max_images` images drawn from the set, their pairwise SSIM matrix)."""
    images = np.asarray(images)
    if len(images) < 2:
        raise TooFewImagesError("diversity needs at least two images")
    idx = np.arange(len(images))
    if len(images) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(len(images), max_images, replace=False))
    if scorer is None:
        from cxr_runtime.onnx_metrics import OnnxScorer

        scorer = OnnxScorer(device="cpu")
    s, _ = scorer.cross(images[idx], images[idx])
    return idx, np.asarray(s, np.float64)


def _mean_off_diagonal(m: np.ndarray) -> float:
    n = len(m)
    return float((m.sum() - np.trace(m)) / (n * (n - 1))) if n > 1 else float("nan")


def diversity(images: np.ndarray, scorer=None, max_images: int = 200, seed: int = 0) -> float:
    """Mean SSIM between distinct images of a set (lower = more varied)."""
    _, m = diversity_matrix(images, scorer, max_images, seed)
    return _mean_off_diagonal(m)


def c2st_auc(real_f: np.ndarray, fake_f: np.ndarray, folds: int = C2ST_FOLDS, l2: float = C2ST_L2,
             seed: int = 0) -> float:
    """Classifier two-sample test (Lopez-Paz and Oquab 2017, "Revisiting Classifier Two-Sample
    Tests"): the cross-validated ROC AUC of an L2-regularised logistic regression telling the
    generated feature vectors from the real ones. 0.5: the classifier cannot tell them apart;
    1.0: it tells every image. Classes are weighted to equal total weight (a set of 45 real
    and 500 generated images counts both sides alike); each image is scored by a model that
    did not see it (stratified folds); the AUC is the Mann-Whitney statistic of those scores."""
    if min(len(real_f), len(fake_f)) < folds:
        raise TooFewImagesError(f"the classifier test needs at least {folds} real and {folds} generated images "
                                f"(got {len(real_f)} and {len(fake_f)})")
    x = np.concatenate([real_f, fake_f]).astype(np.float64)
    y = np.concatenate([np.zeros(len(real_f)), np.ones(len(fake_f))])
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    for label in (0, 1):  # stratified: each fold has its share of both sets
        idx = np.flatnonzero(y == label)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    scores = np.empty(len(y))
    with one_blas_thread():
        for k in range(folds):
            train, test = fold != k, fold == k
            w = _logistic_fit(x[train], y[train], l2)
            scores[test] = x[test] @ w[:-1] + w[-1]
    return auc_of(scores[y == 1], scores[y == 0])


def one_blas_thread():
    """A context in which numpy's and scipy's BLAS and LAPACK run on one thread. The metrics'
    linear algebra is many small products and factorisations (a Newton step of the classifier
    test is a 192x192 Cholesky): split over threads they spend more on waking and joining them
    than on arithmetic, and beside a training process on the same cores far more (the epoch-end
    monitor measured 112 s against 14 s single-threaded beside a training run, 14.8 s against
    7.2 s alone; docs/benchmarks.md)."""
    import scipy.linalg  # noqa: F401  (loaded first: the limit reaches only the libraries loaded when it is set)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _logistic_fit(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """Weights (then the bias) of a class-balanced logistic regression minimising mean weighted
    log-loss + l2/2 |w|^2 (bias not penalised), by Newton's method."""
    from scipy.linalg import cho_factor, cho_solve

    n, d = x.shape
    weight = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    xb = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    w = np.zeros(d + 1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (weight * (p - y)) + penalty * w
        hess = (xb * (weight * p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = cho_solve(cho_factor(hess), grad)  # the Hessian is positive definite (ridge)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return w


def auc_of(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney U)."""
    both = np.concatenate([pos, neg])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_scores = both[order]
    i = 0
    while i < len(both):  # average ranks over ties
        j = i
        while j + 1 < len(both) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


# --------------------------------------------------------------------------- the metric table
#
# Every place that lists the distribution metrics iterates over QUALITY_METRICS: RealSet.score
# (so `evaluate --quality` and its --json, report.html and the sweep's rows), the epoch-end
# monitor and the run files' columns (training/evaluate.py, runs.py), the quality plot and the
# log lines. A new metric is one function of a Scoring plus one row here; its interval comes
# from the table (RealSet.score), not from the metric.
#
# Intervals: every metric is computed again on grouped jackknife replicates that leave out one
# of JACKKNIFE_GROUPS groups of the real images (the real set changes, the generated one not),
# then one group of the generated images; the two delete-a-group jackknife variances add up to
# the metric's variance (the two-sample jackknife, Arvesen 1969). `<key>_se` is its square root;
# the 95 % interval printed everywhere is the value +- 1.96 se. With 45 real images the real
# side dominates: that is the uncertainty a resampling of the generated images alone hides.

JACKKNIFE_GROUPS = 10
Z95 = 1.959964
# The judges' version: bumped whenever a metric of the table, its interval or the memorisation
# audit changes what it measures, so that stored scores made by older judges are recognised (the
# sweep scores them again). 1: the 32x32 bank, KID's error over generated subsets, the shift-tolerant
# audit; 2: the texture judges, intervals over both sets, the registered audit.
JUDGES_VERSION = 2


class Scoring:
    """What the metrics of one generated set share: its images, their standardised features (coarse
    and texture) and, computed once on first use, precision/recall/density/coverage against the real
    set and the SSIM matrix of the diversity. `subset(real_idx, fake_idx)` narrows both sets (the
    jackknife's replicates) and shares everything computed per image."""

    def __init__(self, real: RealSet, fake: np.ndarray, scorer=None):
        self.real, self.scorer = real, scorer
        fake = np.asarray(fake, np.float32)
        self._shared = {"fake": fake, "fake_f": (features(fake) - real.mean) / real.spread}
        self.real_idx, self.fake_idx = np.arange(real.count), np.arange(len(fake))
        self._whole = True
        self._prdc = None

    def subset(self, real_idx: np.ndarray, fake_idx: np.ndarray) -> Scoring:
        other = object.__new__(Scoring)
        other.real, other.scorer, other._shared = self.real, self.scorer, self._shared
        other.real_idx, other.fake_idx = np.asarray(real_idx), np.asarray(fake_idx)
        other._whole, other._prdc = False, None
        return other

    def _pick(self, arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return arr if self._whole else arr[idx]

    @property
    def fake(self) -> np.ndarray:
        return self._pick(self._shared["fake"], self.fake_idx)

    @property
    def real_f(self) -> np.ndarray:
        return self._pick(self.real.real_f, self.real_idx)

    @property
    def fake_f(self) -> np.ndarray:
        return self._pick(self._shared["fake_f"], self.fake_idx)

    def _texture(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "texture" not in self._shared:
            t, hf, kurt = texture_stats(self._shared["fake"])
            self._shared["texture"] = ((t - self.real.texture_mean) / self.real.texture_spread, hf, kurt)
        return self._shared["texture"]

    @property
    def real_t(self) -> np.ndarray:
        return self._pick(self.real.real_t, self.real_idx)

    @property
    def fake_t(self) -> np.ndarray:
        return self._pick(self._texture()[0], self.fake_idx)

    @property
    def real_hf(self) -> np.ndarray:
        return self._pick(self.real.hf_power, self.real_idx)

    @property
    def fake_hf(self) -> np.ndarray:
        return self._pick(self._texture()[1], self.fake_idx)

    @property
    def fake_kurtosis(self) -> np.ndarray:
        return self._pick(self._texture()[2], self.fake_idx)

    @property
    def prdc(self) -> dict[str, float]:
        if self._prdc is None:
            self._prdc = prdc(self.real_f, self.fake_f)
        return self._prdc

    def fake_diversity(self) -> float:
        if "diversity" not in self._shared:
            self._shared["diversity"] = diversity_matrix(self._shared["fake"], self.scorer, self.real.diversity_images)
        idx, m = self._shared["diversity"]
        keep = np.isin(idx, self.fake_idx)
        return _mean_off_diagonal(m[np.ix_(keep, keep)])


@dataclass(frozen=True)
class QualityMetric:
    """One reported distribution metric.

    key: its name in results (`evaluate --json`'s "quality", report, sweep rows); compute:
    Scoring -> {key: value, ...} (it may add a companion: the real images' own value);
    better: "higher", "lower" or "near ..."; label, fmt and short: how it is printed (short in tables);
    columns: result key -> column in metrics.jsonl/csv (the monitor's "q_" names; default
    "q_" + key); real_key: the companion that holds the real images' own value (a line on the
    plot, printed beside it); log_scale: plotted on a log axis; citation: the paper that defines
    it. Every metric also gets `<key>_se` (se_key), the standard error of the table's jackknife
    over both sets, printed as its 95 % interval (+- 1.96 se)."""

    key: str
    label: str
    compute: Callable[[Scoring], dict[str, float]]
    better: str
    fmt: str = ".4f"
    short: str = ".2f"  # in tables (docs/results.md)
    columns: Mapping[str, str] = field(default_factory=dict)
    real_key: str | None = None
    log_scale: bool = False
    citation: str = ""

    @property
    def se_key(self) -> str:
        return self.key + "_se"

    def column(self, key: str) -> str:
        return self.columns.get(key, "q_" + key)

    def keys(self) -> tuple[str, ...]:
        """Every result key this metric produces, its own first."""
        return tuple(k for k in (self.key, self.se_key, self.real_key) if k)

    def interval(self, values: Mapping[str, float]) -> tuple[float, float] | None:
        """The 95 % interval of this metric in `values` (a result dict), if it has a standard error."""
        if self.key not in values or self.se_key not in values:
            return None
        return values[self.key] - Z95 * values[self.se_key], values[self.key] + Z95 * values[self.se_key]

    def text(self, values: Mapping[str, float], fmt: str | None = None) -> str:
        """'0.24 ± 0.10' (value and 95 % half-width), or the value alone without an interval."""
        fmt = fmt or self.fmt
        out = f"{values[self.key]:{fmt}}"
        if self.se_key in values:
            out += f" ± {Z95 * values[self.se_key]:{fmt}}"
        return out


def _kid(s: Scoring) -> dict[str, float]:
    return {"kid": kid(s.real_f, s.fake_f)[0]}


def _diversity(s: Scoring) -> dict[str, float]:
    return {"diversity_ssim": s.fake_diversity(), "diversity_ssim_real": s.real.diversity}


def _hf_ratio(s: Scoring) -> dict[str, float]:
    return {"hf_power_ratio": float(s.fake_hf.mean() / max(s.real_hf.mean(), 1e-20))}


def _detail_kurtosis(s: Scoring) -> dict[str, float]:
    return {"detail_kurtosis": float(np.median(s.fake_kurtosis)),
            "detail_kurtosis_real": float(np.median(s.real.kurtosis))}


# Reported: the metrics that rank the degradation ladder (tests/runtime/test_quality.py) and the
# texture judges that see what the 32x32 bank cannot (tests/runtime/test_texture.py).
# Precision and density rank a collapsed set (one real image repeated) first, as fidelity
# measures must; they fail the ladder, so prdc() computes them but they are not reported.
QUALITY_METRICS: list[QualityMetric] = [
    QualityMetric("recall", "recall", lambda s: {"recall": s.prdc["recall"]}, "higher",
                  citation="Naeem et al. 2020"),
    QualityMetric("coverage", "coverage", lambda s: {"coverage": s.prdc["coverage"]}, "higher",
                  citation="Naeem et al. 2020"),
    QualityMetric("kid", "KID", _kid, "lower", log_scale=True, citation="Binkowski et al. 2018"),
    QualityMetric("diversity_ssim", "diversity", _diversity, "near the real value", short=".3f",
                  real_key="diversity_ssim_real",
                  columns={"diversity_ssim": "q_diversity", "diversity_ssim_real": "q_diversity_real",
                           "diversity_ssim_se": "q_diversity_se"}),
    QualityMetric("c2st_auc", "classifier AUC", lambda s: {"c2st_auc": c2st_auc(s.real_f, s.fake_f)},
                  "near 0.5", citation="Lopez-Paz and Oquab 2017"),
    QualityMetric("texture_auc", "texture AUC", lambda s: {"texture_auc": c2st_auc(s.real_t, s.fake_t)},
                  "near 0.5", citation="classifier two-sample test on full-size texture features"),
    QualityMetric("hf_power_ratio", "HF power ratio", _hf_ratio, "near the baseline (1 = real's)"),
    QualityMetric("detail_kurtosis", "detail kurtosis", _detail_kurtosis, "near the real value", short=".1f",
                  fmt=".2f", real_key="detail_kurtosis_real"),
]


def metric_keys() -> list[str]:
    """Every result key of the table, in table order (kid, kid_se, ...)."""
    return [k for m in QUALITY_METRICS for k in m.keys()]


def metric_columns() -> list[str]:
    """The run files' columns of the table (q_recall, ..., q_diversity_real, ...)."""
    return [m.column(k) for m in QUALITY_METRICS for k in m.keys()]


def intervals(values: Mapping[str, float]) -> dict[str, list[float]]:
    """{metric key: [low, high]}: the 95 % interval of every metric of the table in `values`."""
    out = {}
    for m in QUALITY_METRICS:
        iv = m.interval(values)
        if iv is not None:
            out[m.key] = [float(iv[0]), float(iv[1])]
    return out


def _jackknife_groups(n: int, seed: int) -> list[np.ndarray]:
    """Indices of `n` items in min(JACKKNIFE_GROUPS, n) groups of near-equal size, shuffled."""
    perm = np.random.default_rng(seed).permutation(n)
    return [g for g in np.array_split(perm, min(JACKKNIFE_GROUPS, n)) if len(g)]


def _jackknife_variance(values: list[float]) -> float:
    g = len(values)
    v = np.asarray(values, np.float64)
    return float((g - 1) / g * ((v - v.mean()) ** 2).sum())


class RealSet:
    """The real side of the reported metrics, computed once and reused for any number of
    generated sets (training scores one per epoch): the real features' mean and spread, the
    standardised real features (coarse and texture), the real images' high-frequency power and
    fine-detail kurtosis, and the real set's diversity."""

    def __init__(self, real: np.ndarray, scorer=None, diversity_images: int = 200):
        real = np.asarray(real, np.float32)
        self.real_f, self.mean, self.spread = _standardised(features(real))
        texture, self.hf_power, self.kurtosis = texture_stats(real)
        self.real_t, self.texture_mean, self.texture_spread = _standardised(texture)
        self.count = len(real)
        self.diversity_images = diversity_images
        self.diversity = diversity(real, scorer, diversity_images)

    def score(self, fake: np.ndarray, scorer=None, intervals: bool = True, seed: int = 0) -> dict[str, float]:
        """Every metric of QUALITY_METRICS for `fake` against this real set, with `<key>_se`
        (the jackknife over both sets) unless `intervals` is False."""
        with one_blas_thread():
            scoring = Scoring(self, fake, scorer)
            out: dict[str, float] = {}
            for metric in QUALITY_METRICS:
                out.update(metric.compute(scoring))
            if intervals:
                out.update(self._standard_errors(scoring, seed))
        return out

    def _standard_errors(self, scoring: Scoring, seed: int) -> dict[str, float]:
        all_real, all_fake = np.arange(self.count), np.arange(len(scoring.fake))
        sides = [[scoring.subset(np.setdiff1d(all_real, g), all_fake) for g in _jackknife_groups(self.count, seed)],
                 [scoring.subset(all_real, np.setdiff1d(all_fake, g)) for g in _jackknife_groups(len(all_fake), seed)]]
        out = {}
        for metric in QUALITY_METRICS:
            try:
                variance = sum(_jackknife_variance([metric.compute(sub)[metric.key] for sub in side])
                               for side in sides)
            except TooFewImagesError:  # too few images left out of a group: no interval
                continue
            out[metric.se_key] = float(np.sqrt(variance))
        return out
