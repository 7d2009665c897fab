"""Metrics on inputs with known answers (tf.image.ssim agreement is in tests/training)."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_runtime import metrics as m

rng = np.random.default_rng(0)


def test_identical_images_ssim_1_mse_0():
    x = rng.uniform(-1, 1, (3, 32, 32))
    np.testing.assert_allclose(m.ssim(x, x), 1.0, atol=1e-12)
    np.testing.assert_allclose(m.mse(x, x), 0.0)


def test_known_mse_and_negated_image():
    a, b = np.full((16, 16), -1.0), np.full((16, 16), 1.0)
    assert m.mse(a, b) == pytest.approx(4.0)
    # structure inverted around a positive mean: contrast-structure term near -1
    x = rng.uniform(0, 1, (32, 32))
    assert m.ssim(x, 1 - x) < -0.8


def test_constant_images_luminance_only():
    a, b = np.full((20, 20), 0.5), np.full((20, 20), -0.5)
    c1 = (0.01 * 2) ** 2
    expected = (2 * 0.5 * -0.5 + c1) / (0.25 + 0.25 + c1)
    assert m.ssim(a, b) == pytest.approx(expected, rel=1e-12)


def test_ssim_matches_brute_force_definition():
    x, y = rng.uniform(-1, 1, (2, 15, 15))
    g = m.gaussian_kernel_1d()
    w = np.outer(g, g)
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    vals = []
    for i in range(15 - 10):
        for j in range(15 - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
            cxy = (w * px * py).sum() - mx * my
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert m.ssim(x, y) == pytest.approx(np.mean(vals), rel=1e-10)


def test_shapes_and_errors():
    x = rng.uniform(-1, 1, (4, 16, 16, 1))
    assert m.ssim(x, x).shape == (4,) and m.mse(x, x).shape == (4,)
    with pytest.raises(ValueError, match="mismatch"):
        m.ssim(x, x[:2])
    with pytest.raises(ValueError, match="at least 11x11"):
        m.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_pairing_is_fixed_and_covers_real_set():
    p = m.pairing(10, 10)
    np.testing.assert_array_equal(p, m.pairing(10, 10))
    assert sorted(p) == list(range(10))
    big = m.pairing(25, 10)
    assert len(big) == 25 and np.bincount(big, minlength=10).min() >= 2


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 50):
        d = m.derangement(n)
        assert sorted(d) == list(range(n)) and not np.any(d == np.arange(n))
    with pytest.raises(ValueError):
        m.derangement(1)


def test_paired_metrics_on_identical_sets_and_reference():
    real = rng.uniform(-1, 1, (6, 16, 16))
    s, e = m.paired_ssim_mse(real[m.pairing(6, 6)], real)  # each fake is exactly its partner
    assert s == pytest.approx(1.0) and e == pytest.approx(0.0)
    rs, re_ = m.real_reference(real)
    assert rs < 0.2 and re_ > 0.5  # independent noise images are far apart


def test_perfect_and_useless_discriminator():
    perfect = m.discriminator_scores(np.full(10, 0.9), np.full(10, 0.1))
    assert perfect == {"real_acc": 1.0, "fake_acc": 1.0, "d_precision": 1.0, "d_recall": 1.0}
    # always "fake" (0.5 counts as fake): nothing called real -> precision 0 by convention
    useless = m.discriminator_scores(np.full(10, 0.5), np.full(10, 0.5))
    assert useless == {"real_acc": 0.0, "fake_acc": 1.0, "d_precision": 0.0, "d_recall": 0.0}
    # always "real": precision is the share of real images, 0.5
    gullible = m.discriminator_scores(np.full(10, 0.8), np.full(10, 0.8))
    assert gullible == {"real_acc": 1.0, "fake_acc": 0.0, "d_precision": 0.5, "d_recall": 1.0}
    mixed = m.discriminator_scores(np.array([0.9, 0.9, 0.2, 0.7]), np.array([0.1, 0.6, 0.3, 0.4]))
    assert mixed == {"real_acc": 0.75, "fake_acc": 0.75, "d_precision": 0.75, "d_recall": 0.75}


def test_real_reference_on_shared_images(train_normal):
    from cxr_runtime.images import load_folder

    real = load_folder(train_normal).images
    s, e = m.real_reference(real)
    # the reference measurements (docs/study.md) measured 0.198 / 0.133 with another random pairing of the same images
    assert s == pytest.approx(0.198, abs=0.01) and e == pytest.approx(0.133, abs=0.01)
    mean_img = np.repeat(real.mean(0, keepdims=True), len(real), 0)
    s_mean, e_mean = m.paired_ssim_mse(mean_img, real)
    assert s_mean == pytest.approx(0.32, abs=0.01) and e_mean == pytest.approx(0.067, abs=0.002)
