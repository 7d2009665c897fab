"""The fine-detail term's size (cxr-train --g-detail): what it reads on real and altered images.

The term (cxr_training.gan.detail_swd) compares the 5x5 patches of the fine detail of a generated
batch with those of a real batch. Its weight in G's loss only means something beside the values it
takes, so this prints them for batches of the same size as training's (32 images):
- real against real: the held-out images, and training images other than the reference batch
  (the floor: two samples of the same distribution);
- the other training images blurred (`--blur`, px), or with white grain (`--grain`, grey levels):
  differences the texture test does or does not tell (bench/texture_probe.py);
- folders of generated images (`--samples NAME=DIR`, optional);
- a run's generator at its newest checkpoint (`--run DIR`, optional): the term on its batches, and
  the norm of the term's gradient on G's weights beside that of the adversarial loss (D's logit
  on the same batch), the ratio a weight W scales: at W = ratio the two pull alike; and, with
  `--descend N`, N steps of gradient descent on the term alone in pixel space from G's first batch
  (Adam, rate 0.002, a new real batch and key each step): what the term can do to the images' detail
  kurtosis when nothing else pulls.
Each value is the mean (and spread) over `--keys` draws of directions and positions (and of
latents, for --run).

    .venv/bin/python bench/detail_term.py --train DIR --heldout DIR [--samples NAME=DIR ...]
        [--run RUN_FOLDER [--descend N]] [--patch 1,3,5] [--blur 0.3,0.4,0.5,0.7] [--grain 1,3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from texture_probe import _floats, blur, grain  # noqa: E402

from cxr_runtime.images import load_folder  # noqa: E402

BATCH = 32


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=Path, required=True, help="The training images (the reference batch: the first 32).")
    ap.add_argument("--heldout", type=Path, required=True, help="Real images never trained on.")
    ap.add_argument("--samples", nargs="*", default=[], help="NAME=DIR folders of generated images.")
    ap.add_argument("--patch", type=lambda t: [int(v) for v in t.split(",") if v], default=[1, 3, 5])
    ap.add_argument("--blur", type=_floats, default=[0.3, 0.4, 0.5, 0.7], help="Blur sigmas (px).")
    ap.add_argument("--grain", type=_floats, default=[1.0, 3.0], help="Noise levels, grey levels.")
    ap.add_argument("--run", type=Path, default=None, help="A run folder with a checkpoint (its G and D).")
    ap.add_argument("--descend", type=int, default=0, help="With --run: pixel-space descent steps on the term.")
    ap.add_argument("--keys", type=int, default=5, help="Draws of directions and positions per value.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from cxr_training.gan import detail_swd
    from cxr_training.tfenv import import_tf

    tf, _ = import_tf()
    train = np.asarray(load_folder(args.train).images)
    if len(train) < 2 * BATCH:
        ap.error(f"--train needs at least {2 * BATCH} images, found {len(train)}")
    reference, others = train[:BATCH], train[BATCH : 2 * BATCH]
    batches = {"held-out (real)": np.asarray(load_folder(args.heldout).images[:BATCH]), "train, other images": others}
    batches.update({f"train, blur {s:g} px": blur(others, s) for s in args.blur})
    batches.update({f"train, grain {s:g}": grain(others, s) for s in args.grain})
    for item in args.samples:
        name, _, folder = item.partition("=")
        if not folder:
            ap.error(f"--samples takes NAME=DIR, got {item!r}")
        batches[name] = np.asarray(load_folder(Path(folder), duplicates="keep").images[:BATCH])

    ref = tf.constant(reference[..., None])
    rows = []
    for name, images in batches.items():
        x = tf.constant(np.asarray(images, np.float32)[..., None])
        row = {"images": name, "n": int(x.shape[0])}
        for patch in args.patch:
            values = [float(detail_swd(x, ref, tf.constant([k, 1], tf.int64), patch)) for k in range(args.keys)]
            row[f"patch {patch}"] = [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]
        rows.append(row)
    cols = [f"patch {p}" for p in args.patch]
    print("| images | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for row in rows:
        print(f"| {row['images']} | " + " | ".join(f"{row[c][0]:.3f} ± {row[c][1]:.3f}" for c in cols) + " |")
    result = {"reference": f"the first {BATCH} of {args.train}", "rows": rows}
    if args.run:
        result["run"] = gradients(args.run, args.train, ref, max(args.patch), args.keys, args.descend,
                                  np.asarray(train, np.float32)[..., None])
        print(json.dumps(result["run"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def _kurtosis(tf, images) -> float:
    """Median over the images of their fine-detail kurtosis, the runtime's texture statistic."""
    from cxr_runtime.quality import texture_stats

    return float(np.median(texture_stats(np.asarray(tf.cast(images, tf.float32))[..., 0])[2]))


def gradients(run_dir: Path, train_dir: Path, ref, patch: int, keys: int, descend: int = 0, train=None) -> dict:
    """The run's G (training mode, as in its step) on `keys` latent batches: the term against the
    reference batch, the detail kurtosis of G's images (median over the batch), and the norms of
    the term's and the adversarial loss's gradients on G's weights. Runs on a copy of the folder:
    restoring never touches the run."""
    import shutil
    import tempfile

    from cxr_training.gan import detail_swd
    from cxr_training.pipeline import step_latents
    from cxr_training.tfenv import import_tf
    from cxr_training.train import resume_run

    tf, _ = import_tf()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy)
        gan = resume_run(copy, data_dir=train_dir).gan
        g_vars = gan.generator.trainable_variables
        out = {"run": str(run_dir), "step": int(gan.global_step.numpy()), "patch": patch, "batches": []}
        for k in range(keys):
            z = step_latents(gan.seed, 10**6 + k, 2, BATCH, gan.latent_dim)
            with tf.GradientTape(persistent=True) as tape:
                fake = gan.generator(z, training=True)
                adv = gan.bce(tf.ones((BATCH, 1)), gan.d_logit(fake, training=True))
                term = detail_swd(fake, ref, tf.constant([k, 1], tf.int64), patch)
            norm = {name: float(tf.linalg.global_norm([g for g in tape.gradient(loss, g_vars) if g is not None]))
                    for name, loss in (("adversarial", adv), ("term", term))}
            kurt = _kurtosis(tf, fake)
            out["batches"].append({"term": round(float(term), 4), "detail kurtosis": round(kurt, 1),
                                   "grad adversarial": round(norm["adversarial"], 4), "grad term": round(norm["term"], 4),
                                   "ratio": round(norm["adversarial"] / max(norm["term"], 1e-12), 1)})
        if descend:
            import keras

            x = tf.Variable(tf.cast(gan.generator(step_latents(gan.seed, 10**6, 2, BATCH, gan.latent_dim),
                                                  training=False), tf.float32))
            opt, rng, out["descent"] = keras.optimizers.Adam(0.002), np.random.default_rng(0), []
            for i in range(descend + 1):
                real = tf.constant(train[rng.choice(len(train), BATCH, replace=False)])
                with tf.GradientTape() as tape:
                    term = detail_swd(x, real, tf.constant([i, 3], tf.int64), patch)
                if i % 50 == 0 or i == descend:
                    out["descent"].append({"step": i, "term": round(float(term), 4),
                                           "detail kurtosis": round(_kurtosis(tf, x), 2)})
                    print(out["descent"][-1])
                opt.apply_gradients([(tape.gradient(term, x), x)])
    return out


if __name__ == "__main__":
    sys.exit(main())
