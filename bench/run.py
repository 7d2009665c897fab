"""`make bench`: generator throughput on this machine, every engine in one run.

Measures, on the same latents and the same machine, in one process:
- the matmul limit: a 4096 x 4096 float32 matmul in numpy and in TensorFlow;
- the Keras generator through `tf.function` and through `model.predict`;
- onnxruntime (CPU) on the plain tf2onnx graph, the optimised fp32 graph (chunked, as
  cxr-export writes it, and flat, `--chunk 0`) and the int8 graph, in sessions opened as
  cxr_runtime.Generator opens them (threads = physical cores, memory arena on);
- the runtime CLI as whole processes: `cxr-runtime --version`, `sample --n 1`, and the peak
  memory of `sample --n 500`.

Engines are timed in interleaved rounds (each engine generates one batch-64 worth of images
per round, after warm-up), so slow drifts of a shared machine hit all of them alike; each
figure is the median over rounds. Results: a table on stdout and bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def generator_flops(generator, convs_only: bool = False) -> float:
    """Floating-point operations (2 x multiply-adds) per generated image, counted from the
    Keras layers (with convs_only, the (transposed) convolutions' share alone)."""
    from cxr_training.tfenv import import_tf

    _, keras = import_tf()
    L = keras.layers
    macs = 0
    for layer in generator.layers:
        if isinstance(layer, L.Dense):
            macs += 0 if convs_only else layer.kernel.shape[0] * layer.kernel.shape[1]
        elif isinstance(layer, L.Conv2DTranspose):
            h, w, cin = layer.input.shape[1:]
            kh, kw = layer.kernel_size
            macs += h * w * cin * layer.filters * kh * kw
        elif isinstance(layer, L.Conv2D):
            h, w = layer.output.shape[1:3]
            kh, kw = layer.kernel_size
            macs += h * w * layer.input.shape[-1] * layer.filters * kh * kw
    return 2.0 * macs


def matmul_gflops(fn, n: int = 4096, rounds: int = 5) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def profile_breakdown(ort, blob: bytes, z: np.ndarray, rounds: int, conv_flops: float,
                      flat_blob: bytes | None = None) -> dict:
    """Where an ONNX generator's time goes (onnxruntime's profiler): share of kernel time per
    operator type, and the convolutions' own rate: the Keras model's convolution FLOPs per image
    (conv_flops, useful work only) over the convolution kernels' time. The graph executes a few %
    more (the zero taps of its stride-2 output convolution), reported as conv_gflops_executed,
    counted on flat_blob (the same graph without the chunk loop) when given. A Loop node's own
    time includes its body's nodes, so it is left out of the shares."""
    import json as _json

    import onnx
    from onnx import shape_inference

    from cxr_runtime.session import session_options

    model = shape_inference.infer_shapes(onnx.load_from_string(flat_blob or blob))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.output)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    conv_macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            co, ci, kh, kw = weights[node.input[1]]
            h, w = shapes[node.output[0]][2:]
            conv_macs += co * ci * kh * kw * h * w
    so = session_options(arena=True)  # as cxr_runtime.Generator opens it
    so.enable_profiling = True
    tmp = tempfile.mkdtemp(prefix="cxr-prof-")
    so.profile_file_prefix = str(Path(tmp) / "prof")
    sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    sess.run(None, {"z": z})
    sess.run(None, {"z": z})
    for _ in range(rounds):
        sess.run(None, {"z": z})
    events = _json.loads(Path(sess.end_profiling()).read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            if op != "Loop":
                per_op[op] = per_op.get(op, 0.0) + e["dur"]
    total = sum(per_op.values())
    conv_us = sum(v for k, v in per_op.items() if "Conv" in k)
    runs = rounds + 2
    return {
        "share": {k: round(v / total, 3) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])},
        "conv_share": round(conv_us / total, 3),
        "conv_gflops": round(conv_flops * len(z) * runs / (conv_us * 1e-6) / 1e9, 1) if conv_us else None,
        "conv_gflops_executed": round(2.0 * conv_macs * len(z) * runs / (conv_us * 1e-6) / 1e9, 1) if conv_us else None,
    }


def whole_process(cmd: list[str], rounds: int, fresh: Path | None = None) -> float:
    """Median wall time of a command run as a whole process; `fresh` is removed before each
    round (an output folder, so every round does the full work)."""
    times = []
    for _ in range(rounds):
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_memory_mb(cmd: list[str]) -> float:
    """Peak resident memory of a command, measured in a fresh child (RUSAGE_CHILDREN)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024.0


def main() -> None:
    from cxr_training.tfenv import configure

    configure()  # TensorFlow's environment, before anything imports it
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", help="run folder or generator.keras (default: newest finished run under runs/, "
                                     "else the paper architecture with random weights)")
    ap.add_argument("--batch", type=int, default=64, help="batch size of the engine comparison")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per engine (after warm-up)")
    ap.add_argument("--data", help="training images for the int8 gate's metric shifts (default: the gate judges "
                                   "SSIM(fp32, int8) alone)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = ap.parse_args()

    import onnxruntime as ort

    from cxr_export import optimize, quantize
    from cxr_export.export import add_metadata, convert, resolve_generator
    from cxr_runtime import DEFAULT_BATCH, DEFAULT_BATCH_CHUNKED, DEFAULT_BATCH_INT8
    from cxr_runtime.session import session_options, usable_cores
    from cxr_training.config import preset
    from cxr_training.models import build_generator
    from cxr_training.runs import library_versions
    from cxr_training.tfenv import import_tf

    tf, keras = import_tf()
    source = "random weights (paper architecture)"
    try:
        keras_path = resolve_generator(args.source, ROOT / "runs")
        from cxr_training.models import load_generator

        generator = load_generator(keras_path)
        source = str(keras_path)
    except Exception as e:
        if args.source:
            raise
        print(f"note: {e}; benchmarking the paper architecture with random weights", file=sys.stderr)
        keras.utils.set_random_seed(0)
        generator = build_generator(preset("paper"))
    flops = generator_flops(generator)
    latent = int(generator.input_shape[-1])
    z = np.random.default_rng(0).standard_normal((args.batch, latent)).astype(np.float32)

    # the matmul limit
    a = np.random.default_rng(1).standard_normal((4096, 4096)).astype(np.float32)
    ta = tf.constant(a)
    np_gflops = matmul_gflops(lambda: a @ a)
    tf_gflops = matmul_gflops(lambda: tf.linalg.matmul(ta, ta).numpy())
    limit = max(np_gflops, tf_gflops)

    # the models
    print("building the ONNX graphs (tf2onnx conversion takes about 30 s) ...", file=sys.stderr)
    plain = convert(generator).SerializeToString()
    opt_model = optimize.build_optimized(generator)  # cxr-export's default: the chunked graph
    flat_model = optimize.build_optimized(generator, chunk=0)
    # the metadata cxr-runtime requires of an exported generator (cxr-export writes the full set)
    metadata = {"cxr.format": "1", "latent_dim": str(latent), "image_size": str(int(generator.output_shape[1])),
                "channels": "1", "value_range": "-1,1", "synthetic": "true", "run_id": "bench"}
    add_metadata(opt_model, {**metadata, "precision": "float32"})
    add_metadata(flat_model, {**metadata, "precision": "float32"})
    opt, flat = opt_model.SerializeToString(), flat_model.SerializeToString()
    real = None
    if args.data:
        from cxr_runtime.images import load_folder

        real = np.asarray(load_folder(args.data).images)
    # as cxr-export quantises: all int8, else the drawn resolution's layers in float32, behind the gate
    int8_model, int8_gate, _ = quantize.quantize_gated(flat_model, latent, flat, real, seed=0)
    print(f"int8 gate: {'passed' if int8_gate['passed'] else 'FAILED'}, SSIM(fp32, int8) "
          f"{int8_gate['ssim_fp32_vs_int8_mean']:.4f}, float32: {int8_gate['float32_layers']}", file=sys.stderr)
    add_metadata(int8_model, {**metadata, "precision": "int8"})
    int8 = int8_model.SerializeToString()
    tmp = Path(tempfile.mkdtemp(prefix="cxr-bench-"))
    for name, blob in (("plain.onnx", plain), ("optimized.onnx", opt), ("int8.onnx", int8)):
        (tmp / name).write_bytes(blob)

    threads = usable_cores()
    so = session_options(arena=True)  # as cxr_runtime.Generator opens sessions
    sessions = {name: ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
                for name, blob in (("onnx_plain", plain), ("onnx_fp32_optimized", opt), ("onnx_int8", int8))}
    # the runtime's default batches (DEFAULT_BATCH_CHUNKED for cxr-export's chunked graph,
    # DEFAULT_BATCH for the flat one and, for comparison, Keras, DEFAULT_BATCH_INT8 for int8),
    # each in a session of its own: a session that keeps switching input shapes re-plans its
    # memory on every call
    small_batch = {"keras_tf_function": DEFAULT_BATCH, "onnx_fp32_optimized": DEFAULT_BATCH_CHUNKED,
                   "onnx_fp32_flat": DEFAULT_BATCH, "onnx_int8": DEFAULT_BATCH_INT8}
    small_name = {kind: f"{kind}_b{b}" for kind, b in small_batch.items()}
    small = {small_name[name]: ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
             for name, blob in (("onnx_fp32_optimized", opt), ("onnx_fp32_flat", flat), ("onnx_int8", int8))}
    small_tf = tf.function(lambda x: generator(x, training=False))
    keras_fn = tf.function(lambda x: generator(x, training=False))
    zt = tf.constant(z)
    zs = {b: z[:b] for b in small_batch.values()}
    zst = tf.constant(zs[small_batch["keras_tf_function"]])
    engines = {
        "keras_tf_function": lambda: keras_fn(zt).numpy(),
        "keras_predict": lambda: generator.predict(z, batch_size=args.batch, verbose=0),
        **{name: (lambda s=s: s.run(None, {"z": z})) for name, s in sessions.items()},
        small_name["keras_tf_function"]: lambda: small_tf(zst).numpy(),
        **{small_name[kind]: (lambda s=small[small_name[kind]], b=small_batch[kind]: s.run(None, {"z": zs[b]}))
           for kind in ("onnx_fp32_optimized", "onnx_fp32_flat", "onnx_int8")},
    }
    batch_of = {name: args.batch for name in engines}
    batch_of.update({small_name[kind]: b for kind, b in small_batch.items()})
    for fn in engines.values():  # warm-up: graph tracing, session first-run allocations
        fn()
        fn()
    # each round times every engine on the same number of images (batch-8 engines make 8 calls
    # per round), so a short call is not dominated by the previous engine's spinning threads
    times = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, fn in engines.items():
            calls = max(1, args.batch // batch_of[name])
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t) / calls)
    ips = {name: batch_of[name] / statistics.median(ts) for name, ts in times.items()}
    # where the time goes, at the runtime's default batch (4 calls of 32 fp32, 6 of 16 int8)
    conv_flops = generator_flops(generator, convs_only=True)
    breakdown = {name: profile_breakdown(ort, blob, zs[small_batch[name]], rounds, conv_flops, flat_blob=flat)
                 for name, blob, rounds in (("onnx_fp32_optimized", opt, 2), ("onnx_int8", int8, 4))}

    # the runtime as a user runs it
    cli = shutil.which("cxr-runtime", path=str(Path(sys.executable).parent)) or "cxr-runtime"
    version_s = whole_process([cli, "--version"], 5)
    sample1 = {}
    mem500 = {}
    for name in ("optimized", "int8"):
        model = str(tmp / f"{name}.onnx")
        out1, out500 = tmp / f"s1-{name}", tmp / f"s500-{name}"
        sample1[name] = whole_process([cli, "sample", "--n", "1", "--model", model, "--out", str(out1),
                                       "--device", "cpu"], 5, fresh=out1)
        mem500[name] = peak_memory_mb([cli, "sample", "--n", "500", "--model", model, "--out", str(out500),
                                       "--device", "cpu"])
    shutil.rmtree(tmp, ignore_errors=True)

    ref = ips["keras_tf_function"]
    # each engine at the better of its two batch sizes, against Keras at its better one
    best = {kind: max(ips[kind], ips[small_name[kind]]) for kind in ("keras_tf_function", "onnx_fp32_optimized",
                                                                      "onnx_int8")}
    rows = []
    for name, value in ips.items():
        rows.append({
            "engine": name, "batch": batch_of[name], "images_per_s": round(value, 2),
            "gflops": round(value * flops / 1e9, 1),
            "x_keras_tf_function": round(value / ref, 3),
            "share_of_matmul_limit": round(value * flops / 1e9 / limit, 3),
        })
    results = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
                    "usable_cores": threads, "python": platform.python_version()},
        "threads": {"onnxruntime_intra_op": threads, "onnxruntime_execution": "sequential, memory arena on",
                    "tensorflow_intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "default (all)",
                    "tensorflow_inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "default (all)",
                    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")},
        "generator": source,
        "gflop_per_image": round(flops / 1e9, 3),
        "matmul_gflops": {"numpy": round(np_gflops, 1), "tensorflow": round(tf_gflops, 1), "limit": round(limit, 1)},
        "matmul_limit_images_per_s": round(limit * 1e9 / flops, 1),
        "rounds": args.rounds,
        "engines": rows,
        "profile": breakdown,
        "best_batch_images_per_s": {k: round(v, 2) for k, v in best.items()},
        "best_batch_x_keras": {k: round(v / best["keras_tf_function"], 3) for k, v in best.items()},
        "cli": {"version_s": round(version_s, 3), "sample_n1_s": {k: round(v, 3) for k, v in sample1.items()},
                "sample_n500_peak_mb": {k: round(v, 1) for k, v in mem500.items()}},
        "model_bytes": {"plain": len(plain), "optimized": len(opt), "int8": len(int8)},
        "int8_gate": int8_gate,
        "versions": library_versions(),
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    print(f"generator: {source}; {flops / 1e9:.2f} GFLOP per image")
    print(f"matmul 4096^2 float32: numpy {np_gflops:.0f} GFLOP/s, tensorflow {tf_gflops:.0f} GFLOP/s "
          f"-> limit {limit:.0f} GFLOP/s = {limit * 1e9 / flops:.1f} images/s")
    print(f"threads: onnxruntime {threads} (physical cores, memory arena on), tensorflow default; medians of "
          f"{args.rounds} interleaved rounds after warm-up")
    print(f"{'engine':<24}{'batch':>6}{'images/s':>10}{'GFLOP/s':>9}{'x tf.function':>15}{'of limit':>10}")
    for r in rows:
        print(f"{r['engine']:<24}{r['batch']:>6}{r['images_per_s']:>10.1f}{r['gflops']:>9.1f}"
              f"{r['x_keras_tf_function']:>15.2f}{r['share_of_matmul_limit']:>9.0%}")
    print(f"each at its better batch ({args.batch} or the runtime default): " + ", ".join(
        f"{k} {v:.1f} images/s ({v / best['keras_tf_function']:.2f}x)" for k, v in best.items()))
    for name, b in breakdown.items():
        top = ", ".join(f"{k} {v:.0%}" for k, v in list(b["share"].items())[:6])
        rate = (f"; convolutions alone {b['conv_gflops']:.0f} GFLOP/s = {b['conv_gflops'] / limit:.0%} of the "
                f"limit ({b['conv_gflops_executed']:.0f} executed), the rest {1 - b['conv_share']:.0%} of the "
                "kernel time" if "fp32" in name else "")
        print(f"profile {name} (batch {small_batch[name]}): {top}{rate}")
    print(f"cxr-runtime --version: {version_s:.2f} s; sample --n 1 (whole process): optimized "
          f"{sample1['optimized']:.2f} s, int8 {sample1['int8']:.2f} s; sample --n 500 peak memory: optimized "
          f"{mem500['optimized']:.0f} MB, int8 {mem500['int8']:.0f} MB")
    print(f"model sizes: plain {len(plain) / 1e6:.1f} MB, optimized {len(opt) / 1e6:.1f} MB, int8 {len(int8) / 1e6:.1f} MB")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
