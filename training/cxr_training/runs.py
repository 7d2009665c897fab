"""Run folders and the metric history files.

Runs go to auto-numbered folders (`runs/00001-quick/`) created with an exclusive
mkdir, so two runs never share or overwrite a folder. `RunFolder` is the one reader of
what cxr-train leaves in one (train, export, the sweep and bench read through it):

    config.json            the run's record: config, data fingerprint, versions, command
                           (written before step 0)
    metrics.jsonl, .csv    one row per epoch (read_history, write_history)
    checkpoints/           checkpoint.py
    snapshots/step-NNNNNNNNN/  a sampling generator at a configured step (files as below)
    generator.keras        the final sampling generator (the EMA's weights when the recipe keeps one)
    generator-raw.keras    G's own weights, beside an EMA
    generator.json         their provenance, written last; all three only after the last step

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import re
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cxr_runtime import quality
from cxr_runtime.io import atomic_path, atomic_write_json, atomic_write_text
from cxr_training import checkpoint
from cxr_training.config import Config
from cxr_training.errors import RunFolderError, TrainingError

METRIC_KEYS = ("g_loss", "d_loss", "real_acc", "fake_acc", "d_precision", "d_recall", "ssim", "mse")
# D on held-out real images (with --heldout; evaluate.heldout_scores)
D_HELDOUT_KEYS = ("heldout_acc", "d_logit_real", "d_logit_heldout", "d_logit_fake")
# keys of rows written before the rename (D's precision and recall), read as today's
RENAMED_KEYS = {"precision": "d_precision", "recall": "d_recall"}
# the quality monitor's columns (empty without --heldout: cxr_runtime.quality's metric table,
# then the audit's) and the recipe's (empty when off)
QUALITY_KEYS = (*quality.metric_columns(), "audit_flagged", "audit_nn_max", "audit_nn_detail_max")
RECIPE_KEYS = ("augment_p", "ada_probe_real", "ada_withheld_real", "r1", "lecam")
ROW_KEYS = ("epoch", "step", *METRIC_KEYS, *D_HELDOUT_KEYS, "ref_ssim", "ref_mse", *QUALITY_KEYS, *RECIPE_KEYS, "g_lr", "d_lr",
            "real_downscale", "train_seconds", "seconds_per_step", "eval_seconds")
_RUN_RE = re.compile(r"^(\d{5})-")
CONFIG_FILE = "config.json"
HISTORY_FILE = "metrics.jsonl"
GENERATOR_FILE = "generator.keras"
RAW_GENERATOR_FILE = "generator-raw.keras"
PROVENANCE_FILE = "generator.json"
SNAPSHOTS_DIR = "snapshots"


def new_run_dir(root: str | Path, preset: str) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := _RUN_RE.match(p.name))]
        path = root / f"{max(numbers, default=0) + 1:05d}-{preset}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue  # another run took this number meanwhile


def newest_run(root: str | Path) -> Path | None:
    runs = RunFolder.under(root)
    return runs[-1].path if runs else None


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("cxr-gan", "tensorflow", "keras", "numpy", "opencv-python-headless", "opencv-python",
                 "scikit-image", "onnxruntime", "tf2onnx", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                row = json.loads(line)
            except ValueError:
                break  # a torn last line; everything after it is ignored
            rows.append({RENAMED_KEYS.get(k, k): v for k, v in row.items()})
    return rows


def write_history(run_dir: Path, rows: list[dict]) -> None:
    """Rewrite metrics.jsonl and metrics.csv from the whole history, atomically."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    # ROW_KEYS in their order, then any other key a row has (nothing is dropped silently)
    extra = [k for r in rows for k in r if k not in ROW_KEYS]
    columns = [*ROW_KEYS, *dict.fromkeys(extra)]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path.parent}: no readable {path.name} ({e})") from None


def provenance(keras_path: str | Path) -> dict:
    """The provenance of a saved generator: `<name>.json` beside `<name>.keras`, {} without one.

    The raw weights beside an EMA generator (generator-raw.keras, named `raw_model` in
    generator.json) have no file of their own: they take the run's, with `weights: raw`, so
    that their export keeps the run's classes, config and data fingerprint.
    """
    keras_path = Path(keras_path)
    own = keras_path.with_suffix(".json")
    if own.is_file():
        return _read_json(own)
    shared = keras_path.parent / PROVENANCE_FILE
    if shared.is_file():
        info = _read_json(shared)
        if info.get("raw_model") == keras_path.name:
            info = {k: v for k, v in info.items() if k != "raw_model"}
            return {**info, "model": keras_path.name, "weights": "raw"}
    return {}


@dataclass(frozen=True)
class RunFolder:
    """One cxr-train run folder (`runs/00001-quick/`), read without TensorFlow."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def under(cls, root: str | Path) -> list[RunFolder]:
        """The numbered run folders under `root` (NNNNN-<preset>), lowest number first; other
        entries are not runs."""
        root = Path(root)
        if not root.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in root.iterdir() if p.is_dir() and (m := _RUN_RE.match(p.name))]
        return [cls(root / name) for _, name in sorted(found)]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def started(self) -> bool:
        """config.json is there (cxr-train writes it before step 0)."""
        return (self.path / CONFIG_FILE).is_file()

    @property
    def record(self) -> dict:
        """The run's record (config.json): the config, data (and held-out) fingerprints, versions,
        command. RunFolderError when it is missing or unreadable."""
        return _read_json(self.path / CONFIG_FILE)

    @property
    def config(self) -> Config:
        """The run's recorded Config; RunFolderError when config.json does not hold one."""
        record = self.record
        try:
            return Config.from_dict(record["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise RunFolderError(f"{self.path}: {CONFIG_FILE} holds no valid config ({e})") from None

    @property
    def finished(self) -> bool:
        """Training reached its last step. Only then does cxr-train write the final
        generator.keras and, after it, generator.json (a pause, a stop or a failure leaves
        neither), so a run is finished when both are there; a final save cut short in between
        is not (a resume writes it again)."""
        return (self.path / GENERATOR_FILE).is_file() and (self.path / PROVENANCE_FILE).is_file()

    @property
    def checkpoint_step(self) -> int:
        """The global step of the newest complete checkpoint (where a resume starts), 0 without
        one. Read from its meta.json; the state's hash is checked when a resume loads it
        (checkpoint.latest_valid)."""
        found = checkpoint.list_checkpoints(self.path)
        return max(checkpoint.step_of(found[-1]), 0) if found else 0

    @property
    def history(self) -> list[dict]:
        """The metric rows of the epochs done (metrics.jsonl; read_history)."""
        return read_history(self.path)

    def snapshot(self, step: int) -> Path:
        """The folder of the sampling generator kept at `step` (--snapshot-steps)."""
        return self.path / SNAPSHOTS_DIR / f"step-{step:09d}"

    def generator_path(self, weights: str = "ema", step: int | None = None) -> Path:
        """The Keras file of the final sampling generator, or of the snapshot at `step`.
        `weights` "ema": generator.keras, the shipped weights (the EMA's when the recipe keeps
        one); "raw": G's own, generator-raw.keras beside an EMA, else generator.keras itself.
        The file may not exist."""
        folder = self.path if step is None else self.snapshot(step)
        raw = folder / RAW_GENERATOR_FILE
        return raw if weights == "raw" and raw.is_file() else folder / GENERATOR_FILE

    def provenance(self, weights: str = "ema", step: int | None = None) -> dict:
        """generator.json of generator_path(weights, step) (see provenance())."""
        return provenance(self.generator_path(weights, step))


def lengthen(run: RunFolder, epochs: int, snapshot_steps=(), log=print) -> bool:
    """Give a run more epochs (`cxr-train --resume RUN --epochs N`), finished or not; a resume
    then trains on from its newest checkpoint to the new last step. True when the run changed.

    Only a run whose steps do not depend on its length can grow: with a constant learning rate
    and no progressive resizing (every preset but `paper`), the first steps of a longer run are
    those of a shorter one (tests/training/test_resume.py), so the lengthened run is the run
    that would have been started with the new length. A decaying rate or resizing stages are
    laid over the run's length, and are refused. `snapshot_steps`: more steps to keep a
    generator at, after the newest checkpoint (earlier ones are past). A finished run's final
    generator (generator.keras, generator-raw.keras, generator.json) becomes the snapshot of
    its last step, and that step joins the snapshot steps. config.json records the new config
    and hash, with a `lengthened` entry (steps before and after, when). Ordered for a crash at
    any point: the snapshot is complete before the final files go, and the final files go
    before the config grows (a run with neither is one whose last save a plain resume redoes).
    """
    record = run.record
    cfg = run.config
    done = run.checkpoint_step
    wanted = sorted(set(cfg.snapshot_steps) | {int(s) for s in snapshot_steps})
    if epochs == cfg.epochs and wanted == sorted(cfg.snapshot_steps):
        return False
    if epochs < cfg.epochs:
        raise TrainingError(f"run {run.name} has {_epochs(cfg.epochs)}; a run is not shortened (pause it at an "
                            "earlier step with --stop-at)")
    if epochs > cfg.epochs and cfg.lr_schedule != "constant":
        raise TrainingError(f"run {run.name} cannot be lengthened: its learning rate schedule ({cfg.lr_schedule}) "
                            f"is laid over its {_epochs(cfg.epochs)}, and a longer run would have stepped at other "
                            "rates from the start")
    if epochs > cfg.epochs and cfg.progressive:
        raise TrainingError(f"run {run.name} cannot be lengthened: its progressive resizing stages are fractions "
                            f"of its {_epochs(cfg.epochs)}, and a longer run would have changed size at other steps")
    # its final generator is kept as the snapshot of its end (already, when an earlier try was cut short)
    kept = (run.snapshot(cfg.total_steps) / PROVENANCE_FILE).is_file() and done == cfg.total_steps
    ending = (run.finished or kept) and epochs > cfg.epochs
    past = [s for s in wanted if s <= done and s not in cfg.snapshot_steps and not (ending and s == cfg.total_steps)]
    if past:
        raise TrainingError(f"snapshot steps {past} are not after the newest checkpoint of run {run.name} "
                            f"(step {done}): their generators are gone")
    end = cfg.total_steps
    finished = ending
    if finished:
        wanted = sorted(set(wanted) | {end})
    try:
        grown = cfg.replace(epochs=epochs, snapshot_steps=tuple(wanted))
        grown.validate()
    except ValueError as e:
        raise TrainingError(f"cannot lengthen run {run.name}: {e}") from None
    if run.finished and finished:
        keep = run.snapshot(end)
        if not (keep / PROVENANCE_FILE).is_file():  # copied whole before the final files go
            for name in (GENERATOR_FILE, RAW_GENERATOR_FILE):
                if (run.path / name).is_file():
                    with atomic_path(keep / name, suffix=".keras") as tmp:
                        shutil.copyfile(run.path / name, tmp)
            with atomic_path(keep / PROVENANCE_FILE, suffix=".json") as tmp:
                shutil.copyfile(run.path / PROVENANCE_FILE, tmp)
        for name in (PROVENANCE_FILE, GENERATOR_FILE, RAW_GENERATOR_FILE):  # generator.json first: unfinished
            (run.path / name).unlink(missing_ok=True)
        log(f"the final generator of step {end} is now snapshot {keep.name}")
    history = [*record.get("lengthened", []),  # also a change of snapshot steps alone
               {"from_epochs": cfg.epochs, "to_epochs": epochs, "at_step": done,
                "snapshot_steps": list(wanted), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    atomic_write_json(run.path / CONFIG_FILE, {**record, "config": grown.to_dict(), "config_hash": grown.hash(),
                                               "lengthened": history})
    if epochs > cfg.epochs:
        log(f"run {run.name} lengthened from {cfg.epochs} to {epochs} epochs ({end} to {grown.total_steps} steps); "
            f"it goes on from step {done}")
    if wanted != sorted(cfg.snapshot_steps):
        log(f"snapshots at steps {', '.join(map(str, wanted))}")
    return True


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")
