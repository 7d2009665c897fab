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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cxr_runtime import quality
from cxr_runtime.io import atomic_write_text
from cxr_training import checkpoint
from cxr_training.config import Config
from cxr_training.errors import RunFolderError

METRIC_KEYS = ("g_loss", "d_loss", "real_acc", "fake_acc", "d_precision", "d_recall", "ssim", "mse")
# keys of rows written before the rename (D's precision and recall), read as today's
RENAMED_KEYS = {"precision": "d_precision", "recall": "d_recall"}
# the quality monitor's columns (empty without --heldout: cxr_runtime.quality's metric table,
# then the audit's) and the recipe's (empty when off)
QUALITY_KEYS = (*quality.metric_columns(), "audit_flagged", "audit_nn_max", "audit_nn_detail_max")
RECIPE_KEYS = ("augment_p", "r1")
ROW_KEYS = ("epoch", "step", *METRIC_KEYS, "ref_ssim", "ref_mse", *QUALITY_KEYS, *RECIPE_KEYS, "g_lr", "d_lr",
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
