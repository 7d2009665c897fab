"""Memorisation audit: does a generator reproduce its training patients?

A generated image is flagged when it is a training image up to a small geometric and
photometric change: a shift, a left-right mirror, a zoom of 0.9-1.15, a rotation of up to
+-8 degrees, a change of brightness, contrast or gamma, blur, noise, compression, or a blend
in which one training image dominates. Each generated image is compared with every
training image in two stages, so 10,000 x 1,000 comparisons stay within minutes:

1. candidates (transform-tolerant): every training image and its mirror image, zoomed by
   each of ZOOMS and rotated by each of ANGLES (50 variants), is area-downsampled to 32x32
   and its central 24x24 crop kept; the generated image, downsampled the same way, is
   slid under each crop (+-4 px at 32x32, +-16 px at 128x128). The normalised
   cross-correlation (NCC) of all windows with all variants is one matrix product; a
   training image's candidate score is its best variant at its best shift. The TOP_K best
   training images go on, each with the variant and shift that matched.
2. verification (registration): each candidate is registered onto the generated image by
   an affine fit (OpenCV's ECC, `cv2.findTransformECC`, started from the candidate stage's
   variant and shift), and two similarities are measured over the central region where
   both images have content:
   - `ncc`: the NCC of the intensities (blind to brightness and contrast);
   - `detail`: the NCC of the fine detail, a band-pass (difference of Gaussians, sigma 0.8
     and 2.5 px at 128x128) of both images: the rib borders, vessels, markers and text
     that make one radiograph one patient's. Unseen patients share the anatomy's layout
     (`ncc` up to about 0.94 after registration) but not this detail (`detail` at most
     about 0.7); a copy keeps it (0.82 for a 70/30 blend, 0.9 or more for the rest).
   An image is flagged when `detail >= DETAIL_THRESHOLD` or `ncc >= THRESHOLD` (the second
   catches a copy blurred or noised until its detail is gone). The thresholds are
   calibrated on real patients never trained on (none flagged) against copies of each kind
   (bench/audit_calibration.py; its table is in docs/metrics.md, with where the audit is
   still blind).

What a clean audit proves: no generated image is a training image under these
transformations (see docs/metrics.md for the ranges). It does not prove that no patient
can be recognised from a generated image, nor that a training image could not be told
from others by an attack on the model (membership inference).

Why not SSIM: nearest-neighbour SSIM does not recognise a training image shifted by three
pixels; the registered NCC does. SSIM of the nearest candidate is reported beside it.
"""

from __future__ import annotations

import numpy as np

TOP_K = 8
THRESHOLD = 0.97  # registered intensity NCC (calibration: docs/metrics.md, bench/audit_calibration.py)
DETAIL_THRESHOLD = 0.75  # registered fine-detail NCC (same calibration)
MIN_SIZE = 64  # smaller images carry too little detail to audit
GRID = 32  # the candidate stage's resolution
GRID_CROP = 24  # ... and the crop of each variant slid under the generated image
ZOOMS = tuple(np.linspace(0.88, 1.16, 5))  # the candidate stage's variants: 2 mirrors x 5 zooms x 5 angles
ANGLES = tuple(np.linspace(-9.0, 9.0, 5))
VARIANTS = tuple((m, z, a) for m in (False, True) for z in ZOOMS for a in ANGLES)
DETAIL_SIGMAS = (0.8, 2.5)  # band-pass of the detail similarity, in pixels at 128x128
MARGIN = 14 / 128  # the border left out of the verification region, as a share of the side
SIMILARITY = ("affine-registered normalised cross-correlation of the intensities (ncc) and of the fine detail "
              "(detail: difference of Gaussians, sigma 0.8 and 2.5 px at 128x128), against the training images "
              "and their mirror images")


def _warp(img: np.ndarray, mirror: bool, zoom: float, angle: float) -> np.ndarray:
    import cv2

    size = img.shape[0]
    src = np.ascontiguousarray(img[:, ::-1]) if mirror else img
    m = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, zoom)
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _small(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(np.asarray(img, np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (so a dot product is an NCC)."""
    x = x - x.mean(axis=1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def training_bank(train: np.ndarray) -> np.ndarray:
    """(T * len(VARIANTS), GRID_CROP**2): every variant of every training image, unit rows."""
    lo = (GRID - GRID_CROP) // 2
    rows = [_small(_warp(t, *v))[lo : lo + GRID_CROP, lo : lo + GRID_CROP] for t in train for v in VARIANTS]
    return _unit_rows(np.stack(rows).reshape(len(rows), -1))


def _windows(queries: np.ndarray) -> np.ndarray:
    """(N * shifts, GRID_CROP**2): every GRID_CROP window of each query at GRID x GRID, unit rows."""
    small = np.stack([_small(q) for q in queries])
    w = np.lib.stride_tricks.sliding_window_view(small, (GRID_CROP, GRID_CROP), axis=(1, 2))
    return _unit_rows(w.reshape(-1, GRID_CROP * GRID_CROP))


def candidate_scores(queries: np.ndarray, train: np.ndarray, *, bank: np.ndarray | None = None,
                     sides: bool = False, query_block: int = 16, train_block: int = 400):
    """(N, T) transform-tolerant NCC at 32x32 of every query against every training image: its best
    variant at its best shift. With `sides`, the training image and its mirror image apart:
    (N, T, 2) scores, and (N, T, 2) indices into VARIANTS and into the shifts (row-major) of the
    best match of each side (a nearly symmetric chest can match its mirror image a little
    better than itself, so each side is a candidate of its own)."""
    queries = np.asarray(queries, np.float32)
    bank = training_bank(np.asarray(train, np.float32)) if bank is None else bank
    nv, shifts = len(VARIANTS), (GRID - GRID_CROP + 1) ** 2
    half = nv // 2  # VARIANTS: the unmirrored first, then the mirrored
    n, t = len(queries), len(bank) // nv
    score = np.empty((n, t, 2), np.float32)
    variant = np.empty((n, t, 2), np.int32)
    window = np.empty((n, t, 2), np.int32)
    for a in range(0, n, query_block):
        w = _windows(queries[a : a + query_block])
        for b in range(0, t, train_block):
            tb = min(train_block, t - b)
            s = (w @ bank[b * nv : (b + tb) * nv].T).reshape(-1, shifts, tb, 2, half)
            s = s.transpose(0, 2, 3, 1, 4).reshape(s.shape[0], tb, 2, shifts * half)
            best = s.argmax(axis=3)
            rows, cols = slice(a, a + len(s)), slice(b, b + tb)
            score[rows, cols] = np.take_along_axis(s, best[..., None], 3)[..., 0]
            window[rows, cols] = best // half
            variant[rows, cols] = best % half + np.array([0, half])
    return (score, variant, window) if sides else score.max(axis=2)


def _initial_warp(size: int, variant: int, window: int) -> tuple[bool, np.ndarray]:
    """The affine map (query pixel -> training pixel, after the mirror) the candidate stage found."""
    import cv2

    mirror, zoom, angle = VARIANTS[variant]
    side = GRID - GRID_CROP + 1
    oy, ox = divmod(int(window), side)
    lo = (GRID - GRID_CROP) // 2
    d = np.array([(ox - lo) * size / GRID, (oy - lo) * size / GRID])
    inv = cv2.invertAffineTransform(cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, zoom))
    w = inv.copy()
    w[:, 2] = inv[:, :2] @ (-d) + inv[:, 2]
    return mirror, w.astype(np.float32)


def _band(img: np.ndarray) -> np.ndarray:
    import cv2

    k = img.shape[0] / 128
    return cv2.GaussianBlur(img, (0, 0), DETAIL_SIGMAS[0] * k) - cv2.GaussianBlur(img, (0, 0), DETAIL_SIGMAS[1] * k)


def _masked_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    a, b = a[mask].astype(np.float64), b[mask].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _region(size: int) -> np.ndarray:
    m = int(round(size * MARGIN))
    mask = np.zeros((size, size), np.uint8)
    mask[m : size - m, m : size - m] = 1
    return mask


def register(query: np.ndarray, train_img: np.ndarray, mirror: bool = False,
             warp: np.ndarray | None = None) -> dict:
    """Register `train_img` (mirrored first if `mirror`) onto `query` by an affine ECC fit from
    `warp` (2x3, query pixel -> training pixel; identity if None). Returns the registered
    training image, the warp, and the intensity and fine-detail NCC over the verification
    region (the central part where the registered image has content)."""
    import cv2

    size = query.shape[0]
    q = np.ascontiguousarray(query, np.float32)
    src = np.ascontiguousarray(train_img[:, ::-1] if mirror else train_img, np.float32)
    w = np.eye(2, 3, dtype=np.float32) if warp is None else np.asarray(warp, np.float32).copy()
    region = _region(size)
    try:
        _, w = cv2.findTransformECC(q, src, w, cv2.MOTION_AFFINE,
                                    (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5), region, 3)
    except cv2.error:  # no convergence (e.g. a blank image): the starting warp stands
        pass
    flags = cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP
    registered = cv2.warpAffine(src, w, (size, size), flags=flags, borderMode=cv2.BORDER_REFLECT)
    inside = cv2.warpAffine(np.ones_like(src), w, (size, size), flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                            borderValue=0)
    mask = (region > 0) & (cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0)
    if mask.sum() < size * size // 8:  # the fit drifted off the image: no meaningful overlap
        return {"registered": registered, "warp": w, "ncc": 0.0, "detail": 0.0}
    return {"registered": registered, "warp": w, "ncc": _masked_ncc(q, registered, mask),
            "detail": _masked_ncc(_band(q), _band(registered), mask)}


def copy_score(ncc, detail, threshold: float = THRESHOLD, detail_threshold: float = DETAIL_THRESHOLD):
    """max(ncc / threshold, detail / detail_threshold): at 1 or above the image is flagged."""
    return np.maximum(np.asarray(ncc) / threshold, np.asarray(detail) / detail_threshold)


def nearest(queries: np.ndarray, train: np.ndarray, top_k: int = TOP_K, progress=None, *,
            threshold: float = THRESHOLD, detail_threshold: float = DETAIL_THRESHOLD,
            bank: np.ndarray | None = None, workers: int | None = None) -> dict[str, np.ndarray]:
    """For each query image (N, S, S) in [-1, 1]: its nearest training image (of the candidates,
    the one with the highest copy score), the registered intensity NCC and fine-detail NCC with
    it, whether it was matched mirrored, and the SSIM with the same training image unregistered.
    The registrations run on `workers` threads (default: the usable cores; OpenCV releases the
    GIL), each image's alone, so the result does not depend on their number."""
    from concurrent.futures import ThreadPoolExecutor

    from cxr_runtime.metrics import ssim
    from cxr_runtime.session import usable_cores

    queries, train = np.asarray(queries, np.float32), np.asarray(train, np.float32)
    size = queries.shape[1]
    if train.shape[1:] != queries.shape[1:] or size < MIN_SIZE or queries.shape[1] != queries.shape[2]:
        raise ValueError(f"images must be square and share one size of at least {MIN_SIZE}x{MIN_SIZE}")
    scores, variant, window = candidate_scores(queries, train, bank=bank, sides=True)
    flat = scores.reshape(len(queries), -1)  # (N, 2T): each training image, then its mirror image
    candidates = np.argsort(-flat, axis=1, kind="stable")[:, : min(top_k, flat.shape[1])]
    n = len(queries)
    out = {"index": np.empty(n, np.int64), "ncc": np.empty(n), "detail": np.empty(n),
           "mirrored": np.zeros(n, bool), "candidate": np.empty(n)}
    warps = np.empty((n, 2, 3), np.float32)

    def verify(i: int):  # the candidate with the highest copy score after registration
        best = None
        for c in candidates[i]:
            j, side = divmod(int(c), 2)
            mirror, w0 = _initial_warp(size, variant[i, j, side], window[i, j, side])
            r = register(queries[i], train[j], mirror, w0)
            s = float(copy_score(r["ncc"], r["detail"], threshold, detail_threshold))
            if best is None or s > best[0]:
                best = (s, j, mirror, r["ncc"], r["detail"], r["warp"], flat[i, c])  # not the image: memory
        return best[1:]

    with ThreadPoolExecutor(max(1, min(workers or usable_cores(), n))) as pool:
        for i, (j, mirror, ncc, detail, warp, cand) in enumerate(pool.map(verify, range(n))):  # in order
            out["index"][i], out["ncc"][i], out["detail"][i], out["mirrored"][i] = j, ncc, detail, mirror
            out["candidate"][i] = cand
            warps[i] = warp
            if progress and (i + 1) % 256 == 0:
                progress(i + 1)
    out["warp"] = warps
    out["ssim"] = np.asarray(ssim(queries, train[out["index"]]))
    return out


def flagged(nn: dict, threshold: float = THRESHOLD, detail_threshold: float = DETAIL_THRESHOLD) -> np.ndarray:
    """Boolean per image: a copy of a training image by the audit's rule."""
    return (np.asarray(nn["ncc"]) >= threshold) | (np.asarray(nn["detail"]) >= detail_threshold)


def registered_pair(query: np.ndarray, train_img: np.ndarray, nn: dict, i: int) -> np.ndarray:
    """The training image of row i of `nearest`, mirrored and registered onto the query as the
    audit compared them."""
    import cv2

    size = query.shape[0]
    src = np.ascontiguousarray(train_img[:, ::-1] if nn["mirrored"][i] else train_img, np.float32)
    return cv2.warpAffine(src, nn["warp"][i], (size, size), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in zip(("min", "p50", "p90", "p99", "max"),
                                        np.quantile(x, [0.0, 0.5, 0.9, 0.99, 1.0]))}


def audit(fake: np.ndarray, train: np.ndarray, heldout: np.ndarray | None = None,
          threshold: float = THRESHOLD, top_k: int = TOP_K, progress=None,
          detail_threshold: float = DETAIL_THRESHOLD) -> dict:
    """The audit's numbers: per-image nearest neighbours, flags, and the distributions."""
    train = np.asarray(train, np.float32)
    bank = training_bank(train)
    nn = nearest(fake, train, top_k, progress, threshold=threshold, detail_threshold=detail_threshold, bank=bank)
    hits = np.flatnonzero(flagged(nn, threshold, detail_threshold))
    summary = {
        "threshold": threshold,
        "detail_threshold": detail_threshold,
        "similarity": SIMILARITY,
        "rule": f"flagged when ncc >= {threshold:g} or detail >= {detail_threshold:g}",
        "proves": ("no generated image is a training image up to a shift of +-16 px, a left-right mirror, a zoom "
                   "of 0.9-1.15, a rotation of +-8 degrees, brightness, contrast or gamma, mild blur, noise or "
                   "compression, or a blend with at least 70 % of one training image (docs/metrics.md)"),
        "generated": len(fake),
        "training": len(train),
        "flagged": int(len(hits)),
        "flagged_share": float(len(hits) / len(fake)),
        "mirrored_nearest": int(nn["mirrored"].sum()),
        "nn_ncc": _quantiles(nn["ncc"]),
        "nn_detail": _quantiles(nn["detail"]),
        "nn_ssim": _quantiles(nn["ssim"]),
    }
    result = {"summary": summary, "nn": nn, "flagged": hits}
    if heldout is not None and len(heldout):
        ref = nearest(heldout, train, top_k, threshold=threshold, detail_threshold=detail_threshold, bank=bank)
        summary["heldout"] = {
            "images": len(heldout),
            "flagged_share": float(np.mean(flagged(ref, threshold, detail_threshold))),
            "nn_ncc": _quantiles(ref["ncc"]),
            "nn_detail": _quantiles(ref["detail"]),
            "nn_ssim": _quantiles(ref["ssim"]),
        }
        result["heldout_nn"] = ref
    return result
