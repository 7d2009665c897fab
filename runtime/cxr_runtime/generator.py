"""The exported generator, for embedding: `Generator(path).sample(n, seed=0)`.

Latents are a function of (seed, image index) only: image i's latent comes from chunk
i // 1024, drawn by `numpy.random.default_rng([seed, chunk])`. So the same seed and model
give the same images whatever the batch size, and any range of indices can be produced
on its own (resuming a set, splitting work across processes).

One instance is safe to use from several threads: onnxruntime sessions allow concurrent
`run`, and the instance keeps no per-call state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cxr_runtime import DEFAULT_BATCH, DEFAULT_BATCH_CHUNKED, DEFAULT_BATCH_INT8
from cxr_runtime.contract import CHUNK_INPUT, CLASS_INPUT, CLASSES_KEY, LATENT_SCALE_KEY, REQUIRED_METADATA
from cxr_runtime.errors import LabelError, ModelError
from cxr_runtime.images import to_uint8
from cxr_runtime.io import sha256_file
from cxr_runtime.session import CUDA, log, open_session_quietly

LATENT_CHUNK = 1024


def check_latent_scale(value, where: str = "latent scale") -> float:
    """A latent scale as a float: finite and in (0, 10]; ValueError naming `where` otherwise."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} {value!r} is not a number") from None
    if not (0.0 < scale <= 10.0):  # also refuses NaN
        raise ValueError(f"{where} {value!r} must be in (0, 10]")
    return scale


def latents(start: int, count: int, latent_dim: int, seed: int) -> np.ndarray:
    """float32 (count, latent_dim): the latents of images start .. start+count-1."""
    if start < 0 or count < 0:
        raise ValueError("start and count must be >= 0")
    out = np.empty((count, latent_dim), np.float32)
    i = start
    while i < start + count:
        chunk, offset = divmod(i, LATENT_CHUNK)
        block = np.random.default_rng([seed, chunk]).standard_normal((LATENT_CHUNK, latent_dim), dtype=np.float32)
        take = min(LATENT_CHUNK - offset, start + count - i)
        out[i - start : i - start + take] = block[offset : offset + take]
        i += take
    return out


class Generator:
    """An exported cxr-gan generator (input `z` [batch, latent], output [batch, 1, S, S])."""

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None,
                 arena: bool = True, chunk: int | None = None, session_options=None,
                 provider_options: dict | None = None, latent_scale: float | None = None):
        """device: auto, cpu, cuda or cuda:N (session.py's rules; the CPU fallback of auto is
        logged on the `cxr_runtime` logger).
        threads: intra-op threads (default: the physical cores this process may use).
        arena: onnxruntime's CPU memory arena. On by default: at the default batches it costs
        no memory and spares the chunked graph's large Dense output a fresh page-faulted buffer
        on every call (docs/runtime.md); off saves memory at large batches of unchunked graphs.
        chunk: images per pass of a chunked model's convolution loop; None = the model's own
        value on CPU and the whole batch on CUDA (GPUs want large batches).
        session_options: an onnxruntime.SessionOptions used as given (threads and arena are
        then ignored); provider_options: extra CUDA provider options (e.g. gpu_mem_limit).
        latent_scale: the standard deviation of the latents `batches` and `sample` draw (image i's
        latent times the scale); None = the model's own (metadata `latent_scale`, written by
        cxr-export --latent-scale; 1 for a model without it). `generate(z)` runs z as given."""
        self.path = Path(path)
        self.device = device  # as asked; `provider` is what it runs on
        if chunk is not None and chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.session, self.provider, note = open_session_quietly(self.path, device, threads, arena, session_options,
                                                                 provider_options)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        labelled = [i for i in inputs if i.name == CLASS_INPUT]
        if len(inputs) - len(labelled) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path.name}: expected one input (and a `{CLASS_INPUT}` input for a labelled "
                             f"model) and one output, found {len(inputs)} and {len(outputs)}")
        if labelled and (labelled[0].type != "tensor(int64)" or len(labelled[0].shape) != 1):
            raise ModelError(f"{self.path.name}: input {CLASS_INPUT!r} is {labelled[0].type} {labelled[0].shape}, "
                             "expected int64 [batch]")
        zin, img = next(i for i in inputs if i.name != CLASS_INPUT), outputs[0]
        if zin.type != "tensor(float)" or len(zin.shape) != 2 or not isinstance(zin.shape[1], int):
            raise ModelError(f"{self.path.name}: input {zin.name!r} is {zin.type} {zin.shape}, "
                             "expected float32 [batch, latent_dim]")
        shape = img.shape
        if (img.type != "tensor(float)" or len(shape) != 4 or shape[1] != 1
                or not all(isinstance(s, int) for s in shape[2:]) or shape[2] != shape[3]):
            raise ModelError(f"{self.path.name}: output {img.name!r} is {img.type} {shape}, "
                             "expected float32 [batch, 1, size, size]")
        self.input_name, self.output_name = zin.name, img.name
        self.chunked = CHUNK_INPUT in {i.name for i in self.session.get_overridable_initializers()}
        if chunk is not None and not self.chunked:
            raise ModelError(f"{self.path.name} has no chunk loop (export it with cxr-export --chunk N)")
        self._chunk = chunk
        self.latent_dim = int(zin.shape[1])
        self.image_size = int(shape[2])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing:
            raise ModelError(f"{self.path.name}: metadata {', '.join(missing)} missing: not a cxr-export generator")
        if self.metadata["latent_dim"] != str(self.latent_dim) or self.metadata["image_size"] != str(self.image_size):
            raise ModelError(f"{self.path.name}: metadata (latent_dim {self.metadata['latent_dim']}, image_size "
                             f"{self.metadata['image_size']}) contradicts its signature")
        self.classes: tuple[str, ...] = ()
        if labelled:
            try:
                self.classes = tuple(json.loads(self.metadata[CLASSES_KEY]))
            except (KeyError, ValueError, TypeError):
                raise ModelError(f"{self.path.name}: a `{CLASS_INPUT}` input but no readable `{CLASSES_KEY}` "
                                 "metadata: not a cxr-export generator") from None
            if len(self.classes) < 2 or not all(isinstance(c, str) for c in self.classes):
                raise ModelError(f"{self.path.name}: metadata {CLASSES_KEY} must name at least two classes")
        try:
            self.latent_scale = check_latent_scale(
                self.metadata.get(LATENT_SCALE_KEY, 1.0) if latent_scale is None else latent_scale,
                "latent_scale" if latent_scale is not None else f"{self.path.name}: metadata latent_scale")
        except ValueError as e:
            if latent_scale is not None:
                raise
            raise ModelError(str(e)) from None
        if note:  # only now: a model that fails its checks gets its error alone
            log.info(note)
        self._sha256: str | None = None

    @property
    def default_batch(self) -> int:
        """Images per call when none is given: DEFAULT_BATCH_INT8 for int8 models, DEFAULT_BATCH_CHUNKED
        for models with the chunk loop, else DEFAULT_BATCH."""
        if self.metadata.get("precision") == "int8":
            return DEFAULT_BATCH_INT8
        return DEFAULT_BATCH_CHUNKED if self.chunked else DEFAULT_BATCH

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    def class_index(self, label) -> int:
        """The index of a class given by name or index; CxrError (ValueError) for a label this
        model does not have, or for any label of an unlabelled model."""
        if not self.classes:
            raise LabelError(f"{self.path.name} is not a labelled model: it takes no class")
        if isinstance(label, str):
            if label not in self.classes:
                raise LabelError(f"{self.path.name} has no class {label!r}; its classes: {', '.join(self.classes)}")
            return self.classes.index(label)
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(self.classes):
            return int(label)
        raise LabelError(f"class {label!r} is neither a name nor an index of {', '.join(self.classes)}")

    def _labels(self, label, n: int) -> np.ndarray | None:
        if not self.classes:
            if label is not None:
                self.class_index(label)  # raises: the model takes no class
            return None
        if label is None:
            raise LabelError(f"{self.path.name} is a labelled model: choose a class ({', '.join(self.classes)})")
        return np.full(n, self.class_index(label), np.int64)

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Run the model: float32 (n, latent_dim) -> float32 (n, S, S) in [-1, 1]; a labelled
        model also takes `labels`, int (n,) class indices."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (n, {self.latent_dim}), got {z.shape}")
        feed = {self.input_name: z}
        if self.classes:
            if labels is None or len(labels) != len(z):
                raise LabelError(f"{self.path.name} is a labelled model: generate(z, labels) needs one class per "
                                 "latent")
            feed[CLASS_INPUT] = np.asarray(labels, np.int64)
        if self.chunked and (self._chunk is not None or self.provider == CUDA):
            feed[CHUNK_INPUT] = np.array([self._chunk or max(1, len(z))], np.int64)
        out = self.session.run([self.output_name], feed)[0]
        if not np.all(np.isfinite(out)):
            raise ModelError(f"{self.path.name} produced non-finite values")
        return out[:, 0]

    def batches(self, n: int, seed: int = 0, batch_size: int | None = None, start: int = 0,
                raw: bool = False, label=None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index of the first image, images) batch by batch for images start .. n-1
        (image i from `latents(i, 1, latent_dim, seed)` times `latent_scale`).

        uint8 (b, S, S) by default; float32 in [-1, 1] with raw=True. batch_size None: default_batch.
        label: the class (name or index) of every image, for a labelled model (required there).
        """
        batch_size = self.default_batch if batch_size is None else batch_size
        if n < 0 or batch_size < 1:
            raise ValueError("n must be >= 0 and batch_size >= 1")
        self._labels(label, 0)  # a bad or missing label fails before any work
        for i in range(start, n, batch_size):
            b = min(batch_size, n - i)
            z = latents(i, b, self.latent_dim, seed)
            images = self.generate(z if self.latent_scale == 1.0 else z * np.float32(self.latent_scale),
                                   self._labels(label, b))
            yield i, images if raw else to_uint8(images)

    def sample(self, n: int, seed: int = 0, batch_size: int | None = None, label=None) -> np.ndarray:
        """n images as uint8 (n, S, S): 0 is -1 (black), 255 is +1 (white). A labelled model
        needs `label`, the class (name or index) of the images; the same seed gives every class
        the same latents."""
        out = np.empty((n, self.image_size, self.image_size), np.uint8)
        for i, images in self.batches(n, seed, batch_size, label=label):
            out[i : i + len(images)] = images
        return out
