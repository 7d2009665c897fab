"""The latent scale's calibration: it finds the scale that reproduces a real set's spread."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_runtime import Generator, calibration
from cxr_runtime.calibration import DIVERSITY_TOLERANCE, calibrate_latent_scale
from cxr_runtime.errors import TooFewImagesError
from cxr_runtime.generator import latents

from .onnx_models import tiny_generator


def test_calibration_recovers_the_scale_the_real_set_was_drawn_at(tmp_path):
    # "real" images are the tiny generator's own outputs at latent scale 1.3: calibration on
    # them must pick 1.3 from the grid, and the KIDs must rise on both sides of it
    g = Generator(tiny_generator(tmp_path / "g.onnx", size=32, latent_dim=8), device="cpu", latent_scale=1.0)
    real = g.generate(latents(0, 120, 8, seed=99) * np.float32(1.3))
    cal = calibrate_latent_scale(g, real, grid=(0.7, 1.0, 1.3, 1.6, 1.9), n=120)
    assert cal.scale == 1.3, cal
    i = cal.grid.index(1.3)
    assert cal.kid[0] > cal.kid[i] < cal.kid[-1]
    assert cal.to_dict()["images"] == 120 and cal.real == 120


def test_diversity_criterion_takes_the_smallest_scale_as_varied_as_the_real_set(tmp_path, monkeypatch):
    g = Generator(tiny_generator(tmp_path / "g.onnx", size=32, latent_dim=8), device="cpu", latent_scale=1.0)
    real = g.generate(latents(0, 60, 8, seed=99) * np.float32(1.6))
    grid = (0.6, 1.0, 1.3, 1.6, 1.9)
    cal = calibrate_latent_scale(g, real, grid=grid, n=60, criterion="diversity")
    assert cal.criterion == "diversity" and len(cal.diversity) == len(grid)
    # wider latents, more varied images (lower mean SSIM), on this model as on the GAN
    assert all(a > b for a, b in zip(cal.diversity, cal.diversity[1:]))
    within = [s for s, d in zip(grid, cal.diversity) if d - cal.diversity_real <= DIVERSITY_TOLERANCE]
    assert within and cal.scale == min(within) and cal.scale < 1.9
    # no scale within the tolerance: the closest is taken
    monkeypatch.setattr(calibration, "DIVERSITY_TOLERANCE", -1.0)
    far = calibrate_latent_scale(g, real, grid=grid, n=60, criterion="diversity")
    gaps = [abs(d - far.diversity_real) for d in far.diversity]
    assert far.scale == grid[gaps.index(min(gaps))]
    with pytest.raises(ValueError, match="criterion"):
        calibrate_latent_scale(g, real, criterion="beauty")


def test_calibration_refuses_too_few_real_images_and_bad_grids(tmp_path):
    g = Generator(tiny_generator(tmp_path / "g.onnx", size=32), device="cpu")
    real = g.sample(5).astype(np.float32) / 127.5 - 1
    with pytest.raises(TooFewImagesError):
        calibrate_latent_scale(g, real)
    with pytest.raises(ValueError, match="grid scale"):
        calibrate_latent_scale(g, np.concatenate([real] * 3), grid=(1.0, -1.0))
