"""The utility protocols (docs/utility.md): what synthetic images do for a classifier tested on
real held-out patients.

- TRTR: train on real images, test on real held-out ones (the baseline);
- TSTR: train on synthetic images only;
- real+synthetic: the real images and the synthetic ones together;
- real+classic: the real images and as many classically augmented copies of them (shifts,
  small rotations, contrast) as real+synthetic adds synthetic images: the comparison any
  synthetic-data claim must beat;
each at nested real subsets (10, 25, 50, ... per class). A synthetic set used with a subset must
come from a generator trained on that subset only (otherwise it leaks real images the classifier
never saw): the caller says which synthetic folder belongs to which subset size.

Each arm is trained over several classifier seeds; its scores on the test images are the mean
over seeds of ROC AUC (PNEUMONIA positive), balanced accuracy, sensitivity and specificity at
probability 0.5, with a 95 % interval from a bootstrap that resamples the test images (within each
class) and the seeds together. Differences between two arms are bootstrapped paired (the same
test images and seeds in both)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from cxr_runtime.quality import auc_of
from cxr_utility import classifier
from cxr_utility.data import Labelled, combine, nested_subset

BOOTSTRAP = 2000
CLASSIC = classifier.ClassifierSpec(shift=10.0, rotation=8.0, contrast=0.15, brightness=0.08)  # the offline copies
# The detector: the same network without geometric augmentation (resampling an image by a sub-pixel
# shift or a rotation blurs exactly the fine texture it must judge); contrast and brightness stay.
DETECTOR = classifier.ClassifierSpec(shift=0.0, rotation=0.0)


def binary_labels(data: Labelled) -> np.ndarray:
    """1 for the positive class (PNEUMONIA), 0 for the others."""
    if classifier.CLASSES_POSITIVE not in data.classes:
        raise ValueError(f"the classes {data.classes} lack {classifier.CLASSES_POSITIVE}")
    return (data.labels == data.classes.index(classifier.CLASSES_POSITIVE)).astype(np.int64)


def scores(prob: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = prob >= 0.5
    sens = float(pred[y == 1].mean())
    spec = float((~pred[y == 0]).mean())
    return {"auc": auc_of(prob[y == 1], prob[y == 0]), "balanced_accuracy": (sens + spec) / 2,
            "sensitivity": sens, "specificity": spec}


def _boot_indices(y: np.ndarray, n_seeds: int, rng: np.random.Generator):
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), int((y == c).sum())) for c in (0, 1)])
    return idx, rng.integers(0, n_seeds, n_seeds)


def summarise(probs: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """probs (seeds, test images): the mean over seeds of each score, and its 95 % interval."""
    per_seed = [scores(p, y) for p in probs]
    out = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
    rng = np.random.default_rng(seed)
    boot = {k: [] for k in out}
    for _ in range(BOOTSTRAP):
        idx, seeds = _boot_indices(y, len(probs), rng)
        reps = [scores(probs[s][idx], y[idx]) for s in seeds]
        for k in boot:
            boot[k].append(np.mean([r[k] for r in reps]))
    for k, v in boot.items():
        out[k + "_ci"] = [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]
    return out


def paired_difference(probs_a: np.ndarray, probs_b: np.ndarray, y: np.ndarray, key: str = "auc",
                      seed: int = 0) -> dict:
    """Mean of score(a) - score(b) over seeds, with a paired bootstrap 95 % interval."""
    def diff(idx, seeds):
        return float(np.mean([scores(probs_a[s][idx], y[idx])[key] - scores(probs_b[s][idx], y[idx])[key]
                              for s in seeds]))

    all_idx, all_seeds = np.arange(len(y)), np.arange(len(probs_a))
    rng = np.random.default_rng(seed)
    boot = [diff(*_boot_indices(y, len(probs_a), rng)) for _ in range(BOOTSTRAP)]
    return {"difference": diff(all_idx, all_seeds),
            "ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]}


def classic_copies(real: Labelled, per_class: int, seed: int) -> Labelled:
    """`per_class` classically augmented copies of each class's real images (cycled)."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in real.classes:
        members = real.of_class(c)
        idx = np.arange(per_class) % len(members)
        copies = classifier.augment(np.asarray(members.images[idx], np.float32), rng, CLASSIC)
        parts.append(Labelled(copies, members.labels[idx], real.classes,
                              [f"classic:{members.files[i]}" for i in idx]))
    return combine(*parts)


class SeedCache:
    """What each trained classifier predicted, one JSON line per (arm, size, seed), appended and flushed
    as soon as it exists: an interrupted `cxr-utility protocols` given the same cache redoes only the models
    it lacks. A line counts only for the very same training set, test set, extra set and classifier
    (its key is a hash of all four and the seed)."""

    def __init__(self, path=None):
        self.path = Path(path) if path else None
        self.lines: dict[str, dict] = {}
        if self.path and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self.lines[rec["key"]] = rec
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by the interruption itself: that model is trained again

    @staticmethod
    def key(train: Labelled, test: Labelled, extra: Labelled | None, spec: classifier.ClassifierSpec,
            seed: int) -> str:
        def ident(data: Labelled | None):
            if data is None:
                return None
            return [list(data.files), data.labels.tolist(), hashlib.sha256(np.ascontiguousarray(
                data.images, np.float32).tobytes()).hexdigest()]

        text = json.dumps([ident(train), ident(test), ident(extra), spec.to_dict(), seed], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        return self.lines.get(key)

    def put(self, key: str, record: dict) -> None:
        record = {"key": key, **record}
        self.lines[key] = record
        if self.path:
            torn = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
            with open(self.path, "a") as f:
                f.write(("\n" if torn else "") + json.dumps(record) + "\n")  # a torn last line stays apart
                f.flush()
                os.fsync(f.fileno())


def train_arm(train: Labelled, test: Labelled, seeds: list[int], spec: classifier.ClassifierSpec,
              log=None, extra: Labelled | None = None, cache: SeedCache | None = None):
    """(probabilities on `test` (seeds, images), on `extra` (seeds, images) or None, seconds spent
    training now). Seeds found in `cache` are not trained again."""
    y, y_test = binary_labels(train), binary_labels(test)
    cache = cache or SeedCache()
    probs, extra_probs, t0 = [], [], time.time()
    for s in seeds:
        key = cache.key(train, test, extra, spec, s)
        rec = cache.get(key)
        how = "cached"
        if rec is None:
            model = classifier.train(train.images, y, s, spec)
            rec = {"test": classifier.predict(model, test.images).tolist(),
                   "extra": classifier.predict(model, extra.images).tolist() if extra is not None else None}
            cache.put(key, rec)
            how = "trained"
        probs.append(np.asarray(rec["test"]))
        if extra is not None:
            extra_probs.append(np.asarray(rec["extra"]))
        if log:
            log(f"  seed {s}: AUC {scores(probs[-1], y_test)['auc']:.3f} ({how})")
    return np.stack(probs), (np.stack(extra_probs) if extra is not None else None), time.time() - t0


def measure(real: Labelled, test: Labelled, sizes: list[int], seeds: list[int],
            synthetic: dict[int, Labelled] | None = None, synthetic_per_class: int = 500,
            spec: classifier.ClassifierSpec = classifier.ClassifierSpec(), log=print,
            cache: SeedCache | None = None) -> dict:
    """Every protocol at every size; `synthetic[n]`: the synthetic images of a generator trained on
    the size-n subset (for the full real set, n = its per-class count). With `cache`, models already
    trained (by an interrupted measurement) are not trained again."""
    synthetic = synthetic or {}
    y = binary_labels(test)
    arms, probs = [], {}
    fidelity = {}
    for n in sizes:
        sub = nested_subset(real, n)
        plan = [("TRTR", sub), ("real+classic", combine(sub, classic_copies(sub, synthetic_per_class, seed=n)))]
        if n in synthetic:
            syn = _per_class(synthetic[n], synthetic_per_class)
            plan += [("TSTR", syn), ("real+synthetic", combine(sub, syn))]
        for name, train_set in plan:
            log(f"cxr-utility: {name} at {n} per class ({len(train_set)} training images, {len(seeds)} seeds)")
            extra = synthetic[n] if name == "TRTR" and n in synthetic else None  # for label fidelity
            p, extra_p, seconds = train_arm(train_set, test, seeds, spec, log, extra=extra, cache=cache)
            key = f"{name}@{n}"
            probs[key] = p
            arms.append({"arm": name, "per_class": n, "training_images": train_set.counts(), "seconds": round(seconds, 1),
                         **summarise(p, y)})
            if extra_p is not None:
                fidelity[n] = label_fidelity(extra_p, synthetic[n])
    differences = []
    for n in sizes:
        for other in ("real+synthetic", "real+classic"):
            if f"{other}@{n}" in probs:
                differences.append({"per_class": n, "arm": other, "against": "TRTR",
                                    **paired_difference(probs[f"{other}@{n}"], probs[f"TRTR@{n}"], y)})
        if f"real+synthetic@{n}" in probs:
            differences.append({"per_class": n, "arm": "real+synthetic", "against": "real+classic",
                                **paired_difference(probs[f"real+synthetic@{n}"], probs[f"real+classic@{n}"], y)})
        if f"TSTR@{n}" in probs:
            differences.append({"per_class": n, "arm": "TSTR", "against": "TRTR",
                                **paired_difference(probs[f"TSTR@{n}"], probs[f"TRTR@{n}"], y)})
    return {"classifier": spec.to_dict(), "seeds": list(seeds), "test": test.counts(), "arms": arms,
            "differences": differences, "label_fidelity": {str(k): v for k, v in fidelity.items()}}


def _per_class(data: Labelled, n: int) -> Labelled:
    parts = []
    for c in data.classes:
        members = data.of_class(c)
        if len(members) < n:
            raise ValueError(f"the synthetic set has {len(members)} images of {c}, fewer than {n}")
        parts.append(members.take(np.arange(n)))
    return combine(*parts)


def label_fidelity(probs: np.ndarray, synthetic: Labelled) -> dict[str, float]:
    """Share of each class's synthetic images that the real-trained classifiers (`probs`: their
    probabilities (seeds, images); the mean over seeds decides) put in the class the generator was
    asked for."""
    prob = np.asarray(probs).mean(axis=0)
    y = binary_labels(synthetic)
    return {c: float(((prob >= 0.5) == (y == 1))[synthetic.labels == i].mean()) for i, c in enumerate(synthetic.classes)}


# --------------------------------------------------------------------------- detectability


def detectability(real: np.ndarray, fake: np.ndarray, seed: int = 0, folds: int = 5,
                  spec: classifier.ClassifierSpec = DETECTOR) -> dict:
    """The classifier trained to tell `fake` (1) from `real` (0): cross-validated ROC AUC over
    out-of-fold predictions (stratified folds; each image scored by a model that did not see it)."""
    x = np.concatenate([real, fake]).astype(np.float32)
    y = np.concatenate([np.zeros(len(real), np.int64), np.ones(len(fake), np.int64)])
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    prob = np.empty(len(y))
    for k in range(folds):
        model = classifier.train(x[fold != k], y[fold != k], seed + k, spec)
        prob[fold == k] = classifier.predict(model, x[fold == k])
    return {"auc": auc_of(prob[y == 1], prob[y == 0]), "real": len(real), "synthetic": len(fake), "folds": folds}


def damages(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """What the detector must see before it is trusted: blur, noise, a checkerboard."""
    import cv2

    rng = np.random.default_rng(seed)
    size = images.shape[1]
    checker = (np.indices((size, size)).sum(axis=0) % 2 * 0.1 - 0.05).astype(np.float32)
    return {"blur sigma 1": np.stack([cv2.GaussianBlur(x, (0, 0), 1.0) for x in images]),
            "noise sigma 0.03": np.clip(images + rng.normal(0, 0.03, images.shape).astype(np.float32), -1, 1),
            "checkerboard 0.05": np.clip(images + checker, -1, 1)}


def calibrate_detector(real: np.ndarray, seed: int = 0, folds: int = 5,
                       spec: classifier.ClassifierSpec = DETECTOR) -> dict:
    """The detector on real images: one half against the other (should be about 0.5) and one half
    against damaged copies of the other half (should be near 1)."""
    perm = np.random.default_rng(seed).permutation(len(real))
    a, b = real[perm[: len(real) // 2]], real[perm[len(real) // 2 :]]
    out = {"real vs real": detectability(a, b, seed, folds, spec)["auc"]}
    for name, damaged in damages(b, seed).items():
        out[f"real vs {name}"] = detectability(a, damaged, seed, folds, spec)["auc"]
    return out


def markdown(result: dict) -> str:
    """The utility table: one line per arm and size, then the differences and the label fidelity
    (cxr_runtime.utility_table, which the HTML report renders too)."""
    from cxr_runtime.utility_table import markdown as _markdown

    return _markdown(result)
