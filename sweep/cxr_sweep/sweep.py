"""`cxr-sweep PLAN.toml`: a plan of training runs that outlives the session that started it.

A plan is TOML: optional top-level `data`, `heldout`, `samples` and `sample_seed`, and one
`[[run]]` table per run:

    [[run]]
    name = "long-s0"          # unique under the run root; the run's folder is $CXR_RUNS/<name>/
    preset = "long"
    seed = 0
    steps = 2000              # the run's total: a multiple of the preset's steps per epoch
    flags = ["--ema-halflife", "500"]   # extra cxr-train arguments (optional)
    score_steps = [1000]      # also score the sampling generator at these earlier steps (optional)
    pause_at = [500]          # epoch ends where a pass over the plan leaves this run (optional)

Each run goes through stages, each skipped when its output is already there, so the same
command resumes the whole plan after a kill, a reboot or a new session on the same machine:

1. train: `cxr-train` (a new run) or `cxr-train --resume` (an unfinished one, from its newest
   checkpoint: the run an uninterrupted one would have been, bitwise with --deterministic);
2. for the finished model and each of `score_steps` (snapshots), for the EMA and the raw
   weights when the recipe keeps an EMA, and for the shipped weights exported at the latent
   scales `--latent-scale auto` and `diversity` choose (`ema-scaled`, `ema-diverse`): export to
   ONNX (parity gate), sample
   `samples` images, `cxr-runtime evaluate --quality` against the held-out folder (with the
   training images scored the same way as the baseline row) and `cxr-runtime audit` against
   the training folder;
3. one JSON row per scored model appended to $CXR_RUNS/results.jsonl, exactly once: the row is
   composed from files the stages left (score.json) and the whole results file is replaced
   atomically, so a sweep killed anywhere leaves either no row (written by the next sweep) or
   the row (kept, never duplicated).

A run with `pause_at` is trained in stages: a pass over the plan trains it to its next pause
(`cxr-train --stop-at`), scores what is there by then, and goes on to the next run; once the
pass is over, the sweep comes back to the paused runs (the next pass) and trains each to its next
pause or its end. A long run can so reach a milestone early without holding up the runs after it;
pausing and resuming is training straight through (bitwise with --deterministic). A new sweep (the next
session's) keeps that order: a run already past one of its pauses waits in the first pass, which
scores its score_steps up to that pause, and goes on in the next pass, once every other run has had its turn.

An entry whose `steps` grew after its run started (6000 -> 12000) lengthens that run instead of
starting another: `cxr-train --resume RUN --epochs N` (with the entry's later score_steps as
snapshots), finished or not; the finished model becomes the snapshot of its old last step, where
the rows already scored on it find it (add that step to score_steps to keep its rows in the
entry). Runs with a decaying learning rate or progressive resizing cannot grow (cxr-train says
why).

The plan file is read again after every run, so runs appended to it while a sweep trains are
picked up. One sweep at a time works on a run root (a lock file); SIGTERM or SIGINT is passed on
to the running stage (cxr-train checkpoints and exits) and the sweep then exits with 128 + the
signal number.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from cxr_runtime.io import atomic_write_json, sha256_file
from cxr_sweep.errors import SweepError
from cxr_sweep.machine import code_version, cpu_name
from cxr_sweep.plan import Entry, Plan, load_plan, resolve_config, train_args
from cxr_sweep.results import (
    RESULTS,
    SCALED,
    _audit_summary,
    append_row,
    baseline_of,
    current,
    read_results,
    recipe_hash,
    row_key,
    summary,
)
from cxr_sweep.stages import Runner, _rmtree, command, display, run_folder
from cxr_training.runs import D_HELDOUT_KEYS, RunFolder

LOCK = ".sweep.lock"


def model_path(run: Path, entry: Entry, step: int, weights: str) -> Path:
    """The Keras file a row scores: the final model or a snapshot's, EMA or raw weights."""
    base = next((weights.removesuffix(x) for x in SCALED if weights.endswith(x)), weights)
    return RunFolder(run).generator_path(base, None if step == entry.steps else step)


def growth(run: Path, entry: Entry) -> list[str]:
    """cxr-train's options that lengthen a run whose plan entry has grown since it started
    (more steps; the entry's score steps after its newest checkpoint kept as snapshots), [] when
    the run is as long as the entry. A finished run's final model becomes the snapshot of its
    last step (cxr_training.runs.lengthen), where the rows scored on it find it again."""
    folder = RunFolder(run)
    saved = folder.config
    if entry.steps <= saved.total_steps:
        return []
    if entry.steps % saved.steps_per_epoch:
        raise SweepError(f"{entry.name}: steps {entry.steps} is not a multiple of the {saved.steps_per_epoch} steps "
                         f"per epoch of {run}")
    done = folder.checkpoint_step
    later = sorted(s for s in entry.score_steps if s > done and s not in saved.snapshot_steps)
    return ["--epochs", str(entry.steps // saved.steps_per_epoch),
            *(["--snapshot-steps", ",".join(map(str, later))] if later else [])]


class Sweep:
    def __init__(self, plan_path: Path, root: Path, runner: Runner | None = None, log=None):
        self.plan_path = Path(plan_path)
        self.root = Path(root)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.runner = runner or Runner(self.log)
        self.failed: list[str] = []
        self.first_pass = True  # a run past one of its pauses waits while this is true

    # passes over the plan, re-reading it after every run, until no run is left paused
    def run(self) -> int:
        settled: set[str] = set()  # finished and scored, or failed, in this sweep
        self.first_pass = True
        while True:
            visited: set[str] = set()
            while True:
                plan = load_plan(self.plan_path)
                todo = [e for e in plan.runs if e.name not in settled | visited]
                if not todo:
                    break
                entry = todo[0]
                visited.add(entry.name)
                try:
                    if self.run_entry(plan, entry):
                        settled.add(entry.name)
                except SweepError as e:
                    settled.add(entry.name)
                    self.failed.append(entry.name)
                    self.log(f"cxr-sweep: run {entry.name} failed: {e}")
                    self.log(f"cxr-sweep: going on with the next run; `cxr-sweep {self.plan_path}` retries "
                             f"{entry.name}")
            if visited <= settled:  # nothing paused in this pass
                break
            self.first_pass = False
            self.log(f"cxr-sweep: pass over the plan done; back to the paused run(s) "
                     f"{', '.join(sorted(visited - settled))}")
        if self.failed:
            self.log(f"cxr-sweep: {len(self.failed)} run(s) failed: {', '.join(self.failed)}")
            return 1
        self.log(f"cxr-sweep: plan {self.plan_path} complete; rows in {self.root / RESULTS}")
        return 0

    def keys(self, entry: Entry, cfg) -> list[tuple[int, str]]:
        shipped = "ema" if cfg.ema_halflife > 0 else "raw"
        weights = (shipped, *(("raw",) if shipped == "ema" else ()), *(shipped + suffix for suffix in SCALED))
        return [(s, w) for s in (*entry.score_steps, entry.steps) for w in weights]

    def run_entry(self, plan: Plan, entry: Entry) -> bool:
        """Train the entry to its next pause or its end and score what is there; True once it
        is finished and every row is written."""
        cfg = resolve_config(entry)
        keys = self.keys(entry, cfg)
        have = self.scored(entry, keys)
        if all(row_key(entry.name, s, w) in have for s, w in keys):
            self.log(f"cxr-sweep: {entry.name}: finished and scored, skipped")
            return True
        base = self.root / entry.name
        base.mkdir(parents=True, exist_ok=True)
        run, reached = self.train(plan, entry, cfg, base)
        for step, weights in keys:
            key = row_key(entry.name, step, weights)
            if key in have or step > reached:
                continue
            score = self.score(plan, entry, run, step, weights)
            row = self.compose_row(plan, entry, run, score)
            if append_row(self.root, row):
                self.log(f"cxr-sweep: {key}: row written to {self.root / RESULTS}: {summary(row)}")
        if reached < entry.steps:
            self.log(f"cxr-sweep: {entry.name}: paused at step {reached} of {entry.steps} (pause_at); the next "
                     "pass continues it")
            return False
        return True

    def scored(self, entry: Entry, keys) -> set[str]:
        """Keys of this entry with a row by today's judges of the model now on disk (rows of older
        judges, or of a model the run has replaced since, are scored again)."""
        rows = {r["key"]: r for r in read_results(self.root) if current(r)}
        run = run_folder(self.root, entry.name)
        have = set()
        for step, weights in keys:
            key = row_key(entry.name, step, weights)
            if key not in rows:
                continue
            recorded = rows[key].get("model_sha256")
            model = model_path(run, entry, step, weights) if run is not None else None
            if recorded and model is not None and model.is_file() and sha256_file(model) != recorded:
                continue
            have.add(key)
        return have

    def train(self, plan: Plan, entry: Entry, cfg, base: Path) -> tuple[Path, int]:
        """Train to the entry's next pause or its end: (the run folder, the step reached)."""
        run = run_folder(self.root, entry.name)
        grow = growth(run, entry) if run is not None else []
        if run is not None and RunFolder(run).finished and not grow:
            return run, entry.steps
        last = RunFolder(run).checkpoint_step if run is not None else 0
        passed = entry.passed_pause(last)
        if self.first_pass and passed is not None:  # past a pause: the rest of the plan goes first, as in its sweep
            self.log(f"cxr-sweep: {entry.name}: at step {last}, past its pause at step {passed}; it waits "
                     f"for the next pass (scored here up to step {passed})")
            return run, passed
        target = entry.target(last)
        stop = ["--stop-at", str(target)] if target < entry.steps else []
        log_path = base / "sweep.log"
        segment = {"cpu": cpu_name(), "code": code_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if run is None:
            for partial in RunFolder.under(base):  # a folder whose config.json was never written: nothing to keep
                self.log(f"cxr-sweep: {entry.name}: removing {partial.name}, killed before its config was written")
                _rmtree(partial.path)
            argv = command("cxr-train", *train_args(entry, cfg.steps_per_epoch), "--data", plan.data,
                           "--heldout", plan.heldout, "--out", base, *stop)
            self.log(f"cxr-sweep: {entry.name}: training {entry.steps} steps"
                     f"{f' (to step {target} in this pass)' if stop else ''} ({shlex.join(display(argv))}); "
                     f"log {log_path}")
            segment["from_step"] = 0
        else:
            saved = RunFolder(run).config
            grown = dict(epochs=cfg.epochs, snapshot_steps=cfg.snapshot_steps) if grow else {}
            if saved.replace(**grown) != cfg.replace(precision=saved.precision, classes=saved.classes):  # set by cxr-train
                self.log(f"cxr-sweep: {entry.name}: note: {run.name} was started with a config other than the "
                         "plan entry now gives (a preset changed since?); it is resumed with its own")
            argv = command("cxr-train", "--resume", run, "--data", plan.data, "--heldout", plan.heldout, *grow, *stop)
            segment["from_step"] = RunFolder(run).checkpoint_step
            self.log(f"cxr-sweep: {entry.name}: resuming {run} after step {segment['from_step']}"
                     f"{f', grown from {saved.total_steps} to {entry.steps} steps' if grow else ''}"
                     f"{f' to step {target}' if stop else ''}; log {log_path}")
        segment["command"] = shlex.join(display(argv))
        with open(base / "segments.jsonl", "a") as f:
            f.write(json.dumps(segment) + "\n")
        self.runner.call(argv, log_path)
        run = run_folder(self.root, entry.name)
        if run is not None and RunFolder(run).finished:
            return run, entry.steps
        if run is not None and stop and RunFolder(run).checkpoint_step >= target:
            return run, target
        missing = f"checkpoint at step {target}" if stop else "finished model"
        raise SweepError(f"cxr-train ended without a {missing} under {base}")

    def score(self, plan: Plan, entry: Entry, run: Path, step: int, weights: str) -> dict:
        """Export, sample, evaluate and audit one model; score.json holds the result and the
        stages are skipped when their outputs are there. A score.json of older judges
        (quality.JUDGES_VERSION) is made again from the same samples."""
        from cxr_runtime.quality import JUDGES_VERSION

        suffix = next((x for x in SCALED if weights.endswith(x)), "")
        base = weights.removesuffix(suffix) if suffix else weights
        model = model_path(run, entry, step, weights)
        if not model.is_file():
            raise SweepError(f"no {model.name} for step {step} under {model.parent} (was --snapshot-steps set?)")
        model_sha = sha256_file(model)
        out = self.root / entry.name / "scores" / f"step-{step:09d}-{weights}"
        done = out / "score.json"
        if done.is_file():
            stored = json.loads(done.read_text())
            if stored.get("model_sha256", model_sha) != model_sha:  # the run was trained again since
                self.log(f"cxr-sweep: {row_key(entry.name, step, weights)}: its score is of another {model.name} "
                         "(the run was trained again); scoring the model there now")
                _rmtree(out)
            elif stored.get("judges", 1) == JUDGES_VERSION:
                return stored
            else:
                self.log(f"cxr-sweep: {row_key(entry.name, step, weights)}: scored by older judges "
                         f"(version {stored.get('judges', 1)}); scoring its samples again")
                for stale in (done, out / "quality.json", out / "audit" / "summary.json",
                              *(out / "audit").glob("*/summary.json")):
                    stale.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "stages.log"
        key = row_key(entry.name, step, weights)
        onnx = out / "generator.onnx"
        t0 = time.time()
        if not onnx.is_file():
            self.log(f"cxr-sweep: {key}: export")
            scale = ("--latent-scale", SCALED[suffix], "--data", plan.data) if suffix else ()
            self.runner.call(command("cxr-export", model, "--out", onnx, *scale), log_path)
        samples = out / "samples"
        # a labelled plan: `samples` images of each class, in samples/CLASS/ (evaluate and audit then
        # score each class against its own real images)
        manifests = [samples / c / "manifest.json" for c in plan.classes] or [samples / "manifest.json"]
        if not all(m.is_file() for m in manifests):
            per_class = ("--classes", ",".join(f"{c}={plan.samples}" for c in plan.classes)) if plan.classes else ()
            self.log(f"cxr-sweep: {key}: sampling {plan.samples} images" + (" of each class" if plan.classes else ""))
            self.runner.call(command("cxr-runtime", "sample", "--n", plan.samples, "--seed", plan.sample_seed,
                                     "--model", onnx, "--out", samples, "--device", "cpu", *per_class), log_path)
        same = self._same_images(entry, step, base, suffix, manifests[0].parent, key, t0)
        if same is not None:
            atomic_write_json(done, same)
            return same
        quality = out / "quality.json"
        if not quality.is_file():
            self.log(f"cxr-sweep: {key}: evaluate --quality against {plan.heldout}")
            argv = command("cxr-runtime", "evaluate", "--fake", samples, "--real", plan.heldout, "--baseline",
                           plan.data, "--quality", "--json", "--device", "cpu")
            self.runner.call(argv, log_path, stdout_path=quality)  # --json on stdout, notes in the log
            try:
                json.loads(quality.read_text())
            except ValueError:
                quality.unlink()
                raise SweepError(f"cxr-runtime evaluate wrote no JSON; see {log_path}") from None
        audit_dir = out / "audit"
        summaries = [audit_dir / c / "summary.json" for c in plan.classes] or [audit_dir / "summary.json"]
        if not all(x.is_file() for x in summaries):
            self.log(f"cxr-sweep: {key}: memorisation audit against {plan.data}")
            self.runner.call(command("cxr-runtime", "audit", "--fake", samples, "--train", plan.data, "--heldout",
                                     plan.heldout, "--out", audit_dir), log_path, ok=(0, 1))  # 1: images flagged
        manifest = json.loads(manifests[0].read_text())
        audits = {c: _audit_summary(json.loads(x.read_text())) for c, x in zip(plan.classes, summaries)}
        result = {
            "key": key, "run": entry.name, "step": step, "weights": weights, "model": str(model),
            "latent_scale": manifest.get("latent_scale", 1.0),
            "onnx": str(onnx), "samples": plan.samples, "sample_seed": plan.sample_seed,
            "quality": json.loads(quality.read_text()),
            "audit": _audit_summary(json.loads(summaries[0].read_text())) if not plan.classes else {
                "flagged": sum(a["flagged"] for a in audits.values()),
                "generated": sum(a["generated"] for a in audits.values())},
            **({"class_audit": audits} if plan.classes else {}),
            "scored": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scoring_seconds": round(time.time() - t0, 1),
            "scoring_cpu": cpu_name(), "judges": JUDGES_VERSION, "model_sha256": model_sha,
        }
        atomic_write_json(done, result)
        return result

    def _same_images(self, entry: Entry, step: int, base: str, suffix: str, samples: Path, key: str,
                     t0: float) -> dict | None:
        """A calibrated variant whose latent scale came out as the shipped weights' own samples the
        same images from the same weights: its score is theirs (no second evaluate and audit)."""
        from cxr_runtime.quality import JUDGES_VERSION

        if not suffix:
            return None
        base_out = self.root / entry.name / "scores" / f"step-{step:09d}-{base}"
        try:
            stored = json.loads((base_out / "score.json").read_text())
            scale = json.loads((samples / "manifest.json").read_text()).get("latent_scale", 1.0)
            base_scale = json.loads((base_out / "samples" / "manifest.json").read_text()).get("latent_scale", 1.0)
        except (OSError, ValueError):
            return None
        if stored.get("judges", 1) != JUDGES_VERSION or scale != base_scale:
            return None
        if stored.get("model_sha256") is None:  # a score from before scores named their model
            return None
        self.log(f"cxr-sweep: {key}: latent scale {scale:g}, the {base} weights' own: their score stands")
        return {**stored, "key": key, "weights": base + suffix, "latent_scale": scale, "same_as": stored["key"],
                "onnx": str(samples.parent / "generator.onnx"), "scored": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "scoring_seconds": round(time.time() - t0, 1)}

    def compose_row(self, plan: Plan, entry: Entry, run: Path, score: dict) -> dict:
        record = RunFolder(run).record
        history = [r for r in RunFolder(run).history if r["step"] <= score["step"]]
        segments = [json.loads(x) for x in (self.root / entry.name / "segments.jsonl").read_text().splitlines()
                    if x.strip()] if (self.root / entry.name / "segments.jsonl").is_file() else []
        per_step = [r["seconds_per_step"] for r in history if r.get("seconds_per_step")]
        monitor = next((r for r in reversed(history) if "q_kid" in r), {})
        # D at the row's step: its verdict on the training, held-out and generated images (epoch rows since
        # 2026-12-07; a D that calls the held-out radiographs fake has memorised the training set)
        judged = next((r for r in reversed(history) if "heldout_acc" in r), {})
        per_class = score["quality"].get("classes")
        q, base = ({}, {}) if per_class else (score["quality"]["quality"], baseline_of(score["quality"]))
        first = shlex.join(display(command("cxr-train", *train_args(entry, record["config"]["steps_per_epoch"]),
                                           "--data", plan.data, "--heldout", plan.heldout, "--out",
                                           self.root / entry.name)))
        return {
            "key": score["key"], "run": entry.name, "step": score["step"], "weights": score["weights"],
            "latent_scale": score.get("latent_scale", 1.0),
            "final": score["step"] == entry.steps,
            "plan": str(plan.path), "entry": entry.to_dict(), "command": first,
            "run_folder": str(run), "config_hash": record.get("config_hash"),
            "recipe_hash": recipe_hash(record["config"]),
            "precision": record["config"].get("precision"),
            "cpu": sorted({s["cpu"] for s in segments}) or [cpu_name()],
            "code": sorted({s["code"] for s in segments}),
            "seconds_per_step": round(statistics.median(per_step), 4) if per_step else None,
            "train_seconds": round(sum(r.get("train_seconds", 0.0) for r in history), 1),
            "wall_seconds": round(sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in history), 1),
            "metrics": {**q, "ssim": score["quality"]["ssim"], "mse": score["quality"]["mse"]} if not per_class else {},
            **({"classes": {c: {"metrics": {**v["quality"], "ssim": v["ssim"], "mse": v["mse"]},
                                "baseline": baseline_of(v),
                                "audit": score["class_audit"][c]} for c, v in per_class.items()}}
               if per_class else {}),
            "baseline": base,
            "audit": score["audit"],
            "monitor": {k: v for k, v in monitor.items() if k.startswith("q_") or k.startswith("audit_")},
            **({"discriminator": {k: judged[k] for k in ("step", "real_acc", "fake_acc", *D_HELDOUT_KEYS) if k in judged}}
               if judged else {}),
            "samples": score["samples"], "sample_seed": score["sample_seed"],
            "heldout": str(plan.heldout), "data": str(plan.data),
            "scored": score["scored"], "scoring_seconds": score["scoring_seconds"],
            "judges": score.get("judges", 1),
            **({"same_as": score["same_as"]} if score.get("same_as") else {}),
            **({"model_sha256": score["model_sha256"]} if score.get("model_sha256") else {}),
        }


def status(plan: Plan, root: Path) -> list[str]:
    have = {r["key"] for r in read_results(root) if current(r)}  # rows of older judges count as not written
    out = []
    for e in plan.runs:
        run = run_folder(root, e.name)
        scored = sum(1 for r in have if r.startswith(f"{e.name}@"))
        if run is None:
            state = "not started"
        elif RunFolder(run).finished and RunFolder(run).config.total_steps < e.steps:
            state = (f"trained to step {RunFolder(run).config.total_steps} of {e.steps}; {scored} row(s) written; "
                     "grows on its turn")
        elif RunFolder(run).finished:
            state = f"trained; {scored} row(s) written"
        else:
            step = RunFolder(run).checkpoint_step
            passed = e.passed_pause(step)
            state = f"training, step {step}/{e.steps}" + (
                " (paused at a pause_at step)" if step in e.pause_at else
                f" (past its pause at {passed}: a new sweep trains it after the rest of the plan)"
                if passed is not None else "")
        out.append(f"{e.name:<28} {state}")
    return out


# --------------------------------------------------------------------------- CLI


@contextlib.contextmanager
def locked(root: Path):
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise SweepError(f"another cxr-sweep (pid {holder}) is working on {root}; one at a time") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
        yield
    finally:
        f.close()


