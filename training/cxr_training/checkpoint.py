"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder `checkpoints/epoch-NNNN/` holding
- `state.npz`: every variable of G, D (including the dropout seed state) and both
  optimizers (Adam moments and iteration counters), stored as plain arrays (no pickle);
- `meta.json`: epoch, global step, the resolved config, the RNG description, the name,
  shape and dtype of each stored variable, and the sha256 of `state.npz`.

It is written into a hidden temporary folder and renamed into place, so a checkpoint
folder either is complete or does not exist. Loading verifies the hash and every
variable's name and shape; a damaged checkpoint is skipped with a warning in favour of
the previous one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from cxr_runtime.io import atomic_write_json, make_temp_dir, sha256_file
from cxr_training.errors import CheckpointError, NonFiniteState  # noqa: F401  (re-exported)

CKPT_DIR = "checkpoints"
FORMAT_VERSION = 2


def _canonical(path: str) -> str:
    """Variable path without Keras' per-process uniquifying suffixes
    ('seed_generator_2/seed_generator_state' -> 'seed_generator/seed_generator_state')."""
    return "/".join(re.sub(r"_\d+$", "", part) for part in path.split("/"))


def _groups(gan) -> dict[str, list]:
    return {
        "generator": list(gan.generator.variables),
        "discriminator": list(gan.discriminator.variables),
        "g_optimizer": list(gan.g_optimizer.variables),
        "d_optimizer": list(gan.d_optimizer.variables),
        # the epoch's running loss means, so a checkpoint taken mid-epoch resumes them
        "trackers": [v for m in gan.metrics for v in m.variables],
        # the recipe's state when it has any: augmentation probability (and ADA's sums), EMA weights
        **gan.recipe_state(),
    }


def checkpoint_name(epoch_done: int, step: int, steps_per_epoch: int) -> str:
    """epoch-0003 at an epoch's end; epoch-0004-step-000000130 inside epoch 4."""
    if step == epoch_done * steps_per_epoch:
        return f"epoch-{epoch_done:04d}"
    return f"epoch-{epoch_done + 1:04d}-step-{step:09d}"


def clean_partial(run_dir: Path) -> list[str]:
    """Remove what an interrupted write left behind (hidden temporary files and folders)."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CKPT_DIR, Path(run_dir) / "samples", Path(run_dir) / "plots"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed


def save(run_dir: Path, gan, epoch: int, step: int, config: dict, keep: int) -> Path:
    """Write a checkpoint atomically and prune to the newest `keep`.

    `epoch` is the number of completed epochs; `step` the global step (past the end of
    `epoch` when the checkpoint is taken inside the next one). Refuses (NonFiniteState)
    to write any NaN or infinite value.
    """
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(epoch, step, int(config["steps_per_epoch"]))
    final = root / name
    groups = _groups(gan)
    for group, variables in groups.items():
        for v in variables:
            value = np.asarray(v.numpy())
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise NonFiniteState(f"{group} variable {v.path} holds non-finite values; checkpoint not written")
    tmp = make_temp_dir(root, f".tmp-{name}-")
    try:
        arrays, listing = {}, []
        for group, variables in groups.items():
            for i, v in enumerate(variables):
                key = f"{group}/{i:03d}"
                value = np.asarray(v.numpy())
                arrays[key] = value
                listing.append({"key": key, "path": v.path, "shape": list(value.shape), "dtype": str(value.dtype)})
        state = tmp / "state.npz"
        with open(state, "wb") as f:  # plain open(): the usual umask applies
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        meta = {
            "format": FORMAT_VERSION,
            "epoch": epoch,
            "step": step,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rng": {
                "kind": "stateless (seed, global step)",
                "seed": config.get("seed"),
                "step": step,
                "note": "batches and latents derive from (seed, step); dropout's seed state is stored with D",
            },
            "config": config,
            "variables": listing,
            "state_sha256": sha256_file(state),
        }
        atomic_write_json(tmp / "meta.json", meta)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def step_of(ckpt: Path) -> int:
    """The global step in a checkpoint's meta.json, -1 when unreadable."""
    try:
        return int(json.loads((ckpt / "meta.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1  # unreadable meta: sorts first, and read_meta reports it


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest (lowest global step) first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.glob("epoch-*") if p.is_dir() and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: (step_of(p), p.name))


def read_meta(ckpt: Path) -> dict:
    """meta.json of a checkpoint, after checking the state file's hash."""
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt.name}: unreadable meta.json ({e})") from None
    state = ckpt / "state.npz"
    if not state.is_file():
        raise CheckpointError(f"{ckpt.name}: state.npz missing")
    if sha256_file(state) != meta.get("state_sha256"):
        raise CheckpointError(f"{ckpt.name}: state.npz does not match its recorded hash (torn or corrupt)")
    return meta


def latest_valid(run_dir: Path, warn=print) -> tuple[Path, dict] | None:
    """Newest checkpoint whose hash verifies; damaged newer ones are reported via `warn`."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            return ckpt, read_meta(ckpt)
        except CheckpointError as e:
            warn(f"warning: skipping checkpoint {e}")
    return None


def restore(gan, ckpt: Path, meta: dict) -> None:
    """Load a checkpoint into a GAN whose optimizers are already built."""
    with np.load(ckpt / "state.npz", allow_pickle=False) as data:
        listing = {item["key"]: item for item in meta["variables"]}
        groups = _groups(gan)
        expected = sum(len(v) for v in groups.values())
        if expected != len(listing):
            raise CheckpointError(f"{ckpt.name}: holds {len(listing)} variables, the model has {expected}")
        for group, variables in groups.items():
            for i, v in enumerate(variables):
                key = f"{group}/{i:03d}"
                item = listing.get(key)
                if item is None or key not in data.files:
                    raise CheckpointError(f"{ckpt.name}: variable {key} ({v.path}) missing")
                value = data[key]
                if tuple(value.shape) != tuple(v.shape) or _canonical(item["path"]) != _canonical(v.path):
                    raise CheckpointError(
                        f"{ckpt.name}: {key} is {item['path']} {tuple(value.shape)}, model has {v.path} {tuple(v.shape)}"
                    )
                v.assign(value)
    gan.global_step.assign(int(meta["step"]))
