"""Runs a tiny training in its own process, for the distribution tests.

A strategy splits devices or joins a cluster when TensorFlow starts, so each run needs
a fresh process: `python distributed_driver.py OUT DATA STRATEGY [--interrupt-at E,B | --resume RUN]`.
Writes OUT/result.npz (final G and D weights, per-epoch losses) from the chief.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def config(recipe: bool = False):
    from cxr_training.config import preset

    # dropout off: each replica draws its own dropout masks, the single device one mask
    cfg = preset("smoke").replace(epochs=2, steps_per_epoch=3, batch_size=4, d_dropout=0.0, keep_checkpoints=3)
    if recipe:  # every lever of the recipe, mbstd's statistic (over the global batch), R1 and LeCam's all-reduced means included
        cfg = cfg.replace(augment="adaptive", ada_start=0.3, ada_interval=2, ada_speed=4.0, r1_gamma=0.1,
                          label_smoothing=0.1, ema_halflife=3.0, d_mbstd=True, lecam=0.1)
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("data")
    ap.add_argument("strategy")
    ap.add_argument("--interrupt-at")
    ap.add_argument("--resume")
    ap.add_argument("--recipe", action="store_true")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)

    from cxr_training.tfenv import import_tf
    from cxr_training.train import train

    _, keras = import_tf()
    callbacks = []
    if args.interrupt_at:
        at = tuple(int(x) for x in args.interrupt_at.split(","))

        class Stop(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_begin(self, batch, logs=None):
                if (self.epoch, batch) == at:
                    raise SystemExit(3)

        callbacks.append(Stop())
    if args.resume:
        run = train(None, None, resume_dir=args.resume, strategy=args.strategy, log=print)
    else:
        run = train(config(args.recipe), args.data, out_root=Path(args.out) / "runs", strategy=args.strategy, log=print,
                    extra_callbacks=callbacks)
    from cxr_training import checkpoint

    if not Path(run).exists():  # a non-chief worker: its scratch folder is gone
        (Path(args.out) / "worker-done.txt").write_text(str(run))
        return 0
    ckpt, meta = checkpoint.latest_valid(run)
    with np.load(ckpt / "state.npz") as state:
        arrays = {k: state[k] for k in state.files if k.startswith(("generator/", "discriminator/", "ema/", "augment/", "lecam/"))}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    np.savez(Path(args.out) / "result.npz", **arrays,
             losses=np.array([[r["g_loss"], r["d_loss"]] for r in rows]), step=meta["step"])
    (Path(args.out) / "run.txt").write_text(str(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
