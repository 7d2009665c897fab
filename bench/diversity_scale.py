"""Is the diversity gap fine texture or structure? Diversity (mean SSIM among the images of a
set, docs/metrics.md) of a generated and a real folder, each set blurred alike by a Gaussian of
growing sigma before scoring. If the generated images were only missing the real images' fine
grain (film noise, sharp edges), blurring both would close the gap; if the gap stays, the
generated images are more alike than the patients in their coarse structure (pose, framing,
size of the chest, density), and the lever has to act on structure.

    python bench/diversity_scale.py --fake ~/cxr-runs/long-s0/scores/step-000003000-ema/samples \\
        --real ../shared/data/kermany-cxr/heldout/NORMAL
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from cxr_runtime.images import load_folder
from cxr_runtime.onnx_metrics import OnnxScorer
from cxr_runtime.quality import diversity


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return images
    return np.stack([cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), sigma) for x in images])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fake", required=True, help="a generated folder (e.g. a sweep score's samples/)")
    ap.add_argument("--real", required=True, help="a real folder (the held-out NORMAL images)")
    ap.add_argument("--sigmas", default="0,0.7,1,1.5,2,3", help="Gaussian sigmas in pixels at 128x128")
    ap.add_argument("--max-images", type=int, default=200, help="images per set scored (diversity's default)")
    args = ap.parse_args()
    scorer = OnnxScorer(device="cpu")
    fake = load_folder(args.fake, duplicates="keep").images
    real = load_folder(args.real).images
    print(f"{len(fake)} generated images ({args.fake}), {len(real)} real ({args.real}); "
          f"diversity over at most {args.max_images} of each\n")
    print("| blur sigma (px) | generated | real | gap |")
    print("|---|---|---|---|")
    for sigma in (float(s) for s in args.sigmas.split(",")):
        g = diversity(blurred(fake, sigma), scorer, args.max_images)
        r = diversity(blurred(real, sigma), scorer, args.max_images)
        print(f"| {sigma:g} | {g:.3f} | {r:.3f} | {g - r:+.3f} |")
    hf = {name: float((x - blurred(x, 1.0)).std()) for name, x in (("generated", fake), ("real", real))}
    print(f"\nfine detail (std of image minus its sigma-1 blur, images in [-1, 1]): "
          f"generated {hf['generated']:.4f}, real {hf['real']:.4f}")


if __name__ == "__main__":
    main()
