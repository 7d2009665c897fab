"""Sample sets on disk: N images from a Generator into a folder, resumable, with a manifest.

`sample_to_folder(generator, out, n, seed)` is what `cxr-runtime sample` runs; an
integrator calls it the same way. The folder gets `sample-000000.png` ... (or .npy, .dcm)
and, once the set is complete, `manifest.json`.

- Files are written batch by batch as they are produced (memory stays flat for any N), each
  atomically (temporary name, then rename).
- Resumable by design: a marker (`.sampling.json`) names the set being written (model hash,
  seed, count, format); the files are a pure function of (model, seed, index), so calling
  again with the same arguments keeps the files already there, redoes the unfinished batch
  and writes the rest: the same bytes as an uninterrupted run. A folder holding another set,
  or sample files of unknown origin, is refused (SampleSetError); a complete set is left as
  it is.
- DICOM: one synthetic patient, study and series per set (cxr_runtime.dicom), every
  identifier derived from (model, seed, count, index), so DICOM files are reproducible too.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr_runtime import __version__
from cxr_runtime.choices import SAMPLE_FORMATS
from cxr_runtime.errors import ModelError, SampleSetError
from cxr_runtime.images import write_png
from cxr_runtime.io import atomic_path, atomic_write_json

EXTENSIONS = {"png": "png", "npy": "npy", "dicom": "dcm"}
MARKER = ".sampling.json"
SHARDS = ".shards"  # the Ray engine's per-shard done records (cxr_runtime.ray_sampling)
MANIFEST = "manifest.json"
LATENT_RULE = "image i: numpy default_rng([seed, i // 1024]).standard_normal((1024, latent_dim), float32)[i % 1024] * latent_scale"

__all__ = ["SampleResult", "SampleSetError", "SetWriter", "check_folder", "file_name", "manifest_fields", "open_set",
           "sample_to_folder"]


@dataclass
class SampleResult:
    out: Path
    count: int  # images in the complete set
    written: int  # images written by this call (0: the set was already complete)
    resumed_from: int  # index this call started at (> 0: a resumed set)
    seconds: float
    provider: str


def file_name(index: int, n: int, fmt: str) -> str:
    """sample-000000.png: six digits, more when n needs them."""
    width = max(6, len(str(n - 1)))
    return f"sample-{index:0{width}d}.{EXTENSIONS[fmt]}"


def check_folder(out: str | os.PathLike) -> Path:
    """Create `out` if needed and make sure files can be written there (SampleSetError if not)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SampleSetError(f"the output folder {out} exists and is not a folder (it is a file)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SampleSetError(f"cannot write to the output folder {out}: {e.strerror or e}") from None
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class SetWriter:
    """Writes the files of one sample set: picklable, so distributed workers (Ray actors) write
    with exactly the code the local sampler uses. write(index, image) writes one file atomically;
    images are uint8 (S, S), or float32 in [-1, 1] for npy (`raw`)."""

    def __init__(self, out: str | os.PathLike, n: int, seed: int, fmt: str, model_sha256: str, exported: str = "",
                 label: str = ""):
        if fmt not in SAMPLE_FORMATS:
            raise ValueError(f"format must be one of {', '.join(SAMPLE_FORMATS)}, not {fmt!r}")
        self.out, self.n, self.seed, self.fmt = Path(out), n, seed, fmt
        self.dset = None
        if fmt == "dicom":
            from cxr_runtime import dicom

            dicom.check_available()
            self.dset = dicom.DicomSet(model_sha256, seed, n, exported, label)

    @property
    def raw(self) -> bool:
        return self.fmt == "npy"

    def path(self, index: int) -> Path:
        return self.out / file_name(index, self.n, self.fmt)

    def write(self, index: int, image) -> None:
        path = self.path(index)
        if self.fmt == "png":
            write_png(path, image)
        elif self.fmt == "npy":
            with atomic_path(path, suffix=".npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, image.astype(np.float32), allow_pickle=False)
        else:
            from cxr_runtime import dicom

            dicom.write_dicom(path, image, index, self.dset)


# identity keys added after sets were first written, with the value a set without them has
IDENTITY_DEFAULTS = {"latent_scale": 1.0, "class": None}


def set_identity(generator, seed: int, n: int, fmt: str, label: str | None = None) -> dict:
    """What makes a sample set: the model, its latent scale, the seed, the count, the format (and
    the class of a labelled model's set)."""
    return {"model_sha256": generator.sha256, "latent_scale": generator.latent_scale, "seed": seed, "count": n,
            "format": fmt, **({"class": label} if label is not None else {})}


def open_set(out: Path, identity: dict, ext: str, manifest_name: str = MANIFEST) -> tuple[bool, bool]:
    """Check `out` against the set described by `identity` (set_identity).

    Returns (complete, resumed): complete when its manifest is there (nothing to do), resumed
    when its marker is (an interrupted set, to be finished). Raises SampleSetError when the
    folder holds another set or sample files of unknown origin. Writes the marker otherwise."""
    marker, manifest = out / MARKER, out / manifest_name
    for path in (manifest, marker):
        if path.is_file():
            previous = _read_json(path)
            if not all(previous.get(k, IDENTITY_DEFAULTS.get(k)) == v for k, v in identity.items()):
                raise SampleSetError(f"the output folder {out} holds another sample set ({path.name} differs: model, "
                                     "latent scale, seed, count, format or class); choose another folder")
            if path is manifest:
                return True, False
    resumed = marker.is_file()
    if not resumed and (any(out.glob(f"sample-*.{ext}")) or any(out.glob(f"part-*.{ext}"))):
        raise SampleSetError(f"the output folder {out} already holds sample files of unknown origin; choose another "
                             "folder")
    atomic_write_json(marker, identity)
    return False, resumed


def manifest_fields(n: int, fmt: str, seed: int, generator, model_path, writer: SetWriter | None,
                    label: str | None = None) -> dict:
    """The manifest entries every engine writes the same way (a labelled model's: the class of
    every file of the set)."""
    return {
        "count": n,
        **({"class": label, "class_index": generator.class_index(label)} if label is not None else {}),
        "files": f"{file_name(0, n, fmt)} .. {file_name(n - 1, n, fmt)}",
        "format": fmt,
        "seed": seed,
        "latents": LATENT_RULE,
        "latent_scale": generator.latent_scale,
        "model": {"path": str(model_path or generator.path), "sha256": generator.sha256,
                  "metadata": generator.metadata},
        **({"dicom": writer.dset.to_dict()} if writer is not None and writer.dset is not None else {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"cxr-gan": __version__, "python": platform.python_version()},
        "synthetic": True,
        "model_sha256": generator.sha256,
    }


def remove_leftovers(out: Path) -> int:
    """What interrupted writers leave in a set's folder: temporary files of atomic writes
    (`.sample-000001.png.tmp-...`, a writer killed mid-file) and the Ray engine's shard records
    (`.shards/`, a Ray run that did not finish). Returns how many were removed."""
    import shutil

    removed = 0
    for p in out.iterdir():
        if p.name.startswith(".") and ".tmp-" in p.name and p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    if (out / SHARDS).is_dir():
        shutil.rmtree(out / SHARDS, ignore_errors=True)
        removed += 1
    return removed


def sample_to_folder(generator, out: str | os.PathLike, n: int, seed: int = 0, fmt: str = "png",
                     batch_size: int | None = None, progress=None, model_path: str | None = None,
                     on_resume=None, label=None) -> SampleResult:
    """Write images 0 .. n-1 of `generator` (a cxr_runtime.Generator) for `seed` into `out`.

    progress(done, n) is called after each batch (and once at the start of a resumed set);
    on_resume(done, n) once, before anything is sampled, when the folder already holds `done`
    images of this set. `label`: the class (name or index) of every image, for a labelled model
    (required there; cxr_runtime.generator); recorded in the manifest.
    `model_path` is recorded in the manifest (default: the generator's path), with the device
    the generator was asked for and the provider it runs on. Leftovers of interrupted writers
    (remove_leftovers) are removed before the set is declared complete. Raises SampleSetError
    for a folder holding another set or one that cannot be written, ModelError when the model
    outputs non-finite values (nothing is left behind if that happens at the first batch),
    DicomUnavailable for DICOM without pydicom; OSError from the file system (a full disk)
    passes through, the files written so far kept for a resume.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if label is not None or getattr(generator, "classes", ()):
        generator._labels(label, 0)  # a bad or missing class fails before the folder is touched
        label = generator.classes[generator.class_index(label)]
    writer = SetWriter(out, n, seed, fmt, generator.sha256, generator.metadata.get("exported", ""), label or "")
    out = check_folder(out)
    batch_size = batch_size or generator.default_batch
    identity = set_identity(generator, seed, n, fmt, label)
    complete, resumed = open_set(out, identity, EXTENSIONS[fmt])
    if complete:
        return SampleResult(out, n, 0, n, 0.0, generator.provider)
    start = 0
    while start < n and writer.path(start).is_file():
        start += 1
    start -= start % batch_size  # redo the first incomplete batch whole: simpler, same bytes
    if start and on_resume:
        on_resume(start, n)
    if progress and start:
        progress(start, n)
    t0 = time.perf_counter()
    done = start
    try:
        for i, images in generator.batches(n, seed=seed, batch_size=batch_size, raw=writer.raw, start=start,
                                           label=label):
            for k, image in enumerate(images):
                writer.write(i + k, image)
            done = i + len(images)
            if progress:
                progress(done, n)
    except ModelError:
        if done == 0 and not resumed:  # nothing written: leave the folder as it was
            (out / MARKER).unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t0
    remove_leftovers(out)
    atomic_write_json(out / MANIFEST, {
        **manifest_fields(n, fmt, seed, generator, model_path, writer, label),
        "engine": "local",
        "batch_size": batch_size,
        "device": getattr(generator, "device", generator.provider),
        "provider": generator.provider,
        "seconds": round(seconds, 3),
    })
    (out / MARKER).unlink(missing_ok=True)
    return SampleResult(out, n, n - start, start, seconds, generator.provider)
