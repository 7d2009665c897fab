"""The distribution metrics mean something: on real X-rays they rank held-out real images,
mildly and heavily degraded ones, a collapsed set and noise in that order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_runtime import quality as q
from cxr_runtime.images import load_folder


@pytest.fixture(scope="module")
def ladder(kermany):
    train = load_folder(kermany / "train" / "NORMAL").images
    held = load_folder(kermany / "heldout" / "NORMAL").images
    rng = np.random.default_rng(0)

    def blur(x, sigma):
        return np.stack([cv2.GaussianBlur(i, (0, 0), sigma) for i in x])

    def noise(x, sd):
        return np.clip(x + rng.normal(0, sd, x.shape).astype(np.float32), -1, 1)

    rungs = {  # best to worst
        "held-out real": held,
        "mildly degraded": noise(blur(held, 1.0), 0.05),
        "heavily degraded": noise(blur(held, 3.0), 0.3),
        "collapse (one image repeated)": np.repeat(held[:1], len(held), 0),
        "noise": rng.uniform(-1, 1, held.shape).astype(np.float32),
    }
    train_f = q.features(train)
    scores = {}
    for name, images in rungs.items():
        real_f, fake_f = q.standardise(train_f, q.features(images))
        scores[name] = {**q.prdc(real_f, fake_f), "kid": q.kid(real_f, fake_f)[0], "c2st_auc": q.c2st_auc(real_f, fake_f)}
    return scores


def _column(scores, key):
    return [s[key] for s in scores.values()]


def test_kid_ranks_the_ladder(ladder):
    kid = _column(ladder, "kid")
    assert kid == sorted(kid) and len(set(kid)) == len(kid), kid  # strictly worse down the ladder


def test_coverage_ranks_the_ladder(ladder):
    cov = _column(ladder, "coverage")
    assert cov == sorted(cov, reverse=True) and len(set(cov)) == len(cov), cov


def test_recall_ranks_the_ladder(ladder):
    rec = _column(ladder, "recall")
    assert rec == sorted(rec, reverse=True), rec
    assert len(set(rec[:4])) == 4  # strict down to collapse; collapse and noise both recall nothing


def test_classifier_auc_ranks_the_ladder(ladder):
    """Real vs real is near chance; each degradation is easier to tell; noise is told every time."""
    auc = _column(ladder, "c2st_auc")
    assert ladder["held-out real"]["c2st_auc"] < 0.65
    assert ladder["held-out real"]["c2st_auc"] < ladder["mildly degraded"]["c2st_auc"] < \
        ladder["heavily degraded"]["c2st_auc"] <= 1.0
    assert ladder["noise"]["c2st_auc"] == 1.0 and min(auc) >= 0.0


def test_classifier_auc_known_answers():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    assert abs(q.c2st_auc(a, b) - 0.5) < 0.08  # the same distribution: chance
    assert q.c2st_auc(a, b + 3.0) == 1.0  # far apart: every image told
    shifted = q.c2st_auc(a, b + 0.5)
    assert 0.7 < shifted < 1.0
    # classes weighted alike: 40 real against 400 generated reads as the balanced problem does
    assert abs(q.c2st_auc(a[:40], np.tile(b, (2, 1))[:400] + 0.5) - shifted) < 0.1
    assert q.auc_of(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert q.auc_of(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5  # ties count one half
    with pytest.raises(ValueError, match="at least 5"):
        q.c2st_auc(a[:3], b)


def test_the_metrics_linear_algebra_runs_on_one_blas_thread(monkeypatch):
    """Every Newton step of the classifier tests, alone and inside RealSet.score, runs with BLAS on
    one thread whatever the process's setting (two here), and the setting is restored after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen, fit = [], q._logistic_fit
    monkeypatch.setattr(q, "_logistic_fit", lambda *a, **k: (seen.append(blas_threads()), fit(*a, **k))[1])
    rng = np.random.default_rng(4)
    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == {2}  # the check below can fail: outside the context BLAS has two threads
        q.c2st_auc(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))
        images = np.clip(rng.normal(0, 0.5, (24, 64, 64)), -1, 1).astype(np.float32)
        q.RealSet(images[:12], diversity_images=12).score(images[12:], intervals=False)
        assert blas_threads() == {2}
    assert len(seen) == 5 + 2 * 5 and all(threads == {1} for threads in seen)  # 5 folds; 2 tests x 5 folds


def test_precision_and_density_measure_fidelity_only(ladder):
    """Documented behaviour, not a ranking: a repeated real image is perfectly 'precise'.
    These two are reported beside recall/coverage, never alone (docs/metrics.md)."""
    collapse = ladder["collapse (one image repeated)"]
    assert collapse["precision"] == 1.0 and collapse["recall"] == 0.0
    assert ladder["noise"]["precision"] == 0.0 and ladder["noise"]["density"] == 0.0
    held, mild, heavy = (ladder[k] for k in ("held-out real", "mildly degraded", "heavily degraded"))
    assert held["precision"] > mild["precision"] > heavy["precision"]
    assert held["density"] > mild["density"] > heavy["density"]


def test_held_out_real_is_close_to_the_reference_scale(ladder):
    held = ladder["held-out real"]
    assert held["kid"] < 0.05 and held["coverage"] > 0.7 and held["recall"] > 0.7


def test_known_answers():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(60, 5))
    same = q.prdc(a, a)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = q.prdc(a, a + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    b = np.random.default_rng(9).normal(size=(60, 5))  # an independent sample of the same distribution
    m, se = q.kid(a, b, subsets=10, size=50)
    assert abs(m) < 5 * se  # unbiased: zero within its standard error
    assert q.kid(a, a + 1.0, subsets=10, size=50)[0] > 0.1
    with pytest.raises(ValueError):
        q.prdc(a[:3], a[:3])


def test_diversity_flags_collapse():
    from cxr_runtime.onnx_metrics import OnnxScorer

    rng = np.random.default_rng(2)
    varied = rng.uniform(-1, 1, (6, 32, 32)).astype(np.float32)
    sc = OnnxScorer("cpu")
    assert q.diversity(np.repeat(varied[:1], 6, 0), sc) == pytest.approx(1.0, abs=1e-5)
    assert q.diversity(varied, sc) < 0.2
