"""Memorisation audit: does a generator reproduce its training patients?

For every generated image, its nearest training image, found in two stages so 10,000 x
1,000 comparisons stay fast:
1. candidates: the same shift-tolerant similarity at half resolution, computed against
   *every* training image: the central 54x54 crop of the 64x64 area-downsampled image slid
   +-5 px (+-10 px at full size) over each downsampled training image, all 121 shifts of all
   training images at once as one matrix product of unit-normalised windows. The TOP_K
   best training images go on. (An earlier pre-filter, the plain correlation of unshifted
   32x32 thumbnails, lost the true source of 10 of 138 shifted and noised training copies
   among look-alike X-rays; tests/runtime/test_audit_report.py checks that this stage finds
   the source of shifted, noised and blurred copies of all 138 training images.)
2. similarity: normalised cross-correlation of the generated image's central 108x108 crop
   slid +-10 px over each candidate (`cv2.matchTemplate`, TM_CCOEFF_NORMED), maximum over
   the shifts. SSIM of the best candidate is reported beside it.

Why NCC and not SSIM for the verdict: nearest-neighbour SSIM does not recognise a training
image shifted by 3 pixels (PAPER.md), the shift-tolerant NCC does. Images at or above
THRESHOLD are flagged; its calibration (held-out patients below it, copies of training
images above it) is in docs/metrics.md. Held-out real images, audited the same way, give the
scale of an honest result.
"""

from __future__ import annotations

import numpy as np

TOP_K = 5
CROP = 108  # central crop of the generated image; the slide covers +-(128-108)/2 = +-10 px
THRESHOLD = 0.92  # between unseen patients and copies of training images (calibration: docs/metrics.md)


def _half(images: np.ndarray) -> np.ndarray:
    import cv2

    size = images.shape[1] // 2
    return np.stack([cv2.resize(np.asarray(im, np.float32), (size, size), interpolation=cv2.INTER_AREA)
                     for im in images])


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (TM_CCOEFF_NORMED's normalisation)."""
    x = x - x.mean(axis=1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def candidate_scores(queries: np.ndarray, train: np.ndarray, block: int = 16) -> np.ndarray:
    """(N, T) shift-tolerant NCC at half resolution of every query against every training
    image: the query's central crop (CROP / 2) slid over all positions of the training image."""
    q_half, t_half = _half(queries), _half(train)
    half, crop = q_half.shape[1], CROP // 2
    lo = (half - crop) // 2
    q = _unit_rows(q_half[:, lo : lo + crop, lo : lo + crop].reshape(len(queries), -1).astype(np.float32))
    shifts = half - crop + 1
    out = np.empty((len(queries), len(train)), np.float32)
    for b in range(0, len(train), block):
        chunk = t_half[b : b + block]
        # every crop-sized window of every training image in the block: (block * shifts^2, crop^2)
        windows = np.lib.stride_tricks.sliding_window_view(chunk, (crop, crop), axis=(1, 2))
        w = _unit_rows(windows.reshape(-1, crop * crop).astype(np.float32))
        scores = (q @ w.T).reshape(len(queries), len(chunk), shifts * shifts)
        out[:, b : b + len(chunk)] = scores.max(axis=2)
    return out


def nearest(queries: np.ndarray, train: np.ndarray, top_k: int = TOP_K, progress=None) -> dict[str, np.ndarray]:
    """For each query image (N, S, S) in [-1, 1]: index of its nearest training image, the
    shift-tolerant NCC with it, and the SSIM with the same image."""
    import cv2

    from cxr_runtime.metrics import ssim

    queries, train = np.asarray(queries, np.float32), np.asarray(train, np.float32)
    size = queries.shape[1]
    if train.shape[1:] != queries.shape[1:] or size <= CROP:
        raise ValueError(f"images must share one size larger than {CROP}x{CROP}")
    k = min(top_k, len(train))
    scores = candidate_scores(queries, train)
    candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    lo = (size - CROP) // 2
    idx = np.empty(len(queries), np.int64)
    ncc = np.empty(len(queries))
    for i, q in enumerate(queries):
        crop = np.ascontiguousarray(q[lo : lo + CROP, lo : lo + CROP])
        best = [float(cv2.matchTemplate(train[j], crop, cv2.TM_CCOEFF_NORMED).max()) for j in candidates[i]]
        b = int(np.argmax(best))
        idx[i], ncc[i] = candidates[i][b], best[b]
        if progress and (i + 1) % 256 == 0:
            progress(i + 1)
    return {"index": idx, "ncc": ncc, "ssim": np.asarray(ssim(queries, train[idx]))}


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in zip(("min", "p50", "p90", "p99", "max"),
                                        np.quantile(x, [0.0, 0.5, 0.9, 0.99, 1.0]))}


def audit(fake: np.ndarray, train: np.ndarray, heldout: np.ndarray | None = None,
          threshold: float = THRESHOLD, top_k: int = TOP_K, progress=None) -> dict:
    """The audit's numbers: per-image nearest neighbours, flags, and the distributions."""
    nn = nearest(fake, train, top_k, progress)
    flagged = np.flatnonzero(nn["ncc"] >= threshold)
    summary = {
        "threshold": threshold,
        "similarity": f"max normalised cross-correlation of the central {CROP}x{CROP} crop over +-10 px shifts",
        "generated": len(fake),
        "training": len(train),
        "flagged": int(len(flagged)),
        "flagged_share": float(len(flagged) / len(fake)),
        "nn_ncc": _quantiles(nn["ncc"]),
        "nn_ssim": _quantiles(nn["ssim"]),
    }
    result = {"summary": summary, "nn": nn, "flagged": flagged}
    if heldout is not None and len(heldout):
        ref = nearest(heldout, train, top_k)
        summary["heldout"] = {
            "images": len(heldout),
            "flagged_share": float(np.mean(ref["ncc"] >= threshold)),
            "nn_ncc": _quantiles(ref["ncc"]),
            "nn_ssim": _quantiles(ref["ssim"]),
        }
        result["heldout_nn"] = ref
    return result
