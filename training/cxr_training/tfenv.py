"""Import TensorFlow/Keras quietly.

TensorFlow's C++ side prints start-up chatter (oneDNN notices, missing CUDA drivers on
CPU machines) straight to file descriptor 2 before Python can configure logging; it is
silenced for the import only. CXR_VERBOSE=1 shows everything.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from cxr_runtime.quiet import quiet_stderr, verbose

TRAIN_MODULES = ("tensorflow", "keras", "matplotlib")  # what the `train` extra installs (and tf2onnx, for export)


def missing_extra(prog: str, modules=TRAIN_MODULES) -> str | None:
    """The one-line error for a base (runtime-only) install, or None when `modules` are there.
    Checked without importing them (find_spec), so it costs nothing where they are."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"{prog} needs the training extra ({', '.join(missing)} not installed): "
            "pip install 'cxr-gan[train]' (the base install is the runtime alone)")


# What the commands set before TensorFlow starts (configure); setdefault: the caller's own
# values win. Importing a module of this project sets none of them.
TF_ENVIRONMENT = {
    # level 3 also hides C++ "errors" that are not (grappler's remapper giving up on a fusion,
    # cuInit on machines without a GPU); Python exceptions still surface. CXR_VERBOSE=1 keeps all.
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
    # oneDNN's kernels: TensorFlow turns them on by itself only on some CPUs, and on an AVX2-only
    # CPU its own kernels made the training step much slower (docs/results.md).
    # TF_ENABLE_ONEDNN_OPTS=0 in the environment turns them off.
    "TF_ENABLE_ONEDNN_OPTS": "1",
}


def configure() -> None:
    """Set TensorFlow's environment for this process, as cxr-train, cxr-export and the
    benchmarks do at start-up (before TensorFlow is imported; later it has no effect).
    A program that embeds cxr_training may call it first, or set the variables itself."""
    for key, value in TF_ENVIRONMENT.items():
        if key == "TF_CPP_MIN_LOG_LEVEL" and verbose():
            continue
        os.environ.setdefault(key, value)


def import_tf():
    """Return (tf, keras), imported with TensorFlow's start-up noise on file descriptor 2
    suppressed. Changes no environment variable (configure() does, in the commands). Keras must
    run on its TensorFlow backend (the default when KERAS_BACKEND is unset)."""
    if "tensorflow" not in sys.modules:
        with quiet_stderr():
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        from cxr_training.errors import TrainingError

        raise TrainingError(f"cxr-gan trains with Keras' TensorFlow backend; KERAS_BACKEND is "
                            f"{keras.backend.backend()!r}")
    return tf, keras
