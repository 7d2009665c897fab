"""`cxr-train`: train the study's GAN on a folder of chest X-rays."""

from __future__ import annotations

import json
import sys

import click

from cxr_runtime import __version__
from cxr_runtime.choices import RESIZE_MODES
from cxr_training.config import AUGMENT_MODES, PRESETS, preset
from cxr_training.precision import CHOICES as PRECISIONS

EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="quick", show_default=True,
              help="Named configuration: 'quick' (the data-efficient recipe, 300 steps: 8-13 minutes on the "
                   "2-core reference machine), 'long' (the same recipe, 2,000 steps: about an hour there), "
                   "'paper' (the study's recipe exactly: 15 x 4000 steps), 'smoke' (tiny networks, seconds). "
                   "docs/training.md has what each costs.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=str), envvar="CXR_DATA",
              show_envvar=True,
              help="Folder of training images, searched recursively (.jpeg .jpg .png .bmp .tif). "
                   "Required for a new run; a resumed run defaults to its own.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the preset's number of epochs.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), help="Override the preset's steps per epoch.")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096),
              help="Real images per step (D also sees as many generated ones).")
@click.option("--seed", type=click.IntRange(min=0, max=2**31 - 1), help="Seed of weights, batches and latents.")
@click.option("--resize", type=click.Choice(RESIZE_MODES),
              help="How non-square images become square: stretch (the study) or centre-crop.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Epochs between checkpoints (default 1).")
@click.option("--heldout", "heldout_dir", type=click.Path(file_okay=False, path_type=str), envvar="CXR_HELDOUT",
              show_envvar=True,
              help="Folder of real images never trained on (other patients). Each epoch end then scores "
                   "the sampling generator against them (recall, coverage, KID, diversity) and counts the "
                   "images the memorisation audit would flag: metrics.jsonl, plots/quality.png.")
@click.option("--progressive/--no-progressive", default=None,
              help="The study's progressive resizing of the real images (on in 'paper', off in 'quick'/'long').")
@click.option("--lr-schedule", type=click.Choice(["decay", "constant"]),
              help="The study's adaptive learning rate: linear decay over the second half ('paper') or "
                   "constant ('quick'/'long').")
@click.option("--g-lr", type=click.FloatRange(min=0, min_open=True), help="Generator learning rate (2e-4).")
@click.option("--d-lr", type=click.FloatRange(min=0, min_open=True),
              help="Discriminator learning rate (2e-4); a higher D rate is the two time-scale rule (TTUR).")
@click.option("--augment", type=click.Choice(AUGMENT_MODES),
              help="Differentiable augmentation of real and generated images before D: fixed probability "
                   "(DiffAugment) or adaptive (ADA). 'fixed' in 'quick'/'long', off in 'paper'.")
@click.option("--augment-p", type=click.FloatRange(0.0, 1.0),
              help="Probability of each transform per image (fixed), or its starting value (adaptive).")
@click.option("--r1-gamma", type=click.FloatRange(min=0.0), help="R1 gradient penalty weight on D (0: off).")
@click.option("--label-smoothing", type=click.FloatRange(0.0, 0.5, max_open=True),
              help="One-sided label smoothing: D's target for real images is 1 minus this (0: off).")
@click.option("--ema-halflife", type=click.FloatRange(min=0.0),
              help="Half-life in steps of the EMA of G's weights that samples and export use (0: off; "
                   "ramped up from 0 over the first steps).")
@click.option("--mbstd/--no-mbstd", default=None, help="Minibatch standard-deviation channel in D.")
@click.option("--quality-images", type=click.IntRange(min=0),
              help="Generated images scored against --heldout at each epoch end (256; 0: off).")
@click.option("--snapshot-steps", type=str, metavar="STEP[,STEP...]",
              help="Also keep the sampling generator at these global steps (epoch ends) as "
                   "snapshots/step-NNNNNNNNN/generator.keras, for cxr-export.")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Arithmetic of the training step. auto (the default of 'paper' and 'quick'): "
                   "bfloat16 mixed precision on CPUs with AVX-512 BF16 or AMX, else float32; float16 "
                   "(mixed, loss-scaled) is for GPUs. Variables and outputs stay float32.")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
              show_default=True,
              help="tf.distribute strategy: mirrored = all GPUs of this host; multiworker = several hosts "
                   "configured by TF_CONFIG (docs/training.md). --batch-size is the global batch.")
@click.option("--input", "input_mode", type=click.Choice(["auto", "memory", "stream"]), default="auto",
              show_default=True,
              help="Hold the training set in memory or stream it from a memory-mapped file on disk; "
                   "auto streams sets larger than about 1 GB in memory. Batches are identical either way.")
@click.option("--out", "out_root", type=click.Path(file_okay=False, path_type=str), default="runs",
              show_default=True, help="Folder that receives the numbered run folders.")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Continue the run in this folder from its newest intact checkpoint.")
@click.option("--dry-run", is_flag=True, help="Check the data and config, print the plan, write nothing.")
@click.version_option(__version__, prog_name="cxr-train")
def main(preset_name, data_dir, epochs, steps_per_epoch, batch_size, seed, resize, checkpoint_every,
         heldout_dir, progressive, lr_schedule, g_lr, d_lr, augment, augment_p, r1_gamma, label_smoothing,
         ema_halflife, mbstd, quality_images, snapshot_steps, precision, strategy, input_mode, out_root,
         resume_dir, dry_run):
    """Train the study's DCGAN-style GAN (100-d noise -> 128x128 gray chest X-ray).

    Each run gets its own folder (runs/00001-quick/) with config.json, metrics.jsonl and
    metrics.csv (one row per epoch), samples/ (a grid per epoch), plots/ (the study's
    Fig. 6 and 7), checkpoints/ and, at the end, generator.keras for `cxr-export`.

    \b
    Examples:
      cxr-train --data ../shared/data/kermany-cxr/train/NORMAL --heldout ../shared/data/kermany-cxr/heldout/NORMAL
      cxr-train --preset paper --data /data/xrays --seed 1
      cxr-train --preset paper --data /data/xrays --augment fixed --ema-halflife 300
      cxr-train --resume runs/00003-paper
      cxr-train --preset paper --data /data/xrays --strategy mirrored --batch-size 128
    """
    try:
        snapshots = tuple(int(x) for x in snapshot_steps.split(",") if x.strip()) if snapshot_steps else None
    except ValueError:
        raise click.BadParameter(f"{snapshot_steps!r} is not a comma-separated list of steps",
                                 param_hint="--snapshot-steps") from None
    overrides = {
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "seed": seed,
        "resize": resize, "checkpoint_every": checkpoint_every, "lr_schedule": lr_schedule,
        "progressive": progressive, "precision": precision, "g_lr": g_lr, "d_lr": d_lr, "augment": augment,
        "augment_p": augment_p, "r1_gamma": r1_gamma, "label_smoothing": label_smoothing,
        "ema_halflife": ema_halflife, "d_mbstd": mbstd, "quality_images": quality_images,
        "snapshot_steps": snapshots,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    ctx = click.get_current_context()
    if resume_dir:
        explicit = [k for k in ("preset_name",) if ctx.get_parameter_source(k).name == "COMMANDLINE"]
        if overrides or explicit:
            raise click.UsageError("--resume continues a run with its saved config; drop the other options "
                                   f"({', '.join(sorted([*overrides, *explicit]))})")
        if dry_run:
            raise click.UsageError("--dry-run and --resume cannot be combined")
    elif not data_dir:
        raise click.UsageError("no data: pass --data DIR or set CXR_DATA")

    from cxr_training.tfenv import missing_extra

    problem = missing_extra("cxr-train")
    if problem:
        click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_USER_ERROR)
    cfg = None
    if not resume_dir:
        cfg = preset(preset_name).replace(**overrides)
        try:
            cfg.validate()
        except ValueError as e:
            raise click.UsageError(str(e)) from None

    if dry_run:
        _dry_run(cfg, data_dir)
        return

    from cxr_training.errors import Interrupted, NonFiniteLoss, TrainingError
    from cxr_training.train import train  # heavy: TensorFlow

    try:
        train(cfg, data_dir, out_root=out_root, resume_dir=resume_dir, strategy=strategy, input_mode=input_mode,
              heldout_dir=heldout_dir)
    except TrainingError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except NonFiniteLoss as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_FAILED)
    except Interrupted as e:
        click.echo(f"\n{e}", err=True)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without a new checkpoint
        click.echo("\ninterrupted: continue with cxr-train --resume <run folder> "
                   "(it restarts from the newest checkpoint)", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _dry_run(cfg, data_dir):
    from cxr_runtime.images import NoImagesError
    from cxr_training.data import load_training_images

    try:
        images = load_training_images(data_dir, cfg, cache=False)  # --dry-run writes nothing, not even the cache
    except NoImagesError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USER_ERROR)
    warning = images.skipped_warning()
    if warning:
        click.echo(warning, err=True)
    from cxr_training.models import build_discriminator, build_generator
    from cxr_training.precision import resolve_here

    g, d = build_generator(cfg), build_discriminator(cfg)
    chosen, why = resolve_here(cfg.precision)
    plan = {
        "precision": {"resolved": chosen, "why": why},
        "config": cfg.to_dict(),
        "data": {"root": images.root, "usable": len(images.files), "skipped": len(images.skipped),
                 "sha256": images.fingerprint()["sha256"]},
        "parameters": {"generator": g.count_params(), "discriminator": d.count_params()},
        "total_steps": cfg.total_steps,
    }
    click.echo(json.dumps(plan, indent=2))
    if len(images.files) < max(2, cfg.batch_size):
        click.echo(f"error: {len(images.files)} usable images: need at least max(2, batch size {cfg.batch_size})",
                   err=True)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
