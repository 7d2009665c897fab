"""What happens around the steps of train.fit: progress lines, the check after every step,
and the work at every epoch end (metrics, files, pictures, snapshots, checkpoint, one line)."""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from cxr_runtime.images import make_grid, write_png
from cxr_training import checkpoint, pipeline
from cxr_training.artifacts import save_generator
from cxr_training.errors import NonFiniteLoss
from cxr_training.plots import plot_history
from cxr_training.runs import write_history


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


class Progress:
    """Step progress on stderr: a live line on a terminal, ten lines per epoch otherwise."""

    def __init__(self, cfg, log=log_stderr, stream=sys.stderr):
        self.cfg, self.log, self.stream = cfg, log, stream
        self.tty = stream.isatty()
        self.every = max(1, cfg.steps_per_epoch // 10)

    def begin(self, epoch: int, first: int) -> None:
        self.epoch, self.first, self.t0 = epoch, first, time.time()

    def step(self, done: int, logs: dict) -> None:
        """`done`: steps of this epoch done, counting those before a resume."""
        if not self.tty and done % self.every and done != self.cfg.steps_per_epoch:
            return
        per_step = (time.time() - self.t0) / max(done - self.first, 1)
        eta = per_step * (self.cfg.steps_per_epoch - done)
        line = (f"epoch {self.epoch}/{self.cfg.epochs} step {done}/{self.cfg.steps_per_epoch} "
                f"g_loss {logs.get('g_loss', float('nan')):.3f} d_loss {logs.get('d_loss', float('nan')):.3f} "
                f"{per_step:.2f} s/step, epoch eta {fmt_duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        else:
            self.log("  " + line)

    def end(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def save_checkpoint(run, epochs_done: int) -> str:
    """A checkpoint of the run at its current step, `epochs_done` epochs complete (the step is
    past their end when taken inside the next one); the name of its folder. Pruned to the
    newest cfg.keep_checkpoints."""
    cfg = run.cfg
    return checkpoint.save(run.folder, run.gan, epochs_done, run.gan.step, cfg.to_dict(), cfg.keep_checkpoints).name


def check_losses(run, logs: dict, epoch: int) -> None:
    """After every step: a non-finite loss stops the run at once, writing nothing."""
    losses = {k: logs[k] for k in ("g_loss", "d_loss") if k in logs}
    if all(np.isfinite(v) for v in losses.values()):
        return
    last = checkpoint.list_checkpoints(run.folder)
    keep = f"the last good checkpoint is {last[-1].name}" if last else "no checkpoint had been written yet"
    raise NonFiniteLoss(f"non-finite loss at epoch {epoch} step {run.gan.step} "
                        f"({', '.join(f'{k} {v}' for k, v in losses.items())}): training stopped, nothing written; "
                        f"{keep}")


def epoch_end(run, epoch: int, logs: dict, step_times: list[float], train_seconds: float, stopping: bool) -> str | None:
    """The work at the end of epoch `epoch` (1-based): the study's metric suite (run.evaluator),
    the quality monitor (run.monitor, with --heldout), the metrics row, the sample grid, the
    plots, a snapshot at the configured steps, a checkpoint every `checkpoint_every` epochs,
    at the last one and when `stopping`; one line to the log. Returns the checkpoint's name
    when one was written."""
    cfg, gan = run.cfg, run.gan
    step = gan.step
    t = time.time()
    scores, fake = run.evaluator.score()
    sampler = gan.sampler()  # G, or its EMA copy: what snapshots and export use
    grid = fake[: cfg.grid_images] if sampler is gan.generator else \
        run.evaluator.generate(run.evaluator.z[: cfg.grid_images], sampler)
    quality = run.monitor.score(lambda z: run.evaluator.generate(z, sampler)) if run.monitor else {}
    eval_seconds = time.time() - t
    per_step = statistics.median(step_times) if step_times else float("nan")  # steady state: tracing excluded
    row = {
        "epoch": epoch,
        "step": step,
        "g_loss": logs["g_loss"],
        "d_loss": logs["d_loss"],
        **scores,
        **run.reference,
        **quality,
        **({"augment_p": float(np.asarray(gan.augment_p))} if gan.augment_p is not None else {}),
        **({f"ada_{k}": float(np.asarray(v)) for k, v in zip(("probe_real", "withheld_real"), gan.ada_sums)}
           if cfg.ada_signal == "validation" and gan.ada_sums else {}),
        **({"r1": logs["r1"]} if "r1" in logs else {}),
        **({"lecam": logs["lecam"]} if "lecam" in logs else {}),
        "g_lr": float(np.asarray(gan.g_optimizer.learning_rate)),
        "d_lr": float(np.asarray(gan.d_optimizer.learning_rate)),
        "real_downscale": pipeline.stage_factor(cfg, step - 1),
        "train_seconds": round(train_seconds, 3),
        "seconds_per_step": round(per_step, 4),
        "eval_seconds": round(eval_seconds, 3),
    }
    run.history.append(row)
    write_history(run.folder, run.history)
    write_png(run.folder / "samples" / f"epoch-{epoch:04d}.png", make_grid(grid))
    plot_history(run.history, run.folder / "plots", run.baseline)
    saved, written = "", None
    if step in cfg.snapshot_steps:
        folder = run.folder / "snapshots" / f"step-{step:09d}"
        save_generator(folder, gan, cfg, run.record, epoch, step)
        saved += f" [snapshot {folder.name}]"
    if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or stopping:
        written = save_checkpoint(run, epoch)
        saved = " [checkpoint]" + saved
    if quality:
        run.log("  vs held-out: " + describe_quality(quality)
                + (f" audit flags {quality['audit_flagged']}/{len(run.monitor.z)}" if "audit_flagged" in quality
                   else ""))
        for c in cfg.classes:  # a labelled run: each class against its own held-out images
            mine = {k.removesuffix(f"@{c}"): v for k, v in quality.items() if k.endswith(f"@{c}")}
            run.log(f"  {c} vs its held-out: " + describe_quality(mine)
                    + (f" audit flags {mine['audit_flagged']}" if "audit_flagged" in mine else ""))
    run.log(f"epoch {epoch}/{cfg.epochs} step {step}: g_loss {row['g_loss']:.3f} d_loss {row['d_loss']:.3f} "
            f"ssim {row['ssim']:.3f} (real {row['ref_ssim']:.3f}) mse {row['mse']:.3f} (real {row['ref_mse']:.3f}) "
            f"real_acc {row['real_acc']:.2f} "
            + (f"heldout_acc {row['heldout_acc']:.2f} " if "heldout_acc" in row else "")
            + f"fake_acc {row['fake_acc']:.2f} "
            f"d_precision {row['d_precision']:.2f} d_recall {row['d_recall']:.2f} | "
            f"{per_step:.2f} s/step, epoch {fmt_duration(train_seconds + eval_seconds)}{saved}")
    return written
