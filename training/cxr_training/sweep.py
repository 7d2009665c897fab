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
   training images scored the same way as the reference row) and `cxr-runtime audit` against
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

The plan file is read again after every run, so runs appended to it while a sweep trains are
picked up. One sweep at a time works on a run root (a lock file); SIGTERM or SIGINT is passed on
to the running stage (cxr-train checkpoints and exits) and the sweep then exits with 128 + the
signal number.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cxr_runtime.errors import reported
from cxr_runtime.io import atomic_write_json, atomic_write_text
from cxr_training.errors import Interrupted, SweepError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RESULTS = "results.jsonl"
SUPERSEDED = "results.superseded.jsonl"  # rows replaced because their judges changed (append-only)
# weights variants of the shipped weights, exported at a latent scale calibrated on the training
# images: suffix -> cxr-export --latent-scale criterion
SCALED = {"-scaled": "auto", "-diverse": "diversity"}
LOCK = ".sweep.lock"
DEFAULT_SAMPLES = 500
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_RUN_RE = re.compile(r"^\d{5}-")
# cxr-train options a plan entry sets itself (name, preset, seed, steps) or the sweep owns
OWNED_FLAGS = ("--preset", "--seed", "--epochs", "--data", "--heldout", "--out", "--resume", "--dry-run", "--stop-at",
               "--snapshot-steps")
PLAN_KEYS = {"data", "heldout", "samples", "sample_seed", "run"}
RUN_KEYS = {"name", "preset", "seed", "steps", "flags", "score_steps", "pause_at", "note"}


def default_root() -> Path:
    return Path(os.environ.get("CXR_RUNS") or Path.home() / "cxr-runs").expanduser()


def _shared(sub: str) -> Path:
    """The project's development images: ../shared/data/kermany-cxr/<sub> beside the checkout."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data" / "kermany-cxr" / sub
        if candidate.is_dir():
            return candidate
    return Path("../shared/data/kermany-cxr") / sub


# --------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    preset: str
    seed: int
    steps: int
    flags: tuple[str, ...] = ()
    score_steps: tuple[int, ...] = ()
    note: str = ""
    pause_at: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"name": self.name, "preset": self.preset, "seed": self.seed, "steps": self.steps,
                "flags": list(self.flags), "score_steps": list(self.score_steps),
                **({"pause_at": list(self.pause_at)} if self.pause_at else {}),
                **({"note": self.note} if self.note else {})}

    def target(self, done: int) -> int:
        """The step a visit trains to from step `done`: the next pause after it, else the end."""
        return next((p for p in self.pause_at if p > done), self.steps)

    def passed_pause(self, done: int) -> int | None:
        """The last pause at or before step `done` (a run a new sweep holds back), else None."""
        return max((p for p in self.pause_at if p <= done), default=None)


@dataclasses.dataclass(frozen=True)
class Plan:
    path: Path
    data: Path
    heldout: Path
    samples: int
    sample_seed: int
    runs: tuple[Entry, ...]


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and check a plan; SweepError names the entry and the problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise SweepError(f"cannot read plan {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"plan {path} is not valid TOML: {e}") from None
    unknown = set(raw) - PLAN_KEYS
    if unknown:
        raise SweepError(f"plan {path}: unknown top-level key(s) {sorted(unknown)}; known: {sorted(PLAN_KEYS)}")
    runs = raw.get("run", [])
    if not isinstance(runs, list) or not runs:
        raise SweepError(f"plan {path} has no [[run]] entries")
    data = Path(raw.get("data") or os.environ.get("CXR_DATA") or _shared("train/NORMAL")).expanduser()
    heldout = Path(raw.get("heldout") or os.environ.get("CXR_HELDOUT") or _shared("heldout/NORMAL")).expanduser()
    samples = raw.get("samples", DEFAULT_SAMPLES)
    sample_seed = raw.get("sample_seed", 0)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 12:
        raise SweepError(f"plan {path}: samples must be an integer >= 12, not {samples!r}")
    if not isinstance(sample_seed, int) or isinstance(sample_seed, bool) or sample_seed < 0:
        raise SweepError(f"plan {path}: sample_seed must be an integer >= 0")
    entries, seen = [], set()
    for i, item in enumerate(runs, start=1):
        entry = _entry(item, i, path)
        if entry.name in seen:
            raise SweepError(f"plan {path}: run #{i} reuses the name {entry.name!r}")
        seen.add(entry.name)
        entries.append(entry)
    return Plan(path, data, heldout, samples, sample_seed, tuple(entries))


def _entry(item, index: int, path: Path) -> Entry:
    label = f"plan {path}, run #{index}"
    if not isinstance(item, dict):
        raise SweepError(f"{label}: not a table")
    if isinstance(item.get("name"), str):
        label += f" ({item['name']})"
    unknown = set(item) - RUN_KEYS
    if unknown:
        raise SweepError(f"{label}: unknown key(s) {sorted(unknown)}; known: {sorted(RUN_KEYS)}")
    for key in ("name", "preset", "seed", "steps"):
        if key not in item:
            raise SweepError(f"{label}: '{key}' is missing")
    name = item["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SweepError(f"{label}: name must be 1-80 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit")

    def integer(key, lo):
        v = item[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise SweepError(f"{label}: {key} must be an integer >= {lo}, not {v!r}")
        return v

    seed, steps = integer("seed", 0), integer("steps", 1)
    flags = item.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise SweepError(f"{label}: flags must be a list of strings")
    owned = [f for f in flags if f.split("=")[0] in OWNED_FLAGS]
    if owned:
        raise SweepError(f"{label}: flags may not set {', '.join(owned)} (the entry's preset, seed, steps and "
                         "score_steps set them)")
    within = {}
    for key in ("score_steps", "pause_at"):
        values = item.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < steps
                                                   for v in values):
            raise SweepError(f"{label}: {key} must be a list of steps between 0 and steps ({steps})")
        within[key] = tuple(sorted(set(values)))
    entry = Entry(name, str(item["preset"]), seed, steps, tuple(flags), within["score_steps"],
                  str(item.get("note", "")), within["pause_at"])
    try:
        resolve_config(entry)
    except SweepError as e:
        raise SweepError(f"{label}: {e}") from None
    return entry


def train_args(entry: Entry, cfg_spe: int | None = None) -> list[str]:
    """cxr-train's options for this entry, without --data/--heldout/--out."""
    args = ["--preset", entry.preset, "--seed", str(entry.seed), *entry.flags]
    if cfg_spe is not None:
        args += ["--epochs", str(entry.steps // cfg_spe)]
    if entry.score_steps:
        args += ["--snapshot-steps", ",".join(str(s) for s in entry.score_steps)]
    return args


def resolve_config(entry: Entry):
    """The Config the entry trains with, parsed by cxr-train's own option parser, so an unknown
    flag, preset or value fails here, before anything runs."""
    import click

    from cxr_training import cli

    args = train_args(entry) + ["--data", "."]
    try:
        ctx = cli.main.make_context("cxr-train", list(args))
    except click.exceptions.Exit:
        raise SweepError("flags must not ask for --help or --version") from None
    except click.ClickException as e:
        raise SweepError(f"cxr-train rejects {shlex.join(args[:-2])}: {e.format_message()}") from None
    try:  # the run's length first (the preset's steps per epoch), then the snapshots within it
        cfg = cli.config_from_options({**ctx.params, "snapshot_steps": None})
        if entry.steps % cfg.steps_per_epoch == 0:
            cfg = cli.config_from_options({**ctx.params, "epochs": entry.steps // cfg.steps_per_epoch})
    except (ValueError, click.ClickException) as e:
        msg = e.format_message() if isinstance(e, click.ClickException) else str(e)
        raise SweepError(f"invalid config: {msg}") from None
    if entry.steps % cfg.steps_per_epoch:
        raise SweepError(f"steps {entry.steps} is not a multiple of the {cfg.steps_per_epoch} steps per epoch of "
                         f"preset {entry.preset!r}")
    for key in ("score_steps", "pause_at"):
        bad = [s for s in getattr(entry, key) if s % cfg.steps_per_epoch]
        if bad:
            raise SweepError(f"{key} {bad} are not epoch ends (multiples of {cfg.steps_per_epoch})")
    return cfg.replace(epochs=entry.steps // cfg.steps_per_epoch, snapshot_steps=entry.score_steps)


# --------------------------------------------------------------------------- machine facts


def cpu_name() -> str:
    """lscpu's model name, with family/model and the widest vector ISA (machines with one name
    differ: 'AMD EPYC' is Zen 3 with AVX2 or Zen 5 with AVX-512 BF16)."""
    fields = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=20,
                             env={**os.environ, "LC_ALL": "C"}).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    name = fields.get("Model name") or "unknown CPU"
    flags = set(fields.get("Flags", "").split())
    isa = ("amx" if "amx_bf16" in flags else "avx512-bf16" if "avx512_bf16" in flags else
           "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "")
    detail = ", ".join(x for x in (f"family {fields['CPU family']} model {fields['Model']}"
                                   if "CPU family" in fields and "Model" in fields else "", isa) if x)
    return f"{name} ({detail})" if detail else name


def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- running stages


def _pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """The stage gets SIGTERM if the sweep dies (SIGKILL included), so no orphan trains on."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Runner:
    """Runs stages as subprocesses, one at a time, passing SIGINT/SIGTERM on to the stage."""

    def __init__(self, log=None):
        self.child: subprocess.Popen | None = None
        self.signum: int | None = None
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def handler(self, signum, frame):
        if self.signum is None:
            self.log(f"cxr-sweep: {signal.Signals(signum).name}: stopping the running stage (it keeps its progress)")
        self.signum = self.signum or signum
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    @contextlib.contextmanager
    def signals(self):
        saved = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in saved.items():
                signal.signal(s, h)

    def run(self, argv: list[str], log_path: Path, ok=(0,), stdout_path: Path | None = None) -> int:
        """Run argv with its output appended to log_path (stdout to `stdout_path` instead when
        given: written whole or not at all); return its exit code. Raises Stopped when a signal
        arrived, SweepError when the code is not in `ok`."""
        if self.signum is not None:
            raise Stopped(self.signum)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        partial = stdout_path.with_name(stdout_path.name + ".partial") if stdout_path else None
        with open(log_path, "ab") as log, open(partial or os.devnull, "wb") as captured:
            log.write(f"\n$ {shlex.join(display(argv))}{f' > {stdout_path.name}' if stdout_path else ''}   "
                      f"# {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            self.child = subprocess.Popen(argv, stdout=captured if partial else log, stderr=log,
                                          stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_pdeathsig)
            try:
                code = self.child.wait()
            finally:
                self.child = None
        if self.signum is not None:
            raise Stopped(self.signum)
        if code not in ok:
            raise SweepError(f"{display(argv)[0]} exited with {code}; the last lines of {log_path}:\n"
                             f"{_tail(log_path, 6)}")
        if partial:
            os.replace(partial, stdout_path)
        return code


class Stopped(Interrupted):
    """SIGINT or SIGTERM reached the sweep; the running stage kept its progress."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name, signum)


_MODULES = {"cxr-train": "cxr_training.cli", "cxr-export": "cxr_export.cli", "cxr-runtime": "cxr_runtime.cli"}


def command(prog: str, *args) -> list[str]:
    """argv running one of the project's CLIs with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", _MODULES[prog], *map(str, args)]


def display(argv: list[str]) -> list[str]:
    """argv as the user would type it (cxr-train ... instead of python -m cxr_training.cli ...)."""
    if len(argv) >= 3 and argv[1] == "-m":
        names = {v: k for k, v in _MODULES.items()}
        if argv[2] in names:
            return [names[argv[2]], *argv[3:]]
    return list(argv)


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  " + x for x in lines[-n:])


# --------------------------------------------------------------------------- one run


def run_folder(root: Path, name: str) -> Path | None:
    """The numbered cxr-train folder of a plan entry ($CXR_RUNS/<name>/00001-<preset>), or None."""
    base = root / name
    if not base.is_dir():
        return None
    found = sorted(p for p in base.iterdir() if p.is_dir() and _RUN_RE.match(p.name) and (p / "config.json").is_file())
    return found[-1] if found else None


def _finished(run: Path) -> bool:
    info = run / "generator.json"
    if not (run / "generator.keras").is_file() or not info.is_file():
        return False
    meta = json.loads(info.read_text())
    return int(meta["step"]) >= int(meta["config"]["epochs"]) * int(meta["config"]["steps_per_epoch"])


# metric keys of rows written by the first version of cxr-sweep, read under today's names
_LEGACY_METRIC_KEYS = {"diversity": "diversity_ssim", "diversity_real": "diversity_ssim_real"}


def read_results(root: Path) -> list[dict]:
    path = root / RESULTS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row.get("metrics"), dict):
                row["metrics"] = {_LEGACY_METRIC_KEYS.get(k, k): v for k, v in row["metrics"].items()}
            if row.get("judges", 1) == 1:  # before version 2, kid_se resampled the generated images only
                for part in ("metrics", "reference"):
                    if isinstance(row.get(part), dict) and "kid_se" in row[part]:
                        row[part]["kid_se_generated_only"] = row[part].pop("kid_se")
            rows.append(row)
    return rows


def current(row: dict) -> bool:
    """Whether a row was scored by today's judges (metrics, intervals, audit)."""
    from cxr_runtime.quality import JUDGES_VERSION

    return row.get("judges", 1) == JUDGES_VERSION


def append_row(root: Path, row: dict) -> bool:
    """Add `row` to results.jsonl unless a row with its key is there; the whole file is
    replaced atomically, so it is never torn and never holds a key twice. True if written.
    A row of the same key scored by older judges is replaced, and kept in SUPERSEDED."""
    rows = read_results(root)
    old = [r for r in rows if r.get("key") == row["key"]]
    if any(current(r) for r in old) or (old and not current(row)):
        return False
    if old:
        with open(root / SUPERSEDED, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in old)
    text = "".join(json.dumps(r) + "\n" for r in [*(r for r in rows if r.get("key") != row["key"]), row])
    atomic_write_text(root / RESULTS, text)
    return True


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
        have = {r["key"] for r in read_results(self.root) if current(r)}  # rows of older judges: scored again
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

    def train(self, plan: Plan, entry: Entry, cfg, base: Path) -> tuple[Path, int]:
        """Train to the entry's next pause or its end: (the run folder, the step reached)."""
        run = run_folder(self.root, entry.name)
        if run is not None and _finished(run):
            return run, entry.steps
        last = _last_step(run) if run is not None else 0
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
            for partial in base.iterdir():  # a folder whose config.json was never written: nothing to keep
                if partial.is_dir() and _RUN_RE.match(partial.name):
                    self.log(f"cxr-sweep: {entry.name}: removing {partial.name}, killed before its config was written")
                    _rmtree(partial)
            argv = command("cxr-train", *train_args(entry, cfg.steps_per_epoch), "--data", plan.data,
                           "--heldout", plan.heldout, "--out", base, *stop)
            self.log(f"cxr-sweep: {entry.name}: training {entry.steps} steps"
                     f"{f' (to step {target} in this pass)' if stop else ''} ({shlex.join(display(argv))}); "
                     f"log {log_path}")
            segment["from_step"] = 0
        else:
            from cxr_training.config import Config

            saved = Config.from_dict(json.loads((run / "config.json").read_text())["config"])
            if saved != cfg.replace(precision=saved.precision):
                self.log(f"cxr-sweep: {entry.name}: note: {run.name} was started with a config other than the "
                         "plan entry now gives (a preset changed since?); it is resumed with its own")
            argv = command("cxr-train", "--resume", run, "--data", plan.data, "--heldout", plan.heldout, *stop)
            segment["from_step"] = _last_step(run)
            self.log(f"cxr-sweep: {entry.name}: resuming {run} after step {segment['from_step']}"
                     f"{f' to step {target}' if stop else ''}; log {log_path}")
        segment["command"] = shlex.join(display(argv))
        with open(base / "segments.jsonl", "a") as f:
            f.write(json.dumps(segment) + "\n")
        self.runner.run(argv, log_path)
        run = run_folder(self.root, entry.name)
        if run is not None and _finished(run):
            return run, entry.steps
        if run is not None and stop and _last_step(run) >= target:
            return run, target
        missing = f"checkpoint at step {target}" if stop else "finished model"
        raise SweepError(f"cxr-train ended without a {missing} under {base}")

    def score(self, plan: Plan, entry: Entry, run: Path, step: int, weights: str) -> dict:
        """Export, sample, evaluate and audit one model; score.json holds the result and the
        stages are skipped when their outputs are there. A score.json of older judges
        (quality.JUDGES_VERSION) is made again from the same samples."""
        from cxr_runtime.quality import JUDGES_VERSION

        folder = run / "snapshots" / f"step-{step:09d}" if step != entry.steps else run
        suffix = next((x for x in SCALED if weights.endswith(x)), "")
        base = weights.removesuffix(suffix) if suffix else weights
        model = folder / ("generator-raw.keras" if base == "raw" and (folder / "generator-raw.keras").is_file()
                          else "generator.keras")
        if not model.is_file():
            raise SweepError(f"no {model.name} for step {step} under {folder} (was --snapshot-steps set?)")
        out = self.root / entry.name / "scores" / f"step-{step:09d}-{weights}"
        done = out / "score.json"
        if done.is_file():
            stored = json.loads(done.read_text())
            if stored.get("judges", 1) == JUDGES_VERSION:
                return stored
            self.log(f"cxr-sweep: {row_key(entry.name, step, weights)}: scored by older judges "
                     f"(version {stored.get('judges', 1)}); scoring its samples again")
            for stale in (done, out / "quality.json", out / "audit" / "summary.json"):
                stale.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "stages.log"
        key = row_key(entry.name, step, weights)
        onnx = out / "generator.onnx"
        t0 = time.time()
        if not onnx.is_file():
            self.log(f"cxr-sweep: {key}: export")
            scale = ("--latent-scale", SCALED[suffix], "--data", plan.data) if suffix else ()
            self.runner.run(command("cxr-export", model, "--out", onnx, *scale), log_path)
        samples = out / "samples"
        if not (samples / "manifest.json").is_file():
            self.log(f"cxr-sweep: {key}: sampling {plan.samples} images")
            self.runner.run(command("cxr-runtime", "sample", "--n", plan.samples, "--seed", plan.sample_seed,
                                    "--model", onnx, "--out", samples, "--device", "cpu"), log_path)
        quality = out / "quality.json"
        if not quality.is_file():
            self.log(f"cxr-sweep: {key}: evaluate --quality against {plan.heldout}")
            argv = command("cxr-runtime", "evaluate", "--fake", samples, "--real", plan.heldout, "--heldout",
                           plan.data, "--quality", "--json", "--device", "cpu")
            self.runner.run(argv, log_path, stdout_path=quality)  # --json on stdout, notes in the log
            try:
                json.loads(quality.read_text())
            except ValueError:
                quality.unlink()
                raise SweepError(f"cxr-runtime evaluate wrote no JSON; see {log_path}") from None
        audit_dir = out / "audit"
        if not (audit_dir / "summary.json").is_file():
            self.log(f"cxr-sweep: {key}: memorisation audit against {plan.data}")
            self.runner.run(command("cxr-runtime", "audit", "--fake", samples, "--train", plan.data, "--heldout",
                                    plan.heldout, "--out", audit_dir), log_path, ok=(0, 1))  # 1: images flagged
        manifest = json.loads((samples / "manifest.json").read_text())
        result = {
            "key": key, "run": entry.name, "step": step, "weights": weights, "model": str(model),
            "latent_scale": manifest.get("latent_scale", 1.0),
            "onnx": str(onnx), "samples": plan.samples, "sample_seed": plan.sample_seed,
            "quality": json.loads(quality.read_text()),
            "audit": _audit_summary(json.loads((audit_dir / "summary.json").read_text())),
            "scored": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scoring_seconds": round(time.time() - t0, 1),
            "scoring_cpu": cpu_name(), "judges": JUDGES_VERSION,
        }
        atomic_write_json(done, result)
        return result

    def compose_row(self, plan: Plan, entry: Entry, run: Path, score: dict) -> dict:
        meta = json.loads((run / "config.json").read_text())
        history = [r for r in _history(run) if r["step"] <= score["step"]]
        segments = [json.loads(x) for x in (self.root / entry.name / "segments.jsonl").read_text().splitlines()
                    if x.strip()] if (self.root / entry.name / "segments.jsonl").is_file() else []
        per_step = [r["seconds_per_step"] for r in history if r.get("seconds_per_step")]
        monitor = next((r for r in reversed(history) if "q_kid" in r), {})
        q, ref = score["quality"]["quality"], score["quality"].get("quality_reference", {})
        first = shlex.join(display(command("cxr-train", *train_args(entry, meta["config"]["steps_per_epoch"]),
                                           "--data", plan.data, "--heldout", plan.heldout, "--out",
                                           self.root / entry.name)))
        return {
            "key": score["key"], "run": entry.name, "step": score["step"], "weights": score["weights"],
            "latent_scale": score.get("latent_scale", 1.0),
            "final": score["step"] == entry.steps,
            "plan": str(plan.path), "entry": entry.to_dict(), "command": first,
            "run_folder": str(run), "config_hash": meta.get("config_hash"),
            "recipe_hash": recipe_hash(meta["config"]),
            "precision": meta["config"].get("precision"),
            "cpu": sorted({s["cpu"] for s in segments}) or [cpu_name()],
            "code": sorted({s["code"] for s in segments}),
            "seconds_per_step": round(statistics.median(per_step), 4) if per_step else None,
            "train_seconds": round(sum(r.get("train_seconds", 0.0) for r in history), 1),
            "wall_seconds": round(sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in history), 1),
            "metrics": {**q, "ssim": score["quality"]["ssim"], "mse": score["quality"]["mse"]},
            "reference": ref,
            "audit": score["audit"],
            "monitor": {k: v for k, v in monitor.items() if k.startswith("q_") or k.startswith("audit_")},
            "samples": score["samples"], "sample_seed": score["sample_seed"],
            "heldout": str(plan.heldout), "data": str(plan.data),
            "scored": score["scored"], "scoring_seconds": score["scoring_seconds"],
            "judges": score.get("judges", 1),
        }


def _weights(row: dict) -> str:
    """The weights cell: `ema`, `raw`, or `ema-scaled (x1.2)` with the calibrated latent scale."""
    scale = row.get("latent_scale", 1.0)
    return row["weights"] + (f" (x{scale:g})" if row["weights"].endswith(tuple(SCALED)) else "")


def row_key(name: str, step: int, weights: str) -> str:
    return f"{name}@{step}:{weights}"


def _history(run: Path) -> list[dict]:
    from cxr_training.runs import read_history

    return read_history(run)


def _last_step(run: Path) -> int:
    """The step of the newest checkpoint (what a resume starts from), read without TensorFlow."""
    steps = [0]
    for meta in (run / "checkpoints").glob("*/meta.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            steps.append(int(json.loads(meta.read_text())["step"]))
    return max(steps)


def _audit_summary(s: dict) -> dict:
    out = {"flagged": s["flagged"], "generated": s["generated"], "threshold": s["threshold"],
           "nn_ncc_p50": s["nn_ncc"]["p50"], "nn_ncc_max": s["nn_ncc"]["max"]}
    if "nn_detail" in s:  # the registered audit (summaries before it had the shift-tolerant NCC only)
        out["detail_threshold"] = s["detail_threshold"]
        out["nn_detail_p50"], out["nn_detail_max"] = s["nn_detail"]["p50"], s["nn_detail"]["max"]
    if "heldout" in s:
        out["heldout_nn_ncc_p50"] = s["heldout"]["nn_ncc"]["p50"]
        out["heldout_nn_ncc_max"] = s["heldout"]["nn_ncc"]["max"]
        out["heldout_flagged_share"] = s["heldout"]["flagged_share"]
        if "nn_detail" in s["heldout"]:
            out["heldout_nn_detail_max"] = s["heldout"]["nn_detail"]["max"]
    return out


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _cell(m, values: dict) -> str:
    if m.key not in values:
        return "-"
    text = m.text(values, m.short)  # the value and its 95 % interval's half-width (both sets resampled)
    if m.real_key and m.real_key in values:
        text += f" ({values[m.real_key]:{m.short}})"
    return text


def summary(row: dict) -> str:
    from cxr_runtime.quality import QUALITY_METRICS

    return " ".join(f"{m.label} {_cell(m, row['metrics'])}" for m in QUALITY_METRICS) + \
        f" audit flags {row['audit']['flagged']}"


def table(rows: list[dict]) -> str:
    """The rows as a markdown table (docs/results.md): the metric table's columns, the audit,
    the cost; each held-out folder's reference row (the training images scored as generated
    ones) once at the end."""
    from cxr_runtime.quality import QUALITY_METRICS

    labels = [m.label + (" (real)" if m.real_key else "") for m in QUALITY_METRICS]
    head = ["run", "step", "weights", *labels, "audit flags", "s/step", "train h", "CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sps = f"{r['seconds_per_step']:.2f}" if r.get("seconds_per_step") else "-"
        cells = [r["run"], str(r["step"]), _weights(r), *(_cell(m, r["metrics"]) for m in QUALITY_METRICS),
                 f"{r['audit']['flagged']}/{r['audit']['generated']}", sps, f"{r['train_seconds'] / 3600:.2f}",
                 ", ".join(r["cpu"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _reference_lines(rows, lead=3, trail=4)
    return "\n".join(lines)


def recipe_hash(config: dict) -> str:
    """What a run trains apart from its seed: the hash of its config with the seed (and the steps
    it keeps snapshots at) set aside. Runs that share it are seeds of one recipe, however their
    plan entries spell it (`--augment fixed` or a preset whose default it is)."""
    from cxr_training.config import Config

    return Config.from_dict(config).replace(seed=0, snapshot_steps=()).hash()


def _recipe(row: dict) -> tuple:
    """What a row's run trained, apart from its seed and name: rows that share it are seeds of one
    recipe. Rows written before rows carried `recipe_hash` get it from their run's config.json
    while that is on disk, else from their plan entry (preset, flags, length)."""
    key = row.get("recipe_hash")
    if key is None and row.get("run_folder"):
        try:
            key = recipe_hash(json.loads((Path(row["run_folder"]) / "config.json").read_text())["config"])
        except (OSError, ValueError, KeyError, TypeError):
            key = None
    if key is not None:
        return (key, row["step"], row["weights"])
    e = row.get("entry", {})
    return (e.get("preset"), tuple(e.get("flags", ())), e.get("steps"), row["step"], row["weights"])


def _reference_lines(rows: list[dict], lead: int, trail: int) -> list[str]:
    """One line per held-out folder: the training images scored against it as if generated (what
    a generator reproducing real X-rays of this population would reach), in a table whose metric
    columns come after `lead` cells and before `trail` ones."""
    from cxr_runtime.quality import QUALITY_METRICS

    refs = {r["heldout"]: r["reference"] for r in rows if r.get("reference") and r.get("heldout")}
    lines = []
    for held, ref in refs.items():
        cells = [f"*the training images vs {'/'.join(Path(held).parts[-2:])} (reference)*", *[""] * (lead - 1),
                 *(_cell(m, ref) for m in QUALITY_METRICS), *[""] * trail]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def seed_table(rows: list[dict]) -> str:
    """Rows of the same recipe (the run's config apart from its seed, at one step and weights) on
    different seeds, as one markdown line each, seeds in order: the runs, the preset and flags
    (the most explicit spelling among the runs' plan entries), the mean of every metric with its
    range over the seeds (min-max), the audit flags summed over the seeds, the median s/step per
    seed, averaged; then the reference line of each held-out folder."""
    from cxr_runtime.quality import QUALITY_METRICS

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(_recipe(r), []).append(r)
    head = ["runs", "preset", "flags", "step", "weights", "seeds", *[m.label for m in QUALITY_METRICS],
            "audit flags", "s/step", "CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in groups.values():
        group = sorted(group, key=lambda r: (r.get("entry", {}).get("seed", -1), r["run"]))
        flags = max((r.get("entry", {}).get("flags", ()) for r in group), key=len)
        step, weights = group[0]["step"], group[0]["weights"]
        cells = [", ".join(r["run"] for r in group), str(group[0].get("entry", {}).get("preset")),
                 " ".join(flags) or "-", str(step), weights,
                 ", ".join(str(r.get("entry", {}).get("seed", "?")) for r in group)]
        for m in QUALITY_METRICS:
            values = [r["metrics"][m.key] for r in group if m.key in r["metrics"]]
            if not values:
                cells.append("-")
                continue
            text = f"{statistics.fmean(values):{m.short}}"
            if len(values) > 1:
                text += f" ({min(values):{m.short}}-{max(values):{m.short}})"
            real = [r["metrics"][m.real_key] for r in group if m.real_key and m.real_key in r["metrics"]]
            if real:
                text += f", real {statistics.fmean(real):{m.short}}"
            cells.append(text)
        cells.append(f"{sum(r['audit']['flagged'] for r in group)}/{sum(r['audit']['generated'] for r in group)}")
        sps = [r["seconds_per_step"] for r in group if r.get("seconds_per_step")]
        cells.append(f"{statistics.fmean(sps):.2f}" if sps else "-")
        cells.append(", ".join(sorted({c for r in group for c in r["cpu"]})))
        lines.append("| " + " | ".join(cells) + " |")
    lines += _reference_lines(rows, lead=6, trail=3)
    return "\n".join(lines)


def status(plan: Plan, root: Path) -> list[str]:
    have = {r["key"] for r in read_results(root) if current(r)}  # rows of older judges count as not written
    out = []
    for e in plan.runs:
        run = run_folder(root, e.name)
        scored = sum(1 for r in have if r.startswith(f"{e.name}@"))
        if run is None:
            state = "not started"
        elif _finished(run):
            state = f"trained; {scored} row(s) written"
        else:
            step = _last_step(run)
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


def main(argv=None) -> None:
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.argument("plan", required=False, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--runs", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Run root [default: $CXR_RUNS, else ~/cxr-runs]; keep it outside the checkout.")
    @click.option("--table", "as_table", is_flag=True, help="Print the rows of results.jsonl as a markdown table.")
    @click.option("--seeds", "by_seed", is_flag=True,
                  help="Print results.jsonl with the seeds of each recipe (same config apart from the seed) "
                       "folded into one line: mean and range, then the held-out reference line.")
    @click.option("--status", "show_status", is_flag=True, help="Show where each run of PLAN stands; run nothing.")
    @click.option("--check", is_flag=True, help="Check PLAN (every entry's flags and values); run nothing.")
    def cli(plan, root, as_table, by_seed, show_status, check):
        """Run a plan of training runs, one after another, each trained, exported, sampled, scored
        against the held-out folder and audited, with one row per scored model in
        $CXR_RUNS/results.jsonl. The same command resumes an interrupted plan; finished runs are
        skipped. docs/training.md ("Sweeps") describes the plan format.

        \b
        Examples:
          cxr-sweep bench/plans/recipe.toml
          nohup cxr-sweep bench/plans/recipe.toml > ~/cxr-runs/sweep.log 2>&1 &
          cxr-sweep bench/plans/recipe.toml --status
          cxr-sweep --table
          cxr-sweep --seeds
        """
        root = Path(root).expanduser() if root else default_root()
        from cxr_training.tfenv import missing_extra

        problem = None if as_table or by_seed else missing_extra("cxr-sweep", ("tensorflow", "keras", "tf2onnx"))
        if problem:  # the runs need cxr-train and cxr-export
            click.echo(f"error: {problem}", err=True)
            sys.exit(2)
        with reported():  # SweepError and the like: one line, exit 2
            if as_table or by_seed:
                rows = read_results(root)
                if not rows:
                    raise SweepError(f"no rows in {root / RESULTS} yet")
                click.echo(seed_table(rows) if by_seed else table(rows))
                return
            if plan is None:
                raise click.UsageError("give a PLAN file (or --table)")
            loaded = load_plan(plan)
            if check:
                for e in loaded.runs:
                    cfg = resolve_config(e)
                    click.echo(f"{e.name}: ok ({cfg.total_steps} steps, {cfg.epochs} x {cfg.steps_per_epoch}, "
                               f"batch {cfg.batch_size}, config {cfg.hash()})")
                return
            if show_status:
                for line in status(loaded, root):
                    click.echo(line)
                return
            for label, folder in (("data", loaded.data), ("heldout", loaded.heldout)):
                if not Path(folder).is_dir():
                    raise SweepError(f"the plan's {label} folder {folder} does not exist")
            with locked(root):
                sweep = Sweep(plan, root)
                with sweep.runner.signals():
                    try:
                        code = sweep.run()
                    except Stopped as e:
                        click.echo(f"cxr-sweep: stopped by {e}; `cxr-sweep {plan}` continues where it stopped",
                                   err=True)
                        sys.exit(e.exit_code)
            sys.exit(code)

    cli.main(args=argv, prog_name="cxr-sweep")


if __name__ == "__main__":  # pragma: no cover
    main()
