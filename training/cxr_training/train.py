"""The training run, top to bottom: data, run folder, models, fit, artefacts.

`train()` is what `cxr-train` calls. Order of events in a new run:
1. read and fingerprint the data (cxr_runtime's reader), refuse if nothing is usable;
2. create `runs/NNNNN-<preset>/` and write `config.json` (before step 0);
3. build G and D from the seed, compile the GAN, compute the real-vs-real reference;
4. `fit`, with the callbacks of callbacks.py: after each epoch the metric suite (and, with
   a held-out folder, the quality monitor), a sample grid, the plots, snapshots at the
   configured steps and (every `checkpoint_every` epochs, and at the end) a checkpoint;
   SIGINT/SIGTERM are handled by signals.py;
5. save the final generator (`generator.keras` + `generator.json`, artifacts.py) for export.

A resumed run (`resume_dir`) reads config.json, checks that the data is the same
content, restores the newest intact checkpoint and drops metric rows written after it.
Errors a user can cause are errors.TrainingError (one line, exit code 2 in cxr-train).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from cxr_runtime import quality
from cxr_runtime.io import atomic_write_json
from cxr_training import checkpoint, distribute, pipeline, precision
from cxr_training.artifacts import now, save_generator
from cxr_training.callbacks import EpochEnd, Guard, Progress, log_stderr
from cxr_training.config import Config
from cxr_training.data import load_training_images, stream_store_dir
from cxr_training.errors import Interrupted, TrainingError
from cxr_training.evaluate import Evaluator, QualityMonitor
from cxr_training.gan import GAN, make_optimizers
from cxr_training.models import build_discriminator, build_generator
from cxr_training.runs import library_versions, new_run_dir, read_history, write_history
from cxr_training.signals import StopState, handled
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


def load_images_or_fail(data_dir, cfg: Config, log=log_stderr, input_mode: str = "auto"):
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
          resume_dir: str | Path | None = None, log=log_stderr, extra_callbacks=(), strategy: str = "default",
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
                "created": now(),
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
        state = StopState()
        done_in_epoch = start_step - start_epoch * cfg.steps_per_epoch  # > 0: resumed inside an epoch
        epoch_end = EpochEnd(run_dir, cfg, gan, evaluator, reference, history, log, state,
                             resume_trackers=trackers if done_in_epoch else None, monitor=monitor, run_meta=run_meta,
                             quality_reference=baseline)
        callbacks = [Progress(cfg, log, offset=done_in_epoch), Guard(run_dir, cfg, gan, state, log), epoch_end,
                     *extra_callbacks]
        with handled(state):
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
            # Release the input pipeline now, while the interpreter is whole: a tf.data iterator
            # left for interpreter shutdown can wait forever on its reader thread
            # (docs/reliability.md, "SIGTERM at exit"); the CLI also exits without finalisation.
            del source
            gc.collect()
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
