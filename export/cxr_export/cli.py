"""`cxr-export`: the trained generator to ONNX, behind the parity gate."""

from __future__ import annotations

import sys

import click

from cxr_runtime import __version__
from cxr_runtime.errors import EXIT_USER_ERROR, reported


def _scale(ctx, param, text: str) -> float | str:
    if text in ("auto", "diversity"):
        return text
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not auto, diversity or a number", param_hint="--latent-scale") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("source", required=False, type=click.Path(path_type=str))
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), default="artifacts/generator.onnx",
              show_default=True, help="Where the ONNX model goes (its parity report goes beside it).")
@click.option("--runs", "runs_root", type=click.Path(file_okay=False, path_type=str), default="runs",
              show_default=True, help="Where to look for the newest finished run when SOURCE is omitted.")
@click.option("--atol", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Parity tolerance: max |Keras - ONNX| over the test latents "
                   "[default: 1e-04 optimised, 1e-05 with --no-optimize].")
@click.option("--optimize/--no-optimize", default=True, show_default=True,
              help="Write the rewritten sub-pixel NCHW graph (faster; built from the weights, no tf2onnx) "
                   "instead of tf2onnx's conversion.")
@click.option("--chunk", type=click.IntRange(min=0, max=4096), default=None,
              help="Optimised graph: run the convolution layers this many images at a time inside the "
                   "model (a Loop; the Dense layer sees the whole batch, so its 105 MB of weights are read "
                   "once per call). 0: no loop. cxr-runtime passes the whole batch as one chunk on CUDA. "
                   "[default: 4]")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default="none", show_default=True,
              help="Also write an int8 model (OUT stem + .int8.onnx) behind the int8 gate (SSIM against fp32).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Training images for the int8 gate and --latent-scale auto [default: the run's own, "
                   "from config.json].")
@click.option("--latent-scale", default="1", show_default=True, metavar="auto|diversity|FLOAT", callback=_scale,
              help="Standard deviation the runtime draws latents at, written into the model. Chosen after the "
                   "parity gate from 1.0, 1.1, ..., 1.5 on the training images (never the held-out ones): auto, "
                   "the scale whose samples are closest to them (KID); diversity, the smallest scale whose "
                   "samples are as varied as they are, within 0.05 mean SSIM (docs/export.md).")
@click.option("--opset", type=click.IntRange(min=17, max=21), default=17, show_default=True,
              help="ONNX opset of the converted graph.")
@click.option("--data-citation", default=None,
              help="Citation of the training data recorded in the model (default: the study's dataset, "
                   "Kermany et al. 2018). Set it when you trained on other data.")
@click.option("--data-license", default=None, help="Licence of the training data (default: CC BY 4.0).")
@click.version_option(__version__, prog_name="cxr-export")
def main(source, out, runs_root, atol, optimize, chunk, quantize, data_dir, latent_scale, opset, data_citation,
         data_license):
    """Convert a trained generator to ONNX and check it against Keras before publishing it.

    SOURCE is a run folder (runs/00001-quick) or a generator.keras file; without it, the
    newest finished run under --runs. The model gets input `z` [batch, latent_dim] and output
    `image` [batch, 1, size, size] in [-1, 1], with provenance in its metadata. The parity gate
    runs Keras and onnxruntime on the same random latents at batch 1, 7 and 64: if any output
    differs by more than --atol, nothing is written to --out and the exit code is 1. The report
    (generator.parity.json beside --out) is written either way. With --quantize int8 the int8
    model must pass the int8 gate, SSIM(fp32, int8) >= 0.98 with SSIM/MSE against the training
    images moved by at most 0.005 (report: generator.int8.gate.json), or it is not written (exit code 1).
    Where every layer in int8 fails, the layers at the drawn resolution stay float32 and the gate
    judges that model; the report lists both attempts.
    """
    from cxr_training.tfenv import configure, missing_extra

    problem = missing_extra("cxr-export", ("tensorflow", "keras", "tf2onnx"))
    if problem:
        click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_USER_ERROR)
    configure()  # TensorFlow's environment, before it starts
    from cxr_export.export import (
        DEFAULT_DATA_CITATION,
        DEFAULT_DATA_LICENSE,
        export,
    )

    def log(msg):
        click.echo(msg, err=True)

    with reported():  # ExportError: exit 2; a failed gate or conversion: exit 1 (cxr_export.errors)
        result = export(
            source, out, atol=atol, opset=opset, optimize=optimize, chunk=chunk, quantize=quantize,
            data_dir=data_dir, latent_scale=latent_scale,
            citation=data_citation or DEFAULT_DATA_CITATION, license_=data_license or DEFAULT_DATA_LICENSE,
            runs_root=runs_root, log=log,
        )
    report = result.report
    per_batch = ", ".join(f"batch {b['batch']}: max {b['max_abs_err']:.2e} mean {b['mean_abs_err']:.2e}"
                          for b in report.batches)
    click.echo(f"parity passed (atol {report.atol:g}): {per_batch}", err=True)
    click.echo(f"wrote {result.path} ({result.graph}, built in {result.seconds:.1f} s)", err=True)
    if result.int8_path:
        r = result.int8_report
        click.echo(f"int8 gate passed: SSIM(fp32, int8) mean {r['ssim_fp32_vs_int8_mean']:.4f}, "
                   f"shift vs real: ssim {r['ssim_shift']:.4f} mse {r['mse_shift']:.4f}"
                   + ("" if r["float32_layers"] == "none" else
                      f"; float32: {r['float32_layers']} (all int8 failed the gate: SSIM "
                      f"{r['attempts'][0]['ssim_fp32_vs_int8_mean']:.4f})"), err=True)
        click.echo(f"wrote {result.int8_path} (quantised in {result.int8_seconds:.1f} s)", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
