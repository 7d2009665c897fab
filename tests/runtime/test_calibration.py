"""The latent scale's calibration: it finds the scale that reproduces a real set's spread."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_runtime import Generator
from cxr_runtime.calibration import calibrate_latent_scale
from cxr_runtime.errors import TooFewImagesError
from cxr_runtime.generator import latents

from .onnx_models import tiny_generator


def test_calibration_recovers_the_scale_the_real_set_was_drawn_at(tmp_path):
    # "real" images are the tiny generator's own outputs at latent scale 1.3: calibration on
    # them must pick 1.3 from the grid, and the KIDs must rise on both sides of it
    g = Generator(tiny_generator(tmp_path / "g.onnx", size=32, latent_dim=8), device="cpu", latent_scale=1.0)
    real = g.generate(latents(0, 120, 8, seed=99) * np.float32(1.3))[:, ]
    cal = calibrate_latent_scale(g, real, grid=(0.7, 1.0, 1.3, 1.6, 1.9), n=120)
    assert cal.scale == 1.3, cal
    i = cal.grid.index(1.3)
    assert cal.kid[0] > cal.kid[i] < cal.kid[-1]
    assert cal.to_dict()["images"] == 120 and cal.real == 120


def test_calibration_refuses_too_few_real_images_and_bad_grids(tmp_path):
    g = Generator(tiny_generator(tmp_path / "g.onnx", size=32), device="cpu")
    real = g.sample(5).astype(np.float32) / 127.5 - 1
    with pytest.raises(TooFewImagesError):
        calibrate_latent_scale(g, real)
    with pytest.raises(ValueError, match="grid scale"):
        calibrate_latent_scale(g, np.concatenate([real] * 3), grid=(1.0, -1.0))
