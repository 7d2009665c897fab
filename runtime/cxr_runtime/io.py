"""Atomic file writing and content hashing.

Every artefact is written to a temporary file in the destination folder and renamed
into place, so a reader (or a resumed run) never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def _fresh(parent: Path, prefix: str, suffix: str, create) -> Path:
    """A new, exclusively created file or folder `parent/prefix<random>suffix`.

    Created with mode 0666 (folders 0777) and the process's umask applied by the kernel, as
    open() and mkdir() do: published artefacts get the usual permissions without this
    library ever reading or changing the umask (tempfile's 0600 would need a chmod)."""
    for _ in range(100):
        candidate = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            create(candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary name in {parent}")


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new hidden-by-prefix folder in `parent` (umask-respecting permissions), for content
    that is renamed into place once complete."""
    return _fresh(Path(parent), prefix, "", lambda p: os.mkdir(p, 0o777))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds.

    The temporary name starts with a dot and ends with `suffix`, so writers that infer
    the format from the extension (Keras, OpenCV, matplotlib) see the right one. On failure the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _fresh(path.parent, f".{path.name}.tmp-", suffix, _create_file)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as .npy atomically (never pickled)."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    return np.load(path, allow_pickle=False)
