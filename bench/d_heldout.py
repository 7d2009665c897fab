"""Does D memorise the training images? D's verdict on other patients' images, after the fact.

Runs trained since 2026-12-07 log this at every epoch end (`heldout_acc`, `d_logit_*` in
metrics.jsonl; docs/metrics.md). For a run trained before, this script loads D from the run's
newest checkpoint and judges the training images, the held-out images and a folder of the
run's samples at that step with the same numbers (cxr_training.evaluate.heldout_scores).
Unlabelled runs only.

    .venv/bin/python bench/d_heldout.py --train DIR --heldout DIR RUN[=SAMPLES] [RUN[=SAMPLES] ...] [--json OUT]

RUN is a run folder (config.json, checkpoints/); SAMPLES, a folder of its generated images at
the checkpoint's step (default: RUN/../scores/step-<step>-ema/samples, where `cxr-sweep` puts them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cxr_runtime import metrics
from cxr_runtime.images import load_folder
from cxr_training import checkpoint
from cxr_training.config import Config
from cxr_training.evaluate import heldout_scores
from cxr_training.models import build_discriminator
from cxr_training.tfenv import import_tf


def load_discriminator(run: Path):
    """D of the run's newest valid checkpoint, and that checkpoint's step."""
    record = json.loads((run / "config.json").read_text())
    cfg = Config.from_dict(record["config"])
    if cfg.classes:
        raise SystemExit(f"{run}: a labelled run; this script judges unlabelled runs only")
    found = checkpoint.latest_valid(run)
    if found is None:
        raise SystemExit(f"{run}: no valid checkpoint")
    ckpt, meta = found
    d = build_discriminator(cfg, precision="float32")
    with np.load(ckpt / "state.npz", allow_pickle=False) as data:
        keys = sorted(k for k in data.files if k.startswith("discriminator/"))
        if len(keys) != len(d.variables):
            raise SystemExit(f"{ckpt}: {len(keys)} discriminator variables, the model has {len(d.variables)}")
        for v, k in zip(d.variables, keys):
            v.assign(data[k])
    return d, int(meta["step"])


def judge(d, images: np.ndarray) -> np.ndarray:
    tf, _ = import_tf()
    fn = tf.function(lambda x: d(x, training=False))
    return np.concatenate([fn(tf.constant(images[i : i + 64, ..., None])).numpy().ravel()
                           for i in range(0, len(images), 64)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, type=Path, help="the run's training images")
    ap.add_argument("--heldout", required=True, type=Path, help="real images of other patients")
    ap.add_argument("runs", nargs="+", help="RUN or RUN=SAMPLES")
    ap.add_argument("--json", type=Path, help="write the table's numbers here")
    args = ap.parse_args(argv)
    train = np.asarray(load_folder(args.train).images, np.float32)
    held = np.asarray(load_folder(args.heldout).images, np.float32)
    out = {}
    print("| run | step | real_acc (train) | heldout_acc | fake_acc | d_logit_real | d_logit_heldout | d_logit_fake |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.runs:
        run, _, samples = spec.partition("=")
        run = Path(run).expanduser()
        d, step = load_discriminator(run)
        samples = Path(samples).expanduser() if samples else run.parent / "scores" / f"step-{step:09d}-ema" / "samples"
        fake = np.asarray(load_folder(samples, duplicates="keep").images, np.float32)
        p_real, p_held, p_fake = judge(d, train), judge(d, held), judge(d, fake)
        row = {"step": step, **metrics.discriminator_scores(p_real, p_fake), **heldout_scores(p_real, p_held, p_fake),
               "train": len(train), "heldout": len(held), "generated": len(fake), "samples": str(samples)}
        out[str(run)] = row
        print(f"| {run.parent.name} | {step} | {row['real_acc']:.2f} | {row['heldout_acc']:.2f} | {row['fake_acc']:.2f} | "
              f"{row['d_logit_real']:.2f} | {row['d_logit_heldout']:.2f} | {row['d_logit_fake']:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
