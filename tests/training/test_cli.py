"""cxr-train's command line: usage errors, exit codes, dry run, a smoke run."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from cxr_training.cli import main


@pytest.fixture
def run():
    def _run(*args, env=None):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return _run


def test_help_explains(run):
    r = run("--help")
    assert r.exit_code == 0
    for word in ("--preset", "paper", "quick", "long", "smoke", "--resume", "--dry-run", "CXR_DATA", "generator.keras",
                 "--heldout", "--augment", "--ema-halflife", "--r1-gamma"):
        assert word in r.output


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "Invalid value for '--epochs'"),
    (["--batch-size", "many"], "Invalid value for '--batch-size'"),
    (["--preset", "huge"], "Invalid value for '--preset'"),
    (["--seed", "-1"], "Invalid value for '--seed'"),
])
def test_bad_values_are_usage_errors(run, few_real, args, message):
    r = run("--data", str(few_real), *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_no_data_is_a_usage_error(run):
    r = run(env={"CXR_DATA": ""})
    assert r.exit_code == 2 and "no data" in r.output


def test_resume_refuses_overrides(run, tmp_path):
    r = run("--resume", str(tmp_path), "--seed", "3", "--epochs", "3")
    assert r.exit_code == 2 and "saved config" in r.output and "(seed)" in r.output
    assert "only --epochs (more of them) and --snapshot-steps (later ones)" in r.output


def test_resume_with_more_epochs_reaches_the_run_folder_check(run, tmp_path):
    """--epochs is the one config option a resume takes (a run grows): it gets as far as the
    folder, which here holds no run."""
    r = run("--resume", str(tmp_path), "--epochs", "3")
    assert r.exit_code == 2 and "cannot resume" in r.output and "no readable config.json" in r.output


def test_folder_without_images_exits_2(run, tmp_path):
    (tmp_path / "x.jpg").write_text("text, not a JPEG")
    r = run("--preset", "smoke", "--data", str(tmp_path), "--out", str(tmp_path / "runs"))
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no usable image") and "x.jpg" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_too_few_images_for_batch_exits_2(run, few_real, tmp_path):
    r = run("--preset", "smoke", "--batch-size", "9", "--data", str(few_real), "--out", str(tmp_path / "runs"))
    assert r.exit_code == 2 and "8 usable images" in r.output


def test_dry_run_writes_nothing(run, few_real, tmp_path):
    cache = tmp_path / "cache"
    r = run("--preset", "paper", "--batch-size", "4", "--data", str(few_real), "--out", str(tmp_path / "runs"),
            "--dry-run", env={"CXR_CACHE_DIR": str(cache)})
    assert r.exit_code == 0
    assert not cache.exists() or not any(cache.rglob("*"))  # not even the preprocessing cache
    plan = json.loads(r.output)
    assert plan["parameters"] == {"generator": 27_265_281, "discriminator": 582_785}
    assert plan["data"]["usable"] == 8 and plan["total_steps"] == 60_000
    assert not (tmp_path / "runs").exists()


def test_recipe_flags_reach_the_config(run, few_real, tmp_path):
    r = run("--preset", "paper", "--batch-size", "4", "--data", str(few_real), "--dry-run", "--augment", "adaptive",
            "--augment-p", "0.2",
            "--r1-gamma", "0.5", "--label-smoothing", "0.1", "--ema-halflife", "100", "--mbstd", "--g-lr", "1e-4",
            "--d-lr", "4e-4", "--no-progressive", "--lr-schedule", "constant", "--quality-images", "64",
            "--snapshot-steps", "4000,8000")
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output)["config"]
    assert (cfg["augment"], cfg["augment_p"], cfg["r1_gamma"], cfg["label_smoothing"], cfg["ema_halflife"]) == \
        ("adaptive", 0.2, 0.5, 0.1, 100.0)
    assert cfg["d_mbstd"] and (cfg["g_lr"], cfg["d_lr"]) == (1e-4, 4e-4) and not cfg["progressive"]
    assert cfg["lr_schedule"] == "constant" and cfg["quality_images"] == 64 and cfg["snapshot_steps"] == [4000, 8000]
    quick = json.loads(run("--data", str(few_real), "--batch-size", "4", "--dry-run").output)["config"]
    assert quick["preset"] == "quick" and quick["augment"] == "adaptive" and quick["ema_halflife"] > 0


def test_dry_run_names_the_images_withheld_from_d(run, few_real):
    args = ("--batch-size", "4", "--data", str(few_real), "--dry-run", "--augment", "adaptive", "--ada-signal",
            "validation")
    r = run(*args, "--ada-validation", "2")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    withheld = plan["data"]["withheld_from_d"]
    assert len(withheld) == 2 and all((few_real / f).exists() for f in withheld) and plan["config"]["ada_gap"] == 0.2
    assert "withheld_from_d" not in json.loads(run(*args[:7]).output)["data"]
    r = run(*args, "--ada-validation", "3")
    assert r.exit_code == 2 and "leave 5 to train on" in r.output
    r = run(*args[:5], "--augment", "fixed", "--ada-signal", "validation")
    assert r.exit_code == 2 and "needs augment adaptive" in r.output


@pytest.mark.parametrize("args, message", [
    (["--snapshot-steps", "3,x"], "not a comma-separated list"),
    (["--snapshot-steps", "5"], "snapshot_steps must be epoch ends"),
    (["--augment", "always"], "Invalid value for '--augment'"),
    (["--label-smoothing", "0.5"], "Invalid value for '--label-smoothing'"),
])
def test_bad_recipe_values_are_usage_errors(run, few_real, args, message):
    r = run("--preset", "smoke", "--data", str(few_real), *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_smoke_run_and_numbering(run, few_real, tmp_path):
    out = tmp_path / "runs"
    for expected in ("00001-smoke", "00002-smoke"):
        r = run("--preset", "smoke", "--data", str(few_real), "--out", str(out), "--epochs", "1")
        assert r.exit_code == 0, r.output
        assert (out / expected / "generator.keras").is_file()
    cfg = json.loads((out / "00002-smoke" / "config.json").read_text())
    assert cfg["config"]["epochs"] == 1 and cfg["data"]["count"] == 8
    assert "epoch 1/1" in r.output and "ssim" in r.output


@pytest.mark.parametrize("args, message", [
    (["--precision", "int4"], "Invalid value for '--precision'"),
    (["--strategy", "horovod"], "Invalid value for '--strategy'"),
    (["--input", "tape"], "Invalid value for '--input'"),
])
def test_bad_scale_options_are_usage_errors(run, few_real, args, message):
    r = run("--data", str(few_real), *args)
    assert r.exit_code == 2 and message in r.output


def test_multiworker_without_tf_config_is_one_line(run, few_real, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    r = CliRunner().invoke(main, ["--preset", "smoke", "--data", str(few_real), "--out", str(tmp_path / "runs"),
                                  "--strategy", "multiworker"])
    assert r.exit_code == 2 and "needs TF_CONFIG" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "runs").exists()


def test_global_batch_must_split_across_replicas(few_real, tmp_path):
    """Two logical CPUs under the mirrored strategy: a batch of 3 cannot be split (own process:
    the CPU is split before TensorFlow starts)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "cxr_training.cli", "--preset", "smoke", "--data", str(few_real),
                           "--out", str(tmp_path / "runs"), "--strategy", "mirrored", "--batch-size", "3"],
                          env={**os.environ, "CXR_LOGICAL_CPUS": "2"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "batch size 3 must be a multiple of the 2 replicas" in proc.stderr


@pytest.mark.parametrize("module, prog", [("cxr_training.cli", "cxr-train"), ("cxr_export.cli", "cxr-export"),
                                          ("cxr_sweep.cli", "cxr-sweep")])
def test_base_install_says_which_extra(module, prog, few_real, tmp_path):
    """Without TensorFlow (a runtime-only install) the training and export commands answer in
    one line naming the extra, not with a ModuleNotFoundError."""
    import subprocess
    import sys

    args = {"cxr-train": ["--preset", "smoke", "--data", str(few_real), "--out", str(tmp_path)],
            "cxr-export": [str(tmp_path / "run"), "--out", str(tmp_path / "g.onnx")],
            "cxr-sweep": [str(tmp_path / "plan.toml"), "--runs", str(tmp_path / "runs")]}[prog]
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; sys.modules['tf2onnx'] = None\n"
            f"from {module} import main; sys.argv = [{prog!r}] + {args!r}; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'cxr-gan[train]'" in lines[0] and lines[0].startswith("error:"), r.stderr


def test_importing_the_packages_sets_no_environment_variable():
    """TensorFlow's environment is set by the commands at start-up (tfenv.configure), never as a
    side effect of importing a module: the environment after importing the project's modules is
    the one importing the libraries they use leaves (TensorFlow and OpenCV set some of their own)."""
    import subprocess
    import sys

    def environment_after(imports: str) -> dict:
        code = f"import os, json\nimport {imports}\nprint(json.dumps(dict(os.environ)))"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND",
                                                           "TF_ENABLE_ONEDNN_OPTS")}
    libraries = environment_after("cv2, keras, matplotlib, onnx, onnxruntime, skimage, tensorflow, tf2onnx")
    ours = environment_after("cxr_training.train, cxr_training.gan, cxr_training.models, cxr_training.evaluate, "
                             "cxr_sweep.sweep, cxr_export.export, cxr_export.optimize, cxr_export.quantize")
    assert {k: v for k, v in ours.items() if libraries.get(k) != v} == {}
    configured = environment_after("cxr_training.tfenv; cxr_training.tfenv.configure()")
    assert (configured["KERAS_BACKEND"], configured["TF_ENABLE_ONEDNN_OPTS"]) == ("tensorflow", "1")
