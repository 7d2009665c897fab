"""cxr-sweep: plans, resuming, skipping, rows written exactly once, clear errors for bad plans.

Most tests drive the sweep with a stand-in runner that writes what each command would write
(fast, no TensorFlow); the last one runs the real commands on the smoke preset and stops the
sweep with SIGTERM in the middle of training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cxr_sweep as sweep
from cxr_sweep import Entry, Stopped, Sweep, SweepError, load_plan, read_results, resolve_config
from cxr_sweep import results as results_module
from cxr_training.runs import RunFolder


def _plan(tmp_path, body: str, data=None, heldout=None) -> Path:
    data = data or tmp_path / "data"
    heldout = heldout or tmp_path / "heldout"
    for d in (data, heldout):
        Path(d).mkdir(exist_ok=True)
    path = tmp_path / "plan.toml"
    path.write_text(f'data = "{data}"\nheldout = "{heldout}"\nsamples = 20\n' + body)
    return path


RUN = """
[[run]]
name = "{name}"
preset = "smoke"
seed = {seed}
steps = 6
score_steps = [3]
flags = {flags}
"""


def _run(name="a", seed=0, flags='["--ema-halflife", "2"]') -> str:
    return RUN.format(name=name, seed=seed, flags=flags)


def _arg(argv, flag):
    return Path(argv[argv.index(flag) + 1])


class FakeRunner(sweep.Runner):
    """Writes what each command would write. `stop_training_once`: the first cxr-train call
    leaves a checkpoint at step 3 and is 'killed' (Stopped), as a SIGTERM would."""

    def __init__(self, stop_training_once=False, fail=(), auto_scale="1.2", baseline_key="quality_baseline"):
        super().__init__(log=lambda msg: None)
        self.calls: list[list[str]] = []
        self.stop_training_once = stop_training_once
        self.fail = set(fail)
        self.auto_scale = auto_scale
        self.baseline_key = baseline_key  # quality_reference: what evaluate wrote before the baseline had its name

    def call(self, argv, log_path, ok=(0,), stdout_path=None):
        argv = sweep.display(argv)
        self.calls.append(argv)
        prog = argv[0] if argv[0] != "cxr-runtime" else f"cxr-runtime {argv[1]}"
        if prog in self.fail:
            raise SweepError(f"{prog} failed")
        if argv[0] == "cxr-train":
            self._train(argv)
        elif argv[0] == "cxr-export":  # auto "calibrates" to 1.2 here, diversity to 1.4
            scale = argv[argv.index("--latent-scale") + 1] if "--latent-scale" in argv else "1"
            _arg(argv, "--out").write_text({"1": "1.0", "auto": self.auto_scale, "diversity": "1.4"}[scale])
        elif prog == "cxr-runtime sample":
            out = _arg(argv, "--out")
            classes = [c.split("=")[0] for c in argv[argv.index("--classes") + 1].split(",")] if "--classes" in argv \
                else [None]
            for c in classes:
                folder = out / c if c else out
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "manifest.json").write_text(json.dumps(
                    {"latent_scale": float(_arg(argv, "--model").read_text()), **({"class": c} if c else {})}))
        elif prog == "cxr-runtime evaluate":
            one = {
                "ssim": 0.3, "mse": 0.1,
                "quality": {"kid": 1.5, "kid_se": 0.1, "coverage": 0.4, "recall": 0.2, "diversity_ssim": 0.25,
                            "diversity_ssim_real": 0.19},
                self.baseline_key: {"kid": 0.02, "coverage": 1.0, "recall": 0.9, "diversity_ssim": 0.2}}
            classes = sorted(p.name for p in _arg(argv, "--fake").iterdir() if p.is_dir())
            stdout_path.write_text(json.dumps(
                {"classes": {c: {**one, "quality": {**one["quality"], "kid": 1.5 + i}} for i, c in enumerate(classes)}}
                if classes else one))
        elif prog == "cxr-runtime audit":
            out = _arg(argv, "--out")
            classes = sorted(p.name for p in _arg(argv, "--fake").iterdir() if p.is_dir()) or [None]
            for c in classes:
                folder = out / c if c else out
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "summary.json").write_text(json.dumps({
                    "flagged": 0, "generated": 20, "threshold": 0.92, "nn_ncc": {"p50": 0.5, "max": 0.7}}))
        return 0

    def _train(self, argv):
        from cxr_training.config import Config

        if "--resume" in argv:
            run = _arg(argv, "--resume")
            if "--epochs" in argv:  # a grown plan entry: the run is lengthened as cxr-train does it
                from cxr_training.runs import lengthen

                later = argv[argv.index("--snapshot-steps") + 1] if "--snapshot-steps" in argv else ""
                lengthen(RunFolder(run), int(argv[argv.index("--epochs") + 1]),
                         [int(x) for x in later.split(",") if x], log=lambda m: None)
            cfg = Config.from_dict(json.loads((run / "config.json").read_text())["config"])
        else:
            cfg = resolve_config(_entry_from_argv(argv))
            run = _arg(argv, "--out") / f"00001-{cfg.preset}"
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "config_hash": cfg.hash(),
                                                         "command": ["cxr-train", *argv[1:]]}))
        rows = [{"epoch": e, "step": e * cfg.steps_per_epoch, "seconds_per_step": 0.5, "train_seconds": 10.0,
                 "eval_seconds": 1.0, "q_kid": 2.0, "real_acc": 1.0, "fake_acc": 0.5, "heldout_acc": 1.0 / e,
                 "d_logit_real": 1.0 * e, "d_logit_heldout": -1.0 * e, "d_logit_fake": -0.5}
                for e in range(1, cfg.epochs + 1)]
        if "--stop-at" in argv:  # cxr-train --stop-at: a checkpoint there, no final generator
            stop = int(argv[argv.index("--stop-at") + 1])
            assert stop % cfg.steps_per_epoch == 0 and stop < cfg.total_steps
            epoch = stop // cfg.steps_per_epoch
            (run / "checkpoints" / f"epoch-{epoch:04d}").mkdir(parents=True)
            (run / "checkpoints" / f"epoch-{epoch:04d}" / "meta.json").write_text(json.dumps({"step": stop}))
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:epoch]))
            self._snapshots(run, [s for s in cfg.snapshot_steps if s <= stop])
            return
        if self.stop_training_once:
            self.stop_training_once = False
            (run / "checkpoints" / "epoch-0001").mkdir(parents=True)
            (run / "checkpoints" / "epoch-0001" / "meta.json").write_text(json.dumps({"step": 3}))
            (run / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
            raise Stopped(signal.SIGTERM)
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "checkpoints" / f"epoch-{cfg.epochs:04d}").mkdir(parents=True, exist_ok=True)  # the last one
        (run / "checkpoints" / f"epoch-{cfg.epochs:04d}" / "meta.json").write_text(json.dumps({"step": cfg.total_steps}))
        self._snapshots(run, cfg.snapshot_steps)
        (run / "generator.keras").write_bytes(b"k")
        (run / "generator-raw.keras").write_bytes(b"k")
        (run / "generator.json").write_text(json.dumps({"step": cfg.total_steps, "config": cfg.to_dict()}))

    @staticmethod
    def _snapshots(run, steps):
        for step in steps:
            snap = run / "snapshots" / f"step-{step:09d}"
            snap.mkdir(parents=True, exist_ok=True)
            (snap / "generator.keras").write_bytes(b"k")
            (snap / "generator-raw.keras").write_bytes(b"k")


def _entry_from_argv(argv) -> Entry:
    flags, i, known = [], 1, {}
    while i < len(argv):
        if argv[i] in ("--preset", "--seed", "--epochs", "--snapshot-steps", "--data", "--heldout", "--out",
                       "--stop-at"):
            known[argv[i]] = argv[i + 1]
            i += 2
        else:
            flags.append(argv[i])
            i += 1
    score = tuple(int(x) for x in known.get("--snapshot-steps", "").split(",") if x)
    return Entry("x", known["--preset"], int(known["--seed"]), int(known["--epochs"]) * 3, tuple(flags), score)


def _sweep(plan, root, runner):
    return Sweep(plan, root, runner=runner, log=lambda msg: None)


def test_plan_trains_scores_and_writes_one_row_per_scored_model(tmp_path):
    plan = _plan(tmp_path, _run("a") + _run("b", seed=1, flags="[]"))
    root = tmp_path / "runs"
    runner = FakeRunner()
    assert _sweep(plan, root, runner).run() == 0
    rows = read_results(root)
    # a keeps an EMA: EMA and raw weights at steps 3 and 6, and the EMA at its calibrated latent
    # scale; b has no EMA: raw, and raw at its scale
    assert [r["key"] for r in rows] == [
        "a@3:ema", "a@3:raw", "a@3:ema-scaled", "a@3:ema-diverse", "a@6:ema", "a@6:raw", "a@6:ema-scaled",
        "a@6:ema-diverse", "b@3:raw", "b@3:raw-scaled", "b@3:raw-diverse", "b@6:raw", "b@6:raw-scaled",
        "b@6:raw-diverse"]
    row = rows[4]
    assert row["metrics"]["kid"] == 1.5 and row["baseline"]["kid"] == 0.02 and row["audit"]["flagged"] == 0
    assert row["final"] and row["seconds_per_step"] == 0.5 and row["wall_seconds"] == 22.0
    assert row["entry"]["flags"] == ["--ema-halflife", "2"] and row["cpu"]
    assert row["command"].startswith("cxr-train --preset smoke --seed 0 --ema-halflife 2 --epochs 2 --snapshot-steps 3")
    assert rows[0]["wall_seconds"] == 11.0  # step 3: the first epoch's time only
    # D's verdict at the row's step, from the epoch row that ends there
    assert rows[0]["discriminator"] == {"step": 3, "real_acc": 1.0, "fake_acc": 0.5, "heldout_acc": 1.0,
                                        "d_logit_real": 1.0, "d_logit_heldout": -1.0, "d_logit_fake": -0.5}
    assert row["discriminator"]["step"] == 6 and row["discriminator"]["heldout_acc"] == 0.5
    trains = [c for c in runner.calls if c[0] == "cxr-train"]
    assert len(trains) == 2 and all("--resume" not in c for c in trains)
    # the KID cell: its 95 % interval (1.96 standard errors); the texture columns are empty in this row
    assert "| a | 6 | ema | 0.20 | 0.40 | 1.50 ± 0.20 | 0.250 (0.190) | - | - | - | - | 0/20 |" in sweep.table(rows)
    assert row["latent_scale"] == 1.0 and rows[6]["latent_scale"] == 1.2 and rows[7]["latent_scale"] == 1.4
    assert "| a | 6 | ema-scaled (x1.2) | 0.20 |" in sweep.table(rows)
    assert "| a | 6 | ema-diverse (x1.4) | 0.20 |" in sweep.table(rows)
    exports = [c[c.index("--latent-scale"):] for c in runner.calls if c[0] == "cxr-export" and "--latent-scale" in c]
    data = str(tmp_path / "data")
    assert sorted(map(tuple, exports)) == [("--latent-scale", "auto", "--data", data)] * 4 + [
        ("--latent-scale", "diversity", "--data", data)] * 4


def test_a_finished_plan_is_skipped(tmp_path):
    plan = _plan(tmp_path, _run("a"))
    root = tmp_path / "runs"
    _sweep(plan, root, FakeRunner()).run()
    before = (root / "results.jsonl").read_text()
    again = FakeRunner()
    assert _sweep(plan, root, again).run() == 0
    assert again.calls == [] and (root / "results.jsonl").read_text() == before


def test_an_interrupted_run_resumes_and_a_plan_grown_meanwhile_is_followed(tmp_path):
    plan = _plan(tmp_path, _run("a"))
    root = tmp_path / "runs"
    with pytest.raises(Stopped):
        _sweep(plan, root, FakeRunner(stop_training_once=True)).run()
    assert read_results(root) == []
    assert sweep.status(load_plan(plan), root) == [f"{'a':<28} training, step 3/6"]
    plan.write_text(plan.read_text() + _run("b"))  # appended while stopped (or while running)
    runner = FakeRunner()
    assert _sweep(plan, root, runner).run() == 0
    trains = [c for c in runner.calls if c[0] == "cxr-train"]
    assert "--resume" in trains[0] and "--resume" not in trains[1]
    assert len({r["key"] for r in read_results(root)}) == len(read_results(root)) == 16


def test_an_entry_given_more_steps_lengthens_its_finished_run_and_keeps_the_rows_of_its_old_end(tmp_path):
    flags = '["--ema-halflife", "2", "--lr-schedule", "constant", "--no-progressive"]'  # a run that can grow
    plan = _plan(tmp_path, _run("a", flags=flags))
    root = tmp_path / "runs"
    _sweep(plan, root, FakeRunner()).run()
    plan.write_text(plan.read_text().replace("steps = 6", "steps = 12").replace("score_steps = [3]",
                                                                               "score_steps = [3, 6, 9]"))
    assert sweep.status(load_plan(plan), root) == [f"{'a':<28} trained to step 6 of 12; 8 row(s) written; grows on "
                                                   "its turn"]
    runner, logs = FakeRunner(), []
    assert Sweep(plan, root, runner=runner, log=logs.append).run() == 0
    trains = [c for c in runner.calls if c[0] == "cxr-train"]
    assert len(trains) == 1 and "--resume" in trains[0]
    assert trains[0][trains[0].index("--epochs"):][:4] == ["--epochs", "4", "--snapshot-steps", "9"]
    assert any("grown from 6 to 12 steps" in m for m in logs)
    assert not any("started with a config other than" in m for m in logs)
    run = RunFolder(next((root / "a").glob("0*")))
    assert run.config.epochs == 4 and run.config.snapshot_steps == (3, 6, 9)
    keys = [r["key"] for r in read_results(root)]
    # the rows of steps 3 and 6 were kept (the old end's model is the snapshot of step 6 now): no new export
    assert keys == [f"a@{s}:{w}" for s in (3, 6) for w in ("ema", "raw", "ema-scaled", "ema-diverse")] + [
        f"a@{s}:{w}" for s in (9, 12) for w in ("ema", "raw", "ema-scaled", "ema-diverse")]
    exported = {_arg(c, "--out").parent.name for c in runner.calls if c[0] == "cxr-export"}
    assert exported and not any("step-000000006" in name or "step-000000003" in name for name in exported)


def test_a_paused_run_lets_the_next_runs_go_first_and_is_finished_in_the_next_pass(tmp_path):
    plan = _plan(tmp_path, _run("a").replace("steps = 6", "steps = 9").replace("score_steps = [3]",
                                                                              "score_steps = [3]\npause_at = [6]")
                 + _run("b", seed=1))
    root = tmp_path / "runs"
    runner = FakeRunner()
    logs = []
    assert Sweep(plan, root, runner=runner, log=logs.append).run() == 0
    trains = [c for c in runner.calls if c[0] == "cxr-train"]
    assert len(trains) == 3
    assert trains[0][-2:] == ["--stop-at", "6"] and "--resume" not in trains[0]  # a, to its pause
    assert "--stop-at" not in trains[1] and "--resume" not in trains[1] and _arg(trains[1], "--out").name == "b"
    assert "--resume" in trains[2] and "--stop-at" not in trains[2]  # a, from its pause to its end
    keys = [r["key"] for r in read_results(root)]
    assert keys[:4] == ["a@3:ema", "a@3:raw", "a@3:ema-scaled", "a@3:ema-diverse"]  # a's step 3, before b
    assert keys[4:12] == [k.replace("a@", "b@") for k in keys[:4]] + [
        "b@6:ema", "b@6:raw", "b@6:ema-scaled", "b@6:ema-diverse"]
    assert keys[12:] == ["a@9:ema", "a@9:raw", "a@9:ema-scaled", "a@9:ema-diverse"]
    assert any("a: paused at step 6 of 9" in m for m in logs)
    assert read_results(root)[-1]["entry"]["pause_at"] == [6]
    again = FakeRunner()
    assert _sweep(plan, root, again).run() == 0 and again.calls == []


def test_a_new_sweep_lets_the_rest_of_the_plan_go_before_a_run_past_its_pause(tmp_path):
    plan = _plan(tmp_path, _run("a").replace("score_steps = [3]", "score_steps = [3]\npause_at = [3]")
                 + _run("b", seed=1))
    root = tmp_path / "runs"
    calls = []

    class StopAfterPause(FakeRunner):  # the sweep is killed once the pass has paused a
        def call(self, argv, log_path, ok=(0,), stdout_path=None):
            calls.append(sweep.display(argv))
            if len([c for c in calls if c[0] == "cxr-train"]) == 2:
                raise Stopped(signal.SIGTERM)
            return super().call(argv, log_path, ok, stdout_path)

    with pytest.raises(Stopped):
        _sweep(plan, root, StopAfterPause()).run()
    assert sweep.status(load_plan(plan), root)[0] == f"{'a':<28} training, step 3/6 (paused at a pause_at step)"
    assert len(read_results(root)) == 4  # step 3 scored in the first pass
    runner = FakeRunner()
    logs = []
    assert Sweep(plan, root, runner=runner, log=logs.append).run() == 0
    trains = [c for c in runner.calls if c[0] == "cxr-train"]
    assert len(trains) == 2
    assert "--resume" not in trains[0] and _arg(trains[0], "--out").name == "b"  # b first, then a
    assert "--resume" in trains[1] and "--stop-at" not in trains[1] and "/a/" in str(_arg(trains[1], "--resume"))
    assert any("a: at step 3, past its pause at step 3; it waits for the next pass (scored here up to step 3)" in m for m in logs)
    keys = [r["key"] for r in read_results(root)]
    assert len(keys) == len(set(keys)) == 16 and keys[-4:] == ["a@6:ema", "a@6:raw", "a@6:ema-scaled",
                                                               "a@6:ema-diverse"]


def test_a_pause_that_cxr_train_did_not_reach_fails_the_run(tmp_path):
    plan = _plan(tmp_path, _run("a").replace("score_steps = [3]", "pause_at = [3]"))

    class NoCheckpoint(FakeRunner):
        def _train(self, argv):
            run = _arg(argv, "--out") / "00001-smoke"  # a cxr-train that died before its pause
            run.mkdir(parents=True)
            cfg = resolve_config(Entry("a", "smoke", 0, 6))
            (run / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))

    logs = []
    assert Sweep(plan, tmp_path / "runs", runner=NoCheckpoint(), log=logs.append).run() == 1
    assert any("without a checkpoint at step 3" in m for m in logs)


@pytest.mark.parametrize("when", ["before the write", "after the write"])
def test_a_row_is_written_exactly_once_when_killed_around_the_write(tmp_path, monkeypatch, when):
    plan = _plan(tmp_path, _run("a", flags="[]"))
    root = tmp_path / "runs"
    real_write = results_module.atomic_write_text

    def killed(path, text):
        if when == "after the write":
            real_write(path, text)
        raise Stopped(signal.SIGTERM)  # the sweep dies here

    monkeypatch.setattr(results_module, "atomic_write_text", killed)
    with pytest.raises(Stopped):
        _sweep(plan, root, FakeRunner()).run()
    monkeypatch.undo()
    assert len(read_results(root)) == (1 if when == "after the write" else 0)
    runner = FakeRunner()
    assert _sweep(plan, root, runner).run() == 0
    keys = [r["key"] for r in read_results(root)]
    assert keys == ["a@3:raw", "a@3:raw-scaled", "a@3:raw-diverse", "a@6:raw", "a@6:raw-scaled", "a@6:raw-diverse"]
    # the first model's scores were kept: nothing was exported, sampled or scored again for it
    assert not any("step-000000003-raw/" in " ".join(c) for c in runner.calls)


def test_a_failed_run_does_not_stop_the_plan(tmp_path):
    plan = _plan(tmp_path, _run("a", flags="[]") + _run("b", flags="[]"))
    root = tmp_path / "runs"
    runner = FakeRunner(fail={"cxr-export"})
    assert _sweep(plan, root, runner).run() == 1
    assert sum(1 for c in runner.calls if c[0] == "cxr-train") == 2  # b was trained after a failed
    assert _sweep(plan, root, FakeRunner()).run() == 0  # the next sweep finishes both
    assert len(read_results(root)) == 12


@pytest.mark.parametrize("body, message", [
    (_run("a", flags='["--no-such-flag"]'), "run #1 (a): cxr-train rejects"),
    (_run("a", flags='["--augment", "sometimes"]'), "run #1 (a): cxr-train rejects"),
    (_run("a", flags='["--seed", "3"]'), "run #1 (a): flags may not set --seed"),
    (RUN.format(name="a", seed=0, flags="[]").replace('"smoke"', '"huge"'), "run #1 (a): cxr-train rejects"),
    (RUN.format(name="a", seed=0, flags="[]").replace("steps = 6", "steps = 7"), "not a multiple of the 3 steps"),
    (RUN.format(name="a", seed=0, flags="[]").replace("score_steps = [3]", "score_steps = [2]"), "must be epoch ends"),
    (RUN.format(name="a", seed=0, flags="[]").replace('name = "a"', 'name = "a/b"'), "name must be"),
    (_run("a").replace("seed = 0", "seed = 0\npause_at = [4]"), "(a): pause_at [4] are not epoch ends"),
    (_run("a").replace("seed = 0", "seed = 0\npause_at = [6]"), "(a): pause_at must be a list of steps between"),
    (_run("a", flags='["--stop-at", "3"]'), "(a): flags may not set --stop-at"),
    (_run("a") + _run("a"), "run #2 reuses the name 'a'"),
    (_run("a").replace("seed = 0", "seed = 0\nlength = 3"), "unknown key(s) ['length']"),
    (_run("a").replace("seed = 0\n", ""), "(a): 'seed' is missing"),
    ("", "no [[run]] entries"),
    ("[[run\n", "not valid TOML"),
])
def test_bad_plans_name_the_entry(tmp_path, body, message):
    with pytest.raises(SweepError) as e:
        load_plan(_plan(tmp_path, body))
    assert message in str(e.value)
    if "huge" in body:
        assert "huge" in str(e.value)


def test_cli_bad_plan_is_one_line_exit_2(tmp_path):
    plan = _plan(tmp_path, _run("a", flags='["--no-such-flag"]'))
    r = subprocess.run([sys.executable, "-m", "cxr_sweep.cli", str(plan), "--runs", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: plan") and "(a)" in r.stderr and "--no-such-flag" in r.stderr
    assert not (tmp_path / "runs" / "a").exists()


def test_a_missing_data_folder_says_how_to_point_at_it(tmp_path):
    """A plan without `data` run from a checkout that has no ../shared beside it (a worktree elsewhere)
    stops before anything runs, naming the folder and both ways to set it."""
    plan = tmp_path / "plan.toml"
    plan.write_text('samples = 20\n' + _run("a"))
    env = {k: v for k, v in os.environ.items() if k not in ("CXR_DATA", "CXR_HELDOUT")}
    r = subprocess.run([sys.executable, "-m", "cxr_sweep.cli", str(plan), "--runs", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=120, env={**env, "CXR_DATA": str(tmp_path / "nowhere")})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "data folder" in r.stderr and "nowhere" in r.stderr and "CXR_DATA" in r.stderr and "`data = ...`" in r.stderr
    assert not (tmp_path / "runs" / "a").exists()


def test_one_sweep_at_a_time_on_a_run_root(tmp_path):
    root = tmp_path / "runs"
    with sweep.locked(root), pytest.raises(SweepError, match="another cxr-sweep"), sweep.locked(root):
        pass


def test_sigterm_leaves_the_run_resumable_and_the_rows_whole(tmp_path, few_real, few_heldout):
    """The real commands on the smoke preset: SIGTERM in the middle of training stops the sweep
    with 143 after cxr-train wrote its checkpoint; the same command then finishes the plan and
    every scored model has exactly one row."""
    body = RUN.format(name="a", seed=0, flags='["--steps-per-epoch", "150"]').replace("steps = 6", "steps = 300") \
        .replace("score_steps = [3]", "score_steps = []")
    plan = _plan(tmp_path, body, data=few_heldout, heldout=few_real)  # 10 training images: enough to calibrate
    root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "cxr_sweep.cli", str(plan), "--runs", str(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = root / "a" / "sweep.log"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.is_file() and "step 15/150" in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "continues where it stopped" in err
    assert "stopped by SIGTERM" in log.read_text() and read_results(root) == []
    run = sweep.run_folder(root, "a")
    assert RunFolder(run).checkpoint_step > 0 and not (run / "generator.keras").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_results(root)
    assert [x["key"] for x in rows] == ["a@300:raw", "a@300:raw-scaled", "a@300:raw-diverse"]
    assert rows[0]["latent_scale"] == 1.0 and all(1.0 <= r["latent_scale"] <= 1.5 for r in rows[1:])
    assert "resuming" in log.read_text()
    assert rows[0]["audit"]["generated"] == 20
    # a 300-step smoke generator is far from real X-rays: the training images score much closer
    assert rows[0]["metrics"]["kid"] > rows[0]["baseline"]["kid"] + 3 * rows[0]["metrics"]["kid_se"]
    assert os.path.isfile(rows[0]["run_folder"] + "/generator.keras")


def test_rows_of_the_first_sweep_version_read_under_todays_metric_names(tmp_path):
    row = {"key": "a@6:ema", "run": "a", "step": 6, "weights": "ema", "metrics": {"kid": 0.2, "kid_se": 0.01,
           "coverage": 1.0, "recall": 0.3, "diversity": 0.27, "diversity_real": 0.19},
           "audit": {"flagged": 0, "generated": 500}, "seconds_per_step": 2.0, "train_seconds": 3600, "cpu": ["x"]}
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    rows = read_results(tmp_path)
    assert rows[0]["metrics"]["diversity_ssim"] == 0.27 and rows[0]["metrics"]["diversity_ssim_real"] == 0.19
    assert "| 0.270 (0.190) |" in sweep.table(rows)


def test_files_written_before_the_baseline_had_its_name_read_the_same(tmp_path):
    """The baseline (the training images scored as generated ones) was once called `reference`:
    evaluate results (score.json, quality.json) holding `quality_reference` and results.jsonl rows
    holding `reference` (per class too) give the rows and tables today's files give."""
    rows = {}
    for key in ("quality_baseline", "quality_reference"):
        where = tmp_path / key / "w"
        where.mkdir(parents=True)
        runner = FakeRunner(baseline_key=key)
        assert _sweep(_plan(where, _run("a")), where / "runs", runner).run() == 0
        evaluate = next(c for c in runner.calls if c[:2] == ["cxr-runtime", "evaluate"])
        assert _arg(evaluate, "--baseline") == where / "data"  # the training images, scored as the baseline
        rows[key] = read_results(where / "runs")
    new, old = rows["quality_baseline"], rows["quality_reference"]
    assert [r["baseline"] for r in old] == [r["baseline"] for r in new] and new[0]["baseline"]["kid"] == 0.02
    assert "reference" not in old[0] and sweep.table(old) == sweep.table(new)

    # results.jsonl rows of before, a plain and a labelled one, against the same rows written today
    base = {"kid": 0.02, "coverage": 1.0, "recall": 0.89}
    today = [{"key": "a@6:ema", "run": "a", "step": 6, "weights": "ema", "heldout": "/d/heldout/NORMAL",
              "baseline": base, "metrics": {"kid": 0.5, "coverage": 0.9, "recall": 0.3},
              "audit": {"flagged": 0, "generated": 500}, "seconds_per_step": 2.0, "train_seconds": 3600, "cpu": ["x"]},
             {"key": "b@6:ema", "run": "b", "step": 6, "weights": "ema", "heldout": "/d/heldout", "metrics": {},
              "classes": {"NORMAL": {"metrics": {"kid": 0.4}, "baseline": base, "audit": {"flagged": 0,
                                                                                          "generated": 20}}},
              "audit": {"flagged": 0, "generated": 20}, "seconds_per_step": 2.0, "train_seconds": 3600, "cpu": ["x"]}]
    before = json.loads(json.dumps(today).replace('"baseline"', '"reference"'))
    for name, written in (("today", today), ("before", before)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in written))
    assert read_results(tmp_path / "before") == read_results(tmp_path / "today") == today
    table = sweep.table(read_results(tmp_path / "before"))
    assert table == sweep.table(today) and "heldout/NORMAL (baseline)* |  |  | 0.89 | 1.00 | 0.02 |" in table


def test_the_table_ends_with_one_baseline_line_per_heldout_folder_in_its_columns():
    def row(name, held):
        return {"key": f"{name}@6:ema", "run": name, "step": 6, "weights": "ema", "heldout": held,
                "baseline": {"kid": 0.02, "coverage": 1.0, "recall": 0.89},
                "metrics": {"kid": 0.5, "coverage": 0.9, "recall": 0.3},
                "audit": {"flagged": 0, "generated": 500}, "seconds_per_step": 2.0, "train_seconds": 3600, "cpu": ["x"]}

    lines = sweep.table([row("a", "/d/heldout/NORMAL"), row("b", "/d/heldout/NORMAL"), row("c", "/e/other")]).splitlines()
    assert len(lines) == 2 + 3 + 2
    assert lines[5].startswith("| *the training images vs heldout/NORMAL (baseline)* |  |  | 0.89 | 1.00 | 0.02 |")
    assert lines[6].startswith("| *the training images vs e/other (baseline)* |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_seeds_of_one_recipe_fold_into_one_line_with_mean_and_range():
    def row(name, seed, kid, flagged, flags=(), step=6):
        return {"key": f"{name}@{step}:ema", "run": name, "step": step, "weights": "ema",
                "entry": {"name": name, "preset": "long", "seed": seed, "steps": 6, "flags": list(flags)},
                "metrics": {"kid": kid, "kid_se": 0.01, "coverage": 1.0, "recall": 0.3,
                            "diversity_ssim": 0.25 + seed / 100, "diversity_ssim_real": 0.19},
                "audit": {"flagged": flagged, "generated": 500}, "seconds_per_step": 2.0 + seed, "cpu": ["x"]}

    rows = [row("s2", 2, 0.6, 0), row("s0", 0, 0.2, 0), row("other", 0, 9.0, 0, ["--mbstd"]), row("s1", 1, 0.4, 2)]
    rows[1].update(heldout="/data/heldout/NORMAL", baseline={"kid": 0.02, "coverage": 1.0, "recall": 0.89})
    lines = sweep.seed_table(rows).splitlines()
    assert len(lines) == 5  # header, rule, the three seeds of `long` (in seed order), the other recipe, baseline
    assert lines[2] == ("| s0, s1, s2 | long | - | 6 | ema | 0, 1, 2 | 0.30 (0.30-0.30) | 1.00 (1.00-1.00) | "
                        "0.40 (0.20-0.60) | 0.260 (0.250-0.270), real 0.190 | - | - | - | - | 2/1500 | 3.00 | x |")
    assert lines[3].startswith("| other | long | --mbstd | 6 | ema | 0 | 0.30 | 1.00 | 9.00 |")
    assert lines[4] == ("| *the training images vs heldout/NORMAL (baseline)* |  |  |  |  |  | 0.89 | 1.00 | 0.02 "
                        "| - | - | - | - | - |  |  |  |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_seeds_are_grouped_by_what_their_runs_trained_not_by_how_the_plan_spells_it(tmp_path):
    """A preset's default spelled out as a flag (`--augment fixed` while it was `long`'s default)
    is the same recipe: rows group by the config minus its seed (recipe_hash, or the run's
    config.json for older rows); a different config is another line, whatever its flags say."""
    from cxr_training.config import preset

    long_ = preset("long").replace(augment="fixed")
    for seed in (0, 1):  # older rows: no recipe_hash, their run folders on disk
        run = tmp_path / f"s{seed}" / "00001-long"
        run.mkdir(parents=True)
        config = long_.replace(seed=seed, snapshot_steps=(1000, 2000)).to_dict()
        (run / "config.json").write_text(json.dumps({"config": config}))

    def row(name, seed, flags, **extra):
        return {"key": f"{name}@3000:ema", "run": name, "step": 3000, "weights": "ema",
                "entry": {"name": name, "preset": "long", "seed": seed, "steps": 3000, "flags": flags},
                "metrics": {"kid": 0.2 + seed / 10, "kid_se": 0.01, "coverage": 1.0, "recall": 0.3},
                "audit": {"flagged": 0, "generated": 500}, "seconds_per_step": 2.0, "cpu": ["x"], **extra}

    rows = [row("s0", 0, [], run_folder=str(tmp_path / "s0" / "00001-long")),
            row("s1", 1, [], run_folder=str(tmp_path / "s1" / "00001-long")),
            row("s2", 2, ["--augment", "fixed"], recipe_hash=sweep.recipe_hash(long_.replace(seed=2).to_dict())),
            row("n0", 0, [], recipe_hash=sweep.recipe_hash(long_.replace(augment="off").to_dict()))]
    lines = sweep.seed_table(rows).splitlines()
    assert len(lines) == 4, lines
    assert lines[2].startswith("| s0, s1, s2 | long | --augment fixed | 3000 | ema | 0, 1, 2 | 0.30 (0.30-0.30) | "
                               "1.00 (1.00-1.00) | 0.30 (0.20-0.40)")
    assert lines[3].startswith("| n0 | long | - | 3000 | ema | 0 | 0.30 | 1.00 | 0.20 |")


def test_every_committed_plan_loads_and_every_entry_resolves_to_a_config():
    """What `cxr-sweep PLAN --check` does, for the plans under bench/plans/: a bad entry there would
    otherwise only show when a background sweep reaches it, hours into a session."""
    import tomllib

    from cxr_sweep.utility_plan import is_utility_plan, load_utility_plan

    plans = sorted((Path(__file__).resolve().parents[2] / "bench" / "plans").glob("*.toml"))
    assert plans
    for path in plans:
        raw = tomllib.loads(path.read_text())
        if is_utility_plan(raw):  # generators per subset: checked by their own loader
            assert load_utility_plan(raw, path).sizes
            continue
        plan = load_plan(path)
        names = [e.name for e in plan.runs]
        assert len(names) == len(set(names)), path
        for entry in plan.runs:
            cfg = resolve_config(entry)
            assert cfg.total_steps == entry.steps, (path, entry.name)


def test_rows_of_older_judges_are_scored_again_from_their_samples(tmp_path, monkeypatch):
    """When the judges change (quality.JUDGES_VERSION), a sweep scores every model again, from the
    samples it has (no training, export or sampling again), replaces the rows and keeps the old
    ones in results.superseded.jsonl; a second sweep then has nothing to do."""
    from cxr_runtime import quality

    plan = _plan(tmp_path, _run("a"))
    root = tmp_path / "runs"
    monkeypatch.setattr(quality, "JUDGES_VERSION", 1)
    assert _sweep(plan, root, FakeRunner()).run() == 0
    old = read_results(root)
    assert len(old) == 8 and all(r["judges"] == 1 for r in old)
    # version 1's KID error resampled the generated images only: not printed as today's interval
    assert old[4]["metrics"]["kid_se_generated_only"] == 0.1 and "kid_se" not in old[4]["metrics"]
    assert "| 1.50 |" in sweep.table(old)

    monkeypatch.setattr(quality, "JUDGES_VERSION", 2)
    runner = FakeRunner()
    assert _sweep(plan, root, runner).run() == 0
    progs = [c[0] if c[0] != "cxr-runtime" else f"cxr-runtime {c[1]}" for c in runner.calls]
    assert progs.count("cxr-runtime evaluate") == 8 and progs.count("cxr-runtime audit") == 8
    assert {"cxr-train", "cxr-export", "cxr-runtime sample"}.isdisjoint(progs)
    new = read_results(root)
    assert [r["key"] for r in new] == [r["key"] for r in old] and all(r["judges"] == 2 for r in new)
    superseded = [json.loads(x) for x in (root / sweep.SUPERSEDED).read_text().splitlines()]
    assert [r["key"] for r in superseded] == [r["key"] for r in old]

    runner = FakeRunner()
    assert _sweep(plan, root, runner).run() == 0 and runner.calls == []


def test_a_calibrated_scale_equal_to_the_shipped_one_reuses_its_score(tmp_path):
    """When `--latent-scale auto` picks 1 (the shipped weights' own scale), the -scaled model samples
    the very same images: its row takes the shipped row's score, without a second evaluate or audit."""
    plan = _plan(tmp_path, _run("a"))
    root = tmp_path / "runs"
    runner = FakeRunner(auto_scale="1.0")
    assert _sweep(plan, root, runner).run() == 0
    progs = [c[0] if c[0] != "cxr-runtime" else f"cxr-runtime {c[1]}" for c in runner.calls]
    assert progs.count("cxr-runtime evaluate") == 6 and progs.count("cxr-runtime audit") == 6  # 8 models, 2 reused
    rows = {r["key"]: r for r in read_results(root)}
    assert rows["a@6:ema-scaled"]["same_as"] == "a@6:ema" and rows["a@6:ema-scaled"]["latent_scale"] == 1.0
    assert rows["a@6:ema-scaled"]["metrics"] == rows["a@6:ema"]["metrics"]
    assert "same_as" not in rows["a@6:ema-diverse"]  # scale 1.4: its own images, its own score


def test_a_run_trained_again_is_scored_again(tmp_path):
    """Scores and rows name the model they scored (sha256): when a run's generator is replaced (the
    run trained again), the sweep scores the new model instead of reusing the old score by its
    path, and the old rows go to results.superseded.jsonl."""
    plan = _plan(tmp_path, _run("a"))
    root = tmp_path / "runs"
    assert _sweep(plan, root, FakeRunner()).run() == 0
    first = {r["key"]: r for r in read_results(root)}
    assert all(r["model_sha256"] for r in first.values())
    run = sweep.run_folder(root, "a")
    (run / "generator.keras").write_bytes(b"another model")  # the final EMA weights changed
    runner = FakeRunner()
    assert _sweep(plan, root, runner).run() == 0
    progs = [c[0] if c[0] != "cxr-runtime" else f"cxr-runtime {c[1]}" for c in runner.calls]
    # the final EMA model and its two calibrated variants: exported, sampled, scored again; the
    # raw weights and the step-3 snapshot are the same files: untouched
    assert progs.count("cxr-export") == 3 and progs.count("cxr-runtime evaluate") == 3
    again = {r["key"]: r for r in read_results(root)}
    assert again["a@6:ema"]["model_sha256"] != first["a@6:ema"]["model_sha256"]
    assert again["a@6:raw"] == first["a@6:raw"] and again["a@3:ema"] == first["a@3:ema"]
    superseded = [json.loads(x)["key"] for x in (root / sweep.SUPERSEDED).read_text().splitlines()]
    assert sorted(superseded) == ["a@6:ema", "a@6:ema-diverse", "a@6:ema-scaled"]


def test_rows_and_scores_from_before_the_model_hash_stand(tmp_path):
    """Rows and score.json files written before scores named their model (no model_sha256) are
    taken as the model on disk: nothing is scored again (docs/contributing.md, "Old files")."""
    plan = _plan(tmp_path, _run("a"))
    root = tmp_path / "runs"
    assert _sweep(plan, root, FakeRunner()).run() == 0
    rows = read_results(root)
    for row in rows:
        row.pop("model_sha256")
    (root / sweep.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for score in (root / "a" / "scores").glob("*/score.json"):
        stored = json.loads(score.read_text())
        stored.pop("model_sha256")
        score.write_text(json.dumps(stored))
    again = FakeRunner()
    assert _sweep(plan, root, again).run() == 0
    assert again.calls == [] and read_results(root) == rows


def _labelled_folder(root, classes=("NORMAL", "PNEUMONIA")):
    import cv2

    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / c / "x.png"), np.zeros((16, 16), np.uint8))
    return root


def test_a_labelled_plan_scores_each_class_against_its_own_images(tmp_path):
    """A plan whose data and heldout hold one subfolder per class: each model is sampled per class
    (--classes), scored and audited per class, and its row holds each class; the tables show one
    line per class, with each class's baseline line."""
    data, held = _labelled_folder(tmp_path / "data"), _labelled_folder(tmp_path / "heldout")
    plan = _plan(tmp_path, _run("a", flags="[]"), data=data, heldout=held)
    assert load_plan(plan).classes == ("NORMAL", "PNEUMONIA")
    root = tmp_path / "runs"
    runner = FakeRunner()
    assert _sweep(plan, root, runner).run() == 0
    samples = [c for c in runner.calls if c[:2] == ["cxr-runtime", "sample"]]
    assert samples and all(c[c.index("--classes") + 1] == "NORMAL=20,PNEUMONIA=20" for c in samples)
    row = next(r for r in read_results(root) if r["key"] == "a@6:raw")
    assert set(row["classes"]) == {"NORMAL", "PNEUMONIA"} and row["metrics"] == {}
    assert row["classes"]["PNEUMONIA"]["metrics"]["kid"] == 2.5 and row["audit"]["generated"] == 40
    lines = sweep.table(read_results(root)).splitlines()
    assert any(line.startswith("| a [NORMAL] | 6 | raw | ") for line in lines)
    assert any(line.startswith("| a [PNEUMONIA] | 6 | raw | ") for line in lines)
    assert sum("heldout/PNEUMONIA (baseline)" in line for line in lines) == 1
    seeds = sweep.seed_table(read_results(root)).splitlines()
    # one line per class, step and weights (2 x 3 each): a class is never folded into another
    assert sum(" [NORMAL]" in line for line in seeds) == sum(" [PNEUMONIA]" in line for line in seeds) == 6
    assert not any(" [NORMAL]" in line and " [PNEUMONIA]" in line for line in seeds)


def test_a_labelled_plan_needs_labelled_heldout_images(tmp_path):
    data = _labelled_folder(tmp_path / "data")
    (tmp_path / "flat").mkdir()
    plan = _plan(tmp_path, _run("a"), data=data, heldout=tmp_path / "flat")
    with pytest.raises(SweepError, match="must hold the same subfolders"):
        load_plan(plan)
