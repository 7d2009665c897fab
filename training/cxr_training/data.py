"""Training data: the real images, read by cxr_runtime's rules (in memory, or streamed into a
file that lives as long as the run); the held-out images; the progressive-resizing downscale."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from cxr_runtime import quality

# the layout rule of labelled data is the runtime's: training and scoring read class folders alike
from cxr_runtime.images import (  # noqa: F401
    MAX_CLASSES,
    ImageSet,
    NoImagesError,
    class_layout,
    find_images,
    load_folder,
)
from cxr_training.config import Config
from cxr_training.errors import TrainingError

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


def with_data_classes(cfg: Config, data_dir, labels: str = "auto") -> Config:
    """cfg told the classes of a data folder with one subfolder per class (labels auto:
    class_layout) and checked with them; cfg itself for a folder of images or labels off."""
    if labels not in ("auto", "off"):
        raise TrainingError(f"labels must be auto or off, not {labels!r}")
    classes = class_layout(data_dir) if labels == "auto" else ()
    if not classes:
        return cfg
    cfg = cfg.replace(classes=classes)
    try:
        cfg.validate()
    except ValueError as e:
        raise TrainingError(f"{data_dir} holds the classes {', '.join(classes)}: {e}") from None
    return cfg


# --------------------------------------------------------------------------- what a run trains on


def load_images_or_fail(data_dir, cfg: Config, log, input_mode: str = "auto"):
    """(images, mode, store): the usable images, "memory" or "stream", and the stream file
    (None in memory mode; the caller removes it with remove_stream_file)."""
    from cxr_training.pipeline import choose_mode  # TensorFlow's; pipeline imports this module

    root = Path(data_dir)
    candidates = len(find_images(root)) if root.is_dir() else 0
    try:
        mode = choose_mode(input_mode, candidates, cfg)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    store = new_stream_file(candidates, cfg, log) if mode == "stream" else None
    every = max(1, candidates // 10)

    def progress(done: int, total: int) -> None:  # a line per 10 % on sets worth waiting for
        if total >= 2000 and (done % every == 0 or done == total):
            log(f"  read {done}/{total} image files")

    try:
        images = load_training_images(data_dir, cfg, into=store, progress=progress)
    except NoImagesError as e:
        remove_stream_file(store)
        raise TrainingError(str(e)) from None
    except BaseException:
        remove_stream_file(store)
        raise
    warning = images.skipped_warning()
    if warning:
        log(warning)
    if len(images.files) < max(2, cfg.batch_size):
        remove_stream_file(store)
        raise TrainingError(
            f"{len(images.files)} usable images under {data_dir}: need at least max(2, batch size {cfg.batch_size})"
        )
    return images, mode, store


def new_stream_file(candidates: int, cfg: Config, log) -> Path:
    """An empty stream file in stream_store_dir(), named by this process's pid (so files left
    by killed runs are recognised and removed first). The run removes it when it closes."""
    folder = stream_store_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for old in _orphaned_stream_files(folder):
        log(f"removing {old.name}, left by a run that was killed")
        remove_stream_file(old)
    fd, name = tempfile.mkstemp(prefix=f"cxr-stream-{os.getpid()}-", suffix=".f32", dir=folder)
    os.close(fd)
    store = Path(name)
    log(f"streaming the training set from {store} ({candidates} candidate files; "
        f"about {candidates * cfg.image_size ** 2 * 4 / 1e9:.2f} GB of disk)")
    return store


def remove_stream_file(path: Path | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)


def _orphaned_stream_files(folder: Path) -> list[Path]:
    """Stream files whose process (the pid in the name) no longer runs on this host."""
    found = []
    for p in folder.glob("cxr-stream-*-*.f32"):
        try:
            pid = int(p.name.split("-")[2])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            found.append(p)
        except PermissionError:  # alive, another user's
            continue
    return found


def load_heldout(heldout_dir, cfg: Config, log):
    """The held-out images for the quality monitor, read by the training set's rules; None
    when no folder is given or the monitor is off (quality_images 0). A labelled run's held-out
    folder has the same class subfolders."""
    if heldout_dir is None:
        return None
    if not cfg.quality_images:
        log("quality_images is 0: the held-out folder is not scored")
        return None
    if cfg.classes and class_layout(heldout_dir) != cfg.classes:
        raise TrainingError(f"--heldout {heldout_dir}: a labelled run needs held-out images in the same class "
                            f"subfolders ({', '.join(cfg.classes)}); found {list(class_layout(heldout_dir)) or 'none'}")
    try:
        held = load_folder(heldout_dir, size=cfg.image_size, resize=cfg.resize)
    except NoImagesError as e:
        raise TrainingError(f"--heldout: {e}") from None
    warning = held.skipped_warning()
    if warning:
        log(warning)
    if len(held.files) <= quality.K_NEIGHBOURS:
        raise TrainingError(f"--heldout {heldout_dir}: {len(held.files)} usable images; the quality metrics need "
                            f"more than {quality.K_NEIGHBOURS}")
    return held


def heldout_record(heldout, heldout_dir, images) -> dict | None:
    """What config.json records of the held-out images (root, count, sha256); None without
    them. Refuses held-out images that are also training images."""
    if heldout is None:
        return None
    overlap = set(heldout.sha256) & set(images.sha256)
    if overlap:
        raise TrainingError(f"--heldout {heldout_dir} shares {len(overlap)} image(s) with the training data: "
                            "held-out images must never be trained on")
    fp = heldout.fingerprint()
    return {"root": fp["root"], "count": fp["count"], "sha256": fp["sha256"]}


VALIDATION_SEED_OFFSET = 7_919  # keeps the split's draw apart from every other use of the seed


def split_validation(images: ImageSet, cfg: Config, mode: str) -> tuple[ImageSet, ImageSet, np.ndarray]:
    """(trained, withheld, probe): ADA's validation split (ada_signal "validation").
    `cfg.ada_validation` images, drawn from the seed, are taken out of the training set (D never
    trains on them); `probe` is as many of the images it trains on, also drawn from the seed,
    against which the controller compares D's verdict on the withheld ones. A function of the
    seed and the file list only, so a resumed run withholds the same images. Needs the images
    in memory, and at least twice as many left as withheld, and a batch."""
    k, n = cfg.ada_validation, len(images.files)
    if mode != "memory":
        raise TrainingError("ada_signal validation needs the training images in memory (--input memory); "
                            "this set is streamed")
    left = n - k
    if left < max(2 * k, cfg.batch_size):
        raise TrainingError(f"ada_validation {k}: {n} training images leave {left} to train on; need at least "
                            f"max(2 x {k}, batch size {cfg.batch_size})")
    order = np.random.default_rng([cfg.seed, VALIDATION_SEED_OFFSET]).permutation(n)
    held = np.sort(order[:k])
    keep = np.setdiff1d(np.arange(n), held)

    def subset(rows) -> ImageSet:
        return ImageSet(root=images.root, images=np.ascontiguousarray(images.images[rows]),
                        files=[images.files[i] for i in rows], sha256=[images.sha256[i] for i in rows],
                        skipped=list(images.skipped), duplicates=list(images.duplicates))

    probe = np.searchsorted(keep, np.sort(order[k : 2 * k]))  # rows of the trained set
    trained = subset(keep)
    return trained, subset(held), np.ascontiguousarray(trained.images[probe])
