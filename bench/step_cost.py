"""Where a training step's time goes, and what each lever of the cheaper step saves.

In one process, interleaved round-robin so drift hits every variant alike, the median time of
`GAN.train_step` (compiled as cxr-train compiles it, fed the pipeline's own elements) for:
the study's step, the recipe on the study's networks (DiffAugment + EMA), and the recipe with each lever of the cheaper step added in turn (one generator
pass, the lighter generator, resize-convolution upsampling, the lighter discriminator,
batch 16); then today's recipe (the cheaper step without augmentation: `quick` and `long`)
alone and with each lever of its ablation (R1, minibatch stddev, the study's G, the precision
pinned either way). Then the parts of the recipe's step on their own: G forward, G forward+backward,
D forward+backward on 2B images, the augmentation of 3B images, the EMA update.

    python bench/step_cost.py [--steps 6] [--rounds 3]   -> bench/step_cost.json
    python bench/step_cost.py --only "today (quick, long);today + R1"   (names separated by ;)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kermany-cxr" / "train" / "NORMAL"

LIGHT_G = dict(g_channels=(128, 64, 32), g_dense_channels=256)
LIGHT_D = dict(d_channels=(32, 64, 128, 256))


def variants() -> dict[str, dict]:
    from cxr_training.config import CHOSEN, LIGHT, RECIPE, preset

    run_length = {"preset", "epochs", "steps_per_epoch", "keep_checkpoints"}

    def step_of(cfg) -> dict:  # the fields of the step a config trains, not its length
        return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in run_length}

    paper = preset("paper")
    recipe = dict(RECIPE)
    light = {**recipe, "shared_fake": True, **LIGHT_G, "g_upsample": "resize", **LIGHT_D}
    assert step_of(paper.replace(**light)) == step_of(paper.replace(**recipe, **LIGHT)), "the cheaper step"
    today = {**light, **CHOSEN}
    assert step_of(paper.replace(**today)) == step_of(preset("quick")), "today's recipe is quick's step"
    return {
        "paper step": {},
        "recipe, study's networks": recipe,
        "+ one G pass": {**recipe, "shared_fake": True},
        "+ lighter G (transpose)": {**recipe, "shared_fake": True, **LIGHT_G},
        "+ lighter G (resize)": {**recipe, "shared_fake": True, **LIGHT_G, "g_upsample": "resize"},
        "+ lighter D": light,
        "+ batch 16": {**light, "batch_size": 16},
        # the presets' recipe today (adaptive augmentation, G's refinement convolution) and the levers of its 1,000-step ablation
        # (docs/results.md, "One lever at a time from the chosen recipe"), each alone
        "today (quick, long)": today,
        "today + R1": {**today, "r1_gamma": 0.5},
        "today + minibatch stddev": {**today, "d_mbstd": True},
        "today + the study's G": {**today, "g_channels": (128, 128), "g_upsample": "transpose"},
        "today in bfloat16": {**today, "precision": "bfloat16"},
        "today in float32": {**today, "precision": "float32"},
        # the texture levers (docs/results.md, "Texture levers") and labelled runs (2 classes)
        "today + pixel noise": {**today, "g_noise": True},
        "today + D high-pass head 32": {**today, "d_highpass": 32},
        "today + D patch head 32": {**today, "d_patch": 32},
        "today without G's refinement conv (the presets before 2026-12-06)": {**today, "g_refine": 0},
        "today + G supersampling 16": {**today, "g_supersample": 16},
        "today + spectrum loss": {**today, "g_spectral": 10.0},
        "today + fine-detail term": {**today, "g_detail": 10.0},
        "today + D spectrum head 32": {**today, "d_spectrum": 32},
        "today with bilinear resize-convolutions": {**today, "g_upsample": "bilinear"},
        "today with bilinear resize-convolutions but the last": {**today, "g_upsample": "bilinear",
                                                                 "g_upsample_last": "resize"},
        "today + D spectrum head 32 on 32x32 tiles": {**today, "d_spectrum": 32, "d_spectrum_tile": 32},
        # augmentation: off (the presets of 2026-12-03 to 2026-12-07), or ADA driven by withheld training
        # images instead of D's real logits (ADA's r_t, today's)
        "today without augmentation (the presets before 2026-12-07)": {**today, "augment": "off"},
        "today with ADA on withheld images": {**today, "ada_signal": "validation"},
        "today, labelled (2 classes, projection D)": {**today, "classes": ("NORMAL", "PNEUMONIA")},
        "today, labelled, class channels in D": {**today, "classes": ("NORMAL", "PNEUMONIA"), "d_condition": "channels"},
    }


def main() -> None:
    from cxr_training.tfenv import configure

    configure()  # TensorFlow's environment, before anything imports it
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("CXR_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--only", default=None, help="variant names to time, separated by semicolons (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "step_cost.json"))
    args = ap.parse_args()
    chosen = variants()
    if args.only:  # checked before TensorFlow loads: a wrong name fails at once
        wanted = args.only.split(";")
        unknown = [name for name in wanted if name not in chosen]
        if unknown:  # variants are renamed when the presets change: an old name must not time nothing
            ap.error(f"unknown variant(s) {unknown}; the variants are: {'; '.join(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in wanted}

    from cxr_runtime.images import load_folder
    from cxr_runtime.machine import cpu_name
    from cxr_training import augment, pipeline
    from cxr_training.config import preset
    from cxr_training.gan import GAN, make_optimizers
    from cxr_training.models import build_discriminator, build_generator
    from cxr_training.precision import resolve_here
    from cxr_training.tfenv import import_tf

    tf, keras = import_tf()
    precision = resolve_here(args.precision)[0]
    real = load_folder(args.data).images

    def setup(changes):
        cfg = preset("paper").replace(**{"precision": precision, "epochs": 1, "steps_per_epoch": 10_000, **changes})
        keras.utils.set_random_seed(0)
        gan = GAN(build_generator(cfg), build_discriminator(cfg), cfg)
        gan.compile(*make_optimizers(cfg))
        gan.build_optimizers()
        if cfg.augment == "adaptive" and cfg.ada_signal == "validation":  # what data.split_validation gives
            k = cfg.ada_validation
            gan.set_validation(real[:k], real[k : 2 * k])
        fn = gan.step_function()
        labels = np.arange(len(real)) % cfg.n_classes if cfg.n_classes else None  # classes in turn (cost only)
        it = iter(pipeline.dataset(pipeline.MemorySource(real, cfg, labels), cfg, 0, cfg.total_steps))
        return cfg, gan, fn, it

    def time_steps(fn, it, n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            logs = fn(it)
            float(logs["g_loss"])
            out.append(time.perf_counter() - t)
        return out

    built = {}
    for name, changes in chosen.items():
        cfg, gan, fn, it = setup(changes)
        time_steps(fn, it, 1)  # trace
        built[name] = (cfg, gan, fn, it)
        print(f"built {name}: G {gan.generator.count_params():,} D {gan.discriminator.count_params():,} parameters",
              flush=True)
    times: dict[str, list[float]] = {k: [] for k in built}
    for r in range(args.rounds):
        for name, (_, _, fn, it) in built.items():
            times[name] += time_steps(fn, it, args.steps)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in times.items()),
              flush=True)

    # the parts of the recipe's step (study's networks), each compiled alone
    parts = {}
    if "recipe, study's networks" in built:
        cfg, gan, _, _ = built["recipe, study's networks"]
        b = cfg.batch_size
        z = tf.random.normal((b, cfg.latent_dim))
        x2 = tf.random.uniform((2 * b, cfg.image_size, cfg.image_size, 1), -1, 1)
        x1 = x2[:b]
        x3 = tf.random.uniform((3 * b, cfg.image_size, cfg.image_size, 1), -1, 1)
        g_vars, d_vars = gan.generator.trainable_variables, gan.discriminator.trainable_variables

        @tf.function
        def g_forward():
            return tf.reduce_sum(gan.generator(z, training=True))

        @tf.function
        def g_forward_backward():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(gan.generator(z, training=True))
            return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, g_vars)])  # every gradient, none pruned

        @tf.function
        def d_forward_backward():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(gan.d_logit(x2, training=True))
            return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, d_vars)])

        @tf.function
        def d_input_gradient():  # G's phase: through D to its input, D's weights not updated
            with tf.GradientTape() as tape:
                tape.watch(x1)
                loss = tf.reduce_sum(gan.d_logit(x1, training=True))
            return tf.reduce_sum(tape.gradient(loss, x1))

        @tf.function
        def augmentation():
            return tf.reduce_sum(augment.augment(x3, augment.key(0, 1, augment.SLOT_D_REAL), 1.0, cfg.augment_policy,
                                                 3 * b, 0))

        @tf.function
        def ema_update():
            gan._update_ema(tf.constant(100, tf.int64))
            return tf.constant(0.0)

        fns = {"G forward (B)": g_forward, "G forward+backward (B)": g_forward_backward,
               "D forward+backward (2B)": d_forward_backward,
               "D forward + input gradient (B)": d_input_gradient, "augmentation (3B)": augmentation,
               "EMA update": ema_update}
        for f in fns.values():
            float(np.asarray(f()))
        ptimes = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, f in fns.items():
                for _ in range(args.steps):
                    t = time.perf_counter()
                    float(np.asarray(f()))
                    ptimes[k].append(time.perf_counter() - t)
        parts = {k: round(statistics.median(v), 4) for k, v in ptimes.items()}

    base = statistics.median(times["paper step"]) if "paper step" in times else None
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_name(), "precision": precision,
        "steps_per_variant": args.steps * args.rounds,
        "variants": {k: {"seconds_per_step": round(statistics.median(v), 4),
                         "paper_over_this": round(base / statistics.median(v), 2) if base else None,
                         "batch": built[k][0].batch_size,
                         "g_params": built[k][1].generator.count_params(),
                         "d_params": built[k][1].discriminator.count_params(),
                         "changes": {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in chosen[k].items()}}
                     for k, v in times.items()},
        "parts_seconds": parts,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['cpu']}, {precision}, median of {args.steps * args.rounds} steps each:")
    for k, v in result["variants"].items():
        ratio = f"  ({v['paper_over_this']:.2f}x cheaper than the paper step)" if v["paper_over_this"] else ""
        print(f"  {k:<28} batch {v['batch']:>2}  {v['seconds_per_step']:.3f} s/step{ratio}")
    for k, v in parts.items():
        print(f"  part: {k:<26} {v:.3f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
