"""Training interrupted for real: SIGKILL at three different moments, SIGTERM, a loss that
turns NaN. The run always resumes from its last complete checkpoint and ends with exactly
the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cxr_training import checkpoint

# smoke networks on 8 real images; enough steps that a kill can land inside an epoch
ARGS = ["--preset", "smoke", "--epochs", "5", "--steps-per-epoch", "12", "--checkpoint-every", "1"]


def _cxr_train():
    exe = shutil.which("cxr-train", path=str(Path(sys.executable).parent)) or shutil.which("cxr-train")
    assert exe, "cxr-train is not installed"
    return exe


def _start(args, tmp_path):
    env = {**os.environ, "CXR_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.Popen([_cxr_train(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _wait_for(cond, proc, timeout=120.0):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"training ended before the kill point: {proc.communicate()[1][-2000:]}"
        assert time.time() - t0 < timeout, "kill point never reached"
        time.sleep(0.005)


def _rows(run):
    p = run / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []


def _final_state(run):
    ckpt, meta = checkpoint.latest_valid(run)
    with np.load(ckpt / "state.npz", allow_pickle=False) as data:
        return meta, {k: data[k] for k in data.files}


def _assert_same_final_state(a, b):
    meta_a, sa = _final_state(a)
    meta_b, sb = _final_state(b)
    assert meta_a["step"] == meta_b["step"] == 60 and meta_a["epoch"] == meta_b["epoch"] == 5
    assert sa.keys() == sb.keys()
    for k in sa:  # bitwise: batches are functions of (seed, step), CPU kernels deterministic
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, train_normal):
    """An uninterrupted run of the same configuration."""
    tmp = tmp_path_factory.mktemp("ref")
    data = tmp / "data"
    data.mkdir()
    for p in sorted(train_normal.iterdir())[:8]:
        (data / p.name).symlink_to(p)
    proc = _start([*ARGS, "--data", str(data), "--out", str(tmp / "runs")], tmp)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return data, tmp / "runs" / "00001-smoke"


def test_sigkill_three_times_then_finish(reference, tmp_path):
    data, ref_run = reference
    out = tmp_path / "runs"
    run = out / "00001-smoke"
    kills = []

    # 1: right after the first epoch's metrics row lands: during the grid, plots or checkpoint write
    proc = _start([*ARGS, "--data", str(data), "--out", str(out)], tmp_path)
    _wait_for(lambda: len(_rows(run)) >= 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(("after epoch 1's metrics row", [c.name for c in checkpoint.list_checkpoints(run)]))

    # 2: inside a training step of a later epoch: 0.15 s after a new checkpoint appears
    proc = _start(["--resume", str(run)], tmp_path)
    seen = {c.name for c in checkpoint.list_checkpoints(run)}
    _wait_for(lambda: {c.name for c in checkpoint.list_checkpoints(run)} - seen, proc)
    time.sleep(0.15)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(("during the steps of the next epoch", [c.name for c in checkpoint.list_checkpoints(run)]))

    # 3: during the epoch-end metric computation: as soon as the next row's epoch is reached
    proc = _start(["--resume", str(run)], tmp_path)
    rows_before = len(_rows(run))
    _wait_for(lambda: len(_rows(run)) > rows_before, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(("right after a later metrics row", [c.name for c in checkpoint.list_checkpoints(run)]))

    proc = _start(["--resume", str(run)], tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "resuming from" in err
    print("kills and the checkpoints left each time:", kills)

    _assert_same_final_state(ref_run, run)
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3, 4, 5]  # no duplicated or missing epochs
    ref_rows = _rows(ref_run)
    for a, b in zip(ref_rows, _rows(run)):
        assert a["g_loss"] == b["g_loss"] and a["ssim"] == b["ssim"]
    assert not [p for p in run.rglob(".*") if ".tmp-" in p.name]  # no partial files left


def test_sigterm_stops_with_a_checkpoint_and_resumes(reference, tmp_path):
    data, ref_run = reference
    out = tmp_path / "runs"
    run = out / "00001-smoke"
    proc = _start([*ARGS, "--data", str(data), "--out", str(out)], tmp_path)
    _wait_for(lambda: len(_rows(run)) >= 1 and len(checkpoint.list_checkpoints(run)) >= 1, proc)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "cxr-train --resume" in err
    newest = checkpoint.list_checkpoints(run)[-1]
    meta = checkpoint.read_meta(newest)
    assert f"step {meta['step']}" in err  # the checkpoint is at the step where it stopped
    proc = _start(["--resume", str(run)], tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    _assert_same_final_state(ref_run, run)
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3, 4, 5]


def test_non_finite_loss_stops_without_writing(few_real, tmp_path):
    from cxr_training.config import preset
    from cxr_training.errors import NonFiniteLoss
    from cxr_training.tfenv import import_tf
    from cxr_training.train import train

    _, keras = import_tf()

    class Poison(keras.callbacks.Callback):
        """Simulates divergence: D's output weights become NaN during epoch 2."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                w = self.model.discriminator.get_layer("d_out").kernel
                w.assign(np.full(w.shape, np.nan, np.float32))

    cfg = preset("smoke").replace(epochs=3, steps_per_epoch=4)
    with pytest.raises(NonFiniteLoss) as info:
        train(cfg, few_real, out_root=tmp_path, log=lambda m: None, extra_callbacks=[Poison()])
    msg = str(info.value)
    assert "non-finite loss at epoch 2 step 7" in msg and "epoch-0001" in msg
    run = next(tmp_path.glob("0*"))
    assert [c.name for c in checkpoint.list_checkpoints(run)] == ["epoch-0001"]
    _, state = _final_state(run)
    assert all(np.all(np.isfinite(v)) for v in state.values() if v.dtype.kind == "f")


def test_checkpoint_refuses_nan_weights(few_real, tmp_path):
    from cxr_training.config import preset
    from cxr_training.train import train

    run = train(preset("smoke").replace(epochs=1), few_real, out_root=tmp_path, log=lambda m: None)

    class FakeVar:
        path = "g_dense/kernel"

        def numpy(self):
            return np.array([1.0, np.nan], np.float32)

    class FakeGan:
        generator = discriminator = g_optimizer = d_optimizer = type("M", (), {"variables": [FakeVar()]})()
        metrics = []

        def recipe_state(self):
            return {}

    with pytest.raises(checkpoint.NonFiniteState, match="non-finite"):
        checkpoint.save(run, FakeGan(), 2, 6, {"steps_per_epoch": 3}, keep=2)
    assert [c.name for c in checkpoint.list_checkpoints(run)] == ["epoch-0001"]


# SIGTERM inside a later epoch of a run with the held-out monitor, in both input modes: once a
# tf.data iterator left to interpreter shutdown hung the process after its checkpoint was written.
HELD_ARGS = ["--preset", "smoke", "--epochs", "4", "--steps-per-epoch", "40", "--checkpoint-every", "1"]


def _start_logged(args, tmp_path, log):
    env = {**os.environ, "CXR_CACHE_DIR": str(tmp_path / "cache")}
    with open(log, "w") as f:
        return subprocess.Popen([_cxr_train(), *args], stdout=subprocess.DEVNULL, stderr=f, text=True, env=env)


@pytest.fixture(scope="module")
def heldout_reference(tmp_path_factory, train_normal, kermany):
    tmp = tmp_path_factory.mktemp("heldref")
    data, held = tmp / "data", tmp / "held"
    data.mkdir()
    held.mkdir()
    for p in sorted(train_normal.iterdir())[:8]:
        (data / p.name).symlink_to(p)
    for p in sorted((kermany / "heldout" / "NORMAL").iterdir())[:10]:
        (held / p.name).symlink_to(p)
    proc = _start([*HELD_ARGS, "--data", str(data), "--heldout", str(held), "--out", str(tmp / "runs")], tmp)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return data, held, tmp / "runs" / "00001-smoke"


@pytest.mark.parametrize("input_mode", ["memory", "stream"])
def test_sigterm_in_a_later_epoch_with_heldout_exits_then_resumes_bitwise(heldout_reference, tmp_path, input_mode):
    """Three SIGTERMs, each inside a later epoch's steps (epochs 2, 3, 4), each must end the
    process with 143 within 60 s; the run then finishes bitwise equal to an uninterrupted one."""
    data, held, ref_run = heldout_reference
    run = tmp_path / "runs" / "00001-smoke"
    for attempt, epoch in enumerate((2, 3, 4)):
        log = tmp_path / f"attempt-{attempt}.log"
        args = ["--resume", str(run)] if attempt else \
            [*HELD_ARGS, "--data", str(data), "--heldout", str(held), "--out", str(tmp_path / "runs")]
        proc = _start_logged([*args, "--input", input_mode], tmp_path, log)
        _wait_for(lambda log=log, epoch=epoch: f"epoch {epoch}/4 step 8/40" in log.read_text(), proc, timeout=300)
        proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"attempt {attempt + 1}: no exit within 60 s of SIGTERM; log:\n{log.read_text()[-2000:]}")
        assert proc.returncode == 128 + signal.SIGTERM, log.read_text()[-2000:]
        assert time.time() - t0 < 60 and "stopped by SIGTERM" in log.read_text()
    proc = _start_logged(["--resume", str(run), "--input", input_mode], tmp_path, tmp_path / "final.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "final.log").read_text()[-2000:]
    meta_a, sa = _final_state(ref_run)
    meta_b, sb = _final_state(run)
    assert meta_a["step"] == meta_b["step"] == 160 and sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3, 4] and all("q_kid" in r for r in _rows(run))


def test_interrupted_exit_does_not_wait_for_interpreter_finalisation(few_real, tmp_path):
    """Whatever would hang at interpreter shutdown (here an atexit handler that never returns, as
    a tf.data destructor once did) cannot keep an interrupted cxr-train alive: it exits with 143
    once its checkpoint is written."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import atexit, time\natexit.register(lambda: time.sleep(3600))\n")
    log = tmp_path / "train.log"
    env = {**os.environ, "CXR_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as f:
        proc = subprocess.Popen([_cxr_train(), *HELD_ARGS, "--data", str(few_real), "--out", str(tmp_path / "runs")],
                                stdout=subprocess.DEVNULL, stderr=f, env=env)
    _wait_for(lambda: "epoch 2/4 step 8/40" in log.read_text(), proc, timeout=300)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-2000:]
    finally:
        proc.kill()
    assert "stopped by SIGTERM" in log.read_text()
