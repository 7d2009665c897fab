"""cxr-utility: labelled folders, the fixed classifier, the protocols and their intervals, the
detector's calibration, the CLI's errors; and it never reaches the GAN's packages."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cxr_utility import classifier, protocols
from cxr_utility.cli import main
from cxr_utility.data import Labelled, load_labelled, nested_subset
from cxr_utility.errors import LabelledFolderError

FAST = classifier.ClassifierSpec(channels=(4, 8), steps=40, batch_size=16)


def _toy(n: int, size: int = 32, seed: int = 0) -> Labelled:
    """Two classes anyone can tell apart: PNEUMONIA images are brighter."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.2, (2 * n, size, size)).astype(np.float32)
    x[n:] += 0.5
    return Labelled(np.clip(x, -1, 1), np.repeat([0, 1], n), ("NORMAL", "PNEUMONIA"), [f"{i}" for i in range(2 * n)])


def _write(folder, data: Labelled):
    from cxr_runtime.images import to_uint8

    for i, (im, y) in enumerate(zip(data.images, data.labels)):
        sub = folder / data.classes[y]
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"{i:04d}.png"), to_uint8(im))
    return folder


def test_the_shared_folders_load_with_both_classes(kermany):
    data = load_labelled(kermany / "train")
    assert data.classes == ("NORMAL", "PNEUMONIA") and data.counts() == {"NORMAL": 138, "PNEUMONIA": 138}
    small, mid = nested_subset(data, 10), nested_subset(data, 25)
    assert small.counts() == {"NORMAL": 10, "PNEUMONIA": 10}
    assert set(small.files) <= set(mid.files)  # nested
    with pytest.raises(LabelledFolderError, match="fewer than 139"):
        nested_subset(data, 139)


def test_a_folder_without_classes_is_refused(kermany, tmp_path):
    with pytest.raises(LabelledFolderError, match="one subfolder per class"):
        load_labelled(kermany / "train" / "NORMAL")
    with pytest.raises(LabelledFolderError, match="expected"):
        load_labelled(kermany / "train", classes=("NORMAL", "COVID"))


def test_the_classifier_learns_and_is_reproducible():
    train, test = _toy(40), _toy(20, seed=1)
    y = protocols.binary_labels(train)
    a = classifier.predict(classifier.train(train.images, y, 0, FAST), test.images)
    b = classifier.predict(classifier.train(train.images, y, 0, FAST), test.images)
    np.testing.assert_allclose(a, b, atol=1e-5)  # same seed, same model
    assert protocols.scores(a, protocols.binary_labels(test))["auc"] > 0.95


def test_augmentation_keeps_the_sides():
    """No left-right flip: an image bright on its left stays bright on its left."""
    x = -np.ones((20, 128, 128), np.float32)
    x[:, :, :40] = 1.0
    out = classifier.augment(x, np.random.default_rng(0), classifier.ClassifierSpec())
    assert np.all(out[:, :, :30].mean(axis=(1, 2)) > out[:, :, 98:].mean(axis=(1, 2)))


def test_scores_and_intervals_known_answers():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = protocols.scores(np.array([0.1, 0.2, 0.6, 0.4, 0.8, 0.9]), y)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(2 / 3)
    assert s["auc"] == pytest.approx(8 / 9)
    perfect = np.tile([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], (3, 1))
    out = protocols.summarise(perfect, y)
    assert out["auc"] == 1.0 and out["auc_ci"] == [1.0, 1.0]
    rng = np.random.default_rng(0)
    noisy = rng.uniform(size=(5, 200))
    yy = np.repeat([0, 1], 100)
    out = protocols.summarise(noisy, yy)
    assert out["auc_ci"][0] < 0.5 < out["auc_ci"][1]  # chance, and the interval says so
    d = protocols.paired_difference(noisy, noisy, yy)
    assert d["difference"] == 0.0 and d["ci"] == [0.0, 0.0]  # paired: an arm against itself


def test_the_protocols_run_with_synthetic_images():
    real, test = _toy(30), _toy(20, seed=1)
    synthetic = _toy(30, seed=2)
    result = protocols.measure(real, test, [10, 30], [0, 1], {30: synthetic}, synthetic_per_class=30, spec=FAST,
                               log=lambda m: None)
    arms = {(a["arm"], a["per_class"]) for a in result["arms"]}
    assert arms == {("TRTR", 10), ("real+classic", 10), ("TRTR", 30), ("real+classic", 30), ("TSTR", 30),
                    ("real+synthetic", 30)}
    tstr = next(a for a in result["arms"] if a["arm"] == "TSTR")
    assert tstr["training_images"] == {"NORMAL": 30, "PNEUMONIA": 30} and tstr["auc"] > 0.9
    assert set(result["label_fidelity"]["30"]) == {"NORMAL", "PNEUMONIA"}
    assert result["label_fidelity"]["30"]["PNEUMONIA"] > 0.9
    assert {(d["arm"], d["against"]) for d in result["differences"] if d["per_class"] == 30} == {
        ("real+synthetic", "TRTR"), ("real+classic", "TRTR"), ("real+synthetic", "real+classic"), ("TSTR", "TRTR")}
    table = protocols.markdown(result)
    assert "| TSTR | 30 | 60 |" in table and "label fidelity PNEUMONIA" in table


def test_the_detector_sees_damage_and_not_real_against_real():
    """Calibration on toy 'real' images with texture: blurred, noised and checkerboarded copies
    are told apart, another half of the same images is not."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.normal(0, 0.4, (80, 32, 32)).astype(np.float32), (0, 0), 0.7)
    spec = classifier.ClassifierSpec(channels=(8, 16), steps=80, batch_size=16, shift=0.0, rotation=0.0)
    cal = protocols.calibrate_detector(np.clip(base, -1, 1), folds=2, spec=spec)
    assert cal["real vs real"] < 0.75
    assert cal["real vs blur sigma 1"] > 0.9 and cal["real vs checkerboard 0.05"] > 0.9


def test_cli_protocols_and_errors(tmp_path):
    real, test = _write(tmp_path / "real", _toy(12)), _write(tmp_path / "test", _toy(8, seed=1))
    syn = _write(tmp_path / "syn", _toy(12, seed=2))
    out = tmp_path / "u.json"
    r = CliRunner().invoke(main, ["protocols", "--real", str(real), "--test", str(test), "--synthetic", f"12={syn}",
                                  "--sizes", "6,12", "--seeds", "1", "--steps", "5", "--synthetic-per-class", "12",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    assert len(result["arms"]) == 6 and out.with_suffix(".md").is_file()
    assert "| TRTR | 6 |" in r.output
    r = CliRunner().invoke(main, ["protocols", "--real", str(real / "NORMAL"), "--test", str(test), "--out", str(out)])
    assert r.exit_code == 2 and "one subfolder per class" in r.output
    r = CliRunner().invoke(main, ["protocols", "--real", str(real), "--test", str(test), "--sizes", "50",
                                  "--out", str(out)])
    assert r.exit_code == 2 and "exceed" in r.output
    r = CliRunner().invoke(main, ["protocols", "--real", str(real), "--test", str(test), "--synthetic", "x=y",
                                  "--out", str(out)])
    assert r.exit_code == 2 and "N=DIR" in r.output


def test_run_is_a_hidden_alias_of_protocols(tmp_path):
    """`cxr-utility run`, the command's earlier name, is the same command; --help lists only `protocols`."""
    import click

    ctx = click.Context(main)
    alias, command = main.get_command(ctx, "run"), main.get_command(ctx, "protocols")
    assert alias.hidden and not command.hidden
    assert alias.callback is command.callback and alias.params == command.params
    listed = CliRunner().invoke(main, ["--help"]).output
    assert "protocols" in listed and not any(line.split()[:1] == ["run"] for line in listed.splitlines())
    real, test = _write(tmp_path / "real", _toy(8)), _write(tmp_path / "test", _toy(6, seed=1))
    args = ["--real", str(real), "--test", str(test), "--sizes", "4", "--seeds", "1", "--steps", "2"]
    new = CliRunner().invoke(main, ["protocols", *args, "--out", str(tmp_path / "a.json")])
    old = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "b.json")])
    assert new.exit_code == old.exit_code == 0, old.output
    arms = [[(a["arm"], a["per_class"], a["training_images"]) for a in json.loads((tmp_path / f).read_text())["arms"]]
            for f in ("a.json", "b.json")]
    assert arms[0] == arms[1] and len(arms[0]) == 2  # TRTR and real+classic at 4 per class


def test_utility_never_reaches_the_gan():
    code = ("import sys\nfor m in ('cxr_training', 'cxr_export'): sys.modules[m] = None\n"
            "import pkgutil, importlib, cxr_utility\n"
            "for m in pkgutil.walk_packages(cxr_utility.__path__, 'cxr_utility.'): importlib.import_module(m.name)\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


class Killed(Exception):
    pass


def test_an_interrupted_measurement_resumes_from_its_seed_cache(tmp_path, monkeypatch):
    """Every trained model's predictions are kept as they come: the second measurement trains
    nothing it already has, gives the same numbers, and a changed classifier or data set is trained
    anew."""
    real, test, syn = _toy(12), _toy(8, seed=1), _toy(12, seed=2)
    spec = classifier.ClassifierSpec(channels=(4,), steps=5, batch_size=8)
    cache_path = tmp_path / "u.seeds.jsonl"
    calls, kill_at = [], [4]
    real_train = classifier.train

    def counting(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == kill_at[0]:  # the measurement is killed while the fourth model trains
            raise Killed
        return real_train(*args, **kwargs)

    monkeypatch.setattr(classifier, "train", counting)
    with pytest.raises(Killed):
        protocols.measure(real, test, [12], [0, 1], {12: syn}, 12, spec, log=lambda m: None,
                          cache=protocols.SeedCache(cache_path))
    assert len(cache_path.read_text().splitlines()) == 3
    with open(cache_path, "a") as f:
        f.write('{"key": "cut mid-li')  # the interruption cut a line: ignored, not fatal
    calls.clear()
    kill_at[0] = None
    resumed = protocols.measure(real, test, [12], [0, 1], {12: syn}, 12, spec, log=lambda m: None,
                                cache=protocols.SeedCache(cache_path))
    assert len(calls) == 8 - 3  # 4 arms x 2 seeds, 3 kept
    calls.clear()
    again = protocols.measure(real, test, [12], [0, 1], {12: syn}, 12, spec, log=lambda m: None,
                              cache=protocols.SeedCache(cache_path))
    assert calls == [] and again["arms"] == [{**a, "seconds": b["seconds"]} for a, b in zip(resumed["arms"], again["arms"])]
    assert again["label_fidelity"] == resumed["label_fidelity"]
    other = classifier.ClassifierSpec(channels=(4,), steps=6, batch_size=8)
    protocols.measure(real, test, [12], [0], None, 12, other, log=lambda m: None, cache=protocols.SeedCache(cache_path))
    assert len(calls) == 2  # another classifier: nothing reused
    calls.clear()
    protocols.measure(real, _toy(8, seed=5), [12], [0], None, 12, spec, log=lambda m: None,
                      cache=protocols.SeedCache(cache_path))
    assert len(calls) == 2  # another test set: nothing reused


def test_subset_writes_exactly_the_images_protocols_uses(kermany, tmp_path):
    """`cxr-utility subset` copies the nested subset `protocols --sizes` trains on (so a generator can be
    trained on those images only); the same command again is a no-op, another subset in the same
    folder or a size the data lacks is refused."""
    out = tmp_path / "s10"
    r = CliRunner().invoke(main, ["subset", "--real", str(kermany / "train"), "--per-class", "10", "--out", str(out)])
    assert r.exit_code == 0, r.output
    want = nested_subset(load_labelled(kermany / "train"), 10)
    got = load_labelled(out)
    assert got.counts() == {"NORMAL": 10, "PNEUMONIA": 10} and got.files == want.files
    np.testing.assert_array_equal(got.images, want.images)
    assert json.loads((out / "subset.json").read_text())["per_class"] == 10
    r = CliRunner().invoke(main, ["subset", "--real", str(kermany / "train"), "--per-class", "10", "--out", str(out)])
    assert r.exit_code == 0 and "already holds" in r.output
    r = CliRunner().invoke(main, ["subset", "--real", str(kermany / "train"), "--per-class", "25", "--out", str(out)])
    assert r.exit_code == 2 and "does not hold this subset" in r.output
    assert load_labelled(out).counts() == {"NORMAL": 10, "PNEUMONIA": 10}  # untouched
    r = CliRunner().invoke(main, ["subset", "--real", str(kermany / "train"), "--per-class", "500",
                                  "--out", str(tmp_path / "big")])
    assert r.exit_code == 2 and "fewer than 500" in r.output and not (tmp_path / "big").exists()


def test_predict_is_quiet_for_very_confident_logits():
    """A logit of -1000 is probability 0 without numpy's overflow warning reaching the user."""
    import warnings

    class Confident:
        def __call__(self, x, training=False):
            return np.array([[-1000.0], [0.0], [1000.0]], np.float32)[: len(x)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(classifier.predict(Confident(), np.zeros((3, 8, 8), np.float32)), [0, 0.5, 1])
