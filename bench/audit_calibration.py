"""The memorisation audit's calibration table and its speed (docs/metrics.md, "Memorisation audit").

Copies: every training image once per kind of change (a generator that memorised its training set
and returns it shifted, mirrored, zoomed, rotated, relit, blurred, noised, compressed or blended),
through 8 bits as a PNG would be. Unseen patients: the held-out NORMAL and PNEUMONIA folders, the
first PNEUMONIA draw, held-out images blurred or noised, and each training image against the
training images of the other patients (its own patient's other images left out). The thresholds
(audit.THRESHOLD, audit.DETAIL_THRESHOLD) must flag every kind of copy at >= 95 % and no unseen
patient.

Speed: `audit.audit` on 500 images against the 138 training images, and on 2,000 against 1,000
(the 1,000 made of the 416 real images of the shared folders, mirrored and warped); each query's cost
is independent of the others, so 10,000 against 1,000 takes five times the second.

    .venv/bin/python bench/audit_calibration.py [--data ../shared/data/kermany-cxr] [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from cxr_runtime import audit as au
from cxr_runtime.images import load_folder, to_uint8

ROOT = Path(__file__).resolve().parents[1]


def _warp(img, zoom=1.0, angle=0.0, dx=0, dy=0, border=cv2.BORDER_REFLECT):
    m = cv2.getRotationMatrix2D((63.5, 63.5), angle, zoom)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(img, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=-1.0)


def _png(x):
    return to_uint8(x).astype(np.float32) / 127.5 - 1.0


def _jpeg(x, quality):
    ok, buf = cv2.imencode(".jpg", to_uint8(x), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 127.5 - 1.0


def copy_kinds(train: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    borders = (cv2.BORDER_REFLECT, cv2.BORDER_CONSTANT, cv2.BORDER_REPLICATE)
    n = len(train)
    other = (np.arange(n) + rng.integers(1, n, n)) % n

    def each(f):
        return np.stack([_png(f(i, x)) for i, x in enumerate(train)])

    return {
        "exact": each(lambda i, x: x),
        "shift +-10 px": each(lambda i, x: _warp(x, dx=int(rng.integers(-10, 11)), dy=int(rng.integers(-10, 11)))),
        "mirror": each(lambda i, x: x[:, ::-1]),
        "zoom 0.9-1.15": each(lambda i, x: _warp(x, zoom=rng.uniform(0.9, 1.15), border=borders[i % 3])),
        "rotation +-8 deg": each(lambda i, x: _warp(x, angle=rng.uniform(-8, 8), border=borders[i % 3])),
        "mirror + zoom + rotation + shift": each(lambda i, x: _warp(
            np.ascontiguousarray(x[:, ::-1]), zoom=rng.uniform(0.9, 1.15), angle=rng.uniform(-8, 8),
            dx=int(rng.integers(-8, 9)), dy=int(rng.integers(-8, 9)))),
        "brightness + contrast": each(lambda i, x: np.clip(x * rng.uniform(0.75, 1.25) + rng.uniform(-0.15, 0.15),
                                                           -1, 1)),
        "gamma 0.7-1.4": each(lambda i, x: ((x + 1) / 2) ** rng.uniform(0.7, 1.4) * 2 - 1),
        "blur sigma 1 + noise 0.03": each(lambda i, x: np.clip(
            cv2.GaussianBlur(x, (0, 0), 1.0) + rng.normal(0, 0.03, x.shape).astype(np.float32), -1, 1)),
        "JPEG quality 30": each(lambda i, x: _jpeg(x, 30)),
        "blend 70/30": each(lambda i, x: 0.7 * x + 0.3 * train[other[i]]),
    }


def _patient(name: str) -> str:
    m = re.search(r"IM-(\d{4})", name)
    return m.group(1) if m else name


def calibration(data: Path) -> dict:
    train_set = load_folder(data / "train" / "NORMAL")
    train, names = train_set.images, [Path(f).name for f in train_set.files]
    rng = np.random.default_rng(2026)
    rows = []
    bank = au.training_bank(train)
    for kind, images in copy_kinds(train, rng).items():
        nn = au.nearest(images, train, bank=bank)
        rows.append({"set": kind, "kind": "copy", "images": len(images), "flagged": int(au.flagged(nn).sum()),
                     "right_source": int((nn["index"] == np.arange(len(train))).sum()),
                     "ncc_min": float(nn["ncc"].min()), "ncc_p50": float(np.median(nn["ncc"])),
                     "detail_min": float(nn["detail"].min()), "detail_p5": float(np.quantile(nn["detail"], 0.05)),
                     "detail_p50": float(np.median(nn["detail"]))})
        print(f"{kind}: {rows[-1]['flagged']}/{len(images)} flagged", file=sys.stderr)
    held = load_folder(data / "heldout" / "NORMAL").images
    unseen = {"held-out NORMAL": held,
              "held-out PNEUMONIA": load_folder(data / "heldout" / "PNEUMONIA").images,
              "PNEUMONIA (first draw)": load_folder(data / "PNEUMONIA").images,
              "held-out NORMAL, blur sigma 1": np.stack([cv2.GaussianBlur(x, (0, 0), 1.0) for x in held]),
              "held-out NORMAL, noise 0.03": np.clip(held + rng.normal(0, 0.03, held.shape).astype(np.float32), -1, 1)}
    for name, images in unseen.items():
        nn = au.nearest(np.stack([_png(x) for x in images]), train, bank=bank)
        rows.append(_negative(name, nn))
    keys = [_patient(n) for n in names]
    loo = {"ncc": [], "detail": []}
    for i in range(len(train)):
        keep = [j for j in range(len(train)) if keys[j] != keys[i]]
        nn = au.nearest(train[i : i + 1], train[keep])
        loo["ncc"].append(nn["ncc"][0])
        loo["detail"].append(nn["detail"][0])
    rows.append(_negative("training images vs the other patients' training images",
                          {k: np.asarray(v) for k, v in loo.items()}))
    return {"threshold": au.THRESHOLD, "detail_threshold": au.DETAIL_THRESHOLD, "rows": rows}


def _negative(name, nn) -> dict:
    hits = (np.asarray(nn["ncc"]) >= au.THRESHOLD) | (np.asarray(nn["detail"]) >= au.DETAIL_THRESHOLD)
    return {"set": name, "kind": "unseen patients", "images": len(nn["ncc"]), "flagged": int(hits.sum()),
            "ncc_max": float(np.max(nn["ncc"])), "ncc_p50": float(np.median(nn["ncc"])),
            "detail_max": float(np.max(nn["detail"])), "detail_p50": float(np.median(nn["detail"]))}


def speed(data: Path) -> dict:
    real = np.concatenate([load_folder(data / sub).images for sub in
                           ("train/NORMAL", "heldout/NORMAL", "train/PNEUMONIA", "heldout/PNEUMONIA", "PNEUMONIA")])
    rng = np.random.default_rng(0)

    def warped(n):
        return np.stack([_png(_warp(real[rng.integers(len(real))], zoom=rng.uniform(0.85, 1.2),
                                    angle=rng.uniform(-15, 15), dx=int(rng.integers(-12, 13)),
                                    dy=int(rng.integers(-12, 13)))) for _ in range(n)])

    train138 = load_folder(data / "train" / "NORMAL").images
    out = {}
    for label, queries, train in (("500 x 138", warped(500), train138), ("2000 x 1000", warped(2000),
                                  np.concatenate([real, real[:, :, ::-1], warped(1000 - 2 * len(real))]))):
        t0 = time.perf_counter()
        au.audit(queries, train)
        out[label] = round(time.perf_counter() - t0, 1)
        print(f"audit {label}: {out[label]} s", file=sys.stderr)
    out["10000 x 1000 (5 x the 2000 x 1000 run)"] = round(5 * out["2000 x 1000"], 1)
    return out


def markdown(result: dict) -> str:
    lines = ["| set | images | flagged | NCC | detail | source found |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["kind"] == "copy":
            lines.append(f"| copy: {r['set']} | {r['images']} | **{r['flagged'] / r['images']:.1%}** | min "
                         f"{r['ncc_min']:.3f}, median {r['ncc_p50']:.3f} | min {r['detail_min']:.3f}, 5 % "
                         f"{r['detail_p5']:.3f}, median {r['detail_p50']:.3f} | {r['right_source']}/{r['images']} |")
        else:
            lines.append(f"| unseen: {r['set']} | {r['images']} | **{r['flagged']}** | max {r['ncc_max']:.3f}, "
                         f"median {r['ncc_p50']:.3f} | max {r['detail_max']:.3f}, median {r['detail_p50']:.3f} | - |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "kermany-cxr")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-calibration", action="store_true", help="Time the audit only (keeps the table in --out).")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "audit_calibration.json")
    args = ap.parse_args()
    from cxr_runtime.machine import cpu_name

    if args.skip_calibration:
        result = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    else:
        result = calibration(args.data)
    if not args.skip_speed:
        result["seconds"] = speed(args.data)
    result["cpu"] = cpu_name()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    if "seconds" in result:
        print("\n" + ", ".join(f"{k}: {v} s" for k, v in result["seconds"].items()) + f" ({result['cpu']})")


if __name__ == "__main__":
    main()
