"""`cxr-runtime`: sample synthetic chest X-rays from an exported generator, score images,
inspect models. No TensorFlow; onnxruntime on CUDA or CPU."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import click

from cxr_runtime import DEFAULT_BATCH, DEFAULT_BATCH_CHUNKED, DEFAULT_BATCH_INT8, __version__
from cxr_runtime.choices import DEVICES, RESIZE_MODES, SAMPLE_FORMATS
from cxr_runtime.errors import EXIT_USER_ERROR, reported

DEFAULT_MODEL = "artifacts/generator.onnx"
MAX_N = 10_000_000
DEVICE_HELP = "auto: CUDA if it really initialises, else CPU; cuda or cuda:N (GPU N); cpu."


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(EXIT_USER_ERROR)


def _note(msg: str) -> None:
    click.echo(msg, err=True)


class _StderrHandler(logging.Handler):
    """The library's notices (logger `cxr_runtime`), one line each on stderr."""

    def emit(self, record):
        _note(record.getMessage())


def _quiet_native() -> None:
    """This process is ours: onnxruntime's global logger to errors only, OpenCV's silent
    (libjpeg/libpng complaints; problems are reported our way). The library leaves both alone."""
    import cv2
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _device(ctx, param, value):
    """--device: auto, cpu, cuda or cuda:N (validated without importing onnxruntime)."""
    name, _, index = value.partition(":")
    if (name in DEVICES and not index) or (name == "cuda" and index.isdigit()):
        return value
    raise click.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cxr-runtime")
def main():
    """Synthetic pediatric chest X-rays from an exported cxr-gan generator (ONNX), and the
    study's scores (SSIM, MSE) for any folder of images. Every generated image is synthetic."""
    logger = logging.getLogger("cxr_runtime")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def _latent_scale(ctx, param, value):
    if value is None:
        return None
    from cxr_runtime.generator import check_latent_scale

    try:
        return check_latent_scale(value, "")
    except ValueError as e:
        raise click.BadParameter(str(e).strip()) from None


@main.command()
@click.option("--n", "n", type=click.IntRange(min=1, max=MAX_N), default=500, show_default=True,
              help="Number of images.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MODEL, show_default=True,
              help="Exported generator (cxr-export).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="samples", show_default=True,
              help="Folder for the images and manifest.json.")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True,
              help="Same seed and model: byte-identical images, whatever the batch size.")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096), default=None,
              help=f"Images per model call: memory and speed only, never the images. [default: the fastest "
                   f"on CPU: {DEFAULT_BATCH_CHUNKED} for chunked float32 graphs (cxr-export's default: the "
                   f"convolutions run in chunks inside the model), {DEFAULT_BATCH_INT8} for int8, {DEFAULT_BATCH} "
                   "for other float32 graphs; all keep the paper's generator well under 500 MB]")
@click.option("--device", default="auto", show_default=True, callback=_device, help=DEVICE_HELP)
@click.option("--format", "fmt", type=click.Choice((*SAMPLE_FORMATS, "parquet")), default="png", show_default=True,
              help="png: 8-bit gray; npy: float32 in [-1, 1], the raw output; dicom: Secondary Capture, one "
                   "synthetic patient, study and series per set (extra 'dicom'); parquet (--engine ray): one "
                   "file per shard, a row per image with its PNG bytes.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: shards of the index range on a Ray cluster's actors (extra 'ray'), "
                   "the same files byte for byte.")
@click.option("--address", default=None,
              help="--engine ray: the cluster to join ('auto', or ray://host:10001); default: a Ray instance "
                   "started on this machine for the call.")
@click.option("--workers", type=click.IntRange(min=1, max=100_000), default=2, show_default=True,
              help="--engine ray: actors writing shards (each opens the model once).")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="--engine ray: images per shard [default: about 4 shards per worker, at most 1024].")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="--engine ray: CPUs Ray reserves per actor (its onnxruntime threads).")
@click.option("--latent-scale", type=float, default=None, callback=_latent_scale,
              help="Standard deviation of the latents (each image's latent times this). [default: the model's "
                   "own, chosen by cxr-export --latent-scale auto on the training images; 1 if it has none]")
@click.option("--class", "label", default=None, metavar="NAME",
              help="A labelled model (trained on one subfolder per class): N images of this class, into OUT/NAME/.")
@click.option("--classes", "class_counts", default=None, metavar="NAME=N,...",
              help="A labelled model: this many images of each class, into OUT/NAME/ each (e.g. "
                   "NORMAL=500,PNEUMONIA=500; --n is then ignored).")
def sample(n, model, out, seed, batch_size, device, fmt, engine, address, workers, shard_size, cpus_per_worker,
           latent_scale, label, class_counts):
    """Generate N synthetic X-rays: OUT/sample-000000.png ... and OUT/manifest.json.

    Images are written batch by batch as they are produced (memory stays flat for any N),
    each file atomically; the manifest (model hash and metadata, seed, count, device) is
    written last, only when the set is complete. Interrupted? Run the same command again:
    the files already written are kept and the rest are added (cxr_runtime.sampling).
    With --engine ray the index range is split into shards written by Ray actors into OUT
    (a folder every node can reach); same seed, N and model give the same bytes per file as
    the local engine (cxr_runtime.ray_sampling); a labelled model's classes one after the
    other, each into OUT/CLASS.
    """
    plan = _class_plan(label, class_counts, n)
    if engine == "ray":
        if plan:
            from cxr_runtime.generator import Generator

            with reported():  # every class checked before anything is written
                gen = Generator(model, device="cpu", threads=1)
                for name, _ in plan:
                    gen.class_index(name)
        for name, count in plan or [(None, n)]:  # a labelled model: one set per class, OUT/CLASS/
            _sample_on_ray(count, model, out / name if name else out, seed, batch_size, device, fmt, address,
                           workers, shard_size, cpus_per_worker, latent_scale, name)
        return
    if fmt == "parquet" or address or shard_size:
        raise click.UsageError("--format parquet, --address and --shard-size need --engine ray")
    from cxr_runtime.generator import Generator
    from cxr_runtime.quiet import quiet_stderr

    _quiet_native()
    with reported(), _kept_on_disk_error(out):
        if fmt == "dicom":
            from cxr_runtime.dicom import check_available

            check_available()
        with quiet_stderr():  # onnxruntime's native output while probing CUDA (CXR_VERBOSE=1 shows it)
            gen = Generator(model, device=device, latent_scale=latent_scale)
        if gen.classes and not plan:
            _fail(f"{model} is a labelled model (classes {', '.join(gen.classes)}): choose --class NAME or "
                  f"--classes {','.join(f'{c}={n}' for c in gen.classes)}")
        if plan:
            for name, _ in plan:
                gen.class_index(name)  # every class checked before anything is written
            for name, count in plan:
                result = _sample_local(gen, out / name, count, seed, fmt, batch_size, model, name)
                _said_written(result, out / name, count, f"class {name}, {result.provider}")
            return
        result = _sample_local(gen, out, n, seed, fmt, batch_size, model, None)
    _said_written(result, out, n, result.provider)


@contextlib.contextmanager
def _kept_on_disk_error(out):
    """The file system failing mid-set (a full disk): one line; what was written is kept."""
    try:
        yield
    except OSError as e:
        _fail(f"writing to {out} failed: {e.strerror or e}; the images written so far are kept, and the same "
              "command resumes the set once the problem is fixed")


def _class_plan(label, class_counts, n) -> list[tuple[str, int]]:
    """[(class, count)] of --class / --classes, or [] for an unlabelled set."""
    if label and class_counts:
        raise click.UsageError("--class and --classes cannot be combined")
    if label:
        return [(label, n)]
    if not class_counts:
        return []
    plan = []
    for item in class_counts.split(","):
        name, sep, count = item.strip().partition("=")
        if not sep or not name or not count.isdigit() or not (1 <= int(count) <= MAX_N):
            raise click.BadParameter(f"{item!r}: expected NAME=N with 1 <= N <= {MAX_N}", param_hint="--classes")
        if name in dict(plan):
            raise click.BadParameter(f"class {name} given twice", param_hint="--classes")
        plan.append((name, int(count)))
    return plan


def _sample_local(gen, out, n, seed, fmt, batch_size, model, label):
    from cxr_runtime.sampling import sample_to_folder

    with contextlib.ExitStack() as stack:
            # the bar only on a terminal: logs and pipes get the one summary line
            sink = sys.stderr if sys.stderr.isatty() else stack.enter_context(open(os.devnull, "w"))
            bar = stack.enter_context(click.progressbar(length=n, label="sampling", file=sink, show_pos=True,
                                                        show_eta=True))
            state = {"shown": 0}

            def progress(done, total):
                bar.update(done - state["shown"])
                state["shown"] = done

            return sample_to_folder(gen, out, n, seed=seed, fmt=fmt, batch_size=batch_size, progress=progress,
                                    model_path=str(model), on_resume=_resuming, label=label)


def _resuming(done: int, total: int) -> None:
    _note(f"resuming: {done} of {total} images already written")


def _said_written(result, out, n, how: str) -> None:
    """The one summary line of a sample call."""
    if result.written == 0:
        click.echo(f"{out}/ already holds this complete set of {n} images")
        return
    click.echo(f"wrote {result.written} images to {out}/ in {result.seconds:.1f} s "
               f"({result.written / max(result.seconds, 1e-9):.1f} images/s, {how})")


def _sample_on_ray(n, model, out, seed, batch_size, device, fmt, address, workers, shard_size, cpus_per_worker,
                   latent_scale, label=None):

    _quiet_native()
    for name in ("ray", "ray.data"):  # this process is ours: Ray's progress chatter off, our own lines only
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    with reported():  # a CxrError: its one line and exit code
        from cxr_runtime import ray_sampling

        state = {"shown": 0}

        def progress(done, total):
            state["shown"] = done
            if sys.stderr.isatty():
                click.echo(f"\rsampling on Ray: {done}/{total}", err=True, nl=done == total)

        result = ray_sampling.sample(model, out, n, seed=seed, fmt=fmt, workers=workers, shard_size=shard_size,
                                    address=address, device=device,
                                    cpus_per_worker=cpus_per_worker, batch_size=batch_size, progress=progress,
                                    latent_scale=latent_scale, on_resume=_resuming, label=label)
    _said_written(result, out, n, (f"class {label}, " if label else "") + f"on Ray, {workers} workers")


@main.command()
@click.option("--fake", "fake_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of generated images.")
@click.option("--real", "real_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of real images (read exactly as training reads them).")
@click.option("--size", type=click.IntRange(min=11, max=4096), default=128, show_default=True,
              help="Images are compared at size x size.")
@click.option("--resize", type=click.Choice(RESIZE_MODES), default="stretch", show_default=True,
              help="How non-square images become square (as in training).")
@click.option("--engine", type=click.Choice(["onnx", "numpy"]), default="onnx", show_default=True,
              help="onnx: SSIM/MSE graphs on onnxruntime (fast); numpy: the float64 reference implementation.")
@click.option("--device", default="auto", show_default=True, callback=_device,
              help="Device of the onnx engine (same rules as sampling): " + DEVICE_HELP)
@click.option("--quality", is_flag=True,
              help="Also the distribution metrics: recall, coverage and KID on a fixed feature bank, and "
                   "diversity (mean SSIM among the generated images).")
@click.option("--baseline", "baseline_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Other real images (the training images, or a second held-out set): with --quality, scored "
                   "against --real as the generated ones are, the baseline a generator as faithful as real data "
                   "would reach.")
@click.option("--heldout", "old_baseline_dir", type=click.Path(file_okay=False, path_type=Path), hidden=True,
              help="The old name of --baseline.")
@click.option("--train", "train_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The generator's training images: also the memorisation audit's verdict against them "
                   "(as `cxr-runtime audit`, without writing pictures).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def evaluate(fake_dir, real_dir, size, resize, engine, device, quality, baseline_dir, old_baseline_dir, train_dir,
             as_json):
    """SSIM and MSE of generated vs real images with the training's protocol and code.

    Each generated image is paired with a real image by a fixed-seed permutation; the
    real-vs-real reference (each real image against another) is printed beside them when
    the real folder has at least two images. Definitions: docs/metrics.md. The onnx engine
    (default) and the numpy reference agree within 1e-5. Labelled folders (--fake and --real
    each with one subfolder per class, e.g. a `sample --classes` output against
    heldout/{NORMAL,PNEUMONIA}) are scored class by class, each against its own real images
    (and its own --baseline and --train subfolders when those are labelled too).
    """
    from cxr_runtime.evaluation import labelled_pair, score_sets

    if baseline_dir is not None and old_baseline_dir is not None:
        raise click.UsageError("--heldout is the old name of --baseline: give one of them")
    baseline_dir = baseline_dir or old_baseline_dir
    _quiet_native()
    with reported():  # a CxrError: its one line and exit code
        classes = labelled_pair(fake_dir, real_dir)

    def one(fake_d, real_d, base_d, train_d) -> dict:
        fake = _load_or_fail(fake_d, "--fake", size, resize)
        real = _load_or_fail(real_d, "--real", size, resize)
        base = _load_or_fail(base_d, "--baseline", size, resize) if quality and base_d else None
        train = _load_or_fail(train_d, "--train", size, resize) if train_d else None
        with reported():  # a CxrError: its one line and exit code
            return score_sets(fake, real, baseline=base, train=train, quality=quality, engine=engine, device=device,
                              size=size)

    def sub(folder, c):  # a labelled folder's class subfolder, or the folder itself when it is plain
        from cxr_runtime.images import class_layout

        return None if folder is None else (Path(folder) / c if c in class_layout(folder) else Path(folder))

    if not classes:
        result = one(fake_dir, real_dir, baseline_dir, train_dir)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            _print_evaluation(result, quality)
        return
    results = {c: one(Path(fake_dir) / c, Path(real_dir) / c, sub(baseline_dir, c), sub(train_dir, c))
               for c in classes}
    if as_json:
        click.echo(json.dumps({"classes": results}, indent=2))
        return
    for c, result in results.items():
        click.echo(f"== class {c}")
        _print_evaluation(result, quality)


def _print_evaluation(result: dict, quality: bool) -> None:
    fake, real = result["fake"], result["real"]
    click.echo(f"generated: {fake['images']} images from {fake['folder']}"
               + (f" ({fake['duplicates']} byte-identical copies among them)" if fake["duplicates"] else "")
               + f"; real: {real['images']} images from {real['folder']}")
    ref = result["ref_ssim"] is not None
    click.echo(f"ssim {result['ssim']:.4f}" + (f"   (real vs real {result['ref_ssim']:.4f})" if ref else ""))
    click.echo(f"mse  {result['mse']:.4f}" + (f"   (real vs real {result['ref_mse']:.4f})" if ref else ""))
    if quality:
        from cxr_runtime.quality import QUALITY_METRICS

        base = result.get("quality_baseline")
        click.echo("(+-: 95 % interval over both image sets; baseline: the --baseline images scored the same way)"
                   if base else "(+-: 95 % interval over both image sets)")
        for m in QUALITY_METRICS:
            line = f"{m.label:<16}{m.text(result['quality']):>18}"
            if m.real_key:
                line += f"   (among real images {result['quality'][m.real_key]:{m.fmt}})"
            if base and m.key in base:
                line += f"   (baseline {m.text(base)})"
            click.echo(f"{line}   [{m.better}]")
    if "audit" in result:
        a = result["audit"]
        click.echo(f"audit          {a['flagged']} of {a['generated']} generated images are copies of a training image "
                   f"({a['rule']}); nearest: ncc max {a['nn_ncc']['max']:.3f}, detail max {a['nn_detail']['max']:.3f}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(model, as_json):
    """Inputs, outputs, metadata of an exported MODEL, and the providers available here."""
    from cxr_runtime.generator import Generator
    from cxr_runtime.session import available_providers, engine_conflict

    _quiet_native()
    with reported():  # a CxrError: its one line and exit code
        gen = Generator(model, device="cpu")
    s = gen.session
    result = {
        "model": str(model),
        "sha256": gen.sha256,
        "bytes": model.stat().st_size,
        "inputs": [{"name": i.name, "type": i.type, "shape": i.shape} for i in s.get_inputs()],
        "outputs": [{"name": o.name, "type": o.type, "shape": o.shape} for o in s.get_outputs()],
        "metadata": gen.metadata,
        "latent_scale": gen.latent_scale,
        "available_providers": available_providers(),
        "engine_conflict": engine_conflict(),
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"model     {model} ({result['bytes'] / 1e6:.1f} MB, sha256 {gen.sha256[:16]}...)")
    for kind in ("inputs", "outputs"):
        for t in result[kind]:
            click.echo(f"{kind[:-1]:<9} {t['name']}: {t['type']} {t['shape']}")
    click.echo(f"sampling  latents drawn at scale {gen.latent_scale:g}"
               + ("" if "latent_scale" in gen.metadata else " (the model records none)"))
    for k, v in sorted(gen.metadata.items()):
        click.echo(f"metadata  {k} = {v}")
    click.echo(f"providers {', '.join(result['available_providers'])}")
    if result["engine_conflict"]:
        click.echo(result["engine_conflict"])


def _load_or_fail(folder: Path, flag: str, size: int, resize: str):
    """A folder of images, or exit 2. Generated sets (--fake) are scored as they are:
    byte-identical copies stay in (a collapse signal) and are counted in one note."""
    from cxr_runtime.errors import NoImagesError
    from cxr_runtime.images import load_folder

    generated = flag == "--fake"
    try:
        images = load_folder(folder, size=size, resize=resize, duplicates="keep" if generated else "skip")
    except NoImagesError as e:
        _fail(f"{flag}: {e}")
    warning = images.skipped_warning()
    if warning:
        _note(warning)
    if images.duplicates:
        _note(f"note: {flag} {folder}: {len(images.duplicates)} of {len(images.files)} images are byte-identical "
              f"copies of another image in the set (kept and scored; a sign of mode collapse)")
    return images


@main.command()
@click.option("--fake", "fake_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of generated images.")
@click.option("--train", "train_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The generator's training images.")
@click.option("--heldout", "heldout_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Real images not used for training: audited the same way, as the honest baseline.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="audit", show_default=True,
              help="Folder for summary.json and flagged/ (generated | nearest training image, side by side).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Flag at this registered intensity NCC or above [default: 0.97].")
@click.option("--detail-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Flag at this registered fine-detail NCC or above [default: 0.75].")
@click.option("--size", type=click.IntRange(min=64, max=4096), default=128, show_default=True)
def audit(fake_dir, train_dir, heldout_dir, out, threshold, detail_threshold, size):
    """Memorisation audit: flag generated images that are training images up to a small change.

    Each generated image is compared with every training image and its mirror image, zoomed
    and rotated (candidates at 32x32), then registered onto its best candidates by an affine
    fit; it is flagged when the registered images correlate in their intensities (NCC >= 0.97)
    or in their fine detail (detail NCC >= 0.75). That finds shifted, mirrored, zoomed
    (0.9-1.15), rotated (+-8 degrees), brightness-, contrast- or gamma-changed, mildly blurred,
    noised or compressed copies and 70/30 blends, which SSIM misses; real patients never
    trained on stay below both thresholds (calibration: docs/metrics.md). Exit code 1 when
    any image is flagged, so it can gate a release. flagged/ holds, per flagged image:
    generated | nearest training image | that image registered onto the generated one.
    Labelled folders (--fake and --train with one subfolder per class) are audited class by
    class, each against its own training images, into OUT/CLASS/.
    """
    from cxr_runtime.evaluation import labelled_pair

    _quiet_native()
    with reported():  # a CxrError: its one line and exit code
        classes = labelled_pair(fake_dir, train_dir)
    if not classes:
        flagged = _audit_one(fake_dir, train_dir, heldout_dir, out, threshold, detail_threshold, size)
    else:  # a labelled set: each class against its own training images (and held-out ones), into OUT/CLASS/
        from cxr_runtime.images import class_layout

        held_classes = class_layout(heldout_dir) if heldout_dir else ()
        flagged = 0
        for c in classes:
            click.echo(f"== class {c}")
            flagged += _audit_one(Path(fake_dir) / c, Path(train_dir) / c,
                                  (Path(heldout_dir) / c if c in held_classes else heldout_dir) if heldout_dir else None,
                                  out / c, threshold, detail_threshold, size)
    if flagged:
        sys.exit(1)


def _audit_one(fake_dir, train_dir, heldout_dir, out, threshold, detail_threshold, size) -> int:
    """Audit one set into OUT; the number of flagged images."""
    import numpy as np

    from cxr_runtime import audit as au
    from cxr_runtime.images import side_by_side, to_uint8, write_png
    from cxr_runtime.io import atomic_write_json
    from cxr_runtime.sampling import check_folder

    fake = _load_or_fail(fake_dir, "--fake", size, "stretch")
    train = _load_or_fail(train_dir, "--train", size, "stretch")
    held = _load_or_fail(heldout_dir, "--heldout", size, "stretch") if heldout_dir else None
    with reported():  # a CxrError: its one line and exit code
        check_folder(out)
    result = au.audit(fake.images, train.images, held.images if held else None,
                      threshold=au.THRESHOLD if threshold is None else threshold,
                      detail_threshold=au.DETAIL_THRESHOLD if detail_threshold is None else detail_threshold)
    nn = result["nn"]
    flagged_dir = out / "flagged"
    pairs = []
    for i in result["flagged"]:
        j = int(nn["index"][i])
        name = f"pair-{i:06d}.png"
        registered = au.registered_pair(fake.images[i], train.images[j], nn, i)
        write_png(flagged_dir / name, np.concatenate([side_by_side(fake.images[i], train.images[j]),
                                                      np.zeros((size, 4), np.uint8), to_uint8(registered)], axis=1))
        pairs.append({"generated": fake.files[i], "training": train.files[j], "mirrored": bool(nn["mirrored"][i]),
                      "ncc": float(nn["ncc"][i]), "detail": float(nn["detail"][i]), "ssim": float(nn["ssim"][i]),
                      "picture": f"flagged/{name}"})
    summary = {**result["summary"], "fake": str(fake_dir), "train": str(train_dir), "pairs": pairs,
               "nearest": [{"generated": fake.files[i], "training": train.files[int(nn["index"][i])],
                            "mirrored": bool(nn["mirrored"][i]), "ncc": float(nn["ncc"][i]),
                            "detail": float(nn["detail"][i]), "ssim": float(nn["ssim"][i])}
                           for i in range(len(fake.files))]}
    atomic_write_json(out / "summary.json", summary)
    s = result["summary"]
    line = (f"audit: {s['flagged']} of {s['generated']} generated images flagged ({s['rule']}); nearest training "
            f"image: NCC median {s['nn_ncc']['p50']:.3f}, max {s['nn_ncc']['max']:.3f}, detail median "
            f"{s['nn_detail']['p50']:.3f}, max {s['nn_detail']['max']:.3f}")
    if "heldout" in s:
        h = s["heldout"]
        line += (f"; held-out real: NCC max {h['nn_ncc']['max']:.3f}, detail max {h['nn_detail']['max']:.3f}, "
                 f"{h['flagged_share']:.0%} flagged")
    click.echo(line)
    click.echo("a clean audit means: no copy of a training image found under a shift, mirror, zoom 0.9-1.15, "
               "rotation up to 8 degrees, brightness/contrast/gamma, mild blur, noise, compression or a 70/30 blend")
    click.echo(f"wrote {out / 'summary.json'}" + (f" and {len(pairs)} pairs in {flagged_dir}/" if pairs else ""))
    return len(pairs)



@main.command()
@click.option("--fake", "fake_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--real", "real_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Real images the metrics compare against (e.g. held-out patients).")
@click.option("--train", "train_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The generator's training images (audit and baseline).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="report.html", show_default=True)
@click.option("--utility", "utility_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A `cxr-utility protocols` result (its JSON --out): its tables are added as a section of the page.")
def report(fake_dir, real_dir, train_dir, out, utility_file):
    """One self-contained HTML page: sample grid, every metric beside its baseline (the
    training images scored the same way), the memorisation audit with its flagged pairs and nearest-neighbour histograms.
    Labelled folders (--fake, --real and --train with one subfolder per class): one page per
    class, OUT with the class before its suffix (report-NORMAL.html, ...). --utility adds the
    classifier tables of a `cxr-utility protocols` (to every page: they cover all classes)."""
    from cxr_runtime.errors import CxrError
    from cxr_runtime.evaluation import labelled_pair

    _quiet_native()
    if out.exists() and out.is_dir():
        _fail(f"--out {out} is a folder")
    with reported():  # a CxrError: its one line and exit code (a bad --utility file before any scoring)
        utility = None
        if utility_file is not None:
            from cxr_runtime.utility_table import load

            utility = load(utility_file)
        classes = labelled_pair(fake_dir, real_dir)
        if classes and labelled_pair(fake_dir, train_dir) != classes:
            raise CxrError(f"--train {train_dir} needs the class subfolders of --fake ({', '.join(classes)})")
    if not classes:
        _report_one(fake_dir, real_dir, train_dir, out, utility, utility_file)
        return
    for c in classes:
        _report_one(Path(fake_dir) / c, Path(real_dir) / c, Path(train_dir) / c,
                    out.with_name(f"{out.stem}-{c}{out.suffix or '.html'}"), utility, utility_file)


def _report_one(fake_dir, real_dir, train_dir, out, utility=None, utility_file=None) -> None:
    from cxr_runtime.report import build_report
    from cxr_runtime.sampling import check_folder

    fake = _load_or_fail(fake_dir, "--fake", 128, "stretch")
    real = _load_or_fail(real_dir, "--real", 128, "stretch")
    train = _load_or_fail(train_dir, "--train", 128, "stretch")
    with reported():  # a CxrError: its one line and exit code
        check_folder(out.parent if str(out.parent) else Path("."))
        html = build_report(fake, real, train, utility, str(utility_file or ""))
    from cxr_runtime.io import atomic_write_text

    atomic_write_text(out, html)
    click.echo(f"wrote {out} ({len(html) / 1e6:.1f} MB, self-contained)")


if __name__ == "__main__":  # pragma: no cover
    main()
