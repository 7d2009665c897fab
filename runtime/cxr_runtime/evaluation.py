"""Scoring a set of generated images against real ones, as a library function: what `cxr-runtime
evaluate` prints, the report shows and a sweep stores (docs/metrics.md).

`score_sets` takes ImageSets already read (cxr_runtime.images.load_folder) and returns one dict:
SSIM and MSE by the study's paired protocol with the real-vs-real reference (`ref_ssim`,
`ref_mse`); with `quality` every metric of the table with its 95 % interval, and with `baseline`
(other real images: the training images, or a held-out set) those images scored the same way
(`quality_baseline`, the scale a generator as faithful as real data would reach); with `train`
the memorisation audit's summary. `labelled_pair` says whether two folders are labelled alike
(one subfolder per class, images.class_layout), so that each class is scored against its own
real images.
"""

from __future__ import annotations

from pathlib import Path

from cxr_runtime.errors import CxrError
from cxr_runtime.images import ImageSet, class_layout


def score_sets(fake: ImageSet, real: ImageSet, *, baseline: ImageSet | None = None,
               train: ImageSet | None = None, quality: bool = False, engine: str = "onnx", device: str = "auto", size: int = 128) -> dict:
    from cxr_runtime import metrics

    scorer = metrics
    if engine == "onnx":
        from cxr_runtime.onnx_metrics import OnnxScorer

        scorer = OnnxScorer(device=device)
    ssim, mse = scorer.paired_ssim_mse(fake.images, real.images)
    ref = scorer.real_reference(real.images) if len(real.files) >= 2 else (None, None)
    result = {
        "fake": {"folder": str(fake.root), "images": len(fake.files), "skipped": len(fake.skipped),
                 "duplicates": len(fake.duplicates), "distinct": len(fake.files) - len(fake.duplicates)},
        "real": {"folder": str(real.root), "images": len(real.files), "skipped": len(real.skipped)},
        "size": size,
        "ssim": ssim,
        "mse": mse,
        "ref_ssim": ref[0],
        "ref_mse": ref[1],
        "engine": engine,
    }
    if engine == "onnx":
        result["provider"] = scorer.provider
    if quality:
        from cxr_runtime import quality as q
        from cxr_runtime.onnx_metrics import OnnxScorer

        onnx_scorer = scorer if engine == "onnx" else OnnxScorer(device="cpu")
        real_set = q.RealSet(real.images, onnx_scorer)
        result["quality"] = real_set.score(fake.images, onnx_scorer)
        result["quality_interval"] = q.intervals(result["quality"])
        if baseline is not None:
            result["quality_baseline"] = real_set.score(baseline.images, onnx_scorer)
            result["quality_baseline_interval"] = q.intervals(result["quality_baseline"])
            result["quality_baseline"]["images"] = len(baseline.files)
    if train is not None:
        from cxr_runtime import audit as au

        if size < au.MIN_SIZE:
            raise CxrError(f"the audit needs images of at least {au.MIN_SIZE}x{au.MIN_SIZE} (size {size})")
        result["audit"] = au.audit(fake.images, train.images)["summary"]
    return result


def labelled_pair(fake_dir, real_dir) -> tuple[str, ...]:
    """The classes both folders hold one subfolder each of, or () when either is a plain folder.
    Folders with different classes are an error."""
    fake_classes, real_classes = class_layout(fake_dir), class_layout(real_dir)
    if not fake_classes or not real_classes:
        return ()
    if fake_classes != real_classes:
        raise CxrError(f"the class folders differ: {Path(fake_dir)} holds {', '.join(fake_classes)}, "
                       f"{Path(real_dir)} holds {', '.join(real_classes)}")
    return fake_classes
