"""cxr-utility: what synthetic X-rays do for a classifier tested on real patients (docs/utility.md)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import click

from cxr_runtime.errors import CxrError


def _fail(msg: str) -> None:
    click.echo(f"cxr-utility: error: {msg}", err=True)
    sys.exit(2)


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise click.BadParameter("give positive integers")
    return values


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.group()
def main():
    """Train the fixed classifier on real and synthetic images and test it on real patients."""


@main.command("protocols")
@click.option("--real", "real_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Real training images, one subfolder per class (NORMAL/, PNEUMONIA/).")
@click.option("--test", "test_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Real held-out images of other patients, the same subfolders.")
@click.option("--synthetic", "synthetic", multiple=True, metavar="N=DIR",
              help="Synthetic images (the same subfolders) of a generator trained on the N-per-class real subset; "
                   "repeat for each size. DIR alone means N = the full real set's per-class count.")
@click.option("--sizes", default="10,25,50,138", show_default=True, help="Real images per class (nested subsets).")
@click.option("--seeds", type=click.IntRange(1, 100), default=5, show_default=True, help="Classifier seeds per arm.")
@click.option("--steps", type=click.IntRange(1), default=600, show_default=True, help="Training batches per model.")
@click.option("--synthetic-per-class", type=click.IntRange(1), default=500, show_default=True,
              help="Synthetic (and classic-augmentation) images added per class.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="utility.json", show_default=True,
              help="The results as JSON; the table goes to OUT with .md.")
@click.option("--fresh", is_flag=True, help="Retrain every model instead of reusing those in OUT's .seeds.jsonl.")
def protocols_command(real_dir, test_dir, synthetic, sizes, seeds, steps, synthetic_per_class, out, fresh):
    """TRTR, real + classic augmentation, and with --synthetic TSTR and real + synthetic, at each size.

    Every trained model's predictions are appended to OUT with .seeds.jsonl as soon as they exist:
    the same command after an interruption (or with more sizes, seeds or --synthetic sets) trains
    only the models it lacks. A model is reused only for the very same images and classifier.
    """
    from cxr_runtime.io import atomic_write_json, atomic_write_text
    from cxr_utility import protocols
    from cxr_utility.classifier import ClassifierSpec
    from cxr_utility.data import load_labelled

    sizes = _ints(sizes)
    try:
        real = load_labelled(real_dir)
        test = load_labelled(test_dir, classes=real.classes)
        full = min(real.counts().values())
        syn, folders = {}, {}
        for item in synthetic:
            n, sep, folder = item.partition("=")
            if sep and not n.isdigit():
                _fail(f"--synthetic {item!r}: expected N=DIR or DIR")
            n, folder = (int(n), folder) if sep else (full, item)
            syn[n], folders[str(n)] = load_labelled(folder, classes=real.classes), folder
        bad = [n for n in (*sizes, *syn) if n > full]
        if bad:
            _fail(f"sizes {bad} exceed the {full} real images of the smallest class")
        cache_path = out.with_suffix(".seeds.jsonl")
        if fresh and cache_path.exists():
            cache_path.unlink()
        cache = protocols.SeedCache(cache_path)
        if cache.lines:
            _log(f"cxr-utility: {len(cache.lines)} trained models in {cache_path} are reused where they match")
        result = protocols.measure(real, test, sizes, list(range(seeds)), syn, synthetic_per_class,
                                   ClassifierSpec(steps=steps), log=_log, cache=cache)
    except (CxrError, ValueError) as e:
        _fail(str(e))
    result.update(real=str(real_dir), test=str(test_dir), synthetic=folders)
    atomic_write_json(out, result)
    table = protocols.markdown(result)
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    click.echo(table)
    click.echo(f"wrote {out} and {out.with_suffix('.md')}")


# `run`: the command's name until it became `protocols`, still accepted (scripts, older docs), not listed
_run_alias = copy.copy(protocols_command)
_run_alias.name, _run_alias.hidden = "run", True
main.add_command(_run_alias)


@main.command()
@click.option("--real", "real_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Real training images, one subfolder per class.")
@click.option("--per-class", type=click.IntRange(1), required=True, help="Images per class.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="New folder: OUT/CLASS/ with copies of the subset's files, and OUT/subset.json.")
def subset(real_dir, per_class, out):
    """Write the nested real subset `protocols --sizes` uses at PER_CLASS images per class, so that a
    generator can be trained on exactly the images that classifier sees (and no more).

    The same command again is a no-op when OUT already holds that subset; a different OUT content
    is refused rather than mixed.
    """
    import shutil

    from cxr_runtime.io import atomic_write_json
    from cxr_utility.data import SUBSET_SEED, load_labelled, nested_subset

    try:
        chosen = nested_subset(load_labelled(real_dir), per_class)
    except (CxrError, ValueError) as e:
        _fail(str(e))
    record = {"real": str(real_dir), "per_class": per_class, "subset_seed": SUBSET_SEED, "files": chosen.files}
    manifest = out / "subset.json"
    if out.exists() and any(out.iterdir()):
        try:
            same = json.loads(manifest.read_text())["files"] == chosen.files
        except (OSError, ValueError, KeyError):
            same = False
        if not same:
            _fail(f"{out} exists and does not hold this subset; give a new folder")
        click.echo(f"{out} already holds the {per_class}-per-class subset")
        return
    for f in chosen.files:
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_dir / f, out / f)
    atomic_write_json(manifest, record)  # last: a folder without it is an unfinished one, refused above
    click.echo(f"wrote {len(chosen.files)} images ({per_class} per class of {', '.join(chosen.classes)}) to {out}")


@main.command()
@click.option("--real", "real_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Real images (a class subfolder, or a folder of images).")
@click.option("--synthetic", "syn_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Synthetic images of the same class.")
@click.option("--calibrate", is_flag=True, help="Also: real half against real half, and against blurred, noised "
                                                 "and checkerboarded copies (the detector must see those).")
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=600, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def detect(real_dir, syn_dir, calibrate, folds, steps, as_json):
    """The classifier trained to tell synthetic from real images: cross-validated AUC (0.5: it cannot)."""
    import dataclasses

    from cxr_runtime.errors import NoImagesError
    from cxr_runtime.images import load_folder
    from cxr_utility import protocols

    if not syn_dir and not calibrate:
        _fail("give --synthetic, --calibrate or both")
    spec = dataclasses.replace(protocols.DETECTOR, steps=steps)
    try:
        real = load_folder(real_dir).images
        result = {}
        if syn_dir:
            result["detectability"] = protocols.detectability(real, load_folder(syn_dir).images, folds=folds, spec=spec)
        if calibrate:
            result["calibration"] = protocols.calibrate_detector(real, folds=folds, spec=spec)
    except NoImagesError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if "detectability" in result:
        click.echo(f"synthetic vs real: AUC {result['detectability']['auc']:.3f} (0.5: indistinguishable)")
    for name, auc in result.get("calibration", {}).items():
        click.echo(f"calibration, {name}: AUC {auc:.3f}")


@main.command()
@click.argument("results", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def table(results):
    """Print the markdown table of a `cxr-utility protocols` result."""
    from cxr_utility import protocols

    click.echo(protocols.markdown(json.loads(results.read_text())))


if __name__ == "__main__":  # pragma: no cover
    main()
