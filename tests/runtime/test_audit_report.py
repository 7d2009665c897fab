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


def _warp(im, zoom=1.0, angle=0.0, dx=0, dy=0, border=cv2.BORDER_REFLECT):
    m = cv2.getRotationMatrix2D((63.5, 63.5), angle, zoom)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(im, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=-1.0)


def _copies(train, kind, rng, idx):
    """Copies of training images `idx` by one kind of change, as a generator that memorised them
    might return them (through 8 bits, as a PNG)."""
    borders = (cv2.BORDER_REFLECT, cv2.BORDER_CONSTANT, cv2.BORDER_REPLICATE)
    out = []
    for n, i in enumerate(idx):
        x = train[i]
        if kind == "mirror":
            x = x[:, ::-1]
        elif kind == "zoom":
            x = _warp(x, zoom=rng.uniform(0.9, 1.15), border=borders[n % 3])
        elif kind == "rotation":
            x = _warp(x, angle=rng.uniform(-8, 8), border=borders[n % 3])
        elif kind == "mirror+zoom+rotation+shift":
            x = _warp(np.ascontiguousarray(x[:, ::-1]), zoom=rng.uniform(0.9, 1.15), angle=rng.uniform(-8, 8),
                      dx=int(rng.integers(-8, 9)), dy=int(rng.integers(-8, 9)))
        elif kind == "brightness+contrast":
            x = np.clip(x * rng.uniform(0.75, 1.25) + rng.uniform(-0.15, 0.15), -1, 1)
        elif kind == "blend 70/30":
            x = 0.7 * x + 0.3 * train[(i + 1 + n) % len(train)]
        out.append(to_uint8(x).astype(np.float32) / 127.5 - 1.0)
    return np.stack(out)


COPY_KINDS = ("mirror", "zoom", "rotation", "mirror+zoom+rotation+shift", "brightness+contrast", "blend 70/30")


@pytest.fixture(scope="module")
def real(kermany):
    return {"train": load_folder(kermany / "train" / "NORMAL").images,
            "heldout": load_folder(kermany / "heldout" / "NORMAL").images}


@pytest.fixture(scope="module")
def sets(kermany, real, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    train = real["train"]
    rng = np.random.default_rng(0)
    copies = np.concatenate([
        train[:8],  # a "generator" that returns training images
        np.roll(train[8:16], (3, -2), axis=(1, 2)),  # ... shifted by a few pixels
        np.clip(train[16:24] + rng.normal(0, 0.05, (8, 128, 128)).astype(np.float32), -1, 1),  # ... noised
        np.stack([cv2.GaussianBlur(i, (0, 0), 1.0) for i in train[24:32]]),  # ... blurred
    ])
    warped = np.stack([_warp(train[i], zoom=rng.uniform(1.08, 1.12), angle=rng.uniform(-5, 5))
                       for i in rng.choice(len(train), 40, replace=False)])
    return {"copies": _write_set(tmp / "copies", copies), "train": kermany / "train" / "NORMAL",
            "heldout": kermany / "heldout" / "NORMAL", "warped": _write_set(tmp / "warped", warped), "tmp": tmp}


def test_copies_are_all_flagged(sets, tmp_path):
    out = tmp_path / "audit"
    r = CliRunner().invoke(main, ["audit", "--fake", str(sets["copies"]), "--train", str(sets["train"]),
                                  "--heldout", str(sets["heldout"]), "--out", str(out)])
    assert r.exit_code == 1, r.output  # a release gate
    assert "a clean audit means" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flagged"] == 32 and summary["flagged_share"] == 1.0
    assert summary["heldout"]["flagged_share"] == 0.0
    assert len(list((out / "flagged").glob("pair-*.png"))) == 32
    pair = cv2.imread(str(out / "flagged" / "pair-000000.png"), cv2.IMREAD_UNCHANGED)
    assert pair.shape == (128, 3 * 128 + 2 * 4)  # generated | training | training registered
    # the nearest training image found is the right one
    first = summary["nearest"][0]
    assert first["ncc"] > 0.99 and first["detail"] > 0.99 and not first["mirrored"]
    assert first["training"] == sorted(p.name for p in sets["train"].iterdir())[0]


@pytest.mark.parametrize("kind", COPY_KINDS)
def test_every_kind_of_copy_is_flagged_with_its_source(real, kind):
    """The audit's targets: >= 95 % of each kind flagged (here: all of 24), each with its source."""
    train = real["train"]
    rng = np.random.default_rng(COPY_KINDS.index(kind))
    idx = rng.choice(len(train), 24, replace=False)
    nn = au.nearest(_copies(train, kind, rng, idx), train)
    assert au.flagged(nn).all(), (nn["ncc"].min(), nn["detail"].min())
    assert np.all(nn["index"] == idx)
    assert nn["mirrored"].all() == kind.startswith("mirror")


def test_the_registrations_on_threads_give_the_serial_result(real):
    """nearest() registers the images on several threads: the same numbers, in the same order,
    as one thread."""
    train = real["train"]
    rng = np.random.default_rng(7)
    queries = np.concatenate([_copies(train, "mirror+zoom+rotation+shift", rng, np.arange(6)), real["heldout"][:6]])
    one = au.nearest(queries, train, workers=1)
    three = au.nearest(queries, train, workers=3)
    for key in ("index", "ncc", "detail", "mirrored", "candidate", "warp", "ssim"):
        np.testing.assert_array_equal(np.asarray(three[key]), np.asarray(one[key]), err_msg=key)
    assert au.flagged(one)[:6].all() and not au.flagged(one)[6:].any()


def test_held_out_patients_are_not_flagged(sets, tmp_path):
    r = CliRunner().invoke(main, ["audit", "--fake", str(sets["heldout"]), "--train", str(sets["train"]),
                                  "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["flagged"] == 0 and summary["nn_ncc"]["max"] < au.THRESHOLD
    assert summary["nn_detail"]["max"] < au.DETAIL_THRESHOLD


def test_the_thresholds_fire(real):
    """Lowering a threshold below the held-out patients' similarity flags them: the verdict
    reads the thresholds it is given (a rule that ignored them would pass the tests above)."""
    nn = au.nearest(real["heldout"], real["train"])
    assert not au.flagged(nn).any()
    assert au.flagged(nn, threshold=float(np.median(nn["ncc"]))).sum() >= len(nn["ncc"]) // 2
    assert au.flagged(nn, detail_threshold=float(np.median(nn["detail"]))).sum() >= len(nn["ncc"]) // 2


def test_a_generator_of_warped_training_images_is_caught_everywhere(sets, tmp_path):
    """The "generator" that returns training images zoomed 8-12 % and rotated by up to 5 degrees:
    flagged by `evaluate --train`, by `audit` (every image), and by `report`."""
    r = CliRunner().invoke(main, ["evaluate", "--fake", str(sets["warped"]), "--real", str(sets["heldout"]),
                                  "--train", str(sets["train"]), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["audit"]["flagged"] == 40
    r = CliRunner().invoke(main, ["evaluate", "--fake", str(sets["warped"]), "--real", str(sets["heldout"]),
                                  "--train", str(sets["train"]), "--device", "cpu"])
    assert "audit          40 of 40 generated images are copies" in r.output
    out = tmp_path / "audit"
    r = CliRunner().invoke(main, ["audit", "--fake", str(sets["warped"]), "--train", str(sets["train"]),
                                  "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert json.loads((out / "summary.json").read_text())["flagged"] == 40
    page = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", "--fake", str(sets["warped"]), "--real", str(sets["heldout"]),
                                  "--train", str(sets["train"]), "--out", str(page)])
    assert r.exit_code == 0, r.output
    assert "40 of 40 generated images flagged" in page.read_text()


def test_ssim_alone_would_miss_the_shifted_copies(real):
    """Why the audit registers before it compares: nearest-neighbour SSIM of shifted copies stays
    at the level of unseen patients."""
    train, held = real["train"], real["heldout"]
    shifted = np.roll(train[8:16], (3, -2), axis=(1, 2))
    nn_shift = au.nearest(shifted, train)
    nn_held = au.nearest(held, train)
    assert nn_shift["ncc"].min() > au.THRESHOLD > nn_held["ncc"].max()
    assert np.median(nn_shift["ssim"]) < nn_held["ssim"].max()


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
    back with its own source and be flagged. (An early thumbnail pre-filter flagged 65 and
    72 of 138 of these.)"""
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
    rank = (scores > scores[np.arange(len(train)), np.arange(len(train))][:, None]).sum(axis=1)
    assert rank.max() < au.TOP_K  # the source is among the candidates verified
    nn = au.nearest(copies, train)
    assert np.all(nn["index"] == np.arange(len(train)))
    assert au.flagged(nn).all(), (nn["ncc"].min(), nn["detail"].min())


def _utility_result():
    """A `cxr-utility protocols` result as the harness writes it (tests/utility builds real ones)."""
    arm = {"training_images": {"NORMAL": 10, "PNEUMONIA": 10}, "auc_ci": [0.8, 0.95], "balanced_accuracy": 0.84,
           "sensitivity": 0.76, "specificity": 0.93}
    return {"seeds": [0, 1, 2, 3, 4], "test": "heldout",
            "arms": [{**arm, "arm": "TRTR", "per_class": 10, "auc": 0.919},
                     {**arm, "arm": "real+synthetic", "per_class": 10, "auc": 0.931,
                      "training_images": {"NORMAL": 510, "PNEUMONIA": 510}}],
            "differences": [{"per_class": 10, "arm": "real+synthetic", "against": "TRTR", "difference": 0.012,
                             "ci": [-0.004, 0.027]}],
            "label_fidelity": {"10": {"NORMAL": 0.97, "PNEUMONIA": 0.912}}}


def test_report_shows_a_utility_result_and_refuses_a_file_that_is_not_one(sets, tmp_path):
    good = tmp_path / "utility.json"
    good.write_text(json.dumps(_utility_result()))
    out = tmp_path / "report.html"
    args = ["report", "--fake", str(sets["heldout"]), "--real", str(sets["heldout"]), "--train", str(sets["train"])]
    r = CliRunner().invoke(main, [*args, "--out", str(out), "--utility", str(good)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    p = _Collect()
    p.feed(page)
    assert "utility" in p.ids and "What the images do for a classifier" in page
    for cell in ("0.931 [0.800, 0.950]", "+0.012 [-0.004, +0.027]", "91.2%", "1020"):
        assert cell in page, cell
    bad = tmp_path / "bad.json"
    for text, why in (("{}", "not a `cxr-utility protocols` result"), ("not json", "is not JSON"),
                      (json.dumps({**_utility_result(), "arms": []}), "holds no trained arm")):
        bad.write_text(text)
        r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b.html"), "--utility", str(bad)])
        assert r.exit_code == 2 and why in r.output and not (tmp_path / "b.html").exists(), r.output
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "c.html"), "--utility", str(tmp_path / "none.json")])
    assert r.exit_code == 2 and "cannot read" in r.output
