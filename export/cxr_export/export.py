"""Generator to ONNX: convert, check parity against Keras, then (and only then) publish.

The ONNX interface (docs/export.md):
- input  `z`:     float32 [batch, latent_dim], batch dynamic;
- output `image`: float32 [batch, 1, size, size] (NCHW), values in [-1, 1] (tanh).

NCHW is the layout ONNX tools and onnxruntime's convolution kernels expect; with a single
channel it holds exactly the same numbers, in the same memory order, as Keras' NHWC.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from cxr_export.errors import ConversionError, ExportError, ParityError  # noqa: F401  (re-exported)
from cxr_export.labels import joined_latents, with_class_input
from cxr_runtime.contract import (
    CLASS_INPUT,
    CLASSES_KEY,
    INPUT_NAME,
    LATENT_SCALE_KEY,
    LAYOUT,
    OPSET,
    OUTPUT_NAME,
)
from cxr_runtime.io import atomic_write_bytes, atomic_write_json, sha256_file
from cxr_runtime.quiet import quiet_stderr
from cxr_training.runs import RunFolder, library_versions, provenance
from cxr_training.tfenv import import_tf

PARITY_ATOL = 1e-5  # max |keras - onnx| allowed on [-1, 1] outputs, plain tf2onnx graph
PARITY_ATOL_OPTIMIZED = 1e-4  # the same for the rewritten (sub-pixel) graph: other summation orders
PARITY_BATCHES = (1, 7, 64)

# The study's training data. Override (cxr-export --data-citation/--data-license) for other data.
DEFAULT_DATA_CITATION = (
    "Kermany, Daniel; Zhang, Kang; Goldbaum, Michael (2018), Labeled Optical Coherence Tomography (OCT) "
    "and Chest X-Ray Images for Classification, Mendeley Data, V2, doi: 10.17632/rscbjbr9sj.2"
)
DEFAULT_DATA_LICENSE = "CC BY 4.0"


@dataclass
class ParityReport:
    atol: float
    passed: bool
    seed: int
    batches: list[dict] = field(default_factory=list)  # {batch, max_abs_err, mean_abs_err}
    model: str = ""
    keras_model: str = ""
    checked: str = ""

    @property
    def max_abs_err(self) -> float:
        return max((b["max_abs_err"] for b in self.batches), default=float("nan"))


def resolve_generator(source: str | os.PathLike | None, runs_root: str | os.PathLike = "runs") -> Path:
    """A run folder, or a generator.keras file, or (None) the newest finished run
    (runs.RunFolder.finished)."""
    if source is None:
        runs = RunFolder.under(runs_root)
        finished = [r for r in runs if r.finished]
        if not finished:
            hint = (f" ({runs[-1].name} has not finished: resume it with cxr-train --resume {runs[-1].path})"
                    if runs else "")
            raise ExportError(f"no finished run with a generator.keras under {Path(runs_root)}{hint}")
        return finished[-1].generator_path()
    path = Path(source)
    if path.is_dir():
        keras_path = RunFolder(path).generator_path()
        if not keras_path.is_file():
            raise ExportError(f"{path} has no generator.keras (not a finished run?)")
        return keras_path
    if not path.is_file():
        raise ExportError(f"not found: {path}")
    if path.suffix != ".keras":
        raise ExportError(f"expected a run folder or a .keras generator, got {path}")
    return path


def convert(generator, opset: int = OPSET) -> onnx.ModelProto:
    """tf2onnx conversion of a Keras generator, with the documented interface."""
    import tf2onnx

    tf, _ = import_tf()
    latent_dim = int(generator.input_shape[-1])

    signature = [tf.TensorSpec([None, latent_dim], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def sample(z):
        image = generator(z, training=False)  # NHWC
        return {OUTPUT_NAME: tf.transpose(image, [0, 3, 1, 2])}

    with quiet_stderr():  # TensorFlow's graph-freezing chatter
        model, _ = tf2onnx.convert.from_function(sample, input_signature=signature, opset=opset)
    # tf2onnx names graph outputs after the function's structure; make the contract explicit
    if [o.name for o in model.graph.output] != [OUTPUT_NAME]:
        old = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        model.graph.output[0].name = OUTPUT_NAME
    # name the dynamic batch dimension (tf2onnx calls it unk__NN)
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_param = "batch"
    return model


def add_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)


def provenance_metadata(generator, info: dict, keras_path: Path, citation: str, license_: str) -> dict[str, str]:
    size = int(generator.output_shape[1])
    return {
        "cxr.format": "1",
        "latent_dim": str(int(generator.input_shape[-1])),
        "image_size": str(size),
        "channels": "1",
        "value_range": "-1,1",
        "layout": LAYOUT,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "run_id": str(info.get("run_id", "")),
        "epoch": str(info.get("epoch", "")),
        "step": str(info.get("step", "")),
        "weights": str(info.get("weights", "")),
        "config_hash": str(info.get("config_hash", "")),
        "data_sha256": str(info.get("data_sha256", "")),
        "data_count": str(info.get("data_count", "")),
        "keras_sha256": sha256_file(keras_path),
        "versions": json.dumps(library_versions(), sort_keys=True),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data_citation": citation,
        "data_license": license_,
        "synthetic": "true",
        "description": "Generates synthetic pediatric chest X-rays; outputs are not images of real patients.",
    }


def parity(generator, model_bytes: bytes, atol: float = PARITY_ATOL, batches=PARITY_BATCHES,
           seed: int | None = None) -> ParityReport:
    """Run Keras and onnxruntime (CPU) on the same fresh latents; compare."""
    import onnxruntime as ort

    tf, _ = import_tf()
    seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else seed
    rng = np.random.default_rng(seed)
    latent_dim = int(generator.input_shape[-1])
    # logging errors only: the chunked graph's optional `chunk` input (an initializer with a default)
    # draws an onnxruntime warning that does not apply
    from cxr_runtime.session import session_options

    session = ort.InferenceSession(model_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"])
    report = ParityReport(atol=atol, passed=False, seed=seed)
    for b in batches:
        z = rng.standard_normal((b, latent_dim)).astype(np.float32)
        want = np.transpose(generator(tf.constant(z), training=False).numpy(), (0, 3, 1, 2))
        got = session.run([OUTPUT_NAME], {INPUT_NAME: z})[0]
        if got.shape != want.shape:
            raise ParityError(f"batch {b}: ONNX output shape {got.shape}, Keras {want.shape}")
        err = np.abs(got.astype(np.float64) - want)
        report.batches.append({"batch": b, "max_abs_err": float(err.max()), "mean_abs_err": float(err.mean())})
    report.passed = report.max_abs_err <= atol
    report.checked = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return report


def parity_path(out: Path) -> Path:
    return out.with_name(out.stem + ".parity.json")


@dataclass
class ExportResult:
    path: Path
    report: ParityReport
    seconds: float  # conversion (graph building, metadata, checker)
    graph: str  # "subpixel-nchw" (optimised) or "tf2onnx"
    int8_path: Path | None = None
    int8_report: dict | None = None
    int8_seconds: float | None = None


def int8_path(out: Path) -> Path:
    return out.with_name(out.stem + ".int8.onnx")


def int8_report_path(out: Path) -> Path:
    return out.with_name(out.stem + ".int8.gate.json")


def _remove_stale(path: Path) -> str:
    """Delete an earlier export at `path` so it cannot pass for this one; say so."""
    if path.is_file():
        path.unlink()
        return f"; removed the earlier model at {path}"
    return ""


def _publish_or_refuse(path: Path, blob: bytes, passed: bool, error) -> None:
    """Write `blob` to `path` if the gate passed; otherwise make sure nothing is there."""
    if passed:
        atomic_write_bytes(path, blob)
        return
    raise error(_remove_stale(path))


def _training_images(keras_path: Path, data_dir, image_size: int, purpose: str = "the int8 gate",
                     log=None):
    """The run's training images (named in its record, config.json), for the int8 gate and
    the latent scale's calibration. A --data folder whose images are not the ones the run
    recorded (content fingerprint) is used, with a notice that says so."""
    from cxr_runtime.images import NoImagesError, load_folder

    resize = "stretch"
    run = RunFolder(keras_path.parent)
    record = run.record if run.started else None
    if data_dir is None:
        if record is None:
            raise ExportError(f"{purpose} needs the training images: pass --data DIR")
        data_dir = record["data"]["root"]
    if record is not None:
        resize = record["config"].get("resize", resize)
    try:
        images = load_folder(data_dir, size=image_size, resize=resize)
    except NoImagesError as e:
        raise ExportError(f"{purpose}: {e} (pass --data DIR)") from None
    info = provenance(keras_path)  # generator.json: the data fingerprint the run recorded
    recorded = info.get("data_sha256") or (record or {}).get("data", {}).get("sha256")
    count = info.get("data_count") or (record or {}).get("data", {}).get("count", "?")
    if recorded and images.fingerprint()["sha256"] != recorded and log is not None:
        log(f"note: {data_dir} is not the run's training data ({len(images.images)} images, fingerprint "
            f"{images.fingerprint()['sha256'][:12]}; the run trained on {count} images, {recorded[:12]}): "
            f"{purpose} uses other images than the generator learned from")
    return images.images


def labelled_graph(gated: onnx.ModelProto, latent_dim: int, classes: int, gated_blob: bytes) -> onnx.ModelProto:
    """The gated graph with the class input beside z; checked to compute exactly what the gated
    graph computes on the joined input, for every class."""
    import onnxruntime as ort

    model = with_class_input(gated, latent_dim, classes)
    onnx.checker.check_model(model)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2 * classes, latent_dim)).astype(np.float32)
    labels = np.arange(2 * classes) % classes
    opts = ort.SessionOptions()
    want = ort.InferenceSession(gated_blob, opts, providers=["CPUExecutionProvider"]).run(
        None, {INPUT_NAME: joined_latents(z, classes, labels)})[0]
    got = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, {INPUT_NAME: z, CLASS_INPUT: labels.astype(np.int64)})[0]
    if not np.array_equal(want, got):
        raise ExportError("the class input changed what the graph computes (max difference "
                          f"{np.abs(want - got).max():.3g}); nothing written")
    return model


@dataclass
class _Source:
    """The Keras generator to export and what its run recorded (generator.json)."""
    path: Path
    generator: object
    info: dict
    classes: tuple[str, ...]  # a labelled G's classes; its input is the latent, then the one-hot class
    latent_dim: int
    size: int


def export(source, out: str | os.PathLike, atol: float | None = None, opset: int = OPSET,
           optimize: bool = True, quantize: str = "none", data_dir=None,
           citation: str = DEFAULT_DATA_CITATION, license_: str = DEFAULT_DATA_LICENSE,
           runs_root: str | os.PathLike = "runs", log=print, *, chunk: int | None = None,
           latent_scale: float | str = 1.0) -> ExportResult:
    """Convert, gate, publish; optionally quantise to int8 behind the int8 gate.

    The steps, each a function: _load the generator and its run; _convert it with its metadata
    (the optimised sub-pixel graph is written from the weights, so optimising is part of
    converting and the gate checks the graph that ships); _validate (the parity gate, its report
    written either way); on a pass, labelled_graph (a labelled model's class input) and
    _calibrate (the latent scale); _publish; last _quantise (int8 from the gated graph, behind
    its own gate).

    chunk: images per pass of the optimised graph's convolution loop (None: optimize.CHUNK; 0: no
    loop). The int8 model is quantised from the graph without the loop.
    latent_scale: the standard deviation the runtime draws latents at, written into the
    metadata (1: nothing written, the default); "auto" (lowest KID) or "diversity" (as varied
    as the training images): chosen on the training images by cxr_runtime.calibration after
    the parity gate passes (the grid's scores are written too).
    Each model reaches its path only if its gate passes; reports are written either way.
    Raises ParityError / Int8GateError (report written, no model left at that path) or ExportError.
    """
    _check_options(quantize, optimize, chunk)
    if optimize and chunk is None:
        from cxr_export.optimize import CHUNK

        chunk = CHUNK
    out = Path(out)
    src = _load(source, runs_root, out, log)
    real = _training_images(src.path, data_dir, src.size, log=log) if quantize == "int8" else None
    latent_scale, criterion = _latent_scale(latent_scale)
    calibration_real = _calibration_images(src, data_dir, real, latent_scale, log) if criterion else None

    model, metadata, seconds = _convert(src, out, opset, optimize, chunk, citation, license_,
                                        1.0 if criterion else latent_scale)
    graph, blob = metadata["graph"], model.SerializeToString()
    log(f"built the {graph} graph (opset {opset}) in {seconds:.1f} s; checking parity")

    if atol is None:
        atol = PARITY_ATOL_OPTIMIZED if optimize else PARITY_ATOL
    report = _validate(src, blob, out, atol, graph, seconds)
    gated = model  # the graph the gate checked (a labelled model's: on the joined input)
    if report.passed:
        if src.classes:  # the published graph takes the class beside z
            model = labelled_graph(gated, src.latent_dim, len(src.classes), blob)
            blob = model.SerializeToString()
        if criterion:  # the graph is right; now the scale it is sampled at
            metadata = _calibrate(model, metadata, _graph_metadata(optimize, chunk), blob, calibration_real,
                                  criterion, log)
            blob = model.SerializeToString()  # metadata only: the graph the gate passed is unchanged
    _publish(out, blob, report)
    result = ExportResult(out, report, seconds, graph)
    if quantize == "none":
        return result

    log(f"parity passed (max abs error {report.max_abs_err:.2g}); quantising to int8")
    result.int8_report, result.int8_seconds = _quantise(src, out, opset, chunk, gated, blob, metadata, real)
    result.int8_path = int8_path(out)
    return result


def _check_options(quantize: str, optimize: bool, chunk: int | None) -> None:
    if quantize not in ("none", "int8"):
        raise ExportError(f"unknown quantisation {quantize!r}")
    if quantize == "int8" and not optimize:
        raise ExportError("--quantize int8 needs the optimised graph: drop --no-optimize")
    if chunk is not None and not optimize:
        raise ExportError("--chunk applies to the optimised graph: drop --no-optimize or --chunk")


def _load(source, runs_root, out: Path, log) -> _Source:
    """The generator to export (resolve_generator), checked to be latent -> one-channel image;
    `out`'s folder made."""
    import_tf()
    keras_path = resolve_generator(source, runs_root)
    if out.exists() and out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file name such as {out / 'generator.onnx'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"loading {keras_path}")
    from cxr_training.models import load_generator

    generator = load_generator(keras_path)
    if len(generator.inputs) != 1 or len(generator.input_shape) != 2 or generator.output_shape[-1] != 1:
        raise ExportError(f"{keras_path} is not a latent -> one-channel image generator")
    info = provenance(keras_path)
    classes = tuple((info.get("config") or {}).get("classes") or ())
    input_dim, size = int(generator.input_shape[-1]), int(generator.output_shape[1])
    return _Source(keras_path, generator, info, classes, input_dim - len(classes), size)


def _latent_scale(latent_scale: float | str) -> tuple[float | str, str | None]:
    """(the scale, None) for a number, checked; (the word, the calibration criterion) for
    "auto" (kid) or "diversity"."""
    criterion = {"auto": "kid", "diversity": "diversity"}.get(latent_scale) if isinstance(latent_scale, str) else None
    if criterion is not None:
        return latent_scale, criterion
    from cxr_runtime.generator import check_latent_scale

    try:
        return check_latent_scale(latent_scale), None
    except ValueError as e:
        raise ExportError(str(e)) from None


def _calibration_images(src: _Source, data_dir, real, latent_scale: str, log):
    """The training images the latent scale is calibrated on (those of the int8 gate when read),
    refused before any work when too few."""
    from cxr_runtime.calibration import MIN_REAL

    images = real if real is not None else _training_images(
        src.path, data_dir, src.size, f"--latent-scale {latent_scale}", log=log)
    if len(images) < MIN_REAL:  # refused before any work, not after the gate
        raise ExportError(f"--latent-scale {latent_scale} needs at least {MIN_REAL} training images, found "
                          f"{len(images)}")
    return images


def _metadata(src: _Source, graph: str, citation: str, license_: str, latent_scale: float) -> dict[str, str]:
    """The model's metadata before calibration: provenance, graph and precision, a labelled
    model's classes, a latent scale other than 1."""
    metadata = provenance_metadata(src.generator, src.info, src.path, citation, license_)
    metadata.update({"graph": graph, "precision": "float32"})
    if src.classes:
        metadata.update({"latent_dim": str(src.latent_dim), CLASSES_KEY: json.dumps(list(src.classes)),
                         "class_input": CLASS_INPUT})
    if latent_scale != 1.0:
        metadata[LATENT_SCALE_KEY] = repr(latent_scale)
    return metadata


def _graph_metadata(optimize: bool, chunk: int | None) -> dict[str, str]:
    """The fp32 graph's own metadata: batch_chunk is informational (the runtime reads the
    graph's `chunk` input, not this)."""
    return {"batch_chunk": str(chunk)} if optimize and chunk else {}


def _convert(src: _Source, out: Path, opset: int, optimize: bool, chunk: int | None, citation: str, license_: str,
             latent_scale: float) -> tuple[onnx.ModelProto, dict[str, str], float]:
    """The graph (the optimised sub-pixel graph with a loop of `chunk`, or tf2onnx's) with its
    metadata (_metadata, _graph_metadata), checked; the metadata; the seconds it took. A failure
    leaves no earlier model at `out`."""
    from cxr_export import optimize as opt

    t0 = time.perf_counter()
    try:
        if optimize:
            try:
                model = opt.build_optimized(src.generator, opset, chunk=chunk)
            except opt.UnsupportedGenerator as e:
                raise ExportError(f"cannot optimise: {e}; use --no-optimize") from None
        else:
            model = convert(src.generator, opset)
    except ExportError:
        _remove_stale(out)
        raise
    except Exception as e:  # tf2onnx and onnx raise many types; the user gets one line
        stale = _remove_stale(out)
        raise ConversionError(f"conversion failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}); "
                              f"nothing written to {out}{stale}") from e
    metadata = _metadata(src, "subpixel-nchw" if optimize else "tf2onnx", citation, license_, latent_scale)
    add_metadata(model, {**metadata, **_graph_metadata(optimize, chunk)})
    onnx.checker.check_model(model)
    return model, metadata, time.perf_counter() - t0


def _validate(src: _Source, blob: bytes, out: Path, atol: float, graph: str, seconds: float) -> ParityReport:
    """The parity gate on the graph `blob`; its report written beside `out`, passed or not."""
    report = parity(src.generator, blob, atol=atol)
    report.model = str(out)
    report.keras_model = str(src.path)
    atomic_write_json(parity_path(out), {**asdict(report), "graph": graph, "max_abs_err": report.max_abs_err,
                                          "conversion_seconds": round(seconds, 2)})
    return report


def _calibrate(model: onnx.ModelProto, metadata: dict[str, str], graph_metadata: dict[str, str], blob: bytes,
               real, criterion: str, log) -> dict[str, str]:
    """The latent scale for the model `blob` on the training images `real` (cxr_runtime.calibration),
    written into `model`'s metadata; the metadata with it (the int8 model carries it too)."""
    import tempfile

    from cxr_runtime.calibration import DIVERSITY_TOLERANCE, calibrate_latent_scale
    from cxr_runtime.generator import Generator

    with tempfile.TemporaryDirectory(prefix="cxr-export-") as tmp:
        path = Path(tmp) / "generator.onnx"
        path.write_bytes(blob)
        log(f"calibrating the latent scale on {len(real)} training images")
        cal = calibrate_latent_scale(
            Generator(path, device="cpu", latent_scale=1.0), real, criterion=criterion,
            progress=lambda s, k, d: log(f"  latent scale {s:g}: KID {k:.3f}"
                                         + (f", diversity {d:.3f}" if d is not None else "")))
    why = ("lowest KID against the training images" if criterion == "kid" else
           f"the smallest scale with diversity within {DIVERSITY_TOLERANCE} of the training images' "
           f"{cal.diversity_real:.3f}, or the closest")
    log(f"latent scale {cal.scale:g} ({why})")
    metadata = {**metadata, LATENT_SCALE_KEY: repr(cal.scale), "latent_scale_calibration": json.dumps(cal.to_dict())}
    add_metadata(model, {**metadata, **graph_metadata})
    return metadata


def _publish(out: Path, blob: bytes, report: ParityReport) -> None:
    per_batch = ", ".join(f"{b['batch']}: {b['max_abs_err']:.3g}" for b in report.batches)
    _publish_or_refuse(out, blob, report.passed, lambda stale: ParityError(
        f"parity gate failed: max abs error {report.max_abs_err:.3g} > {report.atol:g} (per batch: {per_batch}); "
        f"nothing written to {out}{stale}; report: {parity_path(out)}"))


def _quantise(src: _Source, out: Path, opset: int, chunk: int, gated: onnx.ModelProto, blob: bytes,
              metadata: dict[str, str], real) -> tuple[dict, float]:
    """The int8 model, quantised from the gated graph without the convolution loop, published
    at int8_path(out) behind the int8 gate against the fp32 graph; (its report, seconds).
    quantize.plans in turn (all int8, then the drawn resolution's layers in float32), every
    attempt judged on the same latents; the first that passes is published, and the report lists
    every attempt."""
    from cxr_export import optimize as opt
    from cxr_export import quantize as q

    classes = len(src.classes)
    flat = opt.build_optimized(src.generator, opset, chunk=0) if chunk else gated
    fp32_joined = gated.SerializeToString() if classes else blob
    int8, report, int8_seconds = q.quantize_gated(flat, src.latent_dim, fp32_joined, real, classes=classes)
    add_metadata(int8, {**metadata, "precision": "int8", "quantization": q.describe(report)})
    onnx.checker.check_model(int8)
    int8_blob = int8.SerializeToString()
    if classes:  # published with the class input, as the fp32 model
        int8 = with_class_input(int8, src.latent_dim, classes)
        onnx.checker.check_model(int8)
        int8_blob = int8.SerializeToString()
    report.update({"model": str(int8_path(out)), "fp32_model": str(out), "quantization_seconds": round(int8_seconds, 2)})
    atomic_write_json(int8_report_path(out), report)
    tried = "; ".join(
        f"float32 {a['float32_layers']}: SSIM(fp32, int8) {a['ssim_fp32_vs_int8_mean']:.4f}, metric shifts ssim "
        f"{a.get('ssim_shift', float('nan')):.4f} mse {a.get('mse_shift', float('nan')):.4f}" for a in report["attempts"])
    _publish_or_refuse(int8_path(out), int8_blob, report["passed"], lambda stale: q.Int8GateError(
        f"int8 gate failed ({tried}; need SSIM >= {q.INT8_MIN_SSIM} and shifts <= {q.INT8_MAX_SHIFT}); "
        f"nothing written to {int8_path(out)}{stale}; report: {int8_report_path(out)}"))
    return report, int8_seconds
