"""End to end: the real 128x128 architecture of the README's default preset (`quick`: the
data-efficient recipe on the lighter G and D, resize convolutions, scored against held-out
images at each epoch), 2 epochs x 2 steps on a few real images, through the installed commands: `cxr-train` (every artefact of a run),
`cxr-export` (the real EMA generator converted, behind the parity gate), `cxr-runtime sample`
and `evaluate`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr_training.runs import METRIC_KEYS


def _exe(name):
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert exe, f"{name} is not installed (pip install -e .[train])"
    return exe


@pytest.mark.slow
def test_paper_architecture_end_to_end(few_real, few_heldout, tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "CXR_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [_exe("cxr-train"), "--preset", "quick", "--data", str(few_real), "--heldout", str(few_heldout),
         "--out", str(out), "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "4", "--quality-images", "16"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    run = out / "00001-quick"
    # the screen: one summary line per epoch, no TensorFlow start-up noise
    epoch_lines = [line for line in proc.stderr.splitlines() if line.startswith("epoch ") and "ssim" in line]
    assert len(epoch_lines) == 2
    assert "cuInit" not in proc.stderr and "oneDNN" not in proc.stderr

    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["image_size"] == 128 and cfg["config"]["batch_size"] == 4
    assert cfg["data"]["count"] == 8 and len(cfg["data"]["files"]) == 8 and len(cfg["data"]["sha256"]) == 64
    assert {"tensorflow", "keras", "numpy"} <= set(cfg["versions"])

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 4
    for r in rows:
        for key in (*METRIC_KEYS, "ref_ssim", "ref_mse"):
            assert np.isfinite(r[key]), key
        assert 0 <= r["real_acc"] <= 1 and -1 <= r["ssim"] <= 1 and r["mse"] >= 0
        # the held-out monitor and the audit (128x128 images); quick trains with ADA, p from 0 (at most
        # one adjustment of 4/500 in four steps)
        for key in ("q_recall", "q_coverage", "q_kid", "q_diversity", "audit_nn_max"):
            assert np.isfinite(r[key]), key
        assert 0.0 <= r["augment_p"] <= 4 / 500 + 1e-6 and cfg["config"]["augment"] == "adaptive"
        assert r["audit_flagged"] == 0  # four steps from random weights copy no training image
        assert r["audit_nn_max"] < 0.97
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("epoch,step,g_loss,d_loss")

    import cv2

    for name in ("samples/epoch-0001.png", "samples/epoch-0002.png",
                 "plots/losses_ssim_mse.png", "plots/discriminator.png", "plots/quality.png"):
        img = cv2.imread(str(run / name), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.size > 0, name
    grid = cv2.imread(str(run / "samples/epoch-0002.png"), cv2.IMREAD_UNCHANGED)
    assert grid.shape == (4 * 130 + 2, 4 * 130 + 2)  # 16 fixed-latent samples, 4 x 4

    ckpts = sorted((run / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["epoch-0002"]  # the quick preset keeps the newest
    meta = json.loads((ckpts[-1] / "meta.json").read_text())
    assert meta["epoch"] == 2 and meta["step"] == 4 and meta["config"]["image_size"] == 128

    from cxr_training.models import load_generator  # knows the custom layers, whatever else was imported

    g = load_generator(run / "generator.keras")
    # quick's generator: the paper's layers with resize-convolutions, and the 3x3 refinement convolution of
    # 32 channels at full resolution (32 * 9 * 32 + 32 = 9,248 parameters) before the output one
    assert g.get_layer("g_up3").__class__.__name__ == "ResizeConv2x"
    assert g.get_layer("g_refine").count_params() == 9_248 and g.count_params() == 7_006_945 + 9_248
    info = json.loads((run / "generator.json").read_text())
    assert info["latent_dim"] == 100 and info["step"] == 4 and info["run_id"] == "00001-quick"
    assert info["weights"] == "ema" and (run / "generator-raw.keras").is_file()

    # export the real architecture, behind the gates: the optimised graph with its int8 model
    # (the int8 gate reads the run's own training images), and tf2onnx's plain conversion
    onnx_path = tmp_path / "artifacts" / "generator.onnx"
    proc = subprocess.run([_exe("cxr-export"), "--runs", str(out), "--out", str(onnx_path), "--quantize", "int8"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "artifacts" / "generator.parity.json").read_text())
    assert report["passed"] and report["max_abs_err"] <= 1e-4 and report["keras_model"].endswith("generator.keras")
    assert report["graph"] == "subpixel-nchw"
    gate = json.loads((tmp_path / "artifacts" / "generator.int8.gate.json").read_text())
    assert gate["passed"] and gate["real_images"] == 8
    assert (tmp_path / "artifacts" / "generator.int8.onnx").stat().st_size < onnx_path.stat().st_size / 3
    plain = tmp_path / "artifacts" / "plain.onnx"
    proc = subprocess.run([_exe("cxr-export"), "--runs", str(out), "--out", str(plain), "--no-optimize"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "artifacts" / "plain.parity.json").read_text())
    assert report["passed"] and report["max_abs_err"] <= 1e-5 and report["graph"] == "tf2onnx"
    import onnx

    metadata = {p.key: p.value for p in onnx.load(onnx_path, load_external_data=False).metadata_props}
    assert metadata["run_id"] == "00001-quick" and metadata["step"] == "4" and metadata["image_size"] == "128"
    assert metadata["data_sha256"] == cfg["data"]["sha256"] and metadata["config_hash"] == cfg["config_hash"]

    # and the runtime samples and scores with it, without TensorFlow in the loop
    samples = tmp_path / "samples"
    proc = subprocess.run([_exe("cxr-runtime"), "sample", "--n", "5", "--model", str(onnx_path),
                           "--out", str(samples), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(list(samples.glob("sample-*.png"))) == 5
    # the shipped generator gives the same bytes at another batch size
    again = tmp_path / "samples-b2"
    proc = subprocess.run([_exe("cxr-runtime"), "sample", "--n", "5", "--model", str(onnx_path), "--out", str(again),
                           "--device", "cpu", "--batch-size", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for p in samples.glob("sample-*.png"):
        assert (again / p.name).read_bytes() == p.read_bytes(), p.name
    proc = subprocess.run([_exe("cxr-runtime"), "evaluate", "--fake", str(samples), "--real", str(few_real), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from cxr_runtime import metrics
    from cxr_runtime.images import load_folder

    want_ssim, want_mse = metrics.paired_ssim_mse(load_folder(samples).images, load_folder(few_real).images)
    got = json.loads(proc.stdout)  # evaluate reports what the library computes on the same files
    assert abs(got["mse"] - want_mse) < 1e-5 and abs(got["ssim"] - want_ssim) < 1e-5
