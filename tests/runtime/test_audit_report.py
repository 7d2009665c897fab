"""Memorisation audit and HTML report on real X-rays."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cxr_runtime import audit as au
from cxr_runtime.cli import main
from cxr_runtime.images import load_folder, to_uint8


def _write_set(folder, images):
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        ok, buf = cv2.imencode(".png", to_uint8(im))
        (folder / f"img-{i:04d}.png").write_bytes(buf.tobytes())
    return folder


@pytest.fixture(scope="module")
def sets(kermany, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    train = load_folder(kermany / "train" / "NORMAL").images
    rng = np.random.default_rng(0)
    copies = np.concatenate([
        train[:8],  # a "generator" that returns training images
        np.roll(train[8:16], (3, -2), axis=(1, 2)),  # ... shifted by a few pixels
        np.clip(train[16:24] + rng.normal(0, 0.05, (8, 128, 128)).astype(np.float32), -1, 1),  # ... noised
        np.stack([cv2.GaussianBlur(i, (0, 0), 1.0) for i in train[24:32]]),  # ... blurred
    ])
    return {"copies": _write_set(tmp / "copies", copies), "train": kermany / "train" / "NORMAL",
            "heldout": kermany / "heldout" / "NORMAL", "tmp": tmp}


def test_copies_are_all_flagged(sets, tmp_path):
    out = tmp_path / "audit"
    r = CliRunner().invoke(main, ["audit", "--fake", str(sets["copies"]), "--train", str(sets["train"]),
                                  "--heldout", str(sets["heldout"]), "--out", str(out)])
    assert r.exit_code == 1, r.output  # a release gate
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flagged"] == 32 and summary["flagged_share"] == 1.0
    assert summary["heldout"]["flagged_share"] == 0.0
    assert len(list((out / "flagged").glob("pair-*.png"))) == 32
    pair = cv2.imread(str(out / "flagged" / "pair-000000.png"), cv2.IMREAD_UNCHANGED)
    assert pair.shape == (128, 260)
    # the nearest training image found is the right one
    first = summary["nearest"][0]
    assert first["ncc"] > 0.99 and first["training"] == sorted(p.name for p in sets["train"].iterdir())[0]


def test_held_out_patients_are_not_flagged(sets, tmp_path):
    r = CliRunner().invoke(main, ["audit", "--fake", str(sets["heldout"]), "--train", str(sets["train"]),
                                  "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["flagged"] == 0 and summary["nn_ncc"]["max"] < au.THRESHOLD


def test_ssim_alone_would_miss_the_shifted_copies(sets):
    """Why the audit uses shift-tolerant NCC: nearest-neighbour SSIM of shifted copies stays
    at the level of unseen patients."""
    train = load_folder(sets["train"]).images
    held = load_folder(sets["heldout"]).images
    shifted = np.roll(train[8:16], (3, -2), axis=(1, 2))
    nn_shift = au.nearest(shifted, train)
    nn_held = au.nearest(held, train)
    assert nn_shift["ncc"].min() > au.THRESHOLD > nn_held["ncc"].max()
    assert np.median(nn_shift["ssim"]) < nn_held["ssim"].max() + 0.2


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.ids, self.rows, self.svg = [], set(), 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "tr":
            self.rows += 1
        if tag == "svg":
            self.svg += 1


def test_report_is_self_contained_and_complete(sets, tmp_path):
    out = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", "--fake", str(sets["copies"]), "--real", str(sets["heldout"]),
                                  "--train", str(sets["train"]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    p = _Collect()
    p.feed(page)
    assert {"grid", "metrics", "histogram", "pairs"} <= p.ids
    from cxr_runtime.quality import QUALITY_METRICS

    assert p.rows == 1 + 2 + len(QUALITY_METRICS) and p.svg == 1  # header, SSIM, MSE, the metric table; a histogram
    assert "32 of 32 generated images flagged" in page
    assert len(p.imgs) == 1 + 24  # the grid and the (capped) flagged pairs
    for src in p.imgs:  # every picture is embedded and decodes
        assert src.startswith("data:image/png;base64,")
        img = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.size > 0
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in page


@pytest.mark.parametrize("damage", ["noise", "blur"])
def test_every_training_image_shifted_up_to_10px_and_damaged_is_flagged(kermany, damage):
    """The candidate stage's recall on copies of all 138 training images: each shifted by up
    to +-10 px in both axes and noised (sigma 6 of 255) or blurred (sigma 1 px) must come
    back with its own source and be flagged. (The earlier thumbnail pre-filter flagged 65 and
    72 of 138 of these, and 130 of 138 with shifts of at most 4 px.)"""
    train = load_folder(kermany / "train" / "NORMAL").images
    rng = np.random.default_rng(7)
    copies = []
    for im in train:
        dy, dx = (int(v) for v in rng.integers(-10, 11, 2))
        x = cv2.warpAffine(im, np.float32([[1, 0, dx], [0, 1, dy]]), (128, 128), borderMode=cv2.BORDER_REFLECT)
        x = x + rng.normal(0, 6 / 127.5, x.shape).astype(np.float32) if damage == "noise" else \
            cv2.GaussianBlur(x, (0, 0), 1.0)
        copies.append(np.clip(x, -1, 1))
    copies = np.stack(copies).astype(np.float32)
    scores = au.candidate_scores(copies, train)
    assert np.all(scores.argmax(axis=1) == np.arange(len(train)))  # the source is the best candidate
    nn = au.nearest(copies, train)
    assert np.all(nn["index"] == np.arange(len(train)))
    assert np.all(nn["ncc"] >= au.THRESHOLD), nn["ncc"].min()
