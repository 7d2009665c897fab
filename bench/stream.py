"""`make bench-stream`: does a large training set stream, and what does it cost?

Makes N distinct 128x128 PNG files from the shared training images (each a real image with
a small per-file brightness ramp and its index written into the corner pixels, so no two
files are duplicates), then runs `cxr-train --preset paper` for a few steps on them with
`--input stream` (and, for N small enough, `--input memory`), and reports each run's wall
time, the time to read and index the set, the median step time and the peak resident
memory of the whole process (getrusage of the child). The preprocessing cache is off, so
every file is decoded. Writes bench/stream.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kermany-cxr" / "train" / "NORMAL"


def make_set(src: Path, dst: Path, n: int) -> None:
    from cxr_runtime.images import load_folder, to_uint8

    base = to_uint8(load_folder(src, size=128).images)  # (138, 128, 128) uint8
    ramp = np.linspace(-3, 3, 128, dtype=np.float32)[None, :]
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = base[i % len(base)].astype(np.float32) + ramp * ((i // len(base)) % 7 - 3) / 3
        img = np.clip(img, 0, 255).astype(np.uint8)
        img[0, :4] = np.frombuffer(int(i).to_bytes(4, "little"), np.uint8)  # unique per file
        sub = dst / f"{i // 10000:02d}"
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"img-{i:06d}.png"), img)


def run_train(data: Path, mode: str, steps: int) -> dict:
    exe = shutil.which("cxr-train", path=str(Path(sys.executable).parent)) or "cxr-train"
    out = Path(tempfile.mkdtemp(prefix="cxr-bench-stream-"))
    env = {**os.environ, "CXR_CACHE_DIR": "off"}
    t = time.perf_counter()
    try:
        with open(out / "stderr.txt", "w") as err:
            proc = subprocess.Popen([exe, "--preset", "paper", "--data", str(data), "--out", str(out / "runs"),
                                     "--epochs", "1", "--steps-per-epoch", str(steps), "--input", mode],
                                    stdout=subprocess.DEVNULL, stderr=err, env=env)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        log = (out / "stderr.txt").read_text()
        if proc.returncode != 0:
            return {"mode": mode, "failed": proc.returncode, "stderr": log[-2000:]}
        run = next((out / "runs").iterdir())
        with open(run / "metrics.csv") as f:
            row = next(csv.DictReader(f))
        started = re.search(r"^run .*\((memory|stream)\)", log, re.M)
        return {
            "mode": mode,
            "used": started.group(1) if started else None,
            "wall_s": round(wall, 1),
            "train_s": float(row["train_seconds"]),
            "seconds_per_step": float(row["seconds_per_step"]),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("CXR_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--n", type=int, nargs="+", default=[100_000], help="set sizes to try (largest last)")
    ap.add_argument("--memory-up-to", type=int, default=20_000, help="also run --input memory up to this size")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--workdir", default=None, help="where the synthetic set goes (default: a temporary folder)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "stream.json"))
    args = ap.parse_args()

    results = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": args.steps, "runs": []}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cxr-stream-set-"))
    try:
        for n in sorted(args.n):
            folder = work / f"set-{n}"
            t = time.perf_counter()
            make_set(Path(args.data), folder, n)
            print(f"{n} files written in {time.perf_counter() - t:.0f} s", flush=True)
            modes = ["stream", "memory"] if n <= args.memory_up_to else ["stream"]
            for mode in modes:
                r = {"images": n, **run_train(folder, mode, args.steps)}
                results["runs"].append(r)
                print(json.dumps(r), flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
