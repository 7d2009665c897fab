"""The real-image input pipeline: one element per training step and replica.

What a step sees is a function of (seed, global step) only, so a resumed run, a run
under a distribution strategy and a run that streams from disk all train on the same
batches as an uninterrupted single-device run:
- the step's B distinct image indices are the top-B of i.i.d. stateless uniform keys
  seeded by (seed, 3 * step); its progressive-resizing stage follows from the step;
- replica r of R takes rows [r B/R, (r+1) B/R) of that global batch (B % R == 0);
- the rows come from a `RealSource`: `MemorySource` holds every stage of the set in
  memory (small sets, the 138-image case), `DiskSource` reads rows from a memory-mapped
  float32 file and shrinks them to the stage on the fly (100,000 images need 6.5 GB of
  disk and a few MB of memory).
`tf.data` draws the indices, reads the rows in a worker thread and prefetches, so the
step never waits on the input. Latents are not part of the pipeline: the step draws them
in-graph from the same (seed, step) key (gan.py).
"""

from __future__ import annotations

import numpy as np

from cxr_training.config import Config
from cxr_training.data import downscaled
from cxr_training.tfenv import import_tf

tf, keras = import_tf()

# Sets whose in-memory stages stay under this many bytes are held in memory (auto mode).
MEMORY_LIMIT_BYTES = 1 << 30
INPUT_MODES = ("auto", "memory", "stream")


def resolution_boundaries(cfg: Config) -> list[int]:
    """First global step of each progressive-resizing stage (one stage if disabled)."""
    if not cfg.progressive:
        return [0]
    return [int(round(frac * cfg.total_steps)) for frac, _ in cfg.progressive_schedule]


def stage_factors(cfg: Config) -> list[int]:
    return [f for _, f in cfg.progressive_schedule] if cfg.progressive else [1]


def stage_factor(cfg: Config, step: int) -> int:
    """Downscale factor of the real images at a global step (1 = full resolution)."""
    bounds = resolution_boundaries(cfg)
    stage = max(i for i, b in enumerate(bounds) if step >= b)
    return stage_factors(cfg)[stage]


def memory_bytes(n_images: int, cfg: Config) -> int:
    """Bytes the in-memory source needs for n images (one float32 copy per stage)."""
    return n_images * cfg.image_size**2 * 4 * len(stage_factors(cfg))


def choose_mode(requested: str, n_images: int, cfg: Config) -> str:
    if requested not in INPUT_MODES:
        raise ValueError(f"input mode must be one of {INPUT_MODES}, not {requested!r}")
    if requested != "auto":
        return requested
    return "memory" if memory_bytes(n_images, cfg) <= MEMORY_LIMIT_BYTES else "stream"


class MemorySource:
    """Every stage of the real set in memory: float32 (stages, N, S, S); `labels` (N,) the class
    of each image in a labelled run."""

    def __init__(self, images: np.ndarray, cfg: Config, labels: np.ndarray | None = None):
        self.factors = stage_factors(cfg)
        self.stages = np.stack([downscaled(np.asarray(images, np.float32), f) for f in self.factors])
        self.n = self.stages.shape[1]
        self.labels = None if labels is None else np.asarray(labels, np.int32)

    def rows(self, idx: np.ndarray, stage: int) -> np.ndarray:
        return self.stages[stage][idx]


class DiskSource:
    """Full-resolution rows read from a (memory-mapped) array; stages computed per batch
    with the same per-image operation as MemorySource, so both give identical rows."""

    def __init__(self, images: np.ndarray, cfg: Config, labels: np.ndarray | None = None):
        self.factors = stage_factors(cfg)
        self.images = images  # np.memmap (N, S, S) float32, or any array
        self.n = images.shape[0]
        self.labels = None if labels is None else np.asarray(labels, np.int32)

    def rows(self, idx: np.ndarray, stage: int) -> np.ndarray:
        order = np.argsort(idx)  # read the file front to back
        block = np.empty((len(idx), *self.images.shape[1:]), np.float32)
        block[order] = self.images[idx[order]]
        return downscaled(block, self.factors[stage])


def batch_indices(seed, step, n: int, batch: int):
    """int32 (batch,) distinct indices in [0, n) for a global step (TensorFlow ops)."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64) * 3])
    return tf.math.top_k(tf.random.stateless_uniform([n], seed=key), k=batch).indices


def balanced_indices(seed, step, labels, classes: int, batch: int):
    """int32 (batch,) distinct indices for a global step of a labelled run: batch / classes of each
    class (the top keys among its images, keys as batch_indices draws them), the classes taking
    turns row by row (so each replica's rows hold every class alike)."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64) * 3])
    keys = tf.random.stateless_uniform([tf.shape(labels)[0]], seed=key)
    per = batch // classes
    blocks = [tf.math.top_k(tf.where(tf.equal(labels, c), keys, -1.0), k=per).indices for c in range(classes)]
    return tf.reshape(tf.transpose(tf.stack(blocks)), [-1])


def step_latents(seed, step, stream: int, batch: int, dim: int):
    """float32 (batch, dim) standard normal latents for a global step; stream 1 feeds
    D's step, stream 2 G's step. (The runtime's generator.latents numbers images instead.)"""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64) * 3 + stream])
    return tf.random.stateless_normal([batch, dim], seed=key)


def replica_rows(replica, replicas: int, batch: int):
    """(start, size) of a replica's rows in the global batch."""
    per = batch // replicas
    return replica * per, per


def dataset(source, cfg: Config, start_step: int, end_step: int, local_replicas: int = 1, first_replica: int = 0,
            replicas: int = 1):
    """tf.data.Dataset of (step, real rows) for steps [start_step, end_step): for each step,
    one element per local replica (first_replica, first_replica + 1, ...), in that order,
    each holding the replica's B / replicas rows as float32 (rows, S, S, 1); a labelled run
    (cfg.classes, source.labels) gets (step, real rows, their classes) with every class alike."""
    if cfg.batch_size % replicas:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {replicas} replicas")
    bounds = tf.constant(resolution_boundaries(cfg), tf.int64)
    n, b, s = source.n, cfg.batch_size, cfg.image_size
    per = b // replicas

    labelled = getattr(source, "labels", None) is not None and cfg.n_classes
    if labelled:
        counts = np.bincount(source.labels, minlength=cfg.n_classes)
        if counts.min() < b // cfg.n_classes:
            raise ValueError(f"every class needs at least batch size / classes = {b // cfg.n_classes} images; "
                             f"the classes hold {dict(zip(cfg.classes, counts.tolist()))}")
        all_labels = tf.constant(source.labels, tf.int32)

    def plan(step):
        if labelled:
            idx = balanced_indices(cfg.seed, step, all_labels, cfg.n_classes, b)
        else:
            idx = batch_indices(cfg.seed, step, n, b)
        stage = tf.reduce_sum(tf.cast(step >= bounds, tf.int32)) - 1
        return step, idx, stage

    def split(step, idx, stage):
        k = tf.range(first_replica, first_replica + local_replicas)
        return tf.data.Dataset.from_tensor_slices(k).map(lambda r: (step, idx[r * per : (r + 1) * per], stage))

    def read(idx, stage):
        return source.rows(idx, int(stage))[..., None].astype(np.float32, copy=False)

    def load(step, idx, stage):
        real = tf.numpy_function(read, [idx, stage], tf.float32, stateful=False)
        real.set_shape([per, s, s, 1])
        if labelled:
            return step, real, tf.gather(all_labels, idx)
        return step, real

    ds = tf.data.Dataset.range(start_step, end_step).map(plan)
    if local_replicas > 1 or replicas > 1:
        ds = ds.flat_map(split)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(2 * max(1, local_replicas))
