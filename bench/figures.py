"""Sample grids for docs/: generated images of scored sweep models beside real held-out ones.

Each row is one model's first N samples (the sweep's 500 from seed 0, so the same latents for
every model); the last row is N real held-out images. Small enough to commit (well under
300 kB).

    python bench/figures.py --out docs/figures/long-seeds.png --n 8 \\
        long-s0@3000:ema long-s1@3000:ema long-s2@3000:ema

With --crops, full-size detail instead: per model (and a last row of real held-out images) one
image at 2x nearest upscaling (256x256 on screen) and three 64x64 regions of it at 4x: the upper
left (clavicle, shoulder, often the side marker), the right lung field with its rib borders, the
upper mediastinum with both clavicles and the spine.

    python bench/figures.py --crops --index 3 --out docs/figures/texture-crops.png base-s0@1000:ema

A labelled model's class is named after the weights (`labelled-quick-proj-s0@1000:ema/PNEUMONIA`);
give --real that class's held-out folder. A key without "@" is a folder of samples.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def _samples(root: Path, key: str, n: int) -> np.ndarray:
    from cxr_runtime.images import load_folder

    if "@" not in key:  # a folder of samples (e.g. a utility plan's syn-N/CLASS)
        folder = Path(key).expanduser()
        return load_folder(folder).images[:n]
    name, _, rest = key.partition("@")
    step, _, weights = rest.partition(":")
    weights, _, label = weights.partition("/")  # a labelled model's class: NAME@STEP:WEIGHTS/CLASS
    folder = root / name / "scores" / f"step-{int(step):09d}-{weights or 'ema'}" / "samples" / label
    files = sorted(folder.glob("sample-*.png"))[:n]
    if len(files) < n:
        raise SystemExit(f"{folder}: fewer than {n} samples")
    return load_folder(folder).images[:n]


REGIONS = {"upper left": (0, 0), "right lung field": (40, 12), "clavicles and spine": (6, 32)}  # (row, col) of 64x64


def crops(args) -> None:
    from cxr_runtime.images import load_folder, to_uint8

    root = Path(args.runs).expanduser()
    i = args.index
    rows = [_samples(root, key, i + 1)[i] for key in args.keys]
    rows.append(load_folder(args.real, size=128).images[i])
    gap = 6
    lines = []
    for im in rows:
        u8 = to_uint8(im)
        tiles = [np.kron(u8, np.ones((2, 2), np.uint8))]
        tiles += [np.kron(u8[r : r + 64, c : c + 64], np.ones((4, 4), np.uint8)) for r, c in REGIONS.values()]
        lines.append(np.concatenate([x for t in tiles for x in (t, np.full((256, gap), 255, np.uint8))][:-1], axis=1))
    sheet = np.concatenate([x for line in lines for x in (line, np.full((gap, line.shape[1]), 255, np.uint8))][:-1])
    import cv2

    from cxr_runtime.io import atomic_write_bytes

    ok, buf = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])  # the smallest file: docs/ figures
    atomic_write_bytes(args.out, buf.tobytes())
    print(f"wrote {args.out}: rows {', '.join(args.keys)}, then real held-out image {i}; columns: the image at 2x, "
          f"{', '.join(REGIONS)} at 4x ({Path(args.out).stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("keys", nargs="+", help="NAME@STEP:WEIGHTS of scored models (the sweep's row keys), "
                                      "NAME@STEP:WEIGHTS/CLASS for one class of a labelled model")
    ap.add_argument("--runs", default=os.environ.get("CXR_RUNS", str(Path.home() / "cxr-runs")))
    ap.add_argument("--real", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "kermany-cxr"
                                          / "heldout" / "NORMAL"))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=96, help="side of each tile in pixels")
    ap.add_argument("--out", required=True)
    ap.add_argument("--crops", action="store_true", help="full-size crops of one image per row (see above)")
    ap.add_argument("--index", type=int, default=0, help="with --crops: which sample (and real image) to show")
    args = ap.parse_args()
    if args.crops:
        return crops(args)

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
