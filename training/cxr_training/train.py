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
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cxr_runtime import quality
from cxr_runtime.images import make_grid, write_png
from cxr_runtime.io import atomic_path, atomic_write_json
from cxr_training import checkpoint, distribute, pipeline, precision
from cxr_training.config import Config
from cxr_training.data import load_training_images, stream_store_dir
from cxr_training.evaluate import Evaluator, QualityMonitor
from cxr_training.gan import GAN, make_optimizers
from cxr_training.models import build_discriminator, build_generator
from cxr_training.plots import plot_history
from cxr_training.runs import library_versions, new_run_dir, read_history, write_history
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


class TrainingError(Exception):
    """A problem the user can fix (bad data, mismatched resume); one line, exit code 2."""


class NonFiniteLoss(Exception):
    """A loss became NaN or infinite; the run stopped without writing the broken weights."""


class Interrupted(Exception):
    """SIGINT or SIGTERM: the run stopped after writing a checkpoint at the current step."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _StopState:
    """Shared between the signal handler and the callbacks."""

    def __init__(self):
        self.signum: int | None = None
        self.stopped_mid_epoch = False
        self.checkpoint: str | None = None

    def handler(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.signum = signum


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

    def __init__(self, cfg: Config, log=_log, stream=sys.stderr, offset: int = 0):
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


class Guard(keras.callbacks.Callback):
    """After every step: stop on a non-finite loss (writing nothing), and on SIGINT/SIGTERM
    write a checkpoint at this step and end the run."""

    def __init__(self, run_dir: Path, cfg: Config, gan: GAN, state: _StopState, log=_log):
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
                 history: list[dict], log=_log, state: _StopState | None = None, resume_trackers=None,
                 monitor: QualityMonitor | None = None, run_meta: dict | None = None,
                 quality_reference: dict | None = None):
        super().__init__()
        self.run_dir, self.cfg, self.gan, self.evaluator = run_dir, cfg, gan, evaluator
        self.reference, self.history, self.log = reference, history, log
        self.monitor, self.run_meta = monitor, run_meta or {}
        self.quality_reference = quality_reference or {}  # the training images scored as generated ones
        self.state = state or _StopState()
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
            self.log(f"  vs held-out: recall {quality['q_recall']:.2f} coverage {quality['q_coverage']:.2f} "
                     f"kid {quality['q_kid']:.3f} diversity {quality['q_diversity']:.3f} "
                     f"(real {quality['q_diversity_real']:.3f})"
                     + (f" audit flags {quality['audit_flagged']}/{len(self.monitor.z)}" if "audit_flagged" in quality
                        else ""))
        self.log(
            f"epoch {e}/{cfg.epochs} step {step}: g_loss {row['g_loss']:.3f} d_loss {row['d_loss']:.3f} "
            f"ssim {row['ssim']:.3f} (real {row['ref_ssim']:.3f}) mse {row['mse']:.3f} (real {row['ref_mse']:.3f}) "
            f"real_acc {row['real_acc']:.2f} fake_acc {row['fake_acc']:.2f} "
            f"precision {row['precision']:.2f} recall {row['recall']:.2f} | "
            f"{per_step:.2f} s/step, epoch {_fmt_duration(train_s + eval_s)}{saved}"
        )


class _signals:
    """SIGINT and SIGTERM set a flag (the Guard callback checkpoints and stops); installed
    only in the main thread, previous handlers restored afterwards."""

    def __init__(self, state: _StopState):
        self.state = state
        self.saved: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self.state.handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False


def save_generator(folder: Path, gan: GAN, cfg: Config, run_meta: dict, epoch: int, step: int) -> Path:
    """The sampling generator on its own, with what export needs to know about it:
    `generator.keras` (the EMA weights when the recipe keeps an EMA, else G's) and
    `generator.json`; with an EMA, G's raw weights also go to `generator-raw.keras`.

    Always float32 models: a generator trained under mixed precision is rebuilt with float32
    layers and given the (float32) trained weights, so export and its parity gate see the
    same float32 network whatever the training precision was.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ema = gan.ema_generator is not None
    models = {"generator.keras": gan.sampler()}
    if ema:
        models["generator-raw.keras"] = gan.generator
    for name, model in models.items():
        if model is gan.generator and cfg.precision != "float32":
            plain = build_generator(cfg, precision="float32")
            plain.set_weights(model.get_weights())
            model = plain
        with atomic_path(folder / name, suffix=".keras") as tmp:
            model.save(tmp)
    path = folder / "generator.keras"
    atomic_write_json(folder / "generator.json", {
        "model": "generator.keras",
        "weights": "ema" if ema else "raw",
        **({"raw_model": "generator-raw.keras"} if ema else {}),
        "run_id": run_meta.get("run_id", folder.name),
        "epoch": epoch,
        "step": step,
        "latent_dim": cfg.latent_dim,
        "image_size": cfg.image_size,
        "channels": 1,
        "value_range": [-1.0, 1.0],
        "layout": "NHWC",
        "training_precision": cfg.precision,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "data_sha256": run_meta["data"]["sha256"],
        "data_count": run_meta["data"]["count"],
        "versions": library_versions(),
        "saved": _now(),
    })
    return path


def load_images_or_fail(data_dir, cfg: Config, log=_log, input_mode: str = "auto"):
    """(images, mode, store): the usable images, "memory" or "stream", and the stream file
    (None in memory mode; the caller removes it)."""
    from cxr_runtime.images import NoImagesError, find_images

    root = Path(data_dir)
    candidates = len(find_images(root)) if root.is_dir() else 0
    try:
        mode = pipeline.choose_mode(input_mode, candidates, cfg)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    store = None
    if mode == "stream":
        folder = stream_store_dir()
        folder.mkdir(parents=True, exist_ok=True)
        for old in _orphaned_stores(folder):
            log(f"removing {old.name}, left by a run that was killed")
            _remove(old)
        fd, name = tempfile.mkstemp(prefix=f"cxr-stream-{os.getpid()}-", suffix=".f32", dir=folder)
        os.close(fd)
        store = Path(name)
        log(f"streaming the training set from {store} ({candidates} candidate files; "
            f"about {candidates * cfg.image_size ** 2 * 4 / 1e9:.2f} GB of disk)")
    every = max(1, candidates // 10)

    def progress(done: int, total: int) -> None:  # a line per 10 % on sets worth waiting for
        if total >= 2000 and (done % every == 0 or done == total):
            log(f"  read {done}/{total} image files")

    try:
        images = load_training_images(data_dir, cfg, into=store, progress=progress)
    except NoImagesError as e:
        _remove(store)
        raise TrainingError(str(e)) from None
    except BaseException:
        _remove(store)
        raise
    warning = images.skipped_warning()
    if warning:
        log(warning)
    if len(images.files) < max(2, cfg.batch_size):
        _remove(store)
        raise TrainingError(
            f"{len(images.files)} usable images under {data_dir}: need at least max(2, batch size {cfg.batch_size})"
        )
    return images, mode, store


def _orphaned_stores(folder: Path) -> list[Path]:
    """Stream files whose process (the pid in the name) no longer runs on this host."""
    found = []
    for p in folder.glob("cxr-stream-*-*.f32"):
        try:
            pid = int(p.name.split("-")[2])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            found.append(p)
        except PermissionError:  # alive, another user's
            continue
    return found


def _remove(path: Path | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)


def _input(gan_cfg: Config, source, placement: distribute.Placement, start: int, end: int):
    """The dataset `fit` consumes for global steps [start, end)."""
    if placement.name == "default":
        return pipeline.dataset(source, gan_cfg, start, end)

    def per_worker(ctx):
        local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        return pipeline.dataset(source, gan_cfg, start, end, local_replicas=local,
                                first_replica=ctx.input_pipeline_id * local, replicas=ctx.num_replicas_in_sync)

    return placement.strategy.distribute_datasets_from_function(per_worker)


def train(cfg: Config | None = None, data_dir: str | Path | None = None, out_root: str | Path = "runs",
          resume_dir: str | Path | None = None, log=_log, extra_callbacks=(), strategy: str = "default",
          input_mode: str = "auto", heldout_dir: str | Path | None = None) -> Path:
    """Run (or resume) training; return the run folder.

    `strategy`: default, mirrored or multiworker (distribute.py); `input_mode`: auto,
    memory or stream (pipeline.py). Neither changes what is computed, only where and how.
    `heldout_dir`: real images never trained on; each epoch end scores the generator against
    them (evaluate.QualityMonitor). A resumed run uses the folder it started with.
    """
    try:  # first: MultiWorkerMirroredStrategy must exist before other TensorFlow work
        placement = distribute.make(strategy)
    except distribute.StrategyError as e:
        raise TrainingError(str(e)) from None
    resume = resume_dir is not None
    if resume:
        run_dir = Path(resume_dir)
        try:
            run_meta = json.loads((run_dir / "config.json").read_text())
            cfg = Config.from_dict(run_meta["config"])
        except (OSError, ValueError, KeyError) as e:
            raise TrainingError(f"cannot resume {run_dir}: no readable config.json ({e})") from None
        data_dir = data_dir or run_meta["data"]["root"]
        if heldout_dir is None and run_meta.get("heldout"):
            heldout_dir = run_meta["heldout"]["root"]
    if cfg is None or data_dir is None:
        raise TrainingError("a config and a data folder are needed")
    try:
        cfg.validate()
        if cfg.precision == "auto":
            chosen, why = precision.resolve_here("auto")
            cfg = cfg.replace(precision=chosen)
            log(f"precision {chosen} ({why})")
    except ValueError as e:
        raise TrainingError(f"invalid config: {e}") from None
    if cfg.batch_size % placement.replicas:
        raise TrainingError(f"batch size {cfg.batch_size} must be a multiple of the {placement.replicas} replicas "
                            f"of the {placement.name} strategy")

    heldout = _load_heldout(heldout_dir, cfg, log)
    images, mode, store = load_images_or_fail(data_dir, cfg, log, input_mode)
    scratch = None
    try:
        fingerprint = images.fingerprint()
        if resume and fingerprint["sha256"] != run_meta["data"]["sha256"]:
            raise TrainingError(
                f"the data under {data_dir} is not the data run {run_dir.name} was trained on "
                f"(fingerprint {fingerprint['sha256'][:12]} vs {run_meta['data']['sha256'][:12]})"
            )
        held_meta = None
        if heldout is not None:
            held_fp = heldout.fingerprint()
            held_meta = {"root": held_fp["root"], "count": held_fp["count"], "sha256": held_fp["sha256"]}
            overlap = set(heldout.sha256) & set(images.sha256)
            if overlap:
                raise TrainingError(f"--heldout {heldout_dir} shares {len(overlap)} image(s) with the training data: "
                                    "held-out images must never be trained on")
            recorded = run_meta.get("heldout") if resume else None
            if recorded and recorded["sha256"] != held_meta["sha256"]:
                raise TrainingError(f"the held-out images under {heldout_dir} are not those run {run_dir.name} "
                                    "was scored against; epoch scores would not be comparable")
        if not placement.chief:  # same work as the chief, written to a folder that is removed afterwards
            scratch = Path(tempfile.mkdtemp(prefix=f"cxr-worker{placement.worker}-"))
            if resume:
                shutil.copytree(run_dir, scratch / run_dir.name)
                run_dir = scratch / run_dir.name
            else:
                out_root = scratch
        if not resume:
            run_dir = new_run_dir(out_root, cfg.preset)
            run_meta = {
                "run_id": run_dir.name,
                "created": _now(),
                "command": sys.argv,
                "seed": cfg.seed,
                "config": cfg.to_dict(),
                "config_hash": cfg.hash(),
                "data": fingerprint,
                **({"heldout": held_meta} if held_meta else {}),
                "versions": library_versions(),
            }
            atomic_write_json(run_dir / "config.json", run_meta)
        log(f"run {run_dir} | {len(images.files)} images from {images.root} ({mode}) | preset {cfg.preset}: "
            f"{cfg.epochs} epochs x {cfg.steps_per_epoch} steps, batch {cfg.batch_size}, seed {cfg.seed}, "
            f"{cfg.precision}, {placement.describe()}")
        return _fit(cfg, images, mode, placement, run_dir, run_meta, resume, log, extra_callbacks, heldout)
    finally:
        _remove(store)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _load_heldout(heldout_dir, cfg: Config, log):
    """The held-out images for the quality monitor, read by the training set's rules; None
    when no folder is given or the monitor is off (quality_images 0)."""
    if heldout_dir is None:
        return None
    if not cfg.quality_images:
        log("quality_images is 0: the held-out folder is not scored")
        return None
    from cxr_runtime.images import NoImagesError, load_folder

    try:
        held = load_folder(heldout_dir, size=cfg.image_size, resize=cfg.resize)
    except NoImagesError as e:
        raise TrainingError(f"--heldout: {e}") from None
    warning = held.skipped_warning()
    if warning:
        log(warning)
    if len(held.files) <= quality.K_NEIGHBOURS:
        raise TrainingError(f"--heldout {heldout_dir}: {len(held.files)} usable images; the quality metrics need "
                            f"more than {quality.K_NEIGHBOURS}")
    return held


def _fit(cfg: Config, images, mode: str, placement: distribute.Placement, run_dir: Path, run_meta: dict,
         resume: bool, log, extra_callbacks, heldout=None) -> Path:
    source = pipeline.MemorySource(images.images, cfg) if mode == "memory" else pipeline.DiskSource(images.images, cfg)
    keras.utils.set_random_seed(cfg.seed)
    with placement.strategy.scope():
        generator = build_generator(cfg)
        discriminator = build_discriminator(cfg)
        gan = GAN(generator, discriminator, cfg)
        gan.compile(*make_optimizers(cfg))
        # optimizer state created here, not lazily inside the first (distributed) step
        gan.build_optimizers()

    start_epoch, start_step, history, trackers = 0, 0, [], None
    if resume:
        removed = checkpoint.clean_partial(run_dir)
        if removed:
            log(f"removed {len(removed)} partial file(s) left by the interruption")
        found = checkpoint.latest_valid(run_dir, warn=log)
        if found is not None:
            ckpt, meta = found
            try:
                checkpoint.restore(gan, ckpt, meta)
            except checkpoint.CheckpointError as e:
                raise TrainingError(f"cannot resume: {e}") from None
            start_epoch, start_step = int(meta["epoch"]), int(meta["step"])
            trackers = [v.numpy() for m in gan.metrics for v in m.variables]
            log(f"resuming from {ckpt.name} (step {start_step})")
        else:
            log("no complete checkpoint yet: starting this run from step 0")
        history = [r for r in read_history(run_dir) if r["epoch"] <= start_epoch]
        write_history(run_dir, history)

    if start_epoch < cfg.epochs:
        evaluator = Evaluator(generator, discriminator, images.images, cfg.latent_dim, cfg.seed, cfg.eval_max_images,
                              cfg.grid_images)
        reference = evaluator.reference()
        monitor, baseline = None, {}
        if heldout is not None:
            if mode == "stream":
                log("the training set is streamed: the audit at epoch end compares against its first "
                    f"{cfg.eval_max_images} images only")
            monitor = QualityMonitor(heldout.images, images.images[: cfg.eval_max_images] if mode == "stream"
                                     else images.images, cfg.quality_images, cfg.latent_dim, cfg.seed)
            baseline = {f"train_{k}": v for k, v in monitor.baseline().items()}
        atomic_write_json(run_dir / "reference.json", {
            **reference, "images": len(evaluator.real),
            "protocol": "each real image vs another real image (fixed-seed derangement); see docs/metrics.md",
            **({"heldout": {**baseline, "images": len(heldout.files),
                            "protocol": "the training images scored against the held-out images as generated "
                                        "ones are (evaluate.QualityMonitor)"}} if monitor else {}),
        })
        state = _StopState()
        done_in_epoch = start_step - start_epoch * cfg.steps_per_epoch  # > 0: resumed inside an epoch
        epoch_end = EpochEnd(run_dir, cfg, gan, evaluator, reference, history, log, state,
                             resume_trackers=trackers if done_in_epoch else None, monitor=monitor, run_meta=run_meta,
                             quality_reference=baseline)
        callbacks = [Progress(cfg, log, offset=done_in_epoch), Guard(run_dir, cfg, gan, state, log), epoch_end,
                     *extra_callbacks]
        with _signals(state):
            if done_in_epoch:  # finish the interrupted epoch first, then the rest
                gan.fit(_input(cfg, source, placement, start_step, (start_epoch + 1) * cfg.steps_per_epoch),
                        epochs=start_epoch + 1, initial_epoch=start_epoch,
                        steps_per_epoch=cfg.steps_per_epoch - done_in_epoch, callbacks=callbacks, verbose=0,
                        shuffle=False)
                start_epoch += 1
                callbacks[0].offset = 0
            if start_epoch < cfg.epochs and state.signum is None:
                gan.fit(_input(cfg, source, placement, gan.step, cfg.total_steps), epochs=cfg.epochs,
                        initial_epoch=start_epoch, steps_per_epoch=cfg.steps_per_epoch, callbacks=callbacks,
                        verbose=0, shuffle=False)
        if state.signum is not None:
            name = signal.Signals(state.signum).name
            raise Interrupted(f"stopped by {name} at step {gan.step}; "
                              f"checkpoint {state.checkpoint} written; continue with: cxr-train --resume {run_dir}",
                              state.signum)
    else:
        log(f"run {run_dir.name} had already finished all {cfg.epochs} epochs")

    step = gan.step
    path = save_generator(run_dir, gan, cfg, run_meta, cfg.epochs, step)
    log(f"done: {path}")
    return run_dir
