"""The latent scale: the standard deviation a generator's latents are drawn at.

A GAN is trained on latents of standard deviation 1, but its sampling generator (the EMA of
G's weights) can come out narrower than the data: on 138 images the `long` preset's samples
were more alike than patients are (docs/results.md). Drawing the latents a little wider
spreads the samples out; too wide, and they leave the data. `calibrate_latent_scale` picks the
scale from a grid by the distance of the samples to a real set (KID on the metric features,
docs/metrics.md). Calibrate on the **training** images: the held-out images are for judging the
result, and choosing on them would make their scores optimistic.

Two criteria, both computed on the training images only:
- `kid` (`cxr-export --latent-scale auto`): the scale with the lowest KID, fidelity first;
- `diversity` (`--latent-scale diversity`): the smallest scale whose samples are as varied as
  the training images give or take DIVERSITY_TOLERANCE (mean SSIM among the samples at most
  the training images' own plus 0.05, the project's diversity target); if no scale of the grid
  gets there, the one that comes closest.

cxr-export writes the choice into the model's metadata (`latent_scale`, with the grid's KIDs
and diversities in `latent_scale_calibration`); `Generator` draws at the model's scale unless
told otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cxr_runtime.errors import TooFewImagesError
from cxr_runtime.generator import check_latent_scale, latents
from cxr_runtime.images import to_uint8
from cxr_runtime.quality import diversity, features, kid, standardise

LATENT_SCALE_GRID = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5)
CALIBRATION_IMAGES = 256  # generated images per scale
CALIBRATION_SEED = 20261203  # latents of their own, apart from any seed a user samples with
MIN_REAL = 10
CRITERIA = ("kid", "diversity")
DIVERSITY_TOLERANCE = 0.05  # the project's target: diversity within 0.05 of the real images'


@dataclass
class LatentScaleCalibration:
    scale: float  # the chosen one
    grid: list[float]
    kid: list[float]  # KID of each grid scale's images against the real set
    kid_se: list[float]
    images: int
    real: int
    seed: int
    criterion: str = "kid"
    diversity: list[float] | None = None  # mean SSIM among each scale's images (criterion diversity)
    diversity_real: float | None = None  # the real set's own

    def to_dict(self) -> dict:
        return asdict(self)


def images_at_scale(generator, z: np.ndarray, scale: float) -> np.ndarray:
    """`generator`'s images for latents `z` times `scale`, in [-1, 1] after the 8-bit rounding
    a written PNG set goes through (so they score as the sampled files would)."""
    step = generator.default_batch
    classes = len(getattr(generator, "classes", ()))
    labels = np.arange(len(z)) % classes if classes else None  # a labelled model: every class in turn
    images = np.concatenate([generator.generate(z[i:i + step] * np.float32(scale),
                                                None if labels is None else labels[i:i + step])
                             if classes else generator.generate(z[i:i + step] * np.float32(scale))
                             for i in range(0, len(z), step)])
    return to_uint8(images).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def calibrate_latent_scale(generator, real: np.ndarray, grid=LATENT_SCALE_GRID, n: int = CALIBRATION_IMAGES,
                           seed: int = CALIBRATION_SEED, progress=None, criterion: str = "kid",
                           scorer=None) -> LatentScaleCalibration:
    """Sample `n` images at each scale of `grid` (the same latents, scaled) from `generator` (a
    cxr_runtime.Generator), quantised to 8 bits as a written set is, score them against `real`
    ((N, S, S) in [-1, 1], the training images) and choose by `criterion` (module docstring).
    progress(scale, kid, diversity or None) after each scale."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, not {criterion!r}")
    real = np.asarray(real)
    if len(real) < MIN_REAL:
        raise TooFewImagesError(f"latent scale calibration needs at least {MIN_REAL} real images, got {len(real)}")
    grid = [check_latent_scale(g, "grid scale") for g in grid]
    if not grid or n < 2:
        raise ValueError("calibration needs a grid and at least two images per scale")
    z = latents(0, n, generator.latent_dim, seed)
    real_raw = features(real)
    kids, ses, divs = [], [], []
    div_real = diversity(real, scorer) if criterion == "diversity" else None
    for scale in grid:
        images = images_at_scale(generator, z, scale)
        real_f, fake_f = standardise(real_raw, features(images))
        mean, se = kid(real_f, fake_f)
        kids.append(mean)
        ses.append(se)
        if div_real is not None:
            divs.append(diversity(images, scorer))
        if progress:
            progress(scale, mean, divs[-1] if divs else None)
    if criterion == "kid":
        best = int(np.argmin(kids))
    else:
        gaps = [d - div_real for d in divs]
        within = [i for i, gap in enumerate(gaps) if gap <= DIVERSITY_TOLERANCE]
        best = min(within, key=lambda i: grid[i]) if within else int(np.argmin(np.abs(gaps)))
    return LatentScaleCalibration(scale=grid[best], grid=grid, kid=kids, kid_se=ses, images=n, real=len(real),
                                  seed=seed, criterion=criterion, diversity=divs or None, diversity_real=div_real)
