"""What a run publishes besides checkpoints: the sampling generator, as a float32 Keras model
with the provenance export needs (generator.keras, generator.json)."""

from __future__ import annotations

import time
from pathlib import Path

from cxr_runtime.io import atomic_path, atomic_write_json
from cxr_training.config import Config
from cxr_training.models import build_generator
from cxr_training.runs import GENERATOR_FILE, PROVENANCE_FILE, RAW_GENERATOR_FILE, library_versions


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def save_generator(folder: Path, gan, cfg: Config, record: dict, epoch: int, step: int) -> Path:
    """The sampling generator on its own, with what export needs to know about it:
    `generator.keras` (the EMA weights when the recipe keeps an EMA, else G's) and
    `generator.json`; with an EMA, G's raw weights also go to `generator-raw.keras`. `record`:
    the run's record (config.json), for the run id and the data fingerprint.

    Always float32 models: a generator trained under mixed precision is rebuilt with float32
    layers and given the (float32) trained weights, so export and its parity gate see the
    same float32 network whatever the training precision was.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ema = gan.ema_generator is not None
    models = {GENERATOR_FILE: gan.sampler()}
    if ema:
        models[RAW_GENERATOR_FILE] = gan.generator
    for name, model in models.items():
        if model is gan.generator and cfg.precision != "float32":
            plain = build_generator(cfg, precision="float32")
            plain.set_weights(model.get_weights())
            model = plain
        with atomic_path(folder / name, suffix=".keras") as tmp:
            model.save(tmp)
    path = folder / GENERATOR_FILE
    atomic_write_json(folder / PROVENANCE_FILE, {  # last: its presence marks the save complete
        "model": GENERATOR_FILE,
        "weights": "ema" if ema else "raw",
        **({"raw_model": RAW_GENERATOR_FILE} if ema else {}),
        "run_id": record.get("run_id", folder.name),
        "epoch": epoch,
        "step": step,
        "latent_dim": cfg.latent_dim,
        "image_size": cfg.image_size,
        "channels": 1,
        "value_range": [-1.0, 1.0],
        "layout": "NHWC",
        "training_precision": cfg.precision,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "data_sha256": record["data"]["sha256"],
        "data_count": record["data"]["count"],
        "versions": library_versions(),
        "saved": now(),
    })
    return path
