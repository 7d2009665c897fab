"""Run folders and the metric history files.

Runs go to auto-numbered folders (`runs/00001-quick/`) created with an exclusive
mkdir, so two runs never share or overwrite a folder.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import re
from importlib import metadata
from pathlib import Path

from cxr_runtime import quality
from cxr_runtime.io import atomic_write_text

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
    root = Path(root)
    if not root.is_dir():
        return None
    runs = sorted(p for p in root.iterdir() if p.is_dir() and _RUN_RE.match(p.name))
    return runs[-1] if runs else None


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
    path = Path(run_dir) / "metrics.jsonl"
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
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    # ROW_KEYS in their order, then any other key a row has (nothing is dropped silently)
    extra = [k for r in rows for k in r if k not in ROW_KEYS]
    columns = [*ROW_KEYS, *dict.fromkeys(extra)]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
