"""Labelled image folders: one subfolder per class (the layout of Keras'
image_dataset_from_directory and torchvision's ImageFolder), read with the runtime's reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr_runtime.errors import NoImagesError
from cxr_runtime.images import load_folder
from cxr_utility.errors import LabelledFolderError

SUBSET_SEED = 2026  # the order in which a class's images enter the nested subsets


@dataclass
class Labelled:
    images: np.ndarray  # (N, S, S) float32 in [-1, 1]
    labels: np.ndarray  # (N,) int: index into classes
    classes: tuple[str, ...]
    files: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx) -> Labelled:
        idx = np.asarray(idx, np.int64)
        return Labelled(self.images[idx], self.labels[idx], self.classes, [self.files[i] for i in idx])

    def of_class(self, name: str) -> Labelled:
        return self.take(np.flatnonzero(self.labels == self.classes.index(name)))

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}


def class_folders(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise LabelledFolderError(f"{root} is not a folder")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(subs) < 2:
        raise LabelledFolderError(f"{root} needs one subfolder per class (at least two, e.g. NORMAL/ and PNEUMONIA/); "
                         f"found {len(subs)}")
    return subs


def load_labelled(root: str | Path, size: int = 128, classes: tuple[str, ...] | None = None) -> Labelled:
    """Every image of every class subfolder of `root`; `classes` (default: the subfolders' names,
    sorted) fixes the label order, and a folder whose classes differ is refused."""
    subs = {p.name: p for p in class_folders(root)}
    names = tuple(sorted(subs)) if classes is None else tuple(classes)
    if set(names) != set(subs):
        raise LabelledFolderError(f"{root} has the classes {sorted(subs)}, expected {sorted(names)}")
    images, labels, files = [], [], []
    for i, name in enumerate(names):
        try:
            s = load_folder(subs[name], size=size)
        except NoImagesError as e:
            raise LabelledFolderError(f"class {name}: {e}") from None
        images.append(np.asarray(s.images, np.float32))
        labels.append(np.full(len(s.images), i, np.int64))
        files += [f"{name}/{f}" for f in s.files]
    return Labelled(np.concatenate(images), np.concatenate(labels), names, files)


def nested_subset(data: Labelled, per_class: int) -> Labelled:
    """The first `per_class` images of each class in a fixed shuffled order (SUBSET_SEED): the
    subsets of 10, 25, 50, ... are nested, so each holds the smaller ones."""
    idx = []
    for i in range(len(data.classes)):
        members = np.flatnonzero(data.labels == i)
        if per_class > len(members):
            raise LabelledFolderError(f"class {data.classes[i]} has {len(members)} images, fewer than {per_class}")
        order = np.random.default_rng(SUBSET_SEED + i).permutation(len(members))
        idx.append(members[np.sort(order[:per_class])])
    return data.take(np.concatenate(idx))


def combine(*parts: Labelled) -> Labelled:
    classes = parts[0].classes
    for p in parts[1:]:
        if p.classes != classes:
            raise LabelledFolderError(f"classes differ: {classes} and {p.classes}")
    return Labelled(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]), classes,
                    [f for p in parts for f in p.files])
