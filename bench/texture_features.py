"""Which texture features tell generated images from real ones, and where in the image.

For each folder of generated images (and the training images, as the real-vs-real reference):
- the texture AUC (cxr_runtime.quality.c2st_auc on texture_stats, features standardised on the
  held-out set) of the whole image and of its central crop (lungs and mediastinum, no borders);
- the median fine-detail kurtosis of the whole image, of the central crop and of the border frame
  (collimation edges, side markers, burned-in text);
- each feature's own AUC against the held-out images (0.5: no difference; 0 or 1: that feature
  alone tells every image), for the features that separate most.

    .venv/bin/python bench/texture_features.py --heldout DIR --train DIR NAME=SAMPLES [NAME=SAMPLES ...]
        [--n 300] [--top 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from cxr_runtime import quality as q
from cxr_runtime.images import load_folder
from cxr_runtime.quality import auc_of

CENTRE = (slice(24, 104), slice(24, 104))  # 80x80 of 128x128
BORDER = 16  # px of the frame


def kurtosis_by_region(images: np.ndarray) -> dict[str, float]:
    """Median fine-detail kurtosis (image minus its sigma-1 blur) of the whole image, the centre
    and the border frame."""
    full, centre, border = [], [], []
    b = BORDER
    for x in images:
        d = x - cv2.GaussianBlur(x, (0, 0), q.DETAIL_SIGMA)
        full.append(q._kurtosis(d))
        centre.append(q._kurtosis(d[CENTRE]))
        border.append(q._kurtosis(np.concatenate([d[:b].ravel(), d[-b:].ravel(), d[b:-b, :b].ravel(),
                                                d[b:-b, -b:].ravel()])))
    return {"full": float(np.median(full)), "centre": float(np.median(centre)), "border": float(np.median(border))}


def analyse(held: np.ndarray, sets: dict[str, np.ndarray], top: int) -> dict:
    names = q.texture_feature_names()
    out = {"held-out": {"kurtosis": kurtosis_by_region(held), "images": len(held)}, "sets": {}}
    hf = {region: q.texture_stats(held if region == "full" else held[(slice(None), *CENTRE)])[0]
          for region in ("full", "centre")}
    for name, images in sets.items():
        row = {"images": len(images), "kurtosis": kurtosis_by_region(images)}
        for region in ("full", "centre"):
            f = q.texture_stats(images if region == "full" else images[(slice(None), *CENTRE)])[0]
            zr, zf = q.standardise(hf[region], f)
            row[f"texture_auc_{region}"] = q.c2st_auc(zr, zf)
            if region == "full":
                row["feature_auc"] = {n: auc_of(f[:, j], hf["full"][:, j]) for j, n in enumerate(names)}
        out["sets"][name] = row
    generated = [n for n in sets if n != "train (real)"] or list(sets)
    spread = {n: max(abs(out["sets"][s]["feature_auc"][n] - 0.5) for s in generated) for n in names}
    out["top_features"] = sorted(names, key=lambda n: -spread[n])[:top]
    return out


def markdown(result: dict) -> str:
    feats = result["top_features"]
    k = result["held-out"]["kurtosis"]
    lines = ["| images | texture AUC (whole) | texture AUC (centre 80x80) | kurtosis whole / centre / border | "
             + " | ".join(feats) + " |", "|" + "---|" * (4 + len(feats))]
    lines.append(f"| held-out (real, {result['held-out']['images']}) | - | - | "
                 f"{k['full']:.1f} / {k['centre']:.1f} / {k['border']:.1f} |" + " - |" * len(feats))
    for name, r in result["sets"].items():
        k = r["kurtosis"]
        lines.append(f"| {name} | {r['texture_auc_full']:.2f} | {r['texture_auc_centre']:.2f} | "
                     f"{k['full']:.1f} / {k['centre']:.1f} / {k['border']:.1f} | "
                     + " | ".join(f"{r['feature_auc'][f]:.2f}" for f in feats) + " |")
    return "\n".join(lines)


def report(heldout: Path, sets: dict[str, np.ndarray], top: int, json_out: Path | None) -> dict:
    """Analyse `sets` against the held-out folder, print the markdown table, write the JSON."""
    result = analyse(np.asarray(load_folder(heldout).images), sets, top)
    print(markdown(result))
    if json_out:
        json_out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heldout", type=Path, required=True, help="Real images never trained on.")
    ap.add_argument("--train", type=Path, help="The training images (the real-vs-real reference row).")
    ap.add_argument("sets", nargs="+", metavar="NAME=DIR", help="Generated images to analyse.")
    ap.add_argument("--n", type=int, default=300, help="Images per generated folder (the first N by name).")
    ap.add_argument("--top", type=int, default=8, help="Features shown: those that separate most.")
    ap.add_argument("--json", type=Path, help="Write the full result (every feature's AUC) here.")
    a = ap.parse_args(argv)
    sets = {}
    if a.train:
        sets["train (real)"] = load_folder(a.train).images
    for spec in a.sets:
        name, sep, folder = spec.partition("=")
        if not sep:
            ap.error(f"{spec!r}: expected NAME=DIR")
        sets[name] = np.asarray(load_folder(folder, duplicates="keep").images[: a.n])
    report(a.heldout, sets, a.top, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
