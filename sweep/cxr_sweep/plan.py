"""Plan files: parsing and checking, each entry's cxr-train options and resolved Config."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from pathlib import Path

from cxr_sweep.errors import SweepError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULT_SAMPLES = 500
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
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
    classes: tuple[str, ...] = ()  # a labelled plan: `data` (and `heldout`) hold one subfolder per class


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
    from cxr_runtime.images import class_layout

    classes = class_layout(data)
    if classes and class_layout(heldout) != classes:
        raise SweepError(f"plan {path}: data {data} holds the classes {', '.join(classes)}, so heldout {heldout} must "
                         "hold the same subfolders")
    return Plan(path, data, heldout, samples, sample_seed, tuple(entries), classes)


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


