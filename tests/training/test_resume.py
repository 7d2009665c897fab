"""Checkpoint/resume: an interrupted and resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_training import checkpoint
from cxr_training.config import preset
from cxr_training.errors import TrainingError
from cxr_training.tfenv import import_tf
from cxr_training.train import train

tf, keras = import_tf()

# Same seed, same data, same machine and thread settings: at these tests' small sizes TensorFlow's
# CPU kernels are run-to-run deterministic, so we demand bitwise equality of every variable
# (G, D, dropout seed state, Adam moments and counters). A looser tolerance would hide
# a resume that skips or repeats a batch: one extra step moves weights by ~lr = 2e-4.
TOLERANCE = 0.0


class Interrupt(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Simulates a crash in the middle of an epoch (after the previous checkpoint)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Interrupt()


def _state(run_dir):
    ckpt, meta = checkpoint.latest_valid(run_dir)
    with np.load(ckpt / "state.npz") as data:
        return meta, {k: data[k] for k in data.files}


PAPER_SMOKE = preset("smoke").replace(epochs=4, steps_per_epoch=3, keep_checkpoints=2,
                                      progressive_schedule=((0.0, 4), (0.3, 2), (0.6, 1)))
# every lever of the data-efficient recipe at once: its state (augmentation probability and
# ADA's sums, EMA weights, the R1 tracker, LeCam's moving sums) must be checkpointed and restored too
RECIPE_SMOKE = PAPER_SMOKE.replace(augment="adaptive", ada_start=0.3, ada_interval=2, ada_speed=4.0, r1_gamma=0.1,
                                   label_smoothing=0.1, d_mbstd=True, ema_halflife=3.0, lecam=0.1)

# ADA driven by D's verdict on withheld training images (no progressive resizing: D's input
# size must stay that of the withheld images); the last shares are restored with p
VALIDATION_SMOKE = RECIPE_SMOKE.replace(progressive=False, ada_signal="validation", ada_validation=2, ada_interval=1)


@pytest.fixture
def cfg():
    return PAPER_SMOKE


@pytest.fixture(scope="module")
def recipe_straight(train_normal, tmp_path_factory):
    """RECIPE_SMOKE trained straight through once for the module: what the interrupted, paused
    and resumed runs below must end equal to."""
    root = tmp_path_factory.mktemp("recipe-straight")
    few = root / "few"
    few.mkdir()
    for p in sorted(train_normal.iterdir())[:8]:  # as the few_real fixture
        (few / p.name).symlink_to(p)
    with pytest.MonkeyPatch.context() as mp:  # the autouse cache isolation is per test
        mp.setenv("CXR_CACHE_DIR", str(root / "cache"))
        return train(RECIPE_SMOKE, few, out_root=root / "a", log=lambda m: None)


@pytest.mark.parametrize("cfg", [PAPER_SMOKE, RECIPE_SMOKE, VALIDATION_SMOKE], ids=["paper", "recipe", "validation"])
def test_resume_equals_uninterrupted(cfg, few_real, tmp_path):
    straight = train(cfg, few_real, out_root=tmp_path / "a", log=lambda m: None)

    with pytest.raises(Interrupt):
        train(cfg, few_real, out_root=tmp_path / "b", log=lambda m: None, extra_callbacks=[InterruptAt(2, 1)])
    broken = next((tmp_path / "b").iterdir())
    assert [p.name for p in checkpoint.list_checkpoints(broken)] == ["epoch-0001", "epoch-0002"]
    assert not (broken / "generator.keras").exists()
    logs = []
    resumed = train(None, None, resume_dir=broken, log=logs.append)
    assert any("resuming from epoch-0002 (step 6)" in m for m in logs)

    meta_a, a = _state(straight)
    meta_b, b = _state(resumed)
    assert meta_a["epoch"] == meta_b["epoch"] == 4 and meta_a["step"] == meta_b["step"] == 12
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=TOLERANCE, err_msg=k)
    # one row per epoch, no duplicates from the interrupted attempt
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    rows_a = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    for ra, rb in zip(rows_a, rows):
        assert ra["g_loss"] == rb["g_loss"] and ra["ssim"] == rb["ssim"]
    if cfg.augment == "adaptive":  # the recipe's state is in the comparison, and it moved
        assert any(k.startswith("ema/") for k in a) and any(k.startswith("augment/") for k in a)
        p_key = next(v["key"] for v in meta_a["variables"] if v["path"].endswith("augment_p"))
        assert a[p_key] != cfg.ada_start
        assert rows[-1]["augment_p"] == float(a[p_key]) and "r1" in rows[-1] and "lecam" in rows[-1]
        lecam_keys = [k for k in a if k.startswith("lecam/")]
        assert len(lecam_keys) == 2 and all(a[k] != 0 for k in lecam_keys)
    if cfg.ada_signal == "validation":
        assert any(v["path"].endswith("ada_withheld_real") for v in meta_a["variables"])
        assert all(ra["ada_withheld_real"] == rb["ada_withheld_real"] for ra, rb in zip(rows_a, rows))


def test_resume_comparison_can_fail(cfg, few_real, tmp_path):
    """The equality above is not vacuous: a resume whose restored state is off by one
    step (D's optimizer counter, which drives Adam's bias correction and the rate
    schedule) ends with different weights, and the comparison sees it. (A pipeline out of
    step with the model is refused outright: test_train_step.)"""
    straight = train(cfg, few_real, out_root=tmp_path / "a", log=lambda m: None)
    with pytest.raises(Interrupt):
        train(cfg, few_real, out_root=tmp_path / "b", log=lambda m: None, extra_callbacks=[InterruptAt(2, 0)])
    broken = next((tmp_path / "b").iterdir())
    ckpt, meta = checkpoint.latest_valid(broken)
    with np.load(ckpt / "state.npz") as data:
        arrays = {k: data[k] for k in data.files}
    key = next(v["key"] for v in meta["variables"] if v["key"].startswith("d_optimizer/") and "iteration" in v["path"])
    arrays[key] = arrays[key] + 1
    np.savez(ckpt / "state.npz", **arrays)
    meta["state_sha256"] = checkpoint.sha256_file(ckpt / "state.npz")
    (ckpt / "meta.json").write_text(json.dumps(meta))
    resumed = train(None, None, resume_dir=broken, log=lambda m: None)
    _, a = _state(straight)
    _, b = _state(resumed)
    assert any(np.abs(a[k] - b[k]).max() > TOLERANCE for k in a if k.startswith("generator/"))


def test_corrupt_checkpoint_falls_back(cfg, few_real, tmp_path):
    run = train(cfg.replace(epochs=2), few_real, out_root=tmp_path, log=lambda m: None)
    newest = checkpoint.list_checkpoints(run)[-1]
    with open(newest / "state.npz", "r+b") as f:
        f.seek(200)
        f.write(b"\x00" * 64)
    warnings = []
    found = checkpoint.latest_valid(run, warn=warnings.append)
    assert found[0].name == "epoch-0001"
    assert "does not match its recorded hash" in warnings[0]


def test_resume_refuses_changed_data(cfg, few_real, tmp_path):
    from cxr_training.errors import TrainingError

    run = train(cfg.replace(epochs=1), few_real, out_root=tmp_path, log=lambda m: None)
    sorted(few_real.iterdir())[0].unlink()
    with pytest.raises(TrainingError, match="not the data"):
        train(None, None, resume_dir=run, log=lambda m: None)


def test_a_recipe_runs_first_steps_do_not_depend_on_its_length(few_real, tmp_path):
    """quick is exactly the first steps of long: with the recipe (no schedule keyed to the run's
    length) a 2-epoch run ends where a 4-epoch run stands after 2 epochs, bitwise."""
    from cxr_training.config import LIGHT, RECIPE

    base = preset("smoke").replace(steps_per_epoch=3, keep_checkpoints=4, **RECIPE,
                                   shared_fake=LIGHT["shared_fake"], g_upsample=LIGHT["g_upsample"])
    short = train(base.replace(epochs=2, preset="quick"), few_real, out_root=tmp_path / "a", log=lambda m: None)
    longer = train(base.replace(epochs=4, preset="long"), few_real, out_root=tmp_path / "b", log=lambda m: None)
    meta_a, a = _state(short)
    ckpt = next(c for c in checkpoint.list_checkpoints(longer) if c.name == "epoch-0002")
    with np.load(ckpt / "state.npz") as data:
        b = {k: data[k] for k in data.files}
    assert meta_a["step"] == 6 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_pause_then_resume_equals_uninterrupted(recipe_straight, few_real, tmp_path):
    """cxr-train --stop-at: a checkpoint at the pause, no final generator, and a resume that ends
    where a run straight through ends."""
    cfg = RECIPE_SMOKE
    straight = recipe_straight
    logs = []
    paused = train(cfg, few_real, out_root=tmp_path / "b", log=logs.append, stop_at=6)
    assert not (paused / "generator.keras").exists()
    assert _state(paused)[0]["step"] == 6 and any("paused at step 6 of 12" in m for m in logs)
    with pytest.raises(TrainingError, match="--stop-at 7 is not an epoch end"):
        train(None, None, resume_dir=paused, stop_at=7, log=lambda m: None)
    train(None, None, resume_dir=paused, stop_at=6, log=logs.append)  # already there: nothing to do
    assert any("nothing to train" in m for m in logs) and _state(paused)[0]["step"] == 6
    resumed = train(None, None, resume_dir=paused, stop_at=12, log=lambda m: None)  # at the end: no pause
    assert (resumed / "generator.keras").is_file()
    meta_a, a = _state(straight)
    meta_b, b = _state(resumed)
    assert meta_a["step"] == meta_b["step"] == 12 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=TOLERANCE, err_msg=k)


def test_a_checkpoint_inside_an_epoch_once_the_minutes_have_passed(recipe_straight, few_real, tmp_path):
    """checkpoint_minutes: a machine taken away without a signal (SIGKILL, power) loses at most
    that much. Here it is due after every step; a crash inside epoch 3 resumes from the step
    before the crash, not from the epoch's start, and ends bitwise where a straight run ends."""
    often = RECIPE_SMOKE.replace(checkpoint_minutes=1e-6, keep_checkpoints=20)
    assert RECIPE_SMOKE.replace(checkpoint_minutes=1e-6).hash() == RECIPE_SMOKE.hash()  # not what is trained
    straight = recipe_straight
    assert [p.name for p in checkpoint.list_checkpoints(straight)][-2:] == ["epoch-0003", "epoch-0004"]

    logs = []
    with pytest.raises(Interrupt):
        train(often, few_real, out_root=tmp_path / "b", log=logs.append, extra_callbacks=[InterruptAt(2, 2)])
    broken = next((tmp_path / "b").iterdir())
    names = [p.name for p in checkpoint.list_checkpoints(broken)]
    # 3 steps an epoch: inside each epoch after its 1st and 2nd step, the epoch's end writes its own
    assert names == ["epoch-0001-step-000000001", "epoch-0001-step-000000002", "epoch-0001",
                     "epoch-0002-step-000000004", "epoch-0002-step-000000005", "epoch-0002",
                     "epoch-0003-step-000000007", "epoch-0003-step-000000008"], names
    assert any("checkpoint epoch-0003-step-000000008" in m for m in logs)
    resume_logs = []
    resumed = train(None, None, resume_dir=broken, log=resume_logs.append)
    assert any("resuming from epoch-0003-step-000000008 (step 8)" in m for m in resume_logs), resume_logs
    meta_a, a = _state(straight)
    meta_b, b = _state(resumed)
    assert meta_a["step"] == meta_b["step"] == 12 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=TOLERANCE, err_msg=k)


_DETERMINISM_PROBE = """
import sys
from cxr_training.config import preset
from cxr_training.tfenv import import_tf
from cxr_training.train import train
from tensorflow.python.framework import config as tf_config

tf, _ = import_tf()
mode, data, out = sys.argv[1:4]
if mode == "resume":  # the rest of the paused run below: it trains
    train(resume_dir=next(p for p in __import__("pathlib").Path(out).iterdir() if p.is_dir()), log=print)
else:  # smoke: 2 epochs x 3 steps; paused after the first
    train(preset("smoke").replace(deterministic=mode == "on"), data, out_root=out, log=print, stop_at=3)
print("INTER", tf.config.threading.get_inter_op_parallelism_threads(), "OPDET", tf_config.is_op_determinism_enabled())
"""


def test_deterministic_runs_one_op_at_a_time_with_op_determinism_and_a_resume_keeps_it(few_real, tmp_path):
    """--deterministic takes effect in a new run and in its resume (read from config.json);
    without it TensorFlow keeps its own thread pools. The bitwise effect at the real size is
    measured by bench/determinism.py (docs/training.md, "Reproducibility")."""
    import subprocess
    import sys

    def probe(mode, out):
        done = subprocess.run([sys.executable, "-c", _DETERMINISM_PROBE, mode, str(few_real), str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    on = probe("on", tmp_path / "on")
    assert "deterministic: one inter-op thread" in on and "INTER 1 OPDET True" in on
    config = json.loads(next((tmp_path / "on").glob("*/config.json")).read_text())["config"]
    assert config["deterministic"] is True
    assert not list((tmp_path / "on").glob("*/generator.keras"))  # paused after epoch 1
    resumed = probe("resume", tmp_path / "on")
    assert "deterministic: one inter-op thread" in resumed and "INTER 1 OPDET True" in resumed
    assert "epoch 2/2" in resumed and list((tmp_path / "on").glob("*/generator.keras"))  # it trained on
    off = probe("off", tmp_path / "off")
    assert "deterministic: one inter-op thread" not in off and "INTER 0 OPDET False" in off


def test_deterministic_refuses_a_process_whose_thread_pools_already_run(few_real, tmp_path):
    """In a process that has already run TensorFlow with its default pools the thread count can
    no longer change: a clear TrainingError before anything is written, not a silent
    non-deterministic run."""
    tf.constant(1.0) + 1.0  # TensorFlow's context is up (it is in any test process by now)
    if tf.config.threading.get_inter_op_parallelism_threads() == 1:
        pytest.skip("this process already runs one inter-op thread")
    with pytest.raises(TrainingError, match="before TensorFlow starts its thread pools"):
        train(preset("smoke").replace(epochs=1, deterministic=True), few_real, out_root=tmp_path / "runs",
              log=lambda m: None)
    assert not (tmp_path / "runs").exists()



def test_a_finished_run_lengthened_ends_where_a_run_started_at_that_length_ends(few_real, tmp_path):
    """cxr-train --resume RUN --epochs N: a finished 2-epoch run of the recipe (constant rate, no
    resizing) grown to 4 epochs ends bitwise where a 4-epoch run ends, with the same config hash;
    its old final generator is the snapshot of step 6, equal to the 4-epoch run's snapshot there."""
    from cxr_training.config import LIGHT, RECIPE
    from cxr_training.runs import RunFolder

    base = preset("smoke").replace(steps_per_epoch=3, keep_checkpoints=2, **RECIPE, shared_fake=LIGHT["shared_fake"],
                                   g_upsample=LIGHT["g_upsample"], preset="long")
    straight = train(base.replace(epochs=4, snapshot_steps=(6,)), few_real, out_root=tmp_path / "a",
                     log=lambda m: None)
    short = train(base.replace(epochs=2), few_real, out_root=tmp_path / "b", log=lambda m: None)
    final_at_6 = (short / "generator.keras").read_bytes()
    logs = []
    grown = train(None, None, resume_dir=short, epochs=4, log=logs.append)
    assert any("lengthened from 2 to 4 epochs (6 to 12 steps)" in m for m in logs)
    assert any("resuming from epoch-0002 (step 6)" in m for m in logs)
    assert (grown / "snapshots" / "step-000000006" / "generator.keras").read_bytes() == final_at_6
    a, b = RunFolder(straight), RunFolder(grown)
    assert a.config == b.config and a.record["config_hash"] == b.record["config_hash"]
    assert b.finished and json.loads((grown / "generator.json").read_text())["step"] == 12
    meta_a, sa = _state(straight)
    meta_b, sb = _state(grown)
    assert meta_a["step"] == meta_b["step"] == 12 and sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert [r["epoch"] for r in b.history] == [1, 2, 3, 4]
    with pytest.raises(TrainingError, match="a run is not shortened"):
        train(None, None, resume_dir=grown, epochs=3, log=lambda m: None)
