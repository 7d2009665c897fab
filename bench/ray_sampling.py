"""`make bench-ray`: sampling throughput of the local engine against Ray with 1 and 2 workers.

On this machine, in one run, with the same model and the same N images (PNG files, written
to a fresh folder each time):
(a) local `sample_to_folder`, onnxruntime with every usable core (what `cxr-runtime sample` does);
(b) local with 1 thread: what one Ray worker (one CPU) runs per image;
(c) Ray, 1 worker, 1 CPU per worker;   (d) Ray, 2 workers, 1 CPU each.
Ray is started once before (c) and its start-up is timed on its own; (c) and (d) include
starting the actors (each opens the model once). From these:
- scaling: (d) / (c) in images/s, whole calls, and the same from the shards' own times
  (steady state, start-up excluded);
- start-up of a call: (c)'s wall time minus its shards' time (actor start, model load);
  overhead per shard inside a running actor: (c)'s median shard time minus what (b) takes
  for as many images;
- a paper calculation for 1,000,000 images on 8 and 64 nodes like this one (each running
  as many 1-CPU workers as it has cores, at (d)'s measured per-worker rate while both workers
  run), shards of 1024, plus Ray's and the call's start-up. Writes bench/ray.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "artifacts" / "generator.onnx"))
    ap.add_argument("--n", type=int, default=512, help="images per measurement")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "bench" / "ray.json"))
    args = ap.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"no model at {args.model}: run `make train export` first or pass --model")

    import ray

    from cxr_runtime import Generator, ray_sampling, sampling
    from cxr_runtime.session import usable_cores

    cores = usable_cores()
    scratch = Path(tempfile.mkdtemp(prefix="cxr-bench-ray-"))
    rows = {}

    def local(threads):
        gen = Generator(args.model, device="cpu", threads=threads)
        out = scratch / f"local-{threads}"
        t0 = time.perf_counter()
        sampling.sample_to_folder(gen, out, args.n, seed=0)
        return time.perf_counter() - t0

    try:
        rows["local_all_cores"] = {"threads": cores, "seconds": local(cores)}
        rows["local_1_thread"] = {"threads": 1, "seconds": local(1)}
        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_start = time.perf_counter() - t0
        for workers in (1, 2):
            out = scratch / f"ray-{workers}"
            t0 = time.perf_counter()
            ray_sampling.sample(args.model, out, args.n, seed=0, workers=workers, shard_size=args.shard_size)
            wall = time.perf_counter() - t0
            manifest = json.loads((out / "manifest.json").read_text())
            rows[f"ray_{workers}_workers"] = {"workers": workers, "seconds": wall,
                                              "shards": manifest["ray"]["shards"],
                                              "shard_seconds_median": manifest["ray"]["shard_seconds_median"]}
            same = all((out / p.name).read_bytes() == p.read_bytes() for p in (scratch / "local-1").glob("sample-*"))
            rows[f"ray_{workers}_workers"]["byte_identical_to_local"] = same
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    for r in rows.values():
        r["images_per_s"] = args.n / r["seconds"]
    one, two = rows["ray_1_workers"], rows["ray_2_workers"]
    startup = one["seconds"] - one["shards"] * one["shard_seconds_median"]
    per_shard = one["shard_seconds_median"] - args.shard_size / rows["local_1_thread"]["images_per_s"]
    worker_rate = args.shard_size / two["shard_seconds_median"]  # per worker, with every core busy
    scaling = two["images_per_s"] / one["images_per_s"]
    steady_scaling = 2 * one["shard_seconds_median"] / two["shard_seconds_median"]
    paper = {}
    for nodes in (8, 64):
        workers = nodes * cores
        shard = ray_sampling.MAX_SHARD
        rounds = math.ceil(math.ceil(1_000_000 / shard) / workers)
        seconds = ray_start + startup + rounds * (shard / worker_rate + max(per_shard, 0.0))
        paper[f"{nodes}_nodes"] = {"workers": workers, "shard_size": shard, "hours": seconds / 3600,
                                   "images_per_s": 1_000_000 / seconds}
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_name(), "usable_cores": cores,
        "model": args.model, "n": args.n, "shard_size": args.shard_size, "ray_start_seconds": ray_start,
        "rows": rows, "scaling_2_over_1_workers": scaling, "steady_scaling_2_over_1_workers": steady_scaling,
        "call_startup_seconds": startup, "overhead_per_shard_seconds": per_shard,
        "worker_images_per_s_all_cores_busy": worker_rate,
        "one_million_images": paper, "ray": ray.__version__, "python": platform.python_version(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{cpu_name()}, {cores} usable cores; {args.n} PNG images per row, shards of {args.shard_size}")
    print(f"{'engine':<28}{'seconds':>9}{'images/s':>10}")
    for name, r in rows.items():
        print(f"{name:<28}{r['seconds']:>9.1f}{r['images_per_s']:>10.1f}"
              + (f"   byte-identical: {r['byte_identical_to_local']}" if "byte_identical_to_local" in r else ""))
    print(f"Ray start-up {ray_start:.1f} s; a call's start-up (actors, model) {startup:.1f} s; overhead per shard "
          f"{per_shard:.2f} s; 2 workers / 1 worker: {scaling:.2f}x whole calls, {steady_scaling:.2f}x in the shards")
    for k, v in paper.items():
        print(f"1,000,000 images on {k.replace('_', ' ')} ({v['workers']} workers): about {v['hours']:.2f} h "
              f"({v['images_per_s']:.0f} images/s)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    main()
