"""Import TensorFlow/Keras quietly.

TensorFlow's C++ side prints start-up chatter (oneDNN notices, missing CUDA drivers on
CPU machines) straight to file descriptor 2 before Python can configure logging. We
send fd 2 to /dev/null for the import only. CXR_TF_VERBOSE=1 shows everything.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _quiet_fd2():
    if os.environ.get("CXR_TF_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tf():
    """Return (tf, keras), imported with the start-up noise suppressed."""
    if "tensorflow" not in sys.modules:
        if os.environ.get("CXR_TF_VERBOSE") != "1":
            # level 3 also hides C++ "errors" that are not (grappler's remapper giving up on
            # a fusion, cuInit on machines without a GPU); Python exceptions still surface.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        with _quiet_fd2():
            import tensorflow  # noqa: F401
            import keras  # noqa: F401
    import keras
    import tensorflow as tf

    return tf, keras
