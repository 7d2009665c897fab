"""The training loop, readable top to bottom.

    run = prepare_run(cfg, data_dir, ...)    # a new run: data, run folder, config.json, models
    run = resume_run(run_dir, ...)           # or an unfinished one: the same, from its checkpoint
    fit(run)                                 # the loop: steps, epoch ends, the final generator
    run.close()

`train()` does these for cxr-train. A `Run` holds everything a run is: config, folder and its
config.json, training (and held-out) images, where it computes (the distribution strategy),
the GAN, and where it stands (the step it starts from, the metric rows so far). Both kinds of
run take one setup path (_start, then _setup); they differ only in the folder each gives it
(a new one with a new config.json, or the run's own once its data is checked by content).
Reading the images, the stream file and the held-out set are data.py's.

Order of events in fit (_train, then _Loop.epoch and _Loop.steps): per epoch, the GAN's loss
means are reset, then each step runs the compiled train step (gan.py) on the next element of
the input pipeline (pipeline.py; one iterator for all the steps left), checks the losses, and
reports progress; at the epoch's end epoch.epoch_end does the metric suite, the quality
monitor (with --heldout), files, pictures, snapshots and the checkpoint. SIGINT/SIGTERM
(signals.py) stop the loop after the current step with a checkpoint; the loop is ours, not
keras.Model.fit, so no private Keras method has to be overridden (fit's symbolic build pulls
an element from the pipeline under a strategy, and its step function fails under
MirroredStrategy in this Keras/TensorFlow pair, keras-team/keras#19246). Errors a user can cause are errors.TrainingError (one line, exit 2).
"""

from __future__ import annotations

import gc
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr_runtime.io import atomic_write_json
from cxr_training import checkpoint, distribute, pipeline, precision
from cxr_training.artifacts import now, save_generator
from cxr_training.config import Config
from cxr_training.data import (
    heldout_record,
    labels_of,
    load_heldout,
    load_images_or_fail,
    remove_stream_file,
    split_validation,
    with_data_classes,
)
from cxr_training.epoch import Progress, check_losses, epoch_end, log_stderr, save_checkpoint
from cxr_training.errors import Interrupted, RunFolderError, TrainingError
from cxr_training.evaluate import LATENTS_KEYED, LATENTS_LEGACY, Evaluator, QualityMonitor
from cxr_training.gan import GAN, make_optimizers
from cxr_training.models import build_discriminator, build_generator
from cxr_training.runs import (
    CONFIG_FILE,
    RunFolder,
    lengthen,
    library_versions,
    new_run_dir,
    read_history,
    write_history,
)
from cxr_training.signals import StopState, handled
from cxr_training.tfenv import import_tf


@dataclass
class Run:
    """One training run: what it is, where it lives, what it computes with, where it stands."""

    cfg: Config
    folder: Path
    record: dict  # the run's record (config.json): config, data and held-out fingerprints, versions, command
    images: object  # the training images (cxr_runtime.images.ImageSet; rows on disk when streamed)
    mode: str  # "memory" or "stream"
    placement: distribute.Placement
    gan: GAN
    heldout: object | None = None  # held-out real images for the quality monitor
    start_step: int = 0  # the step the run continues from (a checkpoint's, or 0)
    history: list[dict] = field(default_factory=list)  # metric rows of the epochs done
    trackers: list | None = None  # loss means of an epoch resumed in its middle
    log: Callable[[str], None] = log_stderr
    store: Path | None = None  # the stream file (removed by close)
    scratch: Path | None = None  # a non-chief worker's throwaway folder (removed by close)
    # set by fit: the epoch-end work's fixed inputs
    evaluator: Evaluator | None = None
    monitor: QualityMonitor | None = None
    reference: dict = field(default_factory=dict)  # real-vs-real SSIM/MSE (every metrics row)
    baseline: dict = field(default_factory=dict)  # the training images scored by the monitor

    @property
    def start_epoch(self) -> int:
        return self.start_step // self.cfg.steps_per_epoch

    @property
    def labels(self):
        """The class of each training image (a labelled run), else None."""
        return labels_of(self.images.files, self.cfg.classes) if self.cfg.classes else None

    @property
    def heldout_labels(self):
        return labels_of(self.heldout.files, self.cfg.classes) if self.cfg.classes and self.heldout else None

    def close(self) -> None:
        remove_stream_file(self.store)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def train(cfg: Config | None = None, data_dir: str | Path | None = None, out_root: str | Path = "runs",
          resume_dir: str | Path | None = None, log=log_stderr, extra_callbacks=(), strategy: str = "default",
          input_mode: str = "auto", heldout_dir: str | Path | None = None, stop_at: int | None = None,
          labels: str = "auto", epochs: int | None = None, snapshot_steps=()) -> Path:
    """Run (or resume) training; return the run folder. `stop_at`: pause at the end of the epoch
    that ends at this step (fit). `strategy`: default, mirrored or
    multiworker (distribute.py); `input_mode`: auto, memory or stream (pipeline.py); neither
    changes what is computed, only where and how. `heldout_dir`: real images never trained on,
    scored at each epoch end; a resumed run uses the folder it started with. `extra_callbacks`:
    objects with any of on_epoch_begin(epoch), on_train_batch_begin(batch),
    on_train_batch_end(batch, logs), on_epoch_end(epoch, logs) (a keras Callback has them).
    `labels`: auto (a data folder with one subfolder per class trains one generator for all
    classes; data.class_layout) or off (every image one set, as the study). `epochs`,
    `snapshot_steps` with `resume_dir`: the resumed run grows to that many epochs, or keeps
    generators at more steps, first (runs.lengthen)."""
    if resume_dir is not None:
        if epochs is not None or snapshot_steps:
            if strategy == "multiworker":
                raise TrainingError("lengthen a run on one host first (cxr-train --resume RUN --epochs N --stop-at "
                                    "<its step>), then resume it with --strategy multiworker")
            folder = RunFolder(resume_dir)
            try:
                lengthen(folder, folder.config.epochs if epochs is None else epochs, snapshot_steps, log)
            except RunFolderError as e:
                raise TrainingError(f"cannot resume {e}") from None
        run = resume_run(resume_dir, data_dir, heldout_dir, strategy, input_mode, log)
    else:
        if cfg is None or data_dir is None:
            raise TrainingError("a config and a data folder are needed")
        run = prepare_run(cfg, data_dir, out_root, heldout_dir, strategy, input_mode, log, labels)
    try:
        return fit(run, extra_callbacks, stop_at=stop_at)
    finally:
        run.close()


def prepare_run(cfg: Config, data_dir, out_root="runs", heldout_dir=None, strategy: str = "default",
                input_mode: str = "auto", log=log_stderr, labels: str = "auto") -> Run:
    """A new run: the data read and fingerprinted, `out_root/NNNNN-<preset>/config.json`
    written before step 0, G and D built from the seed. A data folder with one subfolder per
    class (labels auto) makes a labelled run: cfg.classes, balanced batches, G and D told the
    class, the held-out folder read with the same classes."""
    cfg = with_data_classes(cfg, data_dir, labels)
    placement = _start(cfg, strategy, log)

    def new_folder(cfg: Config, images, heldout, made: _removed_on_failure):
        """A new run folder and its config.json (a worker's: in a scratch folder, removed afterwards)."""
        fingerprint = images.fingerprint()
        held = heldout_record(heldout, heldout_dir, images)
        scratch = None if placement.chief else made.add(_scratch_dir(placement))  # the chief's work, thrown away
        folder = new_run_dir(scratch or out_root, cfg.preset)
        record = {
            "run_id": folder.name,
            "created": now(),
            "command": sys.argv,
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "config_hash": cfg.hash(),
            "data": fingerprint,
            **({"classes": {c: int(n) for c, n in zip(cfg.classes, np.bincount(
                labels_of(images.files, cfg.classes), minlength=cfg.n_classes))}} if cfg.classes else {}),
            **({"heldout": held} if held else {}),
            "latents": LATENTS_KEYED,
            "versions": library_versions(),
        }
        atomic_write_json(folder / CONFIG_FILE, record)
        return folder, record, scratch

    return _setup(cfg, placement, data_dir, heldout_dir, input_mode, log, new_folder)


def resume_run(run_dir, data_dir=None, heldout_dir=None, strategy: str = "default", input_mode: str = "auto",
               log=log_stderr) -> Run:
    """An unfinished run, from its newest intact checkpoint: the same data (checked by content),
    the same held-out folder, metric rows after the checkpoint dropped."""
    run_folder = RunFolder(run_dir)
    folder = run_folder.path
    try:
        record, cfg = run_folder.record, run_folder.config
    except RunFolderError as e:
        raise TrainingError(f"cannot resume {e}") from None
    placement = _start(cfg, strategy, log)  # as the run started
    scored = record.get("heldout")  # the held-out images its epochs were scored against
    if heldout_dir is not None and not scored:
        raise TrainingError(f"run {folder.name} was started without --heldout: its epochs are not scored, and a "
                            "resume cannot start scoring them (metrics.jsonl would mix rows with and without the "
                            "monitor); drop --heldout")
    data_dir = data_dir or record["data"]["root"]
    heldout_dir = heldout_dir or (scored["root"] if scored else None)

    def own_folder(cfg: Config, images, heldout, made: _removed_on_failure):
        """The run's folder and config.json, once the images are those it was trained and scored on (a
        worker's: a copy in a scratch folder, removed afterwards)."""
        if images.fingerprint()["sha256"] != record["data"]["sha256"]:
            raise TrainingError(f"the data under {data_dir} is not the data run {folder.name} was trained on "
                                f"(fingerprint {images.fingerprint()['sha256'][:12]} vs {record['data']['sha256'][:12]})")
        held = heldout_record(heldout, heldout_dir, images)
        if scored and held and scored["sha256"] != held["sha256"]:
            raise TrainingError(f"the held-out images under {heldout_dir} are not those run {folder.name} "
                                "was scored against; epoch scores would not be comparable")
        if placement.chief:
            return folder, record, None
        scratch = made.add(_scratch_dir(placement))
        shutil.copytree(folder, scratch / folder.name)
        return scratch / folder.name, record, scratch

    return _setup(cfg, placement, data_dir, heldout_dir, input_mode, log, own_folder, resuming=True)


def fit(run: Run, hooks=(), stop_at: int | None = None) -> Path:
    """The loop: every step left, every epoch end, then the final generator. Returns the run
    folder; raises Interrupted after a SIGINT/SIGTERM (checkpoint written) and NonFiniteLoss.
    `stop_at` (an epoch end before the last): pause there instead, with a checkpoint and without
    the final generator; the run stays unfinished, and a resume continues it as if it had never
    paused, bitwise with cfg.deterministic or at small sizes (a budget per session; cxr-sweep's
    pause_at)."""
    cfg, gan, log = run.cfg, run.gan, run.log
    stop_at = _checked_stop(cfg, stop_at)
    for hook in hooks:
        if hasattr(hook, "set_model"):
            hook.set_model(gan)
    if run.start_step >= cfg.total_steps:
        log(f"run {run.folder.name} had already finished all {cfg.epochs} epochs")
    elif stop_at is not None and run.start_step >= stop_at:
        log(f"run {run.folder.name} is at step {run.start_step}, not before --stop-at {stop_at}: nothing to train; "
            f"continue it with: cxr-train --resume {run.folder}")
        return run.folder
    else:
        stop = _train(run, hooks, stop_at)
        if stop.signum is not None:
            raise Interrupted(f"stopped by {signal.Signals(stop.signum).name} at step {gan.step}; checkpoint "
                              f"{stop.checkpoint} written; continue with: cxr-train --resume {run.folder}",
                              stop.signum)
        if stop_at is not None and gan.step >= stop_at:
            log(f"paused at step {gan.step} of {cfg.total_steps} (--stop-at): checkpoint {stop.checkpoint} written; "
                f"continue with: cxr-train --resume {run.folder}")
            return run.folder
    path = save_generator(run.folder, gan, cfg, run.record, cfg.epochs, gan.step)
    log(f"done: {path}")
    return run.folder


def _train(run: Run, hooks, stop_at: int | None) -> StopState:
    """The epochs left, until the last one, a SIGINT/SIGTERM or stop_at's epoch end; returns
    why it stopped (the signal, if any) and the last checkpoint written."""
    _prepare_epoch_end(run)
    loop = _Loop(run, hooks, stop_at)
    try:
        with handled(loop.stop):
            for epoch in range(run.start_epoch, run.cfg.epochs):
                if not loop.epoch(epoch):
                    break
    finally:
        loop.release()
    return loop.stop


class _Loop:
    """What the loop carries from epoch to epoch: the hooks, one input iterator for all the
    steps left and the compiled step that consumes it, the progress lines, the signal state
    and the timer of checkpoints inside an epoch."""

    def __init__(self, run: Run, hooks, stop_at: int | None):
        cfg = run.cfg
        self.run, self.hooks, self.stop_at = run, hooks, stop_at
        self.source = (pipeline.MemorySource if run.mode == "memory" else pipeline.DiskSource)(run.images.images,
                                                                                               cfg, run.labels)
        self.batches = iter(_input(cfg, self.source, run.placement, run.start_step, cfg.total_steps))
        self.train_step = run.gan.step_function()
        self.progress = Progress(cfg, run.log)
        self.stop = StopState()
        self.timer = _CheckpointTimer(cfg.checkpoint_minutes)

    def epoch(self, epoch: int) -> bool:
        """Epoch `epoch` (from 0): its steps, then its end; False when the loop stops after it."""
        run, stop = self.run, self.stop
        logs, step_times, seconds = self.steps(epoch)
        if stop.signum is not None and run.gan.step % run.cfg.steps_per_epoch:  # stopped inside: its end never came
            stop.checkpoint = save_checkpoint(run, epoch)
            return False
        pausing = self.stop_at is not None and run.gan.step >= self.stop_at
        written = epoch_end(run, epoch + 1, logs, step_times, seconds, stop.signum is not None or pausing)
        stop.checkpoint = written or stop.checkpoint
        if written:
            self.timer.reset()
        _call(self.hooks, "on_epoch_end", epoch, logs)
        return stop.signum is None and not pausing

    def steps(self, epoch: int) -> tuple[dict, list[float], float]:
        """The steps of epoch `epoch` left (all but in an epoch resumed in its middle), until a
        signal: the last step's losses, each step's seconds, the epoch's seconds."""
        run, gan, spe = self.run, self.run.gan, self.run.cfg.steps_per_epoch
        gan.reset_metrics()
        first = gan.step - epoch * spe  # > 0 only in an epoch resumed in its middle
        if first and run.trackers is not None:
            for v, value in zip((v for m in gan.metrics for v in m.variables), run.trackers):
                v.assign(value)
        _call(self.hooks, "on_epoch_begin", epoch)
        self.progress.begin(epoch + 1, first)
        t_epoch, step_times, logs = time.time(), [], {}
        for batch in range(first, spe):
            _call(self.hooks, "on_train_batch_begin", batch)
            t = time.perf_counter()
            logs = {k: float(v) for k, v in self.train_step(self.batches).items()}
            step_times.append(time.perf_counter() - t)
            check_losses(run, logs, epoch + 1)
            self.progress.step(batch + 1, logs)
            _call(self.hooks, "on_train_batch_end", batch, logs)
            if self.stop.signum is not None:
                break
            if batch + 1 < spe and self.timer.due():  # the epoch's end writes its own
                name = save_checkpoint(run, epoch)
                self.timer.reset()
                run.log(f"  checkpoint {name} ({run.cfg.checkpoint_minutes:g} min since the last one)")
        self.progress.end()
        return logs, step_times, time.time() - t_epoch

    def release(self) -> None:
        """Release the input pipeline while the interpreter is whole, whatever ended the loop: a
        tf.data iterator left to interpreter shutdown once waited forever on its reader thread
        (docs/reliability.md)."""
        self.batches = self.source = None
        gc.collect()


# --------------------------------------------------------------------------- setup: prepare_run and resume_run


def _start(cfg: Config, strategy: str, log) -> distribute.Placement:
    """TensorFlow's first work, in the order it must come: cfg.deterministic's thread settings
    (before TensorFlow starts its thread pools), then the strategy (MultiWorkerMirroredStrategy
    must exist before any other TensorFlow work)."""
    _deterministic(cfg, log)
    try:
        return distribute.make(strategy)
    except distribute.StrategyError as e:
        raise TrainingError(str(e)) from None


def _setup(cfg: Config, placement: distribute.Placement, data_dir, heldout_dir, input_mode: str, log, place,
           resuming: bool = False) -> Run:
    """The setup of every run, new or resumed, once the strategy exists: the config checked and
    its precision resolved, the held-out and training images read, then `place(cfg, images,
    heldout, made)` gives the run its folder, record (config.json) and scratch folder (a new
    folder, or the run's own once the images are checked against it), G and D are built from
    the seed and, resuming, the newest intact checkpoint is restored. A failure removes the
    stream file and every folder added to `made`."""
    cfg = _resolved(cfg, placement, log)
    heldout = load_heldout(heldout_dir, cfg, log)
    images, mode, store = load_images_or_fail(data_dir, cfg, log, input_mode)
    with _removed_on_failure(store) as made:
        folder, record, scratch = place(cfg, images, heldout, made)
        validation = None
        if cfg.augment == "adaptive" and cfg.ada_signal == "validation":
            images, withheld, probe = split_validation(images, cfg, mode)
            validation = (probe, withheld.images)
            log(f"ADA's validation signal: {len(withheld.files)} training images withheld from D: "
                f"{', '.join(withheld.files)}")
        run = Run(cfg, folder, record, images, mode, placement, _build(cfg, placement), heldout, log=log, store=store,
                  scratch=scratch)
        if validation is not None:
            run.gan.set_validation(*validation)
        if resuming:
            _restore(run)
    _announce(run)
    return run


def _scratch_dir(placement: distribute.Placement) -> Path:
    """A non-chief worker's folder: it does the chief's work there, and the folder goes at close."""
    return Path(tempfile.mkdtemp(prefix=f"cxr-worker{placement.worker}-"))


class _removed_on_failure:
    """`with _removed_on_failure(stream_file) as made: ... made.add(folder)`: if the block
    fails, the stream file and every added folder are removed (nothing half-made is left)."""

    def __init__(self, *paths):
        self.paths = [p for p in paths if p is not None]

    def add(self, path: Path) -> Path:
        self.paths.append(path)
        return path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is not None:
            for p in self.paths:
                if Path(p).is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    Path(p).unlink(missing_ok=True)
        return False


def _deterministic(cfg: Config, log) -> None:
    """cfg.deterministic: one inter-op thread and TensorFlow's op determinism, process-wide. With
    several inter-op threads, ops that do not depend on each other run at once and share the
    cores, and at the real size that changes their float results by rounding from run to run
    (measured: docs/training.md, "Reproducibility"); one at a time, on the same machine and
    library versions, a run is bitwise the same every time. The thread count can only be set
    before TensorFlow starts its thread pools: a process that has already run TensorFlow with
    another count gets a TrainingError (cxr-train always starts fresh)."""
    if not cfg.deterministic:
        return
    tf, _ = import_tf()
    try:  # a no-op when already 1; RuntimeError once the pools run with another count
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        raise TrainingError("--deterministic must be set before TensorFlow starts its thread pools, and this "
                            "process has already run TensorFlow with several inter-op threads: train in a new "
                            "process (as cxr-train does)") from None
    tf.config.experimental.enable_op_determinism()
    log("deterministic: one inter-op thread, op determinism on (bitwise the same run on this machine)")


def _resolved(cfg: Config, placement: distribute.Placement, log) -> Config:
    """The config checked, its precision resolved on this machine ("auto" is never stored)."""
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
    return cfg


def _build(cfg: Config, placement: distribute.Placement) -> GAN:
    """G, D and their optimizers from the seed, inside the strategy's scope; the optimizer
    state is created now, not lazily inside the first (distributed) step."""
    _, keras = import_tf()
    keras.utils.set_random_seed(cfg.seed)
    with placement.strategy.scope():
        gan = GAN(build_generator(cfg), build_discriminator(cfg), cfg)
        gan.compile(*make_optimizers(cfg))
        gan.build_optimizers()
    return gan


def _restore(run: Run) -> None:
    """Load the newest intact checkpoint into run.gan and set where the run stands."""
    removed = checkpoint.clean_partial(run.folder)
    if removed:
        run.log(f"removed {len(removed)} partial file(s) left by the interruption")
    found = checkpoint.latest_valid(run.folder, warn=run.log)
    if found is None:
        run.log("no complete checkpoint yet: starting this run from step 0")
    else:
        ckpt, meta = found
        try:
            checkpoint.restore(run.gan, ckpt, meta)
        except checkpoint.CheckpointError as e:
            raise TrainingError(f"cannot resume: {e}") from None
        run.start_step = int(meta["step"])
        run.trackers = [v.numpy() for m in run.gan.metrics for v in m.variables]
        run.log(f"resuming from {ckpt.name} (step {run.start_step})")
    run.history = [r for r in read_history(run.folder) if r["epoch"] <= run.start_epoch]
    write_history(run.folder, run.history)


def _announce(run: Run) -> None:
    cfg = run.cfg
    run.log(f"run {run.folder} | {len(run.images.files)} images from {run.images.root} ({run.mode}) | preset "
            f"{cfg.preset}: {cfg.epochs} epochs x {cfg.steps_per_epoch} steps, batch {cfg.batch_size}, seed "
            f"{cfg.seed}, {cfg.precision}, {run.placement.describe()}")


# --------------------------------------------------------------------------- the loop's pieces


def _prepare_epoch_end(run: Run) -> None:
    """The epoch-end work's fixed inputs (evaluation latents and real images, the monitor's
    reference), and reference.json beside config.json."""
    cfg = run.cfg
    latents = run.record.get("latents", LATENTS_LEGACY)
    labels = run.labels
    run.evaluator = Evaluator(run.gan.generator, run.gan.discriminator, run.images.images, cfg.latent_dim, cfg.seed,
                              cfg.eval_max_images, cfg.grid_images, latents, cfg.n_classes, labels)
    run.reference = run.evaluator.reference()
    if run.heldout is not None:
        if run.mode == "stream":
            run.log("the training set is streamed: the audit at epoch end compares against its first "
                    f"{cfg.eval_max_images} images only")
        train_images = run.images.images[: cfg.eval_max_images] if run.mode == "stream" else run.images.images
        train_labels = None if labels is None else labels[: len(train_images)]
        run.monitor = QualityMonitor(run.heldout.images, train_images, cfg.quality_images, cfg.latent_dim, cfg.seed,
                                     latents, cfg.classes, run.heldout_labels, train_labels)
        run.evaluator.set_heldout(run.heldout.images, run.heldout_labels)
        run.baseline = {f"train_{k}": v for k, v in run.monitor.baseline().items()}
    atomic_write_json(run.folder / "reference.json", {
        **run.reference, "images": len(run.evaluator.real),
        "protocol": "each real image vs another real image (fixed-seed derangement); see docs/metrics.md",
        **({"heldout": {**run.baseline, "images": len(run.heldout.files),
                        "protocol": "the training images scored against the held-out images as generated "
                                    "ones are (evaluate.QualityMonitor)"}} if run.monitor else {}),
    })


def _input(gan_cfg: Config, source, placement: distribute.Placement, start: int, end: int):
    """The dataset `fit` consumes for global steps [start, end)."""
    if placement.name == "default":
        return pipeline.dataset(source, gan_cfg, start, end)

    def per_worker(ctx):
        local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        return pipeline.dataset(source, gan_cfg, start, end, local_replicas=local,
                                first_replica=ctx.input_pipeline_id * local, replicas=ctx.num_replicas_in_sync)

    return placement.strategy.distribute_datasets_from_function(per_worker)


class _CheckpointTimer:
    """When a checkpoint inside an epoch is due: `minutes` after the last one (or the start)."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60.0
        self.reset()

    def reset(self):
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self.last >= self.seconds


def _checked_stop(cfg: Config, stop_at: int | None) -> int | None:
    """stop_at as fit uses it: None when absent or at/after the run's end; an epoch end, else
    TrainingError."""
    if stop_at is None or stop_at >= cfg.total_steps:
        return None
    if stop_at < 1 or stop_at % cfg.steps_per_epoch:
        raise TrainingError(f"--stop-at {stop_at} is not an epoch end of this run (a multiple of its "
                            f"{cfg.steps_per_epoch} steps per epoch, below its {cfg.total_steps} steps)")
    return stop_at


def _call(hooks, name: str, *args) -> None:
    for hook in hooks:
        method = getattr(hook, name, None)
        if method is not None:
            method(*args)
