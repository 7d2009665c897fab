"""Training data: the real images, read by cxr_runtime's rules; the progressive-resizing downscale."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# the layout rule of labelled data is the runtime's: training and scoring read class folders alike
from cxr_runtime.images import MAX_CLASSES, ImageSet, class_layout, load_folder  # noqa: F401
from cxr_training.config import Config

DATA_ENV = "CXR_DATA"
CACHE_ENV = "CXR_CACHE_DIR"


def default_cache_dir() -> Path | None:
    """Where preprocessed arrays are cached: $CXR_CACHE_DIR ('off' disables), else
    $XDG_CACHE_HOME/cxr-gan/images, else ~/.cache/cxr-gan/images."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cxr-gan" / "images"


def load_training_images(data_dir: str | os.PathLike, cfg: Config, into: str | os.PathLike | None = None,
                         progress=None, cache: bool = True) -> ImageSet:
    """The training set, in memory or (with `into`) streamed into a memory-mapped file;
    cache=False neither reads nor fills the preprocessing cache (a dry run writes nothing)."""
    return load_folder(data_dir, size=cfg.image_size, resize=cfg.resize,
                       cache_dir=default_cache_dir() if cache else None, into=into, progress=progress)


def stream_store_dir() -> Path:
    """Where a streamed training set's float32 file lives while a run uses it: next to the
    per-image cache, or the system's temporary folder when caching is off."""
    cache = default_cache_dir()
    if cache is None:
        import tempfile

        return Path(tempfile.gettempdir())
    return cache.parent / "stream"


def downscaled(images: np.ndarray, factor: int) -> np.ndarray:
    """Shrink (N, S, S) images by `factor` (area) and bring them back to S x S (bilinear)."""
    if factor == 1:
        return images.copy()
    n, s, _ = images.shape
    small = s // factor
    out = np.empty_like(images)
    for i in range(n):
        low = cv2.resize(images[i], (small, small), interpolation=cv2.INTER_AREA)
        out[i] = cv2.resize(low, (s, s), interpolation=cv2.INTER_LINEAR)
    return out



def labels_of(files: list[str], classes: tuple[str, ...]) -> np.ndarray:
    """int32 class index of each file (paths relative to the data folder: CLASS/...)."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(files), np.int32)
    for i, f in enumerate(files):
        top = Path(f).parts[0]
        if top not in index:
            raise ValueError(f"{f} is not under one of the class folders {', '.join(classes)}")
        out[i] = index[top]
    return out
