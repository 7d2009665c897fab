"""Silence native libraries that print to file descriptor 2 (TensorFlow, onnxruntime).

Some C++ libraries write diagnostics straight to fd 2 before, or regardless of, any
Python logging configuration. `quiet_stderr()` points fd 2 at /dev/null for a block and
restores it afterwards. CXR_VERBOSE=1 (or the older CXR_TF_VERBOSE=1) disables it.
Python exceptions raised in the block are unaffected.
"""

from __future__ import annotations

import contextlib
import os
import sys


def verbose() -> bool:
    return os.environ.get("CXR_VERBOSE") == "1" or os.environ.get("CXR_TF_VERBOSE") == "1"


@contextlib.contextmanager
def quiet_stderr():
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters, some test runners)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        try:
            sys.stderr.flush()
        except ValueError:
            pass
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
