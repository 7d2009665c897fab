"""cxr_runtime: the light ground floor of cxr-gan (numpy, onnxruntime, opencv, scikit-image).

- `Generator(path, device="auto").sample(n, seed=0)`: synthetic X-rays from an exported model;
- `cxr_runtime.sampling.sample_to_folder(generator, out, n)`: a resumable sample set on disk;
- `cxr_runtime.metrics`, `quality`, `audit`: SSIM, MSE and the study's protocol (shared with
  training), distribution metrics, the memorisation audit;
- `cxr_runtime.images`: the one way a file (PNG, JPEG, TIFF, BMP, DICOM) becomes a model-ready array;
- `CxrError`: the base of every error raised on purpose (cxr_runtime.errors).

Notices (such as a CUDA-to-CPU fallback) go to the `cxr_runtime` logger; the package
installs no handler beyond a NullHandler and changes no process-wide setting.
This package never imports tensorflow, keras, tf2onnx, cxr_training or cxr_export.
"""

import logging

from cxr_runtime.errors import CxrError

__version__ = "0.1.0"
__all__ = ["DEFAULT_BATCH", "DEFAULT_BATCH_CHUNKED", "DEFAULT_BATCH_INT8", "CxrError", "Generator", "__version__"]
logging.getLogger("cxr_runtime").addHandler(logging.NullHandler())

# Images per model call by default (`Generator.default_batch` picks by the model): the
# fastest batches `make bench` found for graphs without the chunk loop, with it (the loop
# runs the convolutions a few images at a time) and int8 (docs/benchmarks.md has the
# measurements); memory stays low either way. Never changes the images.
DEFAULT_BATCH = 4
DEFAULT_BATCH_CHUNKED = 32
DEFAULT_BATCH_INT8 = 16


def __getattr__(name):
    # onnxruntime is imported on first use, so `import cxr_runtime` (and --version) stays light
    if name == "Generator":
        from cxr_runtime.generator import Generator

        return Generator
    raise AttributeError(f"module 'cxr_runtime' has no attribute {name!r}")
