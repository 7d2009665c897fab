"""Sample sets at cluster scale on Ray Data, byte-identical to a local `sample`.

`sample(model, out, n, seed=0, fmt="png", workers=2, address=None)` (extra `ray`:
`pip install 'cxr-gan[ray]'`; the rest of the runtime never imports Ray):

1. The index range 0 .. n-1 is cut into shards of `shard_size` images. A Ray Data dataset
   holds one row per shard still to do, `{start, end}`, one row per block.
2. `map_batches` hands the rows to a pool of `workers` actors of `ShardWriter`, a callable
   class that opens the model's onnxruntime session once per actor (`num_gpus=1` per actor
   on CUDA) and writes its shard with the local sampler's own writer (`sampling.SetWriter`)
   into `out`, a folder every node can reach (shared storage). When a shard's files are all
   in place it records `.shards/<start>-<end>.done`.
3. The driver writes `manifest.json` last, as the local sampler does.

Byte-identical to a local run: an image is a function of (model, seed, index) and every
file is written atomically by the same code, so the same seed, n and model give the same
bytes per file for any number of workers and any shard size (png, npy and dicom).
Fault tolerance: an actor whose process dies is restarted by Ray Data's actor pool and its
shard retried (Ray Data's defaults for actor pools: unlimited restarts and task retries for
system failures; an exception raised by our own code fails the job at once, with its
message, instead of looping); a driver that dies leaves the done markers, and
running the same call again skips the finished shards; temporary files of killed workers are
removed before the set is declared complete. A folder a local `sample` left unfinished can be
finished here and vice versa (same marker).
Parquet (`fmt="parquet"`, Ray only): one file per shard, `part-<start>-<end>.parquet`, one row
per image: index, seed, model_sha256, png (the bytes of the PNG the png format writes); the
manifest is `_manifest.json` (readers of a Parquet folder skip names starting with _ or .), so
the folder opens as one data set with `ray.data.read_parquet`, pyarrow or Spark.
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
from pathlib import Path

import numpy as np

from cxr_runtime.errors import CxrError, DistributedError, ModelError, RayUnavailable
from cxr_runtime.io import atomic_path, atomic_write_json
from cxr_runtime.sampling import (
    EXTENSIONS,
    MANIFEST,
    MARKER,
    SHARDS,
    SampleResult,
    SetWriter,
    check_folder,
    manifest_fields,
    open_set,
    remove_leftovers,
    set_identity,
)

FORMATS = ("png", "npy", "dicom", "parquet")
PARQUET_MANIFEST = "_manifest.json"
MAX_SHARD = 1024  # images per shard at most: a few seconds of work on a GPU, about ten on 2 CPU cores

__all__ = ["FORMATS", "DistributedError", "RayUnavailable", "ShardWriter", "plan_shards", "sample"]


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailable("--engine ray needs Ray Data: pip install 'cxr-gan[ray]'") from None
    return ray


def gpus_per_worker(device: str, cluster_resources: dict) -> int:
    """The rule for GPUs on Ray: cuda reserves one GPU per worker (Ray then narrows each actor's
    CUDA_VISIBLE_DEVICES to its own); auto does the same when the cluster has a GPU, else none;
    cpu none."""
    if device == "cuda":
        return 1
    if device == "auto":
        return 1 if cluster_resources.get("GPU", 0) >= 1 else 0
    return 0


def default_shard_size(n: int, workers: int) -> int:
    """About four shards per worker (load balance, cheap retries), at most MAX_SHARD images."""
    return max(1, min(MAX_SHARD, math.ceil(n / (4 * max(1, workers)))))


def plan_shards(n: int, shard_size: int, done: list[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """[start, end) ranges covering the indices 0 .. n-1 not inside a `done` range, each at
    most shard_size long."""
    covered = np.zeros(n, bool)
    for a, b in done:
        covered[max(0, a) : min(n, b)] = True
    shards, i = [], 0
    while i < n:
        if covered[i]:
            i += 1
            continue
        j = i
        while j < n and not covered[j] and j - i < shard_size:
            j += 1
        shards.append((i, j))
        i = j
    return shards


def _done_marker(out: Path, start: int, end: int) -> Path:
    return out / SHARDS / f"{start:012d}-{end:012d}.done"


def _done_ranges(out: Path) -> list[tuple[int, int]]:
    ranges = []
    for p in (out / SHARDS).glob("*.done"):
        try:
            a, b = p.stem.split("-")
            ranges.append((int(a), int(b)))
        except ValueError:
            continue
    return ranges


def _part_name(start: int, end: int) -> str:
    return f"part-{start:012d}-{end:012d}.parquet"


class ShardWriter:
    """A Ray Data callable class: opens the generator once per actor, then writes whole shards.

    Each call gets a batch of shard rows ({"start": [...], "end": [...]}) and returns one row
    per shard: its range, the seconds it took, the node and the provider that wrote it.
    """

    def __init__(self, model: str, expected_sha256: str, out: str, n: int, seed: int, fmt: str,
                 batch_size: int | None, threads: int | None, device: str, latent_scale: float | None = None,
                 label: str | None = None):
        from cxr_runtime.generator import Generator

        self.gen = Generator(model, device=device, threads=threads, latent_scale=latent_scale)
        if self.gen.sha256 != expected_sha256:
            raise ModelError(f"the model at {model} on {socket.gethostname()} is not the driver's "
                             f"({self.gen.sha256[:12]} vs {expected_sha256[:12]}): put it on shared storage")
        self.out, self.n, self.seed, self.fmt, self.batch_size = Path(out), n, seed, fmt, batch_size
        self.label = label
        exported = self.gen.metadata.get("exported", "")
        self.writer = None if fmt == "parquet" else SetWriter(out, n, seed, fmt, expected_sha256, exported, label or "")
        self.node, self.gpu_ids = socket.gethostname(), []
        try:
            import ray

            self.node = f"{self.node}/{ray.get_runtime_context().get_node_id()[:12]}"
            self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]  # what Ray reserved for this actor
        except Exception:  # outside Ray (tests call the class directly)
            pass

    def _shard(self, start: int, end: int) -> None:
        if self.fmt == "parquet":
            self._parquet(start, end)
            return
        for i, images in self.gen.batches(end, seed=self.seed, batch_size=self.batch_size, start=start,
                                          raw=self.writer.raw, label=self.label):
            for k, image in enumerate(images):
                self.writer.write(i + k, image)

    def _parquet(self, start: int, end: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from cxr_runtime.images import encode_png

        pngs = [encode_png(image) for _, images in
                self.gen.batches(end, seed=self.seed, batch_size=self.batch_size, start=start, label=self.label)
                for image in images]
        columns = {
            "index": pa.array(np.arange(start, end, dtype=np.int64)),
            "seed": pa.array(np.full(end - start, self.seed, dtype=np.int64)),
            "model_sha256": pa.array([self.gen.sha256] * (end - start), pa.string()),
            "png": pa.array(pngs, pa.binary()),
        }
        if self.label is not None:
            columns["class"] = pa.array([self.label] * (end - start), pa.string())
        table = pa.table(columns)
        with atomic_path(self.out / _part_name(start, end), suffix=".parquet") as tmp:
            pq.write_table(table, tmp)

    def __call__(self, batch: dict) -> dict:
        starts, ends, seconds = [], [], []
        for start, end in zip(batch["start"], batch["end"]):
            start, end = int(start), int(end)
            t0 = time.perf_counter()
            self._shard(start, end)
            atomic_write_json(_done_marker(self.out, start, end), {"node": self.node})
            starts.append(start)
            ends.append(end)
            seconds.append(time.perf_counter() - t0)
        k = len(starts)
        return {"start": np.array(starts, np.int64), "end": np.array(ends, np.int64),
                "seconds": np.array(seconds, np.float64), "node": np.array([self.node] * k, object),
                "provider": np.array([self.gen.provider] * k, object),
                "gpu_ids": np.array([",".join(self.gpu_ids)] * k, object)}


_RAY_ERRORS = ("UserCodeException", "RayTaskError", "RayActorError", "ActorDiedError", "RaySystemError")


def _worker_error(e: BaseException) -> str:
    """The worker's own exception, as 'Type: message'. Ray Data re-raises it wrapped
    (RayTaskError around UserCodeException) with only the worker's traceback text inside, so
    the first 'Name: message' line of that text that is not one of Ray's wrappers is it."""
    pattern = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Interrupt)): (.+)$")
    for line in str(e).splitlines():
        m = pattern.match(line.strip())
        if m and not m.group(1).startswith(_RAY_ERRORS):
            return f"{m.group(1)}: {m.group(2)}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def sample(model: str | os.PathLike, out: str | os.PathLike, n: int, seed: int = 0, fmt: str = "png",
           workers: int = 2, shard_size: int | None = None, address: str | None = None, device: str = "cpu",
           cpus_per_worker: float = 1, batch_size: int | None = None, progress=None, on_resume=None,
           writer_cls=ShardWriter, latent_scale: float | None = None, label=None) -> SampleResult:
    """Write images 0 .. n-1 of `model` for `seed` into `out` with `workers` Ray actors.

    address: None starts a local Ray instance for the call (and stops it after); "auto" or
    "ray://host:10001" joins an existing cluster (a Ray already initialised in this process is
    used as it is). device: cpu; cuda (Ray reserves one GPU per actor and narrows its
    CUDA_VISIBLE_DEVICES to it); auto (the same when the cluster has GPUs, else cpu); a GPU
    number (cuda:N) is refused. latent_scale: as Generator's (None: the model's own). label: the
    class (name or index) of every image, for a labelled model (required there): the same files
    as the local engine's set of that class.
    progress(done, n) after each
    shard; on_resume(done, n) once when the folder already holds `done` images of the set. Returns sampling.SampleResult. Raises RayUnavailable, SampleSetError,
    ModelError, DistributedError (one line each).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if n < 1 or workers < 1:
        raise ValueError("n and workers must be >= 1")
    ray = _ray()
    from cxr_runtime.generator import Generator

    name, _, ordinal = device.partition(":")
    if name not in ("auto", "cpu", "cuda") or ordinal:
        raise DistributedError(f"device {device!r}: with Ray each worker is given its GPU by Ray (it narrows "
                               "CUDA_VISIBLE_DEVICES to it), so a GPU number cannot be chosen; use cuda (one GPU per "
                               "worker), auto (a GPU per worker when the cluster has GPUs) or cpu")
    model = str(Path(model).resolve())
    local = Generator(model, device="cpu", threads=1, latent_scale=latent_scale)  # a bad model fails here, first
    if label is not None or local.classes:
        local._labels(label, 0)  # a missing or unknown class fails here, before the folder is touched
        label = local.classes[local.class_index(label)]
    ext = "parquet" if fmt == "parquet" else EXTENSIONS[fmt]
    if fmt == "dicom":
        from cxr_runtime import dicom

        dicom.check_available()  # DICOM without pydicom fails here, on the driver
    out = check_folder(out).resolve()
    identity = set_identity(local, seed, n, fmt, label)
    manifest_name = PARQUET_MANIFEST if fmt == "parquet" else MANIFEST
    complete, _ = open_set(out, identity, ext, manifest_name)
    if complete:
        return SampleResult(out, n, 0, n, 0.0, "")
    shard_size = shard_size or default_shard_size(n, workers)
    done_before = _done_ranges(out)
    shards = plan_shards(n, shard_size, done_before)
    already = n - sum(b - a for a, b in shards)
    if on_resume and already:
        on_resume(already, n)
    if progress and already:
        progress(already, n)

    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": max(1, int(math.ceil(workers * cpus_per_worker)))}
        try:
            ray.init(**kwargs, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except Exception as e:  # cannot reach the cluster, bad address
            raise DistributedError(f"cannot start or join Ray ({address or 'local'}): {str(e).splitlines()[0]}") \
                from None
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = False  # our own progress; restored below
    t0 = time.perf_counter()
    nodes, providers, gpu_ids, shard_seconds, gpus = set(), set(), set(), [], 0
    done = already
    try:
        if shards:
            ds = ray.data.from_items([{"start": a, "end": b} for a, b in shards], override_num_blocks=len(shards))
            gpus = gpus_per_worker(device, ray.cluster_resources())
            results = ds.map_batches(
                writer_cls, batch_size=1, concurrency=min(workers, len(shards)), num_cpus=cpus_per_worker,
                num_gpus=gpus, fn_constructor_kwargs={
                    "model": model, "expected_sha256": local.sha256, "out": str(out), "n": n, "seed": seed,
                    "fmt": fmt, "batch_size": batch_size, "threads": max(1, int(cpus_per_worker)),
                    "device": device if gpus else "cpu", "latent_scale": local.latent_scale, "label": label})
            for row in results.iter_rows():
                done += int(row["end"]) - int(row["start"])
                nodes.add(str(row["node"]))
                providers.add(str(row["provider"]))
                gpu_ids.update(x for x in str(row["gpu_ids"]).split(",") if x)
                shard_seconds.append(float(row["seconds"]))
                if progress:
                    progress(done, n)
    except CxrError:
        raise
    except Exception as e:  # a shard failed: Ray wraps the worker's exception, report the worker's
        raise DistributedError(f"the Ray job failed: {_worker_error(e)}"[:500]) from None
    finally:
        context.enable_progress_bars = bars
        if started_here:
            ray.shutdown()
    seconds = time.perf_counter() - t0
    missing = plan_shards(n, n, _done_ranges(out))
    if missing:
        raise DistributedError(f"shards {missing[:3]} did not finish; run the same command again to complete the set")
    leftovers = remove_leftovers(out)
    writer = SetWriter(out, n, seed, fmt, local.sha256, local.metadata.get("exported", ""),
                       label or "") if fmt == "dicom" else None
    fields = manifest_fields(n, "png" if fmt == "parquet" else fmt, seed, local, model, writer, label)
    if fmt == "parquet":
        fields.update({"format": "parquet", "files": "part-<start>-<end>.parquet, one per shard (12-digit indices)",
                       "parquet_columns": {"index": "int64", "seed": "int64", "model_sha256": "string",
                                           "png": "binary (the PNG file the png format writes)",
                                           **({"class": "string"} if label is not None else {})}})
    atomic_write_json(out / manifest_name, {
        **fields,
        "engine": "ray",
        "ray": {"workers": workers, "shard_size": shard_size, "shards": len(shards) + len(done_before),
                "address": address or "local", "nodes": sorted(nodes), "cpus_per_worker": cpus_per_worker,
                "gpus_per_worker": gpus, "gpu_ids": sorted(gpu_ids),
                "shard_seconds_median": float(np.median(shard_seconds)) if shard_seconds else None,
                "temporary_files_removed": leftovers},
        "batch_size": batch_size,
        "device": device,
        "providers": sorted(providers),  # every provider a worker ran on (a list, empty when nothing was left)
        "seconds": round(seconds, 3),
    })
    (out / MARKER).unlink(missing_ok=True)
    return SampleResult(out, n, n - already, already, seconds, ",".join(sorted(providers)))

