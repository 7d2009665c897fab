"""SSIM/MSE on onnxruntime agree with the numpy reference and with recorded tf.image.ssim values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_runtime import metrics
from cxr_runtime.images import load_folder
from cxr_runtime.onnx_metrics import OnnxScorer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tf_ssim.json"
TOL = 1e-5


@pytest.fixture(scope="module")
def scorer():
    return OnnxScorer(device="cpu")


def _fixture_inputs():
    """Rebuild the inputs tf_ssim.json was recorded on (see its 'generator' field)."""
    spec = json.loads(FIXTURE.read_text())
    rng = np.random.default_rng(20261126)
    for case in spec["cases"]:
        n, size = case["n"], case["size"]
        x = rng.uniform(-1, 1, (n, size, size)).astype(np.float32)
        y = np.clip(0.6 * x + 0.4 * rng.uniform(-1, 1, (n, size, size)).astype(np.float32), -1, 1).astype(np.float32)
        yield case, x, y


def test_matches_recorded_tf_image_ssim(scorer):
    for case, x, y in _fixture_inputs():
        s, m = scorer.ssim_mse(x, y)
        np.testing.assert_allclose(s, case["ssim"], atol=TOL, rtol=0, err_msg=f"size {case['size']}")
        np.testing.assert_allclose(m, case["mse"], atol=TOL, rtol=0)
        # the numpy reference agrees with TensorFlow too
        np.testing.assert_allclose(metrics.ssim(x, y), case["ssim"], atol=TOL, rtol=0)


def test_pairs_match_numpy_on_random_and_real(scorer, train_normal):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (70, 24, 24)), rng.uniform(-1, 1, (70, 24, 24))  # > one chunk of 64
    s, m = scorer.ssim_mse(x, y)
    np.testing.assert_allclose(s, metrics.ssim(x, y), atol=TOL, rtol=0)
    np.testing.assert_allclose(m, metrics.mse(x, y), atol=TOL, rtol=0)
    real = load_folder(train_normal).images
    s, m = scorer.ssim_mse(real[:20], real[20:40])
    np.testing.assert_allclose(s, metrics.ssim(real[:20], real[20:40]), atol=TOL, rtol=0)
    np.testing.assert_allclose(m, metrics.mse(real[:20], real[20:40]), atol=TOL, rtol=0)
    assert scorer.real_reference(real) == pytest.approx(metrics.real_reference(real), abs=TOL)
    fake = real[::-1][:50]
    assert scorer.paired_ssim_mse(fake, real) == pytest.approx(metrics.paired_ssim_mse(fake, real), abs=TOL)


def test_identical_images(scorer):
    x = np.random.default_rng(1).uniform(-1, 1, (3, 16, 16))
    s, m = scorer.ssim_mse(x, x)
    np.testing.assert_allclose(s, 1.0, atol=TOL)
    np.testing.assert_allclose(m, 0.0, atol=TOL)


def test_cross_matrix_equals_every_pair(scorer, train_normal):
    real = load_folder(train_normal).images
    a, b = real[:7], real[100:138]
    for tile, tile_b in ((1, 32), (3, 5), (7, 38)):  # tiles that do and do not divide the sets
        s, m = scorer.cross(a, b, tile=tile, tile_b=tile_b)
        assert s.shape == m.shape == (7, 38)
        want_s = np.array([metrics.ssim(np.repeat(a[i : i + 1], len(b), 0), b) for i in range(len(a))])
        want_m = np.array([metrics.mse(np.repeat(a[i : i + 1], len(b), 0), b) for i in range(len(a))])
        np.testing.assert_allclose(s, want_s, atol=TOL, rtol=0)
        np.testing.assert_allclose(m, want_m, atol=TOL, rtol=0)
    # an image against itself scores 1 / 0 on the diagonal
    s, m = scorer.cross(a, a)
    np.testing.assert_allclose(np.diag(s), 1.0, atol=TOL)
    np.testing.assert_allclose(np.diag(m), 0.0, atol=TOL)


def test_bad_shapes(scorer):
    with pytest.raises(ValueError, match="mismatch"):
        scorer.ssim_mse(np.zeros((2, 16, 16)), np.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="at least 11x11"):
        scorer.ssim_mse(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="sizes differ"):
        scorer.cross(np.zeros((2, 16, 16)), np.zeros((2, 20, 20)))
