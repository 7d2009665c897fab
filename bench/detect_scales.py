"""At what scale does the learned detector tell generated images from real ones?

`cxr-utility detect` trains a small CNN to tell a folder of generated images from the real
training images (cross-validated AUC). This runs the same detector on views of both sets that
keep one range of scales only, the same view on both sides, and on two halves of the real images
(the view's own real-vs-real AUC, which should stay near 0.5):
- `full`: the images as they are;
- `blur S`: a Gaussian blur of S px (fine detail gone, the anatomy kept);
- `coarse N`: area-downsampled to NxN and bilinearly back to the full size (only the layout);
- `detail S`: the fine detail alone, x - blur_S(x), times 4 and clipped to [-1, 1] (no layout).
If the detector still separates the blurred and coarse views, what gives the samples away is
their structure, not only their texture; if it separates the detail view and not the others,
it is the texture.

    .venv/bin/python bench/detect_scales.py --real DIR NAME=DIR [NAME=DIR ...]
        [--views full,blur:1,coarse:32,detail:1] [--folds 5] [--steps 600] [--no-calibrate] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from cxr_runtime.images import load_folder

DETAIL_GAIN = 4.0  # the fine detail is a few hundredths of the [-1, 1] range: spread it


def view(images: np.ndarray, kind: str, arg: float | None) -> np.ndarray:
    """One view of a [N, S, S] float32 batch in [-1, 1] (kinds: see the module's docstring)."""
    size = images.shape[1]
    if kind == "full":
        return images
    if kind == "blur":
        return np.stack([cv2.GaussianBlur(x, (0, 0), arg) for x in images])
    if kind == "coarse":
        n = int(arg)
        return np.stack([cv2.resize(cv2.resize(x, (n, n), interpolation=cv2.INTER_AREA), (size, size),
                                    interpolation=cv2.INTER_LINEAR) for x in images])
    if kind == "detail":
        return np.clip(DETAIL_GAIN * (images - view(images, "blur", arg)), -1.0, 1.0)
    raise ValueError(f"unknown view {kind!r}: full, blur:S, coarse:N or detail:S")


def parse_views(text: str) -> list[tuple[str, str, float | None]]:
    out = []
    for item in text.split(","):
        kind, _, arg = item.partition(":")
        value = float(arg) if arg else None
        if (kind == "full") != (value is None):
            raise ValueError(f"view {item!r}: full takes no argument, the others one (blur:1, coarse:32, detail:1)")
        view(np.zeros((1, 8, 8), np.float32), kind, value if kind != "coarse" else 4)  # a bad kind fails here
        out.append((item, kind, value))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, required=True, help="Real images (the generator's training images).")
    ap.add_argument("sets", nargs="+", metavar="NAME=DIR", help="Generated images to judge.")
    ap.add_argument("--views", default="full,blur:1,coarse:32,detail:1")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=600, help="Training steps of each detector (cxr-utility's 600).")
    ap.add_argument("--no-calibrate", action="store_true", help="Skip each view's real-vs-real AUC.")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from cxr_utility import protocols

    try:
        views = parse_views(args.views)
    except ValueError as e:
        ap.error(str(e))
    sets = []
    for item in args.sets:
        name, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            ap.error(f"{item!r}: give NAME=DIR with an existing folder")
        sets.append((name, load_folder(folder).images))
    real = load_folder(args.real).images
    spec = dataclasses.replace(protocols.DETECTOR, steps=args.steps)
    halves = np.random.default_rng(0).permutation(len(real))
    a, b = halves[: len(real) // 2], halves[len(real) // 2 :]
    out = {"real": str(args.real), "images": len(real), "folds": args.folds, "steps": args.steps, "views": {}}
    for label, kind, arg in views:
        seen = view(real, kind, arg)
        row = {}
        if not args.no_calibrate:
            t = time.perf_counter()
            row["real vs real"] = protocols.detectability(seen[a], seen[b], folds=args.folds, spec=spec)["auc"]
            print(f"{label}: real vs real {row['real vs real']:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
        for name, images in sets:
            t = time.perf_counter()
            row[name] = protocols.detectability(seen, view(images, kind, arg), folds=args.folds, spec=spec)["auc"]
            print(f"{label}: {name} {row[name]:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
        out["views"][label] = row
    names = (["real vs real"] if not args.no_calibrate else []) + [n for n, _ in sets]
    print("\n| view | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for label, row in out["views"].items():
        print(f"| {label} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
