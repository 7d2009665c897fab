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
    for k in range(folds):
        train, test = fold != k, fold == k
        w = _logistic_fit(x[train], y[train], l2)
        scores[test] = x[test] @ w[:-1] + w[-1]
    return auc_of(scores[y == 1], scores[y == 0])


def _logistic_fit(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """Weights (then the bias) of a class-balanced logistic regression minimising mean weighted
    log-loss + l2/2 |w|^2 (bias not penalised), by Newton's method."""
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
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
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
# log lines. A new metric is one function of a Scoring plus one row here.


class Scoring:
    """What the metrics of one generated set share: its images, their standardised features and
    (computed once, on first use) precision/recall/density/coverage against the reference."""

    def __init__(self, real: RealSet, fake: np.ndarray, scorer=None):
        self.real, self.fake, self.scorer = real, fake, scorer
        self.real_f = real.real_f
        self.fake_f = (features(fake) - real.mean) / real.spread
        self._prdc = None

    @property
    def prdc(self) -> dict[str, float]:
        if self._prdc is None:
            self._prdc = prdc(self.real_f, self.fake_f)
        return self._prdc


@dataclass(frozen=True)
class QualityMetric:
    """One reported distribution metric.

    key: its name in results (`evaluate --json`'s "quality", report, sweep rows); compute:
    Scoring -> {key: value, ...} (it may add companion values such as a standard error);
    better: "higher", "lower" or "near ..."; label, fmt and short: how it is printed (short in tables);
    columns: result key -> column in metrics.jsonl/csv (the monitor's "q_" names; default
    "q_" + key); real_key: the companion that holds the real images' own value (a line on the
    plot, printed beside it); error_key: the companion printed as "+-"; log_scale: plotted on a
    log axis; reference: the paper that defines it."""

    key: str
    label: str
    compute: Callable[[Scoring], dict[str, float]]
    better: str
    fmt: str = ".4f"
    short: str = ".2f"  # in tables (docs/results.md)
    columns: Mapping[str, str] = field(default_factory=dict)
    real_key: str | None = None
    error_key: str | None = None
    log_scale: bool = False
    reference: str = ""

    def column(self, key: str) -> str:
        return self.columns.get(key, "q_" + key)

    def keys(self) -> tuple[str, ...]:
        """Every result key this metric produces, its own first."""
        return tuple(k for k in (self.key, self.error_key, self.real_key) if k)


def _kid(s: Scoring) -> dict[str, float]:
    mean, se = kid(s.real_f, s.fake_f)
    return {"kid": mean, "kid_se": se}


def _diversity(s: Scoring) -> dict[str, float]:
    return {"diversity_ssim": diversity(s.fake, s.scorer, s.real.diversity_images),
            "diversity_ssim_real": s.real.diversity}


# Reported: the metrics that rank the degradation ladder (tests/runtime/test_quality.py).
# Precision and density rank a collapsed set (one real image repeated) first, as fidelity
# measures must; they fail the ladder, so prdc() computes them but they are not reported.
QUALITY_METRICS: list[QualityMetric] = [
    QualityMetric("recall", "recall", lambda s: {"recall": s.prdc["recall"]}, "higher",
                  reference="Naeem et al. 2020"),
    QualityMetric("coverage", "coverage", lambda s: {"coverage": s.prdc["coverage"]}, "higher",
                  reference="Naeem et al. 2020"),
    QualityMetric("kid", "KID", _kid, "lower", error_key="kid_se", log_scale=True, reference="Binkowski et al. 2018"),
    QualityMetric("diversity_ssim", "diversity", _diversity, "near the real value", short=".3f",
                  real_key="diversity_ssim_real",
                  columns={"diversity_ssim": "q_diversity", "diversity_ssim_real": "q_diversity_real"}),
    QualityMetric("c2st_auc", "classifier AUC", lambda s: {"c2st_auc": c2st_auc(s.real_f, s.fake_f)},
                  "near 0.5", reference="Lopez-Paz and Oquab 2017"),
]


def metric_keys() -> list[str]:
    """Every result key of the table, in table order (kid, kid_se, ...)."""
    return [k for m in QUALITY_METRICS for k in m.keys()]


def metric_columns() -> list[str]:
    """The run files' columns of the table (q_recall, ..., q_diversity_real, ...)."""
    return [m.column(k) for m in QUALITY_METRICS for k in m.keys()]


class RealSet:
    """The real side of the reported metrics, computed once and reused for any number of
    generated sets (training scores one per epoch): the real features' mean and spread, the
    standardised real features, and the real set's diversity."""

    def __init__(self, real: np.ndarray, scorer=None, diversity_images: int = 200):
        raw = features(real)
        self.real_f, self.mean, self.spread = _standardised(raw)
        self.count = len(real)
        self.diversity_images = diversity_images
        self.diversity = diversity(real, scorer, diversity_images)

    def score(self, fake: np.ndarray, scorer=None) -> dict[str, float]:
        """Every metric of QUALITY_METRICS for `fake` against this real set."""
        scoring = Scoring(self, fake, scorer)
        out: dict[str, float] = {}
        for metric in QUALITY_METRICS:
            out.update(metric.compute(scoring))
        return out


Reference = RealSet  # the name before 2026-12-03 ("reference" also names the real-vs-real SSIM)
