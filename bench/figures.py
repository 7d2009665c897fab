"""Sample grids for docs/: generated images of scored sweep models beside real held-out ones.

Each row is one model's first N samples (the sweep's 500 from seed 0, so the same latents for
every model); the last row is N real held-out images. Small enough to commit (well under
300 kB).

    python bench/figures.py --out docs/figures/long-seeds.png --n 8 \\
        long-s0@3000:ema long-s1@3000:ema long-s2@3000:ema
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def _samples(root: Path, key: str, n: int) -> np.ndarray:
    from cxr_runtime.images import load_folder

    name, _, rest = key.partition("@")
    step, _, weights = rest.partition(":")
    folder = root / name / "scores" / f"step-{int(step):09d}-{weights or 'ema'}" / "samples"
    files = sorted(folder.glob("sample-*.png"))[:n]
    if len(files) < n:
        raise SystemExit(f"{folder}: fewer than {n} samples")
    return load_folder(folder).images[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("keys", nargs="+", help="NAME@STEP:WEIGHTS of scored models (the sweep's row keys)")
    ap.add_argument("--runs", default=os.environ.get("CXR_RUNS", str(Path.home() / "cxr-runs")))
    ap.add_argument("--real", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "kermany-cxr"
                                          / "heldout" / "NORMAL"))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=96, help="side of each tile in pixels")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from cxr_runtime.images import load_folder, make_grid, write_png

    root = Path(args.runs).expanduser()
    rows = [_samples(root, key, args.n) for key in args.keys]
    rows.append(load_folder(args.real, size=128).images[: args.n])
    import cv2

    tiles = np.concatenate([np.stack([cv2.resize(im, (args.size, args.size), interpolation=cv2.INTER_AREA)
                                      for im in row]) for row in rows])
    grid = make_grid(tiles, ncols=args.n)
    write_png(args.out, grid)
    print(f"wrote {args.out}: rows {', '.join(args.keys)}, then {args.n} real held-out images "
          f"({Path(args.out).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
