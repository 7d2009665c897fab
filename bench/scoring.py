"""`make bench`, scoring part: SSIM/MSE pairs/s for the numpy reference, scikit-image and the
ONNX graphs on onnxruntime (CPU), the time of a 10,000 x 138 cross-SSIM matrix, and the time of
the distribution metrics with their intervals as the epoch-end monitor computes them (256
generated images against 45 held-out ones) with the metrics' BLAS on one thread (as shipped) and
on the library's default threads, alone and, with --busy, beside a process keeping both cores busy.

Pairs are real X-rays (the shared training images, 128x128, [-1, 1]). Engines are timed in
interleaved rounds after warm-up; figures are medians. Writes bench/scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kermany-cxr" / "train" / "NORMAL"
DEFAULT_HELDOUT = ROOT.parent / "shared" / "data" / "kermany-cxr" / "heldout" / "NORMAL"


def _burn(stop) -> None:  # a neighbour that keeps its BLAS threads busy until told to stop
    a = np.random.default_rng(0).normal(size=(1024, 1024))
    while not stop.is_set():
        a @ a


def time_metrics(real: np.ndarray, heldout_folder: str, busy: bool) -> dict:
    """Seconds of RealSet.score (every reported metric with its jackknife interval) of 256
    generated-like images (training images with noise) against the held-out folder: the
    quality monitor's work at each epoch end. One BLAS thread (shipped) against the default."""
    import contextlib
    import multiprocessing

    from cxr_runtime import quality
    from cxr_runtime.images import load_folder
    from cxr_runtime.onnx_metrics import OnnxScorer

    rng = np.random.default_rng(1)
    fake = np.clip(real[rng.integers(0, len(real), 256)] + rng.normal(0, 0.05, (256, *real.shape[1:])), -1, 1)
    fake = fake.astype(np.float32)
    scorer = OnnxScorer(device="cpu")
    real_set = quality.RealSet(load_folder(heldout_folder).images, scorer)
    shipped = quality.one_blas_thread
    real_set.score(fake, scorer)  # warm-up: the scoring graphs, the feature code
    out = {}
    for neighbour in (["alone", "beside a busy process"] if busy else ["alone"]):
        stop = multiprocessing.Event()
        proc = None
        if neighbour != "alone":
            proc = multiprocessing.Process(target=_burn, args=(stop,))
            proc.start()
            time.sleep(2)
        try:
            for name, ctx in (("one BLAS thread (shipped)", shipped), ("default BLAS threads", contextlib.nullcontext)):
                quality.one_blas_thread = ctx
                t = time.perf_counter()
                real_set.score(fake, scorer)
                out[f"{name}, {neighbour}"] = round(time.perf_counter() - t, 2)
        finally:
            quality.one_blas_thread = shipped
            stop.set()
            if proc is not None:
                proc.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("CXR_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cross", type=int, default=10_000, help="generated images in the cross matrix")
    ap.add_argument("--out", default=str(ROOT / "bench" / "scoring.json"))
    ap.add_argument("--heldout", default=os.environ.get("CXR_HELDOUT", str(DEFAULT_HELDOUT)),
                    help="the real side of the distribution metrics (the monitor's --heldout)")
    ap.add_argument("--busy", action="store_true",
                    help="also time the metrics beside a process that keeps every core busy (a training run's place)")
    args = ap.parse_args()

    from skimage.metrics import structural_similarity

    from cxr_runtime import metrics
    from cxr_runtime.images import load_folder
    from cxr_runtime.onnx_metrics import CROSS_TILE_A, CROSS_TILE_B, OnnxScorer
    from cxr_runtime.session import usable_cores

    real = load_folder(args.data).images
    rng = np.random.default_rng(0)
    x = real[rng.integers(0, len(real), args.pairs)]
    y = real[rng.integers(0, len(real), args.pairs)]
    scorer = OnnxScorer(device="cpu")
    sk_n = min(64, args.pairs)

    def skimage():
        for i in range(sk_n):
            structural_similarity(x[i], y[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                  data_range=2.0)

    engines = {
        "numpy (cxr_runtime.metrics, float64)": (lambda: metrics.ssim(x, y), args.pairs),
        "scikit-image structural_similarity": (skimage, sk_n),
        "onnx pairs graph (onnxruntime CPU)": (lambda: scorer.ssim_mse(x, y), args.pairs),
    }
    for fn, _ in engines.values():
        fn()
    times = {k: [] for k in engines}
    for _ in range(args.rounds):
        for k, (fn, _) in engines.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    pairs_s = {k: engines[k][1] / statistics.median(v) for k, v in times.items()}
    reference = max(v for k, v in pairs_s.items() if not k.startswith("onnx"))
    onnx_ratio = pairs_s["onnx pairs graph (onnxruntime CPU)"] / reference

    # the cross matrix: 10,000 generated-like images (training images with noise) x 138 real ones
    fake = np.clip(np.concatenate([real] * (-(-args.cross // len(real))))[: args.cross]
                   + rng.normal(0, 0.05, (args.cross, *real.shape[1:])).astype(np.float32), -1, 1)
    t = time.perf_counter()
    s, m = scorer.cross(fake, real)
    cross_s = time.perf_counter() - t
    check = [(i, j) for i, j in zip(rng.integers(0, args.cross, 5), rng.integers(0, len(real), 5))]
    max_err = max(abs(s[i, j] - metrics.ssim(fake[i], real[j])) for i, j in check)

    results = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threads": {"onnxruntime_intra_op": usable_cores()},
        "pairs_per_s": {k: round(v, 1) for k, v in pairs_s.items()},
        "onnx_x_best_reference": round(onnx_ratio, 2),
        "cross": {"a": args.cross, "b": len(real), "seconds": round(cross_s, 1),
                  "pairs_per_s": round(args.cross * len(real) / cross_s, 1), "tile": [CROSS_TILE_A, CROSS_TILE_B],
                  "max_abs_err_vs_numpy_on_5_pairs": max_err},
    }
    results["distribution_metrics_seconds"] = time_metrics(real, args.heldout, args.busy)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"SSIM pairs/s on 128x128 real X-rays (medians of {args.rounds} interleaved rounds):")
    for k, v in pairs_s.items():
        print(f"  {k:<40}{v:>10.0f}")
    print(f"onnx vs the faster reference: {onnx_ratio:.2f}x")
    print(f"cross SSIM+MSE matrix {args.cross} x {len(real)}: {cross_s:.1f} s "
          f"({args.cross * len(real) / cross_s:.0f} pairs/s; max |onnx - numpy| on 5 pairs {max_err:.1e})")
    print("distribution metrics with intervals, 256 generated vs the held-out set (the monitor's epoch-end work):")
    for k, v in results["distribution_metrics_seconds"].items():
        print(f"  {k:<55}{v:>8.2f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
