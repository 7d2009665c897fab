"""`make bench-train`: training steps/s of `cxr-train` against a plainly written reference.

(a) reference: the same alternating algorithm (D on B real + B generated images, BCE; then
    G through D, non-saturating loss; Adam 2e-4 / 0.5; float32), written plainly: one
    `tf.function` step fed numpy batches from Python, nothing else;
(b) `cxr-train` itself, the paper preset with its defaults (precision auto, default
    strategy), run as a user runs it; its steady-state seconds per step are the median step
    time it logs (the metrics row's `seconds_per_step`), so start-up and epoch-end work are
    excluded;
(c) `cxr-train --precision float32`, to separate what mixed precision gives from the rest;
(d) `cxr-train --preset quick`: the recipe's step as the presets ship it (the lighter G and D,
    one G pass per step, augmentation of every D input, EMA update of G's weights); the
    target is a step at least 3x cheaper than the study's (c, same precision: d runs at the
    precision auto picks, as c's comparison (b) does).
Same data (the shared training images), same machine, measured A-B-C-D-A (reference, the
cxr-train runs, reference again) so drift shows. Writes bench/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kermany-cxr" / "train" / "NORMAL"


def reference_seconds_per_step(real: np.ndarray, batch: int, steps: int) -> float:
    from cxr_training.config import preset
    from cxr_training.models import build_discriminator, build_generator
    from cxr_training.tfenv import import_tf

    tf, keras = import_tf()
    cfg = preset("paper")
    keras.utils.set_random_seed(0)
    g, d = build_generator(cfg), build_discriminator(cfg)
    g_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
    d_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
    bce = keras.losses.BinaryCrossentropy()

    @tf.function
    def step(x, z1, z2):
        with tf.GradientTape() as tape:
            p = d(tf.concat([x, g(z1, training=True)], 0), training=True)
            d_loss = bce(tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], 0), p)
        d_opt.apply_gradients(zip(tape.gradient(d_loss, d.trainable_variables), d.trainable_variables))
        with tf.GradientTape() as tape:
            g_loss = bce(tf.ones((batch, 1)), d(g(z2, training=True), training=True))
        g_opt.apply_gradients(zip(tape.gradient(g_loss, g.trainable_variables), g.trainable_variables))
        return d_loss, g_loss

    rng = np.random.default_rng(0)

    def batch_np():
        idx = rng.choice(len(real), batch, replace=False)
        return (real[idx][..., None], rng.standard_normal((batch, 100)).astype(np.float32),
                rng.standard_normal((batch, 100)).astype(np.float32))

    step(*batch_np())  # trace
    times = []
    for _ in range(steps):
        args = batch_np()
        t = time.perf_counter()
        losses = step(*args)
        [float(v) for v in losses]  # wait for the step, as a loop that logs losses would
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cxr_train_seconds_per_step(data: str, batch: int, steps: int, *extra: str, preset: str = "paper") -> tuple[float, str]:
    """(median seconds per step, resolved precision) of one cxr-train run."""
    exe = shutil.which("cxr-train", path=str(Path(sys.executable).parent)) or "cxr-train"
    out = tempfile.mkdtemp(prefix="cxr-bench-train-")
    try:
        subprocess.run([exe, "--preset", preset, "--data", data, "--out", out, "--epochs", "1",
                        "--steps-per-epoch", str(steps), "--batch-size", str(batch), *extra],
                       check=True, capture_output=True, env={**os.environ, "CXR_CACHE_DIR": "off"})
        from cxr_training.runs import RunFolder

        run = RunFolder.under(out)[0]
        return float(run.history[0]["seconds_per_step"]), run.config.precision
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    from cxr_training.tfenv import configure

    configure()  # TensorFlow's environment, before anything imports it
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("CXR_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    ap.add_argument("--out", default=str(ROOT / "bench" / "training.json"))
    args = ap.parse_args()

    from cxr_runtime.images import load_folder
    from cxr_runtime.machine import cpu_name
    from cxr_training.precision import cpu_flags

    real = load_folder(args.data).images
    ref1 = reference_seconds_per_step(real, args.batch, args.steps)
    ours, chosen = cxr_train_seconds_per_step(args.data, args.batch, args.steps)
    ours32, _ = cxr_train_seconds_per_step(args.data, args.batch, args.steps, "--precision", "float32")
    recipe, _ = cxr_train_seconds_per_step(args.data, args.batch, args.steps, preset="quick")
    ref2 = reference_seconds_per_step(real, args.batch, args.steps)
    ref = statistics.mean([ref1, ref2])
    results = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "batch": args.batch, "steps_per_measurement": args.steps,
        "cpu": cpu_name(),
        "cpu_bf16": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}),
        "reference_seconds_per_step": [round(ref1, 3), round(ref2, 3)],
        "cxr_train_seconds_per_step": round(ours, 3),
        "cxr_train_precision": chosen,
        "speedup": round(ref / ours, 3),
        "cxr_train_float32_seconds_per_step": round(ours32, 3),
        "speedup_float32": round(ref / ours32, 3),
        "cxr_train_recipe_seconds_per_step": round(recipe, 3),
        "recipe_over_paper_step": round(recipe / ours, 3),
        "paper_step_over_recipe_step": round(ours / recipe, 2),
        "cxr_train_settings": f"paper preset defaults: precision auto (resolved: {chosen}), default strategy, "
                              "input auto (memory)",
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"paper architecture, batch {args.batch}, median of {args.steps} steps each:")
    print(f"  reference (plain tf.function step, float32, numpy batches): {ref1:.3f} s/step, again after: {ref2:.3f}")
    print(f"  cxr-train, defaults (precision auto -> {chosen}):{'':>10}{ours:.3f} s/step")
    print(f"  cxr-train --precision float32:{'':>27}{ours32:.3f} s/step")
    print(f"  cxr-train --preset quick (the recipe's step):{'':>12}{recipe:.3f} s/step "
          f"(the paper preset's step is {ours / recipe:.2f}x as long)")
    print(f"  speed-up over the reference: {ref / ours:.2f}x with the defaults, {ref / ours32:.2f}x in float32")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
