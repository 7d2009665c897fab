"""`cxr-train`: train the study's GAN on a folder of chest X-rays."""

from __future__ import annotations

import json
import sys

import click

from cxr_runtime import __version__
from cxr_training.config import PRESETS, preset

EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="quick", show_default=True,
              help="Named configuration: 'paper' (the study: 15 x 4000 steps, batch 32), "
                   "'quick' (the paper's networks for 8-13 minutes on 2 CPU cores), "
                   "'smoke' (tiny networks, seconds).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=str), envvar="CXR_DATA",
              show_envvar=True,
              help="Folder of training images, searched recursively (.jpeg .jpg .png .bmp .tif). "
                   "Required for a new run; a resumed run defaults to its own.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the preset's number of epochs.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), help="Override the preset's steps per epoch.")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096),
              help="Real images per step (D also sees as many generated ones).")
@click.option("--seed", type=click.IntRange(min=0, max=2**31 - 1), help="Seed of weights, batches and latents.")
@click.option("--resize", type=click.Choice(["stretch", "crop"]),
              help="How non-square images become square: stretch (the study) or centre-crop.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Epochs between checkpoints (default 1).")
@click.option("--no-progressive", is_flag=True, help="Turn progressive resizing off.")
@click.option("--lr-schedule", type=click.Choice(["decay", "constant"]),
              help="Adaptive learning rate: linear decay over the second half (default) or constant.")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
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
         no_progressive, lr_schedule, precision, strategy, input_mode, out_root, resume_dir, dry_run):
    """Train the study's DCGAN-style GAN (100-d noise -> 128x128 gray chest X-ray).

    Each run gets its own folder (runs/00001-quick/) with config.json, metrics.jsonl and
    metrics.csv (one row per epoch), samples/ (a grid per epoch), plots/ (the study's
    Fig. 6 and 7), checkpoints/ and, at the end, generator.keras for `cxr-export`.

    \b
    Examples:
      cxr-train --data ../shared/data/kermany-cxr/train/NORMAL
      cxr-train --preset paper --data /data/xrays --seed 1
      cxr-train --resume runs/00003-paper
      cxr-train --preset paper --data /data/xrays --strategy mirrored --batch-size 128
    """
    overrides = {
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "seed": seed,
        "resize": resize, "checkpoint_every": checkpoint_every, "lr_schedule": lr_schedule,
        "progressive": False if no_progressive else None, "precision": precision,
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

    from cxr_training.train import Interrupted, NonFiniteLoss, TrainingError, train  # heavy: TensorFlow

    try:
        train(cfg, data_dir, out_root=out_root, resume_dir=resume_dir, strategy=strategy, input_mode=input_mode)
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
        images = load_training_images(data_dir, cfg)
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
