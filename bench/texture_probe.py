"""What the texture test answers to: fixed image operations applied to generated and real images.

A judge that a fixed filter could fool would say little about a generator. This probe applies
simple, hand-set operations to a folder of generated images and to the training images and
scores each result with bench/texture_features.py's analysis against the held-out images:
- `grain S`: white Gaussian noise of S grey levels (0-255 scale) added, then rounded to 8 bits, as
  a PNG would store it (the spectrum's corners are where generated images lack power);
- `unsharp A,S`: x + A * (x - blur_S(x)), clipped to the image range (sharper fine detail);
- `blur S` (on the real training images): a Gaussian blur of S px, how much softening the test
  notices in images it otherwise calls real;
- `gen-blur S`: the same Gaussian blur on the generated images (is their pixel-level texture what
  sets them apart, and would a softer output pass?);
- `contrast A`: each image's deviation from its own mean times A, clipped and rounded to 8 bits
  (do the samples lack contrast at every scale?);
- `bilateral S,R` and `nlmeans H` (on the generated images and, to see the filter's own trace, on
  the training images): edge-preserving smoothing that flattens low-contrast texture and keeps
  strong edges: a bilateral filter of spatial sigma S px and range sigma R grey levels, or OpenCV's
  non-local means of strength H on the 8-bit image. They ask whether the samples' fault is texture
  where real radiographs are smooth (then these move the samples toward real) or something else.

    .venv/bin/python bench/texture_probe.py --heldout DIR --train DIR --samples DIR
        [--grain 1,2,3] [--unsharp 0.3,0.7 0.6,1] [--blur 0.3,0.4,0.5] [--bilateral 1,2 1,4]
        [--nlmeans 2,4] [--contrast 1.1,1.2] [--gen-blur 0.4,0.6] [--n 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from texture_features import report  # noqa: E402

from cxr_runtime.images import load_folder  # noqa: E402


def grain(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """White noise of `sigma` grey levels on [-1, 1] images, then 8-bit rounding."""
    rng = np.random.default_rng(seed)
    grey = (images.astype(np.float64) + 1.0) * 127.5 + rng.normal(0.0, sigma, images.shape)
    return (np.clip(np.round(grey), 0, 255) / 127.5 - 1.0).astype(np.float32)


def unsharp(images: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    out = [np.clip(x + amount * (x - cv2.GaussianBlur(x, (0, 0), sigma)), -1.0, 1.0) for x in images]
    return np.asarray(out, dtype=np.float32)


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray([cv2.GaussianBlur(x, (0, 0), sigma) for x in images], dtype=np.float32)


def bilateral(images: np.ndarray, sigma_space: float, sigma_range: float) -> np.ndarray:
    """cv2.bilateralFilter on [-1, 1] images; `sigma_range` in grey levels (0-255); rounded to 8 bits
    as a PNG would store it."""
    out = np.asarray([cv2.bilateralFilter(x.astype(np.float32), 0, sigma_range / 127.5, sigma_space) for x in images])
    return (np.clip(np.round((out + 1.0) * 127.5), 0, 255) / 127.5 - 1.0).astype(np.float32)


def contrast(images: np.ndarray, amount: float) -> np.ndarray:
    """Each image's deviation from its mean times `amount`, clipped to [-1, 1], rounded to 8 bits."""
    m = images.mean(axis=(1, 2), keepdims=True)
    out = np.clip(m + amount * (images - m), -1.0, 1.0)
    return (np.round((out + 1.0) * 127.5) / 127.5 - 1.0).astype(np.float32)


def nlmeans(images: np.ndarray, h: float) -> np.ndarray:
    """OpenCV's non-local means (7x7 patches, 21x21 search) on the 8-bit image, back to [-1, 1]."""
    u8 = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    out = [cv2.fastNlMeansDenoising(x, None, h, 7, 21) for x in u8]
    return (np.asarray(out, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heldout", type=Path, required=True, help="Real images never trained on.")
    ap.add_argument("--train", type=Path, required=True, help="The training images (real-vs-real row, blurred rows).")
    ap.add_argument("--samples", type=Path, required=True, help="A folder of generated images.")
    ap.add_argument("--n", type=int, default=300, help="Generated images used (the first N by name).")
    ap.add_argument("--grain", type=_floats, default=[1.0, 2.0, 3.0], help="Noise levels, grey levels (comma list).")
    ap.add_argument("--unsharp", nargs="*", default=["0.3,0.7", "0.6,1", "1,0.7"],
                    help="AMOUNT,SIGMA pairs for unsharp masking of the generated images.")
    ap.add_argument("--blur", type=_floats, default=[0.3, 0.4, 0.5], help="Blur sigmas for the training images (px).")
    ap.add_argument("--bilateral", nargs="*", default=[], help="SIGMA_SPACE,SIGMA_RANGE pairs (px, grey levels) of a "
                    "bilateral filter, on the generated and on the training images.")
    ap.add_argument("--nlmeans", type=_floats, default=[], help="Strengths of OpenCV's non-local means denoising "
                    "(comma list), on the generated and on the training images.")
    ap.add_argument("--gen-blur", type=_floats, default=[], help="Blur sigmas for the generated images (px), rounded "
                    "to 8 bits.")
    ap.add_argument("--contrast", type=_floats, default=[], help="Contrast factors on the generated images (comma list).")
    ap.add_argument("--top", type=int, default=6, help="Features shown: those that separate most.")
    ap.add_argument("--json", type=Path, help="Write the full result here.")
    a = ap.parse_args(argv)
    train = np.asarray(load_folder(a.train).images)
    gen = np.asarray(load_folder(a.samples, duplicates="keep").images[: a.n])
    sets = {"train (real)": train, "generated": gen}
    for s in a.grain:
        sets[f"generated, grain {s:g}"] = grain(gen, s)
    for spec in a.unsharp:
        amount, sigma = _floats(spec)
        sets[f"generated, unsharp {amount:g} at {sigma:g} px"] = unsharp(gen, amount, sigma)
    for s in a.blur:
        sets[f"train (real), blur {s:g} px"] = blur(train, s)
    for spec in a.bilateral:
        space, rng = _floats(spec)
        sets[f"generated, bilateral {space:g} px, {rng:g} grey"] = bilateral(gen, space, rng)
        sets[f"train (real), bilateral {space:g} px, {rng:g} grey"] = bilateral(train, space, rng)
    for s_ in a.gen_blur:
        sets[f"generated, blur {s_:g} px"] = contrast(blur(gen, s_), 1.0)
    for c in a.contrast:
        sets[f"generated, contrast x{c:g}"] = contrast(gen, c)
    for h in a.nlmeans:
        sets[f"generated, nlmeans {h:g}"] = nlmeans(gen, h)
        sets[f"train (real), nlmeans {h:g}"] = nlmeans(train, h)
    report(a.heldout, sets, a.top, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
