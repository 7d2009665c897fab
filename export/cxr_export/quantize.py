"""int8 generator: static QDQ quantisation of the optimised graph, behind the int8 gate.

onnxruntime's dynamic quantisation does not cover convolutions' activations and has no int8
ConvTranspose, so the plain tf2onnx graph quantises badly (measured slower: docs/study.md).
The sub-pixel graph (`optimize.py`) has only Gemm and Conv, which quantise statically:
- weights int8 per output channel (symmetric), activations uint8 per tensor (asymmetric);
- activation ranges calibrated (99.999th percentile of absolute values) on the generator's own
  inputs: latents drawn from the standard normal with a fixed seed, so the quantised model is
  reproducible;
- QDQ format, which onnxruntime fuses into QLinearConv / QGemm with VNNI kernels.

Where the all-int8 model fails the gate, the layers at the resolution G draws at (its last
upsampling layer, the refinement convolution, the output: `optimize.drawn_resolution_nodes`)
stay float32 and the rest is quantised again (`plans`): with the refinement convolution the fine
detail those layers draw moves under int8 rounding (measured on long + --g-refine 32: mean
SSIM(fp32, int8) 0.922 all int8, 0.993 with them float32; docs/export.md).

The int8 gate compares images, not numbers (an int8 model cannot pass a 1e-4 parity gate):
on fresh latents, the mean SSIM between fp32 and int8 images must be >= INT8_MIN_SSIM, and
the study's metrics against the training images (SSIM and MSE, paired protocol) may move by
at most INT8_MAX_SHIFT. Its report goes to generator.int8.gate.json (cxr_export.export).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from cxr_export.errors import Int8GateError  # noqa: F401  (re-exported)
from cxr_runtime import metrics
from cxr_runtime.contract import INPUT_NAME
from cxr_runtime.quiet import quiet_stderr
from cxr_runtime.session import session_options

INT8_MIN_SSIM = 0.98  # mean SSIM(fp32 image, int8 image) over the gate's latents
INT8_MAX_SHIFT = 0.005  # max |change| of the evaluate metrics (SSIM, MSE vs real) from fp32 to int8
CALIBRATION_SEED = 20240101
CALIBRATION_LATENTS = 128
# Activation ranges clip the top 0.001 % of calibration values: on the quick run's generator
# this raised mean SSIM(fp32, int8) from 0.991 (min/max ranges) to 0.994 on the same latents.
CALIBRATION_PERCENTILE = 99.999
GATE_LATENTS = 128


def plans(flat: onnx.ModelProto) -> list[tuple[str, tuple[str, ...]]]:
    """The quantisations the export tries in turn, each (what stays float32, those node names),
    on the flat optimised graph: every layer int8 first, then the drawn resolution's in float32."""
    from cxr_export.optimize import drawn_resolution_nodes

    return [("none", ()), ("the drawn resolution's layers", tuple(drawn_resolution_nodes(flat)))]


def quantize_int8(fp32: onnx.ModelProto, latent_dim: int, n: int = CALIBRATION_LATENTS,
                  seed: int = CALIBRATION_SEED, classes: int = 0, float_nodes: tuple[str, ...] = ()) -> onnx.ModelProto:
    """`fp32` takes (latent_dim + classes,) inputs: the latent, then a labelled model's one-hot
    class (calibrated on every class in turn). The nodes named in `float_nodes` stay float32."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Latents(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed)
            self.batches = [_joined(rng.standard_normal((16, latent_dim)).astype(np.float32), classes)
                            for _ in range(-(-n // 16))]

        def get_next(self):
            return {INPUT_NAME: self.batches.pop(0)} if self.batches else None

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(fp32, src)
        # the quantiser's advice goes to the root logger, its calibration progress to print()
        with quiet_stderr(), _root_logging(logging.ERROR), contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(src), str(dst), Latents(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"ActivationSymmetric": False, "CalibPercentile": CALIBRATION_PERCENTILE},
                nodes_to_exclude=list(float_nodes),
            )
        return onnx.load(dst)


def quantize_gated(flat: onnx.ModelProto, latent_dim: int, fp32_blob: bytes, real: np.ndarray | None,
                   classes: int = 0, seed: int | None = None) -> tuple[onnx.ModelProto, dict, float]:
    """Quantise the flat optimised graph by each of `plans` in turn, judging each by the int8 gate
    against `fp32_blob` on the same latents, until one passes. Returns (the last model tried, its
    gate report with `float32_layers`, `float32_nodes` and every attempt's figures under
    `attempts`, seconds spent quantising). The report's `passed` says whether any passed."""
    import time

    seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else seed
    attempts, seconds = [], 0.0
    for label, nodes in plans(flat):
        t0 = time.perf_counter()
        model = quantize_int8(flat, latent_dim, classes=classes, float_nodes=nodes)
        onnx.checker.check_model(model)
        seconds += time.perf_counter() - t0
        report = gate(fp32_blob, model.SerializeToString(), latent_dim, real, classes=classes, seed=seed)
        attempts.append({"float32_layers": label, "float32_nodes": len(nodes),
                         **{k: report[k] for k in ("ssim_fp32_vs_int8_mean", "ssim_fp32_vs_int8_min", "ssim_shift",
                                                   "mse_shift", "passed") if k in report}})
        if report["passed"]:
            break
    report.update({"float32_layers": label, "float32_nodes": len(nodes), "attempts": attempts})
    return model, report, seconds


def describe(report: dict) -> str:
    """The int8 model's `quantization` metadata for a quantize_gated report."""
    kept = (f"; float32: {report['float32_layers']} ({report['float32_nodes']} nodes)"
            if report["float32_nodes"] else "")
    return (f"static QDQ, int8 per-channel weights, uint8 activations, percentile {CALIBRATION_PERCENTILE} "
            f"calibration on {CALIBRATION_LATENTS} latents (seed {CALIBRATION_SEED}){kept}")


@contextlib.contextmanager
def _root_logging(level: int):
    root = logging.getLogger()
    saved = root.level
    root.setLevel(max(saved, level))
    try:
        yield
    finally:
        root.setLevel(saved)


def _joined(z: np.ndarray, classes: int) -> np.ndarray:
    if not classes:
        return z
    from cxr_export.labels import joined_latents

    return joined_latents(z, classes)


def gate(fp32_bytes: bytes, int8_bytes: bytes, latent_dim: int, real: np.ndarray | None,
         n: int = GATE_LATENTS, seed: int | None = None, classes: int = 0) -> dict:
    """The int8 gate: compare fp32 and int8 images of the same fresh latents (a labelled model's:
    every class in turn, on the joined input); return its report."""
    import onnxruntime as ort

    seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else seed
    z = _joined(np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32), classes)
    images = {}
    for name, blob in (("fp32", fp32_bytes), ("int8", int8_bytes)):
        session = ort.InferenceSession(blob, sess_options=session_options(), providers=["CPUExecutionProvider"])
        images[name] = np.concatenate([session.run(None, {INPUT_NAME: z[i : i + 16]})[0][:, 0] for i in range(0, n, 16)])
    pair_ssim = metrics.ssim(images["fp32"], images["int8"])
    report = {
        "latents": n,
        "seed": seed,
        "ssim_fp32_vs_int8_mean": float(pair_ssim.mean()),
        "ssim_fp32_vs_int8_min": float(pair_ssim.min()),
        "max_abs_diff": float(np.abs(images["fp32"] - images["int8"]).max()),
        "min_ssim": INT8_MIN_SSIM,
        "max_shift": INT8_MAX_SHIFT,
    }
    ok = report["ssim_fp32_vs_int8_mean"] >= INT8_MIN_SSIM
    if real is not None:
        for name in ("fp32", "int8"):
            s, e = metrics.paired_ssim_mse(images[name], real)
            report[f"{name}_ssim_vs_real"], report[f"{name}_mse_vs_real"] = s, e
        report["ssim_shift"] = abs(report["int8_ssim_vs_real"] - report["fp32_ssim_vs_real"])
        report["mse_shift"] = abs(report["int8_mse_vs_real"] - report["fp32_mse_vs_real"])
        ok = ok and report["ssim_shift"] <= INT8_MAX_SHIFT and report["mse_shift"] <= INT8_MAX_SHIFT
        report["real_images"] = len(real)
    report["passed"] = bool(ok)
    return report
