"""The fixed classifier every protocol trains (docs/utility.md, "The classifier").

A small CNN from scratch, the kind a hospital team with a few hundred X-rays would train: four
blocks of 3x3 convolution (16, 32, 64, 128 channels), ReLU and 2x2 max-pooling, global average
pooling, dropout 0.3, one logit (the positive class: PNEUMONIA). Adam (learning rate 1e-3),
binary cross-entropy, batches of 32 drawn half from each class (so the classes weigh alike
whatever their counts), a fixed budget of `steps` batches (600) whatever the training set's size,
so that adding images changes the data and not the optimisation. Augmentation that keeps the
anatomy, drawn per image and step: a shift of up to +-8 px, a rotation of up to +-5 degrees, a
contrast factor in [0.9, 1.1] and a brightness offset in [-0.05, 0.05]; never a left-right flip
(the heart is on the left). Deterministic per seed on one machine.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

CLASSES_POSITIVE = "PNEUMONIA"  # the class whose probability the classifier outputs


@dataclass(frozen=True)
class ClassifierSpec:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.3
    learning_rate: float = 1e-3
    batch_size: int = 32
    steps: int = 600
    shift: float = 8.0  # px at 128x128
    rotation: float = 5.0  # degrees
    contrast: float = 0.1
    brightness: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from cxr_runtime.quiet import quiet_stderr

    with quiet_stderr():
        import keras
        import tensorflow as tf
    return tf, keras


def build(size: int, spec: ClassifierSpec, seed: int):
    tf, keras = _keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    x = inp = keras.Input((size, size, 1))
    for ch in spec.channels:
        x = layers.Conv2D(ch, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(spec.dropout, seed=seed)(x)
    logit = layers.Dense(1)(x)
    model = keras.Model(inp, logit)
    model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def augment(images: np.ndarray, rng: np.random.Generator, spec: ClassifierSpec) -> np.ndarray:
    """Shift, rotation, contrast and brightness per image (no flips); images (N, S, S) in [-1, 1]."""
    import cv2

    out = np.empty_like(images)
    size = images.shape[1]
    k = size / 128
    for i, im in enumerate(images):
        m = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), rng.uniform(-spec.rotation, spec.rotation), 1.0)
        m[:, 2] += rng.uniform(-spec.shift, spec.shift, 2) * k
        x = cv2.warpAffine(im, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mean = x.mean()
        x = (x - mean) * rng.uniform(1 - spec.contrast, 1 + spec.contrast) + mean
        out[i] = np.clip(x + rng.uniform(-spec.brightness, spec.brightness), -1, 1)
    return out


def train(images: np.ndarray, labels: np.ndarray, seed: int, spec: ClassifierSpec = ClassifierSpec(),
          progress=None):
    """A trained model (Keras) on (N, S, S) images with labels 0/1 (1: positive)."""
    labels = np.asarray(labels)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("the classifier needs images of both classes")
    model = build(images.shape[1], spec, seed)
    rng = np.random.default_rng(seed)
    half = spec.batch_size // 2
    y = np.concatenate([np.ones(half), np.zeros(spec.batch_size - half)]).astype(np.float32)[:, None]
    for step in range(spec.steps):
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, spec.batch_size - half)])
        x = augment(np.asarray(images[idx], np.float32), rng, spec)[..., None]
        model.train_on_batch(x, y)
        if progress and (step + 1) % 100 == 0:
            progress(step + 1)
    return model


def predict(model, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """Probability of the positive class for each image."""
    logits = np.concatenate([np.asarray(model(np.asarray(images[i : i + batch], np.float32)[..., None],
                                              training=False)).ravel() for i in range(0, len(images), batch)])
    with np.errstate(over="ignore"):  # exp(-logit) overflows to inf for a very negative logit: probability 0
        return 1.0 / (1.0 + np.exp(-logits))
