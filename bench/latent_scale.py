"""Every reported metric of one exported generator's samples across latent scales, against the
training images (what `cxr-export --latent-scale auto` may look at) and against the held-out
images (what it must not look at; shown here to judge the choice, not to make it).

    python bench/latent_scale.py --model ~/cxr-runs/long-s0/scores/step-000003000-ema/generator.onnx \\
        --train ../shared/data/kermany-cxr/train/NORMAL --heldout ../shared/data/kermany-cxr/heldout/NORMAL
"""

from __future__ import annotations

import argparse

from cxr_runtime.calibration import images_at_scale
from cxr_runtime.generator import Generator, latents
from cxr_runtime.images import load_folder
from cxr_runtime.onnx_metrics import OnnxScorer
from cxr_runtime.quality import QUALITY_METRICS, RealSet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--scales", default="1.0,1.1,1.2,1.3,1.4,1.5")
    ap.add_argument("--n", type=int, default=500, help="images per scale (the sweep's 500, seed 0 latents)")
    args = ap.parse_args()
    scorer = OnnxScorer(device="cpu")
    g = Generator(args.model, device="cpu", latent_scale=1.0)
    sets = {name: RealSet(load_folder(folder).images, scorer) for name, folder in
            (("training", args.train), ("held-out", args.heldout))}
    z = latents(0, args.n, g.latent_dim, 0)
    print(f"{args.model}: {args.n} images per scale (sample seed 0), scored as `evaluate --quality` does\n")
    labels = [m.label for m in QUALITY_METRICS]
    print("| scale | against | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for scale in (float(s) for s in args.scales.split(",")):
        images = images_at_scale(g, z, scale)
        for name, real in sets.items():
            m = real.score(images, scorer)
            cells = [f"{m[q.key]:{q.short}}" + (f" ({m[q.real_key]:{q.short}})" if q.real_key else "")
                     for q in QUALITY_METRICS]
            print(f"| {scale:g} | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
