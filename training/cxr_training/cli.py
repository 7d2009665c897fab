"""`cxr-train`: train the study's GAN on a folder of chest X-rays."""

from __future__ import annotations

import dataclasses
import json
import sys

import click

from cxr_runtime import __version__
from cxr_runtime.errors import EXIT_USER_ERROR, reported
from cxr_training.config import PRESETS, Config, preset

EXIT_INTERRUPTED = 130


def exit_now(code: int) -> None:
    """Exit without interpreter finalisation, after flushing our own output. Used once the
    interrupted run's checkpoint is on disk: a tf.data iterator destroyed during finalisation
    once waited forever on its reader thread, which would block every scheduler driving
    cxr-train (docs/reliability.md); everything the stop promises is already written."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class ListOf(click.ParamType):
    """A comma-separated list of `item` values (for tuple fields); item=tuple parses
    FRACTION:FACTOR pairs (the progressive schedule)."""

    def __init__(self, item):
        self.item = item
        self.name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = [x.strip() for x in str(value).split(",") if x.strip()]
            if self.item is tuple:
                return tuple((float(a), int(b)) for a, b in (x.split(":") for x in parts))
            return tuple(self.item(x) for x in parts)
        except ValueError:
            kind = "FRACTION:FACTOR pairs" if self.item is tuple else f"{self.item.__name__} values"
            self.fail(f"{value!r} is not a comma-separated list of {kind}", param, ctx)


def _metavar(f: dataclasses.Field) -> str | None:
    item = f.metadata.get("item")
    if item is tuple:
        return "F:K[,F:K...]"
    if item is int:
        return "N[,N...]"
    if item is str:
        return "NAME[,NAME...]"
    return None


def config_options() -> list[click.Option]:
    """One option per Config field, built from the field's metadata (config.opt): a new field
    gets its flag without touching this file."""
    options = []
    for f in dataclasses.fields(Config):
        spec = f.metadata
        if not spec.get("cli", False):
            continue
        flag = "--" + (spec.get("flag") or f.name).replace("_", "-")
        default = f.default
        if spec.get("choices"):
            kind = click.Choice(spec["choices"])
        elif isinstance(default, bool):
            kind = None
        elif isinstance(default, int):
            kind = click.IntRange(spec.get("lo"), spec.get("hi"), min_open=spec.get("lo_open", False),
                                  max_open=spec.get("hi_open", False))
        elif isinstance(default, float):
            kind = click.FloatRange(spec.get("lo"), spec.get("hi"), min_open=spec.get("lo_open", False),
                                    max_open=spec.get("hi_open", False))
        elif isinstance(default, tuple):
            kind = ListOf(spec["item"])
        else:
            kind = str
        shown = ",".join(":".join(map(str, x)) if isinstance(x, tuple) else str(x) for x in default) \
            if isinstance(default, tuple) else ("on" if default else "off") if isinstance(default, bool) else default
        help_ = f"{spec['help']} [paper: {shown if shown != '' else '(none)'}]"
        if kind is None:
            options.append(click.Option([f"{flag}/--no-{flag[2:]}", f.name], default=None, help=help_))
        else:
            options.append(click.Option([flag, f.name], type=kind, default=None, help=help_,
                                        metavar=_metavar(f)))
    return options


# the options a --resume may also take: a run grows (runs.lengthen)
GROWABLE = ("epochs", "snapshot_steps")


def config_from_options(params: dict) -> Config:
    """The Config a (parsed) cxr-train command line asks for: the preset, then the overrides;
    raises ValueError naming the first bad field."""
    overrides = {f.name: params[f.name] for f in dataclasses.fields(Config) if params.get(f.name) is not None}
    cfg = preset(params.get("preset_name") or "quick").replace(**overrides)
    cfg.validate()
    return cfg


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="quick", show_default=True,
              help="Named configuration: 'quick' (the data-efficient recipe on the lighter, cheaper networks, "
                   "with adaptive augmentation, 1,000 steps), 'long' (the same for 6,000 steps), "
                   "'paper' (the study's networks and recipe "
                   "exactly: 15 x 4000 steps), 'smoke' (tiny networks, seconds). docs/training.md has what each "
                   "costs per CPU. Every option below overrides one field of it.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=str), envvar="CXR_DATA",
              show_envvar=True,
              help="Folder of training images, searched recursively (.jpeg .jpg .png .bmp .tif). "
                   "Required for a new run; a resumed run defaults to its own.")
@click.option("--heldout", "heldout_dir", type=click.Path(file_okay=False, path_type=str), envvar="CXR_HELDOUT",
              show_envvar=True,
              help="Folder of real images never trained on (other patients). Each epoch end then scores "
                   "the sampling generator against them (recall, coverage, KID, diversity) and counts the "
                   "images the memorisation audit would flag: metrics.jsonl, plots/quality.png.")
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
              help="Continue the run in this folder from its newest intact checkpoint. With --epochs N, "
                   "a run (finished or not) first grows to N epochs: its final generator, if any, becomes "
                   "the snapshot of its last step; with --snapshot-steps, it keeps generators at later "
                   "steps too. Only runs with a constant learning rate and no progressive resizing grow "
                   "(every preset but paper).")
@click.option("--stop-at", "stop_at", type=click.IntRange(min=1), metavar="STEP",
              help="Pause at the end of the epoch that ends at STEP, with a checkpoint, and exit 0 without the "
                   "final generator; --resume continues the run exactly as if it had not paused. Not part of "
                   "the config: a budget for this invocation (cxr-sweep's pause_at uses it). At or past the "
                   "run's last step it does nothing.")
@click.option("--labels", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: a --data folder holding no image itself and 2-16 subfolders of images (NORMAL/, "
                   "PNEUMONIA/, ...) trains one generator for all classes, told the class (labelled run; "
                   "--heldout then needs the same subfolders); off: every image one set, as the study.")
@click.option("--dry-run", is_flag=True, help="Check the data and config, print the plan, write nothing.")
@click.version_option(__version__, prog_name="cxr-train")
def main(preset_name, data_dir, heldout_dir, strategy, input_mode, out_root, resume_dir, stop_at, labels, dry_run,
         **fields):
    """Train the study's DCGAN-style GAN (100-d noise -> 128x128 gray chest X-ray).

    Each run gets its own folder (runs/00001-quick/) with config.json, metrics.jsonl and
    metrics.csv (one row per epoch), samples/ (a grid per epoch), plots/ (the study's
    Fig. 6 and 7), checkpoints/ and, at the end, generator.keras for `cxr-export`.

    \b
    Examples:
      cxr-train --data ../shared/data/kermany-cxr/train/NORMAL --heldout ../shared/data/kermany-cxr/heldout/NORMAL
      cxr-train --preset paper --data /data/xrays --seed 1
      cxr-train --data ../shared/data/kermany-cxr/train --heldout ../shared/data/kermany-cxr/heldout  (labelled)
      cxr-train --preset paper --data /data/xrays --augment fixed --ema-halflife 300
      cxr-train --resume runs/00003-paper
      cxr-train --resume runs/00003-paper --stop-at 2000
      cxr-train --resume runs/00004-long --epochs 60 --snapshot-steps 4500   (train a finished run further)
      cxr-train --preset paper --data /data/xrays --strategy mirrored --batch-size 128
    """
    overrides = sorted(k for k, v in fields.items() if v is not None)
    ctx = click.get_current_context()
    if resume_dir:
        explicit = [k for k in ("preset_name",) if ctx.get_parameter_source(k).name == "COMMANDLINE"]
        others = [k for k in overrides if k not in GROWABLE]
        if others or explicit:
            raise click.UsageError("--resume continues a run with its saved config; drop the other options "
                                   f"({', '.join(sorted([*others, *explicit]))}); only --epochs (more of them) "
                                   "and --snapshot-steps (later ones) may be given")
        if dry_run:
            raise click.UsageError("--dry-run and --resume cannot be combined")
    elif not data_dir:
        raise click.UsageError("no data: pass --data DIR or set CXR_DATA")

    from cxr_training.tfenv import configure, missing_extra

    problem = missing_extra("cxr-train")
    if problem:
        click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_USER_ERROR)
    configure()  # TensorFlow's environment, before it starts
    cfg = None
    if not resume_dir:
        try:
            cfg = config_from_options({"preset_name": preset_name, **fields})
        except ValueError as e:
            raise click.UsageError(str(e)) from None

    if dry_run:
        _dry_run(cfg, data_dir, labels)
        return

    from cxr_training.errors import Interrupted
    from cxr_training.train import train  # heavy: TensorFlow

    with reported():  # TrainingError: exit 2, NonFiniteLoss: exit 1, one line each
        try:
            train(cfg, data_dir, out_root=out_root, resume_dir=resume_dir, strategy=strategy, input_mode=input_mode,
                  heldout_dir=heldout_dir, stop_at=stop_at, labels=labels,
                  **({"epochs": fields["epochs"], "snapshot_steps": fields["snapshot_steps"] or ()}
                     if resume_dir else {}))
        except Interrupted as e:  # checkpoint written: say how to resume, exit 128 + signal at once
            click.echo(f"\n{e}", err=True)
            exit_now(e.exit_code)
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without a new checkpoint
            click.echo("\ninterrupted: continue with cxr-train --resume <run folder> "
                       "(it restarts from the newest checkpoint)", err=True)
            sys.exit(EXIT_INTERRUPTED)


main.params.extend(config_options())


def _dry_run(cfg, data_dir, labels: str = "auto"):
    from cxr_runtime.images import NoImagesError
    from cxr_training.data import load_training_images, with_data_classes
    from cxr_training.errors import TrainingError

    try:
        cfg = with_data_classes(cfg, data_dir, labels)
    except TrainingError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USER_ERROR)

    try:
        images = load_training_images(data_dir, cfg, cache=False)  # --dry-run writes nothing, not even the cache
    except NoImagesError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USER_ERROR)
    warning = images.skipped_warning()
    if warning:
        click.echo(warning, err=True)
    withheld = {}
    if cfg.augment == "adaptive" and cfg.ada_signal == "validation":
        from cxr_training.data import split_validation

        try:
            withheld = {"withheld_from_d": split_validation(images, cfg, "memory")[1].files}
        except TrainingError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USER_ERROR)
    from cxr_training.models import build_discriminator, build_generator
    from cxr_training.precision import resolve_here

    g, d = build_generator(cfg), build_discriminator(cfg)
    chosen, why = resolve_here(cfg.precision)
    plan = {
        "precision": {"resolved": chosen, "why": why},
        "config": cfg.to_dict(),
        "data": {"root": images.root, "usable": len(images.files), "skipped": len(images.skipped),
                 "sha256": images.fingerprint()["sha256"], **withheld},
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
