"""The texture judges see what the 32x32 feature bank averages away: on real X-rays, a +-0.05
checkerboard, a sigma-1 blur and added noise each move the texture AUC and the texture
statistics clearly, while a second set of real images (other patients) stays within the
noise of the real-vs-real reference. And every metric's interval resamples the real images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_runtime import quality as q
from cxr_runtime.images import load_folder
from cxr_runtime.onnx_metrics import OnnxScorer


@pytest.fixture(scope="module")
def scored(kermany):
    train = load_folder(kermany / "train" / "NORMAL").images
    held = load_folder(kermany / "heldout" / "NORMAL").images
    rng = np.random.default_rng(0)
    checker = (np.indices((128, 128)).sum(axis=0) % 2 * 0.1 - 0.05).astype(np.float32)
    sets = {
        "other patients": train,
        "checkerboard 0.05": np.clip(train + checker, -1, 1),
        "blur sigma 1": np.stack([cv2.GaussianBlur(x, (0, 0), 1.0) for x in train]),
        "noise sigma 0.02": np.clip(train + rng.normal(0, 0.02, train.shape).astype(np.float32), -1, 1),
    }
    scorer = OnnxScorer("cpu")
    real = q.RealSet(held, scorer)
    return {name: real.score(images, scorer) for name, images in sets.items()}


def _metric(key):
    return next(m for m in q.QUALITY_METRICS if m.key == key)


def test_real_against_real_is_within_its_noise_of_chance(scored):
    ref = scored["other patients"]
    lo, hi = _metric("texture_auc").interval(ref)
    assert lo < 0.5 < hi, (lo, hi)
    assert ref["texture_auc"] < 0.7
    lo, hi = _metric("hf_power_ratio").interval(ref)
    assert lo < 1.0 < hi, (lo, hi)
    assert abs(ref["detail_kurtosis"] / ref["detail_kurtosis_real"] - 1) < 0.25


@pytest.mark.parametrize("damage", ["checkerboard 0.05", "blur sigma 1", "noise sigma 0.02"])
def test_each_damage_is_told_from_real(scored, damage):
    ref, got = scored["other patients"], scored[damage]
    assert got["texture_auc"] > 0.95, got["texture_auc"]
    assert got["texture_auc"] > _metric("texture_auc").interval(ref)[1]
    # at least one interpretable statistic leaves the reference's interval
    moved = [k for k in ("hf_power_ratio", "detail_kurtosis")
             if not (_metric(k).interval(ref)[0] <= got[k] <= _metric(k).interval(ref)[1])]
    assert moved, (got["hf_power_ratio"], got["detail_kurtosis"])


def test_the_statistics_move_the_right_way(scored):
    ref = scored["other patients"]
    assert scored["blur sigma 1"]["hf_power_ratio"] < 0.2 * ref["hf_power_ratio"]  # detail gone
    assert scored["noise sigma 0.02"]["hf_power_ratio"] > 1.15 * ref["hf_power_ratio"]  # energy added
    assert scored["checkerboard 0.05"]["hf_power_ratio"] > 1.5 * ref["hf_power_ratio"]
    # Gaussian-like detail instead of sparse edges: the kurtosis falls toward 3
    for damage in ("blur sigma 1", "checkerboard 0.05"):
        assert scored[damage]["detail_kurtosis"] < 0.6 * ref["detail_kurtosis_real"]


def test_the_coarse_bank_is_blind_to_the_checkerboard(scored):
    """Why the texture test exists: the 32x32 bank's classifier barely moves."""
    assert scored["checkerboard 0.05"]["c2st_auc"] < 0.9 < scored["checkerboard 0.05"]["texture_auc"]


def test_every_metric_has_an_interval(scored):
    for values in scored.values():
        for m in q.QUALITY_METRICS:
            assert m.se_key in values and np.isfinite(values[m.se_key]) and values[m.se_key] >= 0, m.key
        assert set(q.intervals(values)) == {m.key for m in q.QUALITY_METRICS}


def test_the_interval_resamples_the_real_images(kermany):
    """The same generated images against fewer real ones: the interval widens (an interval that
    resampled the generated images alone would not see the real set's size)."""
    train = load_folder(kermany / "train" / "NORMAL").images
    held = load_folder(kermany / "heldout" / "NORMAL").images
    scorer = OnnxScorer("cpu")
    full = q.RealSet(held, scorer).score(train, scorer)
    few = q.RealSet(held[:15], scorer).score(train, scorer)
    for key in ("kid_se", "texture_auc_se", "hf_power_ratio_se"):
        assert few[key] > full[key], key
    # and the real side is most of the uncertainty: the generated side alone is narrower
    real_set = q.RealSet(held, scorer)
    scoring = q.Scoring(real_set, train, scorer)
    groups = q._jackknife_groups(len(train), 0)
    fake_only = np.sqrt(q._jackknife_variance(
        [q.kid(scoring.real_f, scoring.subset(np.arange(45), np.setdiff1d(np.arange(len(train)), g)).fake_f)[0]
         for g in groups]))
    assert fake_only < full["kid_se"]


def test_every_texture_feature_has_its_name():
    rng = np.random.default_rng(2)
    feats, _, _ = q.texture_stats(rng.uniform(-1, 1, (2, 64, 64)).astype(np.float32))
    names = q.texture_feature_names()
    assert feats.shape[1] == len(names) == len(set(names))
    # the corner bin is the spectrum's last column, the GLCM's three the features' last
    ramp = np.tile(np.linspace(-1, 1, 64, dtype=np.float32), (64, 1))[None]
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 0.2 - 0.1).astype(np.float32)[None]
    a, _, _ = q.texture_stats(np.concatenate([ramp, ramp + checker]))
    corner = names.index("spectrum corners")
    assert corner == q.SPECTRUM_BINS and a[1, corner] - a[0, corner] > 3  # a checkerboard is all corner power
