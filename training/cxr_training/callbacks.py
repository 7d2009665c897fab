"""The Keras callbacks of a training run: step progress (Progress), the per-step guard against
non-finite losses and for signals (Guard), and the per-epoch work (EpochEnd: metrics, files,
pictures, snapshots, checkpoint, one summary line)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from cxr_runtime.images import make_grid, write_png
from cxr_training import checkpoint, pipeline
from cxr_training.artifacts import save_generator
from cxr_training.config import Config
from cxr_training.errors import NonFiniteLoss
from cxr_training.evaluate import Evaluator, QualityMonitor
from cxr_training.gan import GAN
from cxr_training.plots import plot_history
from cxr_training.runs import write_history
from cxr_training.signals import StopState
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_duration(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def describe_quality(row: dict) -> str:
    """The metric table's values in a monitor row, on one line (real comparators in brackets)."""
    from cxr_runtime.quality import QUALITY_METRICS

    parts = []
    for m in QUALITY_METRICS:
        col = m.column(m.key)
        if col in row:
            text = f"{m.label} {row[col]:{m.fmt}}"
            if m.real_key and m.column(m.real_key) in row:
                text += f" (real {row[m.column(m.real_key)]:{m.fmt}})"
            parts.append(text)
    return " ".join(parts)


class Progress(keras.callbacks.Callback):
    """Step progress on stderr: a live line on a terminal, a few lines per epoch otherwise."""

    def __init__(self, cfg: Config, log=log_stderr, stream=sys.stderr, offset: int = 0):
        super().__init__()
        self.cfg = cfg
        self.offset = offset  # steps of the current epoch done before a resume
        self.log = log
        self.tty = stream.isatty()
        self.stream = stream
        self.every = max(1, cfg.steps_per_epoch // 10)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        self.t0 = time.time()

    def on_train_batch_end(self, batch, logs=None):
        done = self.offset + batch + 1
        if not self.tty and done % self.every and done != self.cfg.steps_per_epoch:
            return
        logs = logs or {}
        per_step = (time.time() - self.t0) / (batch + 1)
        eta = per_step * (self.cfg.steps_per_epoch - done)
        line = (f"epoch {self.epoch}/{self.cfg.epochs} step {done}/{self.cfg.steps_per_epoch} "
                f"g_loss {float(logs.get('g_loss', float('nan'))):.3f} d_loss {float(logs.get('d_loss', float('nan'))):.3f} "
                f"{per_step:.2f} s/step, epoch eta {fmt_duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        else:
            self.log("  " + line)

    def on_epoch_end(self, epoch, logs=None):
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class Guard(keras.callbacks.Callback):
    """After every step: stop on a non-finite loss (writing nothing), and on SIGINT/SIGTERM
    write a checkpoint at this step and end the run."""

    def __init__(self, run_dir: Path, cfg: Config, gan: GAN, state: StopState, log=log_stderr):
        super().__init__()
        self.run_dir, self.cfg, self.gan, self.state, self.log = run_dir, cfg, gan, state, log

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        losses = {k: float(logs[k]) for k in ("g_loss", "d_loss") if k in logs}
        step = self.gan.step
        if not all(np.isfinite(v) for v in losses.values()):
            last = checkpoint.list_checkpoints(self.run_dir)
            keep = f"the last good checkpoint is {last[-1].name}" if last else "no checkpoint had been written yet"
            raise NonFiniteLoss(
                f"non-finite loss at epoch {self.epoch} step {step} "
                f"({', '.join(f'{k} {v}' for k, v in losses.items())}): training stopped, nothing written; {keep}")
        if self.state.signum is None:
            return
        epoch_end = step % self.cfg.steps_per_epoch == 0
        if not epoch_end:  # at an epoch's end EpochEnd writes the checkpoint, then the run stops
            done = step // self.cfg.steps_per_epoch
            path = checkpoint.save(self.run_dir, self.gan, done, step, self.cfg.to_dict(), self.cfg.keep_checkpoints)
            self.state.checkpoint = path.name
            self.state.stopped_mid_epoch = True
        self.model.stop_training = True


class EpochEnd(keras.callbacks.Callback):
    """The per-epoch work: metrics, files, pictures, checkpoint, one summary line."""

    def __init__(self, run_dir: Path, cfg: Config, gan: GAN, evaluator: Evaluator, reference: dict,
                 history: list[dict], log=log_stderr, state: StopState | None = None, resume_trackers=None,
                 monitor: QualityMonitor | None = None, run_meta: dict | None = None,
                 quality_reference: dict | None = None):
        super().__init__()
        self.run_dir, self.cfg, self.gan, self.evaluator = run_dir, cfg, gan, evaluator
        self.reference, self.history, self.log = reference, history, log
        self.monitor, self.run_meta = monitor, run_meta or {}
        self.quality_reference = quality_reference or {}  # the training images scored as generated ones
        self.state = state or StopState()
        self.resume_trackers = resume_trackers  # running means restored into a resumed epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.t_epoch = time.time()
        self.step_times: list[float] = []
        if self.resume_trackers is not None:  # fit reset the trackers just before this call
            for v, value in zip((v for m in self.gan.metrics for v in m.variables), self.resume_trackers):
                v.assign(value)
            self.resume_trackers = None

    def on_train_batch_begin(self, batch, logs=None):
        self.t_step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step_times.append(time.perf_counter() - self.t_step)

    def on_epoch_end(self, epoch, logs=None):
        if self.state.stopped_mid_epoch:  # Keras ends the epoch early on stop_training: not a real epoch end
            return
        cfg, gan = self.cfg, self.gan
        train_s = time.time() - self.t_epoch
        e = epoch + 1
        step = gan.step
        t = time.time()
        scores, fake = self.evaluator.run()
        sampler = gan.sampler()  # G, or its EMA copy: what snapshots and export use
        grid = fake[: cfg.grid_images] if sampler is gan.generator else \
            self.evaluator.generate(self.evaluator.z[: cfg.grid_images], sampler)
        quality = self.monitor.run(lambda z: self.evaluator.generate(z, sampler)) if self.monitor else {}
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
            **quality,
            **({"augment_p": float(keras.ops.convert_to_numpy(gan.augment_p))} if gan.augment_p is not None else {}),
            **({"r1": float(logs["r1"])} if "r1" in logs else {}),
            "g_lr": float(keras.ops.convert_to_numpy(gan.g_optimizer.learning_rate)),
            "d_lr": float(keras.ops.convert_to_numpy(gan.d_optimizer.learning_rate)),
            "real_downscale": pipeline.stage_factor(cfg, step - 1),
            "train_seconds": round(train_s, 3),
            "seconds_per_step": round(per_step, 4),
            "eval_seconds": round(eval_s, 3),
        }
        self.history.append(row)
        write_history(self.run_dir, self.history)
        write_png(self.run_dir / "samples" / f"epoch-{e:04d}.png", make_grid(grid))
        plot_history(self.history, self.run_dir / "plots", self.quality_reference)
        saved = ""
        if step in cfg.snapshot_steps:
            folder = self.run_dir / "snapshots" / f"step-{step:09d}"
            save_generator(folder, gan, cfg, self.run_meta, e, step)
            saved += f" [snapshot {folder.name}]"
        if e % cfg.checkpoint_every == 0 or e == cfg.epochs or self.state.signum is not None:
            path = checkpoint.save(self.run_dir, gan, e, step, cfg.to_dict(), cfg.keep_checkpoints)
            self.state.checkpoint = path.name
            saved = " [checkpoint]" + saved
        if quality:
            self.log("  vs held-out: " + describe_quality(quality)
                     + (f" audit flags {quality['audit_flagged']}/{len(self.monitor.z)}" if "audit_flagged" in quality
                        else ""))
        self.log(
            f"epoch {e}/{cfg.epochs} step {step}: g_loss {row['g_loss']:.3f} d_loss {row['d_loss']:.3f} "
            f"ssim {row['ssim']:.3f} (real {row['ref_ssim']:.3f}) mse {row['mse']:.3f} (real {row['ref_mse']:.3f}) "
            f"real_acc {row['real_acc']:.2f} fake_acc {row['fake_acc']:.2f} "
            f"d_precision {row['d_precision']:.2f} d_recall {row['d_recall']:.2f} | "
            f"{per_step:.2f} s/step, epoch {fmt_duration(train_s + eval_s)}{saved}"
        )
