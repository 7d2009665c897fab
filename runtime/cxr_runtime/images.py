"""Reading real X-rays exactly one way, for training and for scoring.

`load_image` is the single definition of how a file becomes a model-ready array:

1. decode the bytes with OpenCV, keeping the bit depth and channels
   (8- or 16-bit; gray, RGB or RGBA); DICOM (.dcm) with pydicom when the `dicom` extra is
   installed (decode_dicom: rescale slope/intercept, the VOI window or LUT, MONOCHROME1
   inverted, so the bright-is-dense convention of the other formats holds);
2. scale to [0, 1] by the type's full range (255 or 65535; for DICOM, the range of its
   VOI output, or of its stored values mapped through the rescale);
3. convert colour to gray with OpenCV's ITU-R 601 weights; an alpha channel is dropped;
4. `stretch` (the default, as the study): resize the whole image to size x size,
   ignoring its aspect ratio; `crop`: centre-crop to a square first;
   the resize uses area interpolation (`cv2.INTER_AREA`) on float32 data;
5. map [0, 1] to [-1, 1] (the generator's tanh range).

Files that cannot be used are reported with a reason, never silently dropped: empty,
truncated or non-image data, images over MAX_PIXELS (checked from the header, before any
pixel is decoded) or under MIN_SIDE, files that are not regular files or cannot be read,
and exact duplicates of a file already used.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cxr_runtime.choices import RESIZE_MODES
from cxr_runtime.errors import ImageDecodeError, NoImagesError
from cxr_runtime.io import atomic_write_bytes, load_npy, save_npy, sha256_bytes

__all__ = ["IMAGE_EXTENSIONS", "MAX_CLASSES", "RESIZE_MODES", "ImageDecodeError", "ImageSet", "NoImagesError",
           "class_layout", "decode_dicom",
           "decode_image", "find_images", "load_folder", "load_image", "make_grid", "preprocess", "side_by_side",
           "to_uint8", "write_png"]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm")
# Bump when anything in decode_image/preprocess changes: it is part of the cache key.
PREPROCESS_VERSION = 2
MAX_PIXELS = 100_000_000  # larger images are refused from their header, before decoding (bombs)
MIN_SIDE = 16  # smaller images carry no usable anatomy


def _sniff(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[128:132] == b"DICM":
        return "dicom"
    return None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the file header alone, without decoding the pixels."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header only
            return im.size
    except Image.DecompressionBombError:
        raise ImageDecodeError("too many pixels (refused before decoding)") from None
    except Exception:
        raise ImageDecodeError("unreadable image header") from None


def display_name(path: str) -> str:
    """A file name safe to print and to store as JSON text: undecodable bytes (names that are
    not UTF-8) shown as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to a float32 gray array in [0, 1], shape (H, W).

    Raises ImageDecodeError with a short reason for empty, truncated or non-image data.
    """
    if len(data) == 0:
        raise ImageDecodeError("empty file")
    kind = _sniff(data)
    if kind is None:
        raise ImageDecodeError("not an image (unrecognised file header)")
    if kind == "dicom":
        return decode_dicom(data)
    # libjpeg and libpng fill a truncated file's missing rows with grey and only warn,
    # so truncation is checked on the bytes: JPEG must end with EOI, PNG with IEND.
    width, height = image_size(data)
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f"too many pixels ({width}x{height} > {MAX_PIXELS:,}; refused before decoding)")
    if kind == "jpeg" and b"\xff\xd9" not in data[-64:]:
        raise ImageDecodeError("truncated JPEG (no end-of-image marker)")
    if kind == "png" and b"IEND" not in data[-16:]:
        raise ImageDecodeError("truncated PNG (no IEND chunk)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageDecodeError(f"{kind.upper()} data could not be decoded")
    if min(img.shape[:2]) < MIN_SIDE:
        raise ImageDecodeError(f"too small ({img.shape[1]}x{img.shape[0]}; at least {MIN_SIDE}x{MIN_SIDE})")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype == np.float32:
        img = np.clip(np.nan_to_num(img), 0.0, 1.0)
    else:
        raise ImageDecodeError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = img[:, :, 0]
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        else:
            raise ImageDecodeError(f"unsupported channel count {channels}")
    return np.ascontiguousarray(img, dtype=np.float32)


def decode_dicom(data: bytes) -> np.ndarray:
    """A DICOM file's pixels as float32 gray in [0, 1], (H, W), the way a viewer shows them:
    the modality LUT (rescale slope and intercept) and the VOI LUT or window applied, scaled by
    the output range of that chain, MONOCHROME1 inverted (so bright is dense, as in PNG/JPEG
    X-rays). Colour is converted to gray; multi-frame objects are refused. Compressed transfer
    syntaxes decode when pydicom has a decoder for them (its message names what to install)."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ImageDecodeError("DICOM file: reading DICOM needs pydicom: pip install 'cxr-gan[dicom]'") from None
    import io

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:  # pydicom raises several types for damaged files
        raise ImageDecodeError(f"unreadable DICOM ({type(e).__name__}: {str(e)[:120]})") from None
    if "PixelData" not in ds:
        raise ImageDecodeError("DICOM object without pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise ImageDecodeError(f"too many pixels ({cols}x{rows} > {MAX_PIXELS:,}; refused before decoding)")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ImageDecodeError(f"multi-frame DICOM ({ds.NumberOfFrames} frames): one image per file expected")
    try:
        stored = ds.pixel_array
    except Exception as e:  # missing decoder for a compressed syntax, truncated pixel data, ...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ImageDecodeError(f"DICOM pixel data ({name}) could not be decoded: {str(e).splitlines()[0][:200]}") \
            from None
    if min(stored.shape[:2]) < MIN_SIDE:
        raise ImageDecodeError(f"too small ({stored.shape[1]}x{stored.shape[0]}; at least {MIN_SIDE}x{MIN_SIDE})")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if stored.ndim == 3:  # colour (pydicom gives RGB for RGB/YBR syntaxes it converts)
        return cv2.cvtColor(stored.astype(np.float32) / float(np.iinfo(stored.dtype).max if stored.dtype.kind in "ui"
                                                                  else 1.0), cv2.COLOR_RGB2GRAY)
    voi = "WindowCenter" in ds or "VOILUTSequence" in ds

    def display(a):  # stored values -> what a viewer shows: modality LUT, then the VOI
        v = apply_modality_lut(a, ds)
        return apply_voi_lut(v, ds) if voi else v

    values = display(stored).astype(np.float64)
    bits = int(ds.get("BitsStored", stored.dtype.itemsize * 8))
    if stored.dtype.kind in "ui" and bits <= 16:
        # the output range of the chain over every storable value: what 0 and 1 mean
        info = np.iinfo(stored.dtype)
        lo_in, hi_in = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if stored.dtype.kind == "i" else (0, 2**bits - 1)
        ramp = display(np.arange(max(lo_in, info.min), min(hi_in, info.max) + 1).astype(stored.dtype))
        lo, hi = float(np.min(ramp)), float(np.max(ramp))
    else:
        lo, hi = float(values.min()), float(values.max())
    gray = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        gray = 1.0 - gray
    return np.ascontiguousarray(gray, dtype=np.float32)


def preprocess(gray: np.ndarray, size: int = 128, resize: str = "stretch") -> np.ndarray:
    """Gray [0, 1] (H, W) -> float32 (size, size) in [-1, 1]."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
    if resize == "crop":
        h, w = gray.shape
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        gray = gray[top : top + s, left : left + s]
    out = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(out * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def load_image(path: str | os.PathLike, size: int = 128, resize: str = "stretch") -> np.ndarray:
    """Read one file the training way: float32 (size, size) in [-1, 1]."""
    return preprocess(decode_image(Path(path).read_bytes()), size, resize)


MAX_CLASSES = 16  # more subfolders than this are taken for an unlabelled tree (patients, dates), not classes


def class_layout(root: str | os.PathLike) -> tuple[str, ...]:
    """The classes of a labelled folder: the names of its subfolders, sorted, when it holds no
    image file itself and 2..MAX_CLASSES subfolders that hold images (the layout Keras'
    image_dataset_from_directory and torchvision's ImageFolder read); () otherwise (a folder of
    images, read recursively as one unlabelled set)."""
    root = Path(root)
    if not root.is_dir():
        return ()
    if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir()):
        return ()
    subs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and find_images(p))
    return tuple(subs) if 2 <= len(subs) <= MAX_CLASSES else ()


def find_images(root: str | os.PathLike) -> list[Path]:
    """Every file under `root` (recursively) with an image extension, sorted.

    Symbolic links to folders are not followed (no loops); hidden folders are skipped.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / name)
    return sorted(found)


@dataclass
class ImageSet:
    """Images read from a folder, with what was used and what was not."""

    root: str
    images: np.ndarray  # float32 (N, size, size) in [-1, 1]
    files: list[str]  # paths relative to root, in the order of `images`
    sha256: list[str]  # content hash of each used file
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    # byte-identical copies kept in the set (duplicates="keep"): (relative path, first file with those bytes)
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    def fingerprint(self) -> dict:
        """The data's identity: file list and content hashes, and one hash over them."""
        listing = "\n".join(f"{h}  {f}" for f, h in zip(self.files, self.sha256))
        return {
            "root": str(Path(self.root).resolve()),
            "count": len(self.files),
            "sha256": sha256_bytes(listing.encode("utf-8")),
            "files": [{"path": f, "sha256": h} for f, h in zip(self.files, self.sha256)],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }

    def skipped_warning(self) -> str | None:
        """One warning naming every skipped file and why, or None."""
        if not self.skipped:
            return None
        total = len(self.skipped) + len(self.files)
        items = "; ".join(f"{p} ({r})" for p, r in self.skipped)
        return f"warning: skipped {len(self.skipped)} of {total} image files under {self.root}: {items}"


def load_folder(
    root: str | os.PathLike,
    size: int = 128,
    resize: str = "stretch",
    cache_dir: str | os.PathLike | None = None,
    into: str | os.PathLike | None = None,
    progress=None,
    duplicates: str = "skip",
) -> ImageSet:
    """Read every image under `root` with `load_image`'s rules.

    Unusable files are skipped and listed in `ImageSet.skipped`. Byte-identical copies of a
    file already read are skipped too (`duplicates="skip"`: a training set gains nothing
    from them) or kept and listed in `ImageSet.duplicates` (`"keep"`: a generated set is
    scored as it is, and its copies are a collapse signal, not noise to remove). With `cache_dir`, each
    preprocessed array is stored under its file's content hash and the preprocessing
    parameters, so a changed file can never be served from a stale entry.
    With `into` (a file path), images are appended to that file as raw float32 rows as
    they are read and `ImageSet.images` is a read-only memory map of it: memory stays
    flat however many images there are. `progress(done, total)`, if given, is called after
    each candidate file.
    Raises NoImagesError (with the reasons) when nothing usable is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise NoImagesError(f"data folder not found: {root}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
    if duplicates not in ("skip", "keep"):
        raise ValueError(f"duplicates must be 'skip' or 'keep', not {duplicates!r}")
    cache = Path(cache_dir) if cache_dir else None
    arrays, files, hashes, skipped, copies = [], [], [], [], []
    sink = open(into, "wb") if into is not None else None  # noqa: SIM115 (closed below)
    try:
        _read_into(root, size, resize, cache, arrays, files, hashes, skipped, sink, progress,
                   copies if duplicates == "keep" else None)
    finally:
        if sink is not None:
            sink.close()
    if not files:
        detail = f" ({len(skipped)} image files skipped: " + "; ".join(f"{p}: {r}" for p, r in skipped) + ")" if skipped else ""
        raise NoImagesError(f"no usable image under {root}{detail}")
    if sink is not None:
        images = np.memmap(into, dtype=np.float32, mode="r", shape=(len(files), size, size))
    else:
        images = np.stack(arrays)
    return ImageSet(str(root), images, files, hashes, skipped, copies)


def _read_into(root, size, resize, cache, arrays, files, hashes, skipped, sink, progress, copies) -> None:
    """Append each usable image under root; `copies` (a list, or None to skip duplicates)
    receives (file, first file with the same bytes) for each byte-identical copy kept."""
    seen: dict[str, str] = {}
    first: dict[str, np.ndarray] = {}  # digest -> its array, to keep copies without decoding again
    candidates = find_images(root)
    for done, path in enumerate(candidates, start=1):
        if progress is not None and done > 1:
            progress(done - 1, len(candidates))
        rel = display_name(path.relative_to(root).as_posix())
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                skipped.append((rel, "not a regular file"))
                continue
            if info.st_size > 4 * MAX_PIXELS:
                skipped.append((rel, f"file too large ({info.st_size:,} bytes)"))
                continue
            data = path.read_bytes()
        except OSError as e:
            skipped.append((rel, f"unreadable: {e.strerror or e}"))
            continue
        digest = sha256_bytes(data)
        if digest in seen:
            if copies is None:
                skipped.append((rel, f"duplicate of {seen[digest]}"))
                continue
            copies.append((rel, seen[digest]))
            arr = first[digest]
        else:
            entry = cache / f"{digest}-{size}-{resize}-v{PREPROCESS_VERSION}.npy" if cache else None
            arr = _cache_get(entry, size)
            if arr is None:
                try:
                    arr = preprocess(decode_image(data), size, resize)
                except ImageDecodeError as e:
                    skipped.append((rel, str(e)))
                    continue
                if entry is not None:
                    _cache_put(entry, arr)
            seen[digest] = rel
            if copies is not None:
                first[digest] = arr
        if sink is not None:
            sink.write(np.ascontiguousarray(arr, np.float32).tobytes())
        else:
            arrays.append(arr)
        files.append(rel)
        hashes.append(digest)
    if progress is not None and candidates:
        progress(len(candidates), len(candidates))


def _cache_get(entry: Path | None, size: int) -> np.ndarray | None:
    if entry is None or not entry.is_file():
        return None
    try:
        arr = load_npy(entry)
    except (OSError, ValueError):
        return None
    if arr.shape != (size, size) or arr.dtype != np.float32:
        return None
    return arr


def _cache_put(entry: Path, arr: np.ndarray) -> None:
    try:
        save_npy(entry, arr)
    except OSError:
        pass  # a cache that cannot be written only costs time


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 [0, 255], rounding to nearest."""
    return np.clip(np.rint((np.asarray(images, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile (N, H, W) images in [-1, 1] into one uint8 picture, `pad` black pixels apart."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    n, h, w = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.uint8)
    tiles = to_uint8(images)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = tiles[i]
    return grid


def side_by_side(a: np.ndarray, b: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two (H, W) images in [-1, 1] as one uint8 picture, `gap` black columns apart."""
    return np.hstack([to_uint8(a), np.zeros((a.shape[0], gap), np.uint8), to_uint8(b)])


def encode_png(image_u8: np.ndarray) -> bytes:
    """The PNG file of an 8-bit gray image, as bytes (what write_png writes)."""
    ok, buf = cv2.imencode(".png", image_u8)
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | os.PathLike, image_u8: np.ndarray) -> None:
    """Write an 8-bit gray image as PNG, atomically."""
    atomic_write_bytes(path, encode_png(image_u8))
