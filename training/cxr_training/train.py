"""The training run, top to bottom: data, run folder, models, fit, artefacts.

`train()` is what `cxr-train` calls. Order of events in a new run:
1. read and fingerprint the data (cxr_runtime's reader), refuse if nothing is usable;
2. create `runs/NNNNN-<preset>/` and write `config.json` (before step 0);
3. build G and D from the seed, compile the GAN, compute the real-vs-real reference;
4. `fit`: after each epoch the metric suite, a sample grid, both plots and (every
   `checkpoint_every` epochs, and at the end) a checkpoint;
5. save the final generator (`generator.keras` + `generator.json`) for export.

A resumed run (`resume_dir`) reads config.json, checks that the data is the same
content, restores the newest intact checkpoint and drops metric rows written after it.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from cxr_runtime.images import make_grid, write_png
from cxr_runtime.io import atomic_path, atomic_write_json
from cxr_training import checkpoint
from cxr_training.config import Config
from cxr_training.data import load_training_images, real_stages
from cxr_training.evaluate import Evaluator
from cxr_training.gan import GAN, make_optimizers, stage_factor
from cxr_training.models import build_discriminator, build_generator
from cxr_training.plots import plot_history
from cxr_training.runs import library_versions, new_run_dir, read_history, write_history
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


class TrainingError(Exception):
    """A problem the user can fix (bad data, mismatched resume); one line, exit code 2."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _fmt_duration(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress(keras.callbacks.Callback):
    """Step progress on stderr: a live line on a terminal, a few lines per epoch otherwise."""

    def __init__(self, cfg: Config, log=_log, stream=sys.stderr):
        super().__init__()
        self.cfg = cfg
        self.log = log
        self.tty = stream.isatty()
        self.stream = stream
        self.every = max(1, cfg.steps_per_epoch // 10)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        self.t0 = time.time()

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1
        if not self.tty and done % self.every and done != self.cfg.steps_per_epoch:
            return
        logs = logs or {}
        per_step = (time.time() - self.t0) / done
        eta = per_step * (self.cfg.steps_per_epoch - done)
        line = (f"epoch {self.epoch}/{self.cfg.epochs} step {done}/{self.cfg.steps_per_epoch} "
                f"g_loss {float(logs.get('g_loss', float('nan'))):.3f} d_loss {float(logs.get('d_loss', float('nan'))):.3f} "
                f"{per_step:.2f} s/step, epoch eta {_fmt_duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        else:
            self.log("  " + line)

    def on_epoch_end(self, epoch, logs=None):
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class EpochEnd(keras.callbacks.Callback):
    """The per-epoch work: metrics, files, pictures, checkpoint, one summary line."""

    def __init__(self, run_dir: Path, cfg: Config, gan: GAN, evaluator: Evaluator, reference: dict,
                 history: list[dict], log=_log):
        super().__init__()
        self.run_dir, self.cfg, self.gan, self.evaluator = run_dir, cfg, gan, evaluator
        self.reference, self.history, self.log = reference, history, log

    def on_epoch_begin(self, epoch, logs=None):
        self.t_epoch = time.time()
        self.step_times: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.t_step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step_times.append(time.perf_counter() - self.t_step)

    def on_epoch_end(self, epoch, logs=None):
        cfg, gan = self.cfg, self.gan
        train_s = time.time() - self.t_epoch
        e = epoch + 1
        step = int(gan.d_optimizer.iterations.numpy())
        t = time.time()
        scores, fake = self.evaluator.run()
        eval_s = time.time() - t
        # steady state: the median step, so the first step's tracing does not count
        per_step = statistics.median(self.step_times) if self.step_times else float("nan")
        row = {
            "epoch": e,
            "step": step,
            "g_loss": float(logs["g_loss"]),
            "d_loss": float(logs["d_loss"]),
            **scores,
            **self.reference,
            "g_lr": float(keras.ops.convert_to_numpy(gan.g_optimizer.learning_rate)),
            "d_lr": float(keras.ops.convert_to_numpy(gan.d_optimizer.learning_rate)),
            "real_downscale": stage_factor(cfg, step - 1),
            "train_seconds": round(train_s, 3),
            "seconds_per_step": round(per_step, 4),
            "eval_seconds": round(eval_s, 3),
        }
        self.history.append(row)
        write_history(self.run_dir, self.history)
        write_png(self.run_dir / "samples" / f"epoch-{e:04d}.png", make_grid(fake[: cfg.grid_images]))
        plot_history(self.history, self.run_dir / "plots")
        saved = ""
        if e % cfg.checkpoint_every == 0 or e == cfg.epochs:
            checkpoint.save(self.run_dir, gan, e, step, cfg.to_dict(), cfg.keep_checkpoints)
            saved = " [checkpoint]"
        self.log(
            f"epoch {e}/{cfg.epochs} step {step}: g_loss {row['g_loss']:.3f} d_loss {row['d_loss']:.3f} "
            f"ssim {row['ssim']:.3f} (real {row['ref_ssim']:.3f}) mse {row['mse']:.3f} (real {row['ref_mse']:.3f}) "
            f"real_acc {row['real_acc']:.2f} fake_acc {row['fake_acc']:.2f} "
            f"precision {row['precision']:.2f} recall {row['recall']:.2f} | "
            f"{per_step:.2f} s/step, epoch {_fmt_duration(train_s + eval_s)}{saved}"
        )


def save_generator(run_dir: Path, generator, cfg: Config, run_meta: dict, epoch: int, step: int) -> Path:
    """The final generator on its own, with what export needs to know about it."""
    path = run_dir / "generator.keras"
    with atomic_path(path, suffix=".keras") as tmp:
        generator.save(tmp)
    atomic_write_json(run_dir / "generator.json", {
        "model": "generator.keras",
        "run_id": run_dir.name,
        "epoch": epoch,
        "step": step,
        "latent_dim": cfg.latent_dim,
        "image_size": cfg.image_size,
        "channels": 1,
        "value_range": [-1.0, 1.0],
        "layout": "NHWC",
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "data_sha256": run_meta["data"]["sha256"],
        "data_count": run_meta["data"]["count"],
        "versions": library_versions(),
        "saved": _now(),
    })
    return path


def load_images_or_fail(data_dir, cfg: Config, log=_log):
    from cxr_runtime.images import NoImagesError

    try:
        images = load_training_images(data_dir, cfg)
    except NoImagesError as e:
        raise TrainingError(str(e)) from None
    warning = images.skipped_warning()
    if warning:
        log(warning)
    if len(images.files) < max(2, cfg.batch_size):
        raise TrainingError(
            f"{len(images.files)} usable images under {data_dir}: need at least max(2, batch size {cfg.batch_size})"
        )
    return images


def train(cfg: Config | None = None, data_dir: str | Path | None = None, out_root: str | Path = "runs",
          resume_dir: str | Path | None = None, log=_log, extra_callbacks=()) -> Path:
    """Run (or resume) training; return the run folder."""
    resume = resume_dir is not None
    if resume:
        run_dir = Path(resume_dir)
        try:
            run_meta = json.loads((run_dir / "config.json").read_text())
            cfg = Config.from_dict(run_meta["config"])
        except (OSError, ValueError, KeyError) as e:
            raise TrainingError(f"cannot resume {run_dir}: no readable config.json ({e})") from None
        data_dir = data_dir or run_meta["data"]["root"]
    if cfg is None or data_dir is None:
        raise TrainingError("a config and a data folder are needed")
    try:
        cfg.validate()
    except ValueError as e:
        raise TrainingError(f"invalid config: {e}") from None

    images = load_images_or_fail(data_dir, cfg, log)
    fingerprint = images.fingerprint()
    if resume:
        if fingerprint["sha256"] != run_meta["data"]["sha256"]:
            raise TrainingError(
                f"the data under {data_dir} is not the data run {run_dir.name} was trained on "
                f"(fingerprint {fingerprint['sha256'][:12]} vs {run_meta['data']['sha256'][:12]})"
            )
    else:
        run_dir = new_run_dir(out_root, cfg.preset)
        run_meta = {
            "run_id": run_dir.name,
            "created": _now(),
            "command": sys.argv,
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "config_hash": cfg.hash(),
            "data": fingerprint,
            "versions": library_versions(),
        }
        atomic_write_json(run_dir / "config.json", run_meta)
    log(f"run {run_dir} | {len(images.files)} images from {images.root} | preset {cfg.preset}: "
        f"{cfg.epochs} epochs x {cfg.steps_per_epoch} steps, batch {cfg.batch_size}, seed {cfg.seed}")

    keras.utils.set_random_seed(cfg.seed)
    generator = build_generator(cfg)
    discriminator = build_discriminator(cfg)
    gan = GAN(generator, discriminator, real_stages(images.images, cfg), cfg)
    gan.compile(*make_optimizers(cfg))

    start_epoch, history = 0, []
    if resume:
        found = checkpoint.latest_valid(run_dir, warn=log)
        if found is not None:
            ckpt, meta = found
            gan.build_optimizers()
            try:
                checkpoint.restore(gan, ckpt, meta)
            except checkpoint.CheckpointError as e:
                raise TrainingError(f"cannot resume: {e}") from None
            start_epoch = int(meta["epoch"])
            log(f"resuming from {ckpt.name} (step {meta['step']})")
        else:
            log("no complete checkpoint yet: starting this run from step 0")
        history = [r for r in read_history(run_dir) if r["epoch"] <= start_epoch]
        write_history(run_dir, history)

    if start_epoch < cfg.epochs:
        evaluator = Evaluator(generator, discriminator, images.images, cfg.latent_dim, cfg.seed, cfg.eval_max_images,
                              cfg.grid_images)
        reference = evaluator.reference()
        atomic_write_json(run_dir / "reference.json", {
            **reference, "images": len(evaluator.real),
            "protocol": "each real image vs another real image (fixed-seed derangement); see docs/metrics.md",
        })
        callbacks = [Progress(cfg, log), EpochEnd(run_dir, cfg, gan, evaluator, reference, history, log),
                     *extra_callbacks]
        dummy = tf.data.Dataset.from_tensors(tf.zeros((1,))).repeat()  # train_step draws its own batches
        gan.fit(dummy, epochs=cfg.epochs, initial_epoch=start_epoch, steps_per_epoch=cfg.steps_per_epoch,
                callbacks=callbacks, verbose=0, shuffle=False)
    else:
        log(f"run {run_dir.name} had already finished all {cfg.epochs} epochs")

    step = int(gan.d_optimizer.iterations.numpy())
    path = save_generator(run_dir, generator, cfg, run_meta, cfg.epochs, step)
    log(f"done: {path}")
    return run_dir
